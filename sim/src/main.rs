//! The `karst-sim` command: sweep seeds, replay one, check determinism, print a fault plan.
//!
//! Simulation commands need the madsim build:
//! `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo run -p karst-sim --release -- ...`
//! (tools/sim-ci does exactly that). In the normal build they explain this and exit with 2.

use clap::{Parser, Subcommand};
use karst_sim::options::RunOptions;
use karst_sim::sweep;
use std::process::ExitCode;

/// The simulator allocates and frees a few small objects for every simulated packet, task and
/// message (a fifth of its instructions went to glibc's malloc and free); jemalloc's
/// thread caches do the same for less (docs/benchmarks.md). Heap addresses never reach a
/// trace, so the allocator cannot change a run.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "karst-sim", about = "Deterministic simulation of Karst")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a range of seeds, one child process per seed, `jobs` at a time.
    Sweep {
        /// Seeds `A..B` (B exclusive) or one seed.
        #[arg(long)]
        seeds: String,
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Run one seed; with --trace print its full event trace (byte-identical on every replay).
    Replay {
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        trace: bool,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Run one seed twice, in two processes, and compare the trace hashes.
    Check {
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Print the swarm and fault schedule a seed draws (no simulation needed).
    Plan {
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        options: RunOptions,
    },
}

/// The command that replays `seed` with `options`, as printed for every failure.
fn replay_command(seed: u64, options: &RunOptions) -> String {
    let profile = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    format!(
        "RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo run -p karst-sim{profile} -- replay --seed {seed} {options} --trace"
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plan { seed, options } => {
            let plan = karst_sim::nemesis::plan(
                seed,
                options.effective_faults(),
                options.effective_nodes(),
                karst_sim::nemesis::WARMUP_MS,
                options.fault_phase_ms,
            );
            println!("{}", plan.swarm);
            for fault in &plan.faults {
                println!(
                    "{:>9}..{:<9} {}",
                    fault.start_ms, fault.end_ms, fault.action
                );
            }
            ExitCode::SUCCESS
        }
        Command::Sweep {
            seeds,
            jobs,
            options,
        } => {
            let seeds = match sweep::parse_seed_range(&seeds) {
                Ok(seeds) => seeds,
                Err(e) => {
                    eprintln!("karst-sim: {e}");
                    return ExitCode::from(2);
                }
            };
            if !cfg!(madsim) {
                return needs_madsim();
            }
            let exe = std::env::current_exe().expect("the path of this executable");
            let mut child_args = vec!["replay".to_string()];
            child_args.extend(options.to_args());
            eprintln!(
                "sweep: seeds {}..{} with {jobs} jobs, {options}",
                seeds.start, seeds.end
            );
            let report = sweep::sweep(&exe, &child_args, seeds, jobs);
            print!("{}", report.render(&|seed| replay_command(seed, &options)));
            if report.failures().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Replay {
            seed,
            trace,
            options,
        } => replay(seed, trace, &options),
        Command::Check { seed, options } => {
            if !cfg!(madsim) {
                return needs_madsim();
            }
            let exe = std::env::current_exe().expect("the path of this executable");
            let mut child_args = vec!["replay".to_string()];
            child_args.extend(options.to_args());
            let first = sweep::run_child(&exe, &child_args, seed);
            let second = sweep::run_child(&exe, &child_args, seed);
            println!("run 1: {}", first.to_line());
            println!("run 2: {}", second.to_line());
            if first.trace_hash == second.trace_hash
                && first.trace_lines == second.trace_lines
                && first.trace_hash != 0
            {
                println!(
                    "deterministic: seed {seed} trace hash {:016x} ({} lines) on both runs",
                    first.trace_hash, first.trace_lines
                );
                ExitCode::SUCCESS
            } else {
                println!(
                    "NOT deterministic: seed {seed} gave trace hashes {:016x} and {:016x}; compare:\n  {}",
                    first.trace_hash,
                    second.trace_hash,
                    replay_command(seed, &options)
                );
                ExitCode::FAILURE
            }
        }
    }
}

fn needs_madsim() -> ExitCode {
    eprintln!(
        "karst-sim: simulation needs the madsim build: RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo run -p karst-sim --release -- ... (see tools/sim-ci)"
    );
    ExitCode::from(2)
}

#[cfg(not(madsim))]
fn replay(_seed: u64, _trace: bool, _options: &RunOptions) -> ExitCode {
    needs_madsim()
}

#[cfg(madsim)]
fn replay(seed: u64, trace: bool, options: &RunOptions) -> ExitCode {
    let outcome = karst_sim::run::run_seed(seed, options, trace);
    if trace {
        print!("{}", outcome.trace.text());
    }
    for violation in &outcome.violations {
        println!("VIOLATION {violation}");
    }
    if !outcome.violations.is_empty() {
        println!("replay: {}", replay_command(seed, options));
    }
    println!("{}", outcome.summary.to_line());
    if outcome.summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
