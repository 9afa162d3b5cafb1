//! What one simulated run does: shared by the CLI, the sweep (which forwards them to every
//! child) and the run itself.

use crate::nemesis::{FaultKind, FaultSet};
use std::fmt;

/// The system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Karst's partition log on the simulated disk, driven directly: appends, reads, syncs,
    /// crashes with disk faults and recovery (no network).
    Log,
    /// Karst nodes (the real runtime) on simulated hosts, driven through Karst's client over
    /// simulated TCP.
    Node,
    /// The node workload's producers plus two consumer groups (2 and 3 subscribing members,
    /// manual commits) instead of its assigned consumers.
    Groups,
}

/// How much traffic the workload drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Load {
    /// One producer (idempotent) and one consumer, about 10 records per second.
    Light,
    /// Four producers (two idempotent) and two consumers, about 60 records per second each.
    Heavy,
}

impl Load {
    /// (producers, consumers)
    pub fn clients(self) -> (u32, u32) {
        match self {
            Load::Light => (1, 1),
            Load::Heavy => (4, 2),
        }
    }

    /// Simulated milliseconds a producer waits between records: a uniform range.
    pub fn record_interval_ms(self) -> (i64, i64) {
        match self {
            Load::Light => (50, 150),
            Load::Heavy => (2, 30),
        }
    }
}

/// A deliberately injected bug, to prove the checkers can fail (test-only: never the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InjectedBug {
    /// The disk acknowledges fsync without making anything durable (acknowledge before write).
    LyingFsync,
    /// The broker serves fetches up to the log end offset while reporting the high watermark
    /// (under the durable flush policy: records not yet fsynced are read). Node workload only;
    /// compiled into Karst only in the simulation build (`karst::buggify`).
    ServeAboveHighWatermark,
}

/// Whether the run's BUGGIFY fault points may be enabled (the seed picks which).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BuggifyChoice {
    On,
    Off,
}

/// Everything that, with the seed and the commit, determines a run.
#[derive(Clone, Debug, clap::Args)]
pub struct RunOptions {
    /// Faults the nemesis may use: all, none, net, process, disk, or names (partition,
    /// one-way, clog, delay, kill, pause, power-loss, torn-write, corrupt, wipe, clock-jump),
    /// comma-separated; `-name` removes one (e.g. `all,-wipe`).
    #[arg(long, default_value = "all", value_parser = parse_faults)]
    pub faults: FaultSet,
    /// Karst nodes in the cluster.
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    #[arg(long, value_enum, default_value = "log")]
    pub workload: Workload,
    /// Traffic: light (one producer, one consumer) or heavy.
    #[arg(long, value_enum, default_value = "heavy")]
    pub load: Load,
    /// Simulated length of the fault phase (after it the network heals).
    #[arg(long, default_value_t = 20_000)]
    pub fault_phase_ms: i64,
    /// Use the durable flush policy (fsync before acknowledging) instead of the page cache.
    #[arg(long, value_enum, default_value = "seed")]
    pub flush: FlushChoice,
    /// Test-only: inject a known bug to show the checkers catch it.
    #[arg(long, value_enum)]
    pub inject_bug: Option<InjectedBug>,
    /// BUGGIFY fault points in Karst's code (slow fsync, short reads, ...): on lets the seed
    /// enable some of them for the run.
    #[arg(long, value_enum, default_value = "on")]
    pub buggify: BuggifyChoice,
}

/// The flush policy of a run; `seed` lets the seed choose (swarm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FlushChoice {
    Seed,
    Durable,
    PageCache,
}

fn parse_faults(text: &str) -> Result<FaultSet, String> {
    FaultSet::parse(text)
}

impl RunOptions {
    /// The faults this workload can suffer: the log workload has no network and no process
    /// to pause, so those are dropped from `faults`.
    pub fn effective_faults(&self) -> FaultSet {
        match self.workload {
            Workload::Node | Workload::Groups => self.faults,
            Workload::Log => FaultKind::ALL
                .into_iter()
                .filter(|k| k.is_network() || *k == FaultKind::Pause)
                .fold(self.faults, |set, kind| set.without(kind)),
        }
    }

    /// Karst nodes actually run (the log workload has exactly one log).
    pub fn effective_nodes(&self) -> u32 {
        match self.workload {
            Workload::Node | Workload::Groups => self.nodes.max(1),
            Workload::Log => 1,
        }
    }

    /// The flags that reproduce these options on the command line.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--faults".to_string(),
            self.faults.to_string(),
            "--nodes".to_string(),
            self.nodes.to_string(),
            "--workload".to_string(),
            value_name(self.workload),
            "--load".to_string(),
            value_name(self.load),
            "--fault-phase-ms".to_string(),
            self.fault_phase_ms.to_string(),
            "--flush".to_string(),
            value_name(self.flush),
            "--buggify".to_string(),
            value_name(self.buggify),
        ];
        if let Some(bug) = self.inject_bug {
            args.push("--inject-bug".to_string());
            args.push(value_name(bug));
        }
        args
    }
}

fn value_name<T: clap::ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .expect("no skipped variants")
        .get_name()
        .to_string()
}

impl fmt::Display for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_args().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        options: RunOptions,
    }

    #[test]
    fn options_round_trip_through_their_command_line() {
        let parsed = Wrapper::parse_from([
            "x",
            "--faults",
            "net,kill",
            "--workload",
            "node",
            "--flush",
            "page-cache",
            "--inject-bug",
            "serve-above-high-watermark",
            "--buggify",
            "off",
        ]);
        let args = parsed.options.to_args();
        let again = Wrapper::parse_from(std::iter::once("x".to_string()).chain(args.clone()));
        assert_eq!(again.options.to_args(), args);
        assert_eq!(again.options.workload, Workload::Node);
        assert_eq!(
            again.options.inject_bug,
            Some(InjectedBug::ServeAboveHighWatermark)
        );
        assert_eq!(again.options.buggify, BuggifyChoice::Off);
        assert_eq!(again.options.faults, FaultSet::parse("net,kill").unwrap());
    }
}
