//! karst-sim: the deterministic simulator for Karst.
//!
//! Runs real Karst code on madsim's deterministic scheduler, network and clock, injects faults
//! drawn from a seed (`nemesis`), records every client operation (`history`), checks the
//! guarantees over the recorded history (`checker`), and makes every failure replayable from
//! its seed (`trace`, `sweep`).
//!
//! The pure parts (history, checkers, nemesis plans, traces, the sweep driver) build and are
//! unit-tested in the normal build; the simulation itself (`run`) only exists when built with
//! `RUSTFLAGS="--cfg madsim"` in its own target directory (see tools/sim-ci).

pub mod buggify;
pub mod checker;
pub mod history;
pub mod nemesis;
pub mod options;
pub mod rng;
pub mod sweep;
pub mod trace;

#[cfg(madsim)]
pub mod run;
