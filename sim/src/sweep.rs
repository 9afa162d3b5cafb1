//! The sweep driver: runs one child process per seed (madsim's determinism needs a fresh
//! process per seed: tokio's select! and HashMap seeds are process-global), `jobs` at a time,
//! shows progress, and summarises throughput and failures with the exact replay commands.
//!
//! A child reports on its last stdout line, `RESULT seed=.. status=.. ...` (see `RunSummary`).
//! A child that dies without one (a panic in the harness itself, an abort) counts as a failure
//! of class `panic`.

use crate::checker::ViolationClass;
use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::ops::Range;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound on parallel children.
pub const MAX_JOBS: usize = 64;
/// Bound on seeds in one sweep.
pub const MAX_SEEDS: u64 = 10_000_000;

/// Parses `A..B` (B exclusive) or a single seed `A`.
pub fn parse_seed_range(text: &str) -> Result<Range<u64>, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|e| format!("bad seed {s:?}: {e}"))
    };
    let range = match text.split_once("..") {
        Some((a, b)) => parse(a)?..parse(b)?,
        None => {
            let a = parse(text)?;
            a..a + 1
        }
    };
    if range.is_empty() {
        return Err(format!("empty seed range {text:?}"));
    }
    if range.end - range.start > MAX_SEEDS {
        return Err(format!("at most {MAX_SEEDS} seeds per sweep"));
    }
    Ok(range)
}

/// The one-line result a child prints for its seed.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub seed: u64,
    pub sim_ms: i64,
    pub trace_hash: u64,
    pub trace_lines: u64,
    pub operations: u64,
    /// Violation classes found (empty = the seed passed).
    pub classes: Vec<String>,
    /// The first violation, for the sweep's failure list.
    pub first: String,
    /// BUGGIFY fault points that fired in the run, with how often (name order).
    pub fired: Vec<(String, u64)>,
}

impl RunSummary {
    pub fn passed(&self) -> bool {
        self.classes.is_empty()
    }

    pub fn to_line(&self) -> String {
        let first: String = self
            .first
            .chars()
            .map(|c| if c == '\n' { ' ' } else { c })
            .collect();
        format!(
            "RESULT seed={} status={} sim_ms={} trace_hash={:016x} trace_lines={} operations={} classes={} fired={} first={}",
            self.seed,
            if self.passed() { "ok" } else { "fail" },
            self.sim_ms,
            self.trace_hash,
            self.trace_lines,
            self.operations,
            if self.classes.is_empty() { "-".to_string() } else { self.classes.join(",") },
            if self.fired.is_empty() {
                "-".to_string()
            } else {
                self.fired
                    .iter()
                    .map(|(name, count)| format!("{name}:{count}"))
                    .collect::<Vec<_>>()
                    .join(",")
            },
            first
        )
    }

    pub fn parse_line(line: &str) -> Option<RunSummary> {
        let rest = line.strip_prefix("RESULT ")?;
        let (fields, first) = rest.split_once(" first=")?;
        let mut map = BTreeMap::new();
        for field in fields.split(' ') {
            let (k, v) = field.split_once('=')?;
            map.insert(k, v);
        }
        let classes = match *map.get("classes")? {
            "-" => vec![],
            list => list.split(',').map(str::to_string).collect(),
        };
        let fired = match map.get("fired").copied().unwrap_or("-") {
            "-" => vec![],
            list => list
                .split(',')
                .map(|item| {
                    let (name, count) = item.split_once(':')?;
                    Some((name.to_string(), count.parse().ok()?))
                })
                .collect::<Option<Vec<_>>>()?,
        };
        Some(RunSummary {
            seed: map.get("seed")?.parse().ok()?,
            sim_ms: map.get("sim_ms")?.parse().ok()?,
            trace_hash: u64::from_str_radix(map.get("trace_hash")?, 16).ok()?,
            trace_lines: map.get("trace_lines")?.parse().ok()?,
            operations: map.get("operations")?.parse().ok()?,
            classes,
            first: first.to_string(),
            fired,
        })
    }
}

/// Runs `exe <child_args> --seed S` and returns its summary; a child that printed none is a
/// `panic` failure carrying the tail of its stderr.
pub fn run_child(exe: &Path, child_args: &[String], seed: u64) -> RunSummary {
    let output = Command::new(exe)
        .args(child_args)
        .arg("--seed")
        .arg(seed.to_string())
        .stdin(Stdio::null())
        .output();
    let failed = |why: String| RunSummary {
        seed,
        sim_ms: 0,
        trace_hash: 0,
        trace_lines: 0,
        operations: 0,
        classes: vec![ViolationClass::Panic.name().to_string()],
        first: why,
        fired: vec![],
    };
    match output {
        Err(e) => failed(format!("could not start {}: {e}", exe.display())),
        Ok(output) => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            match stdout.lines().rev().find_map(RunSummary::parse_line) {
                Some(summary) => summary,
                None => {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    failed(format!(
                        "child exited with {} without a result: {}",
                        output.status,
                        tail.join(" | ")
                    ))
                }
            }
        }
    }
}

/// The result of a sweep.
#[derive(Debug)]
pub struct SweepReport {
    pub results: Vec<RunSummary>,
    pub wall: Duration,
}

impl SweepReport {
    pub fn failures(&self) -> Vec<&RunSummary> {
        self.results.iter().filter(|r| !r.passed()).collect()
    }

    pub fn failures_by_class(&self) -> BTreeMap<String, usize> {
        let mut by_class = BTreeMap::new();
        for result in &self.results {
            for class in &result.classes {
                *by_class.entry(class.clone()).or_insert(0) += 1;
            }
        }
        by_class
    }

    /// Per BUGGIFY fault point: in how many seeds it fired, and how often in all.
    pub fn fired_by_point(&self) -> BTreeMap<String, (usize, u64)> {
        let mut by_point = BTreeMap::new();
        for result in &self.results {
            for (name, count) in &result.fired {
                let entry = by_point.entry(name.clone()).or_insert((0, 0));
                entry.0 += 1;
                entry.1 += count;
            }
        }
        by_point
    }

    pub fn simulated_seconds(&self) -> f64 {
        self.results.iter().map(|r| r.sim_ms as f64).sum::<f64>() / 1000.0
    }

    /// The summary block the CLI prints; `replay` renders the command that replays a seed.
    pub fn render(&self, replay: &dyn Fn(u64) -> String) -> String {
        let wall = self.wall.as_secs_f64().max(1e-9);
        let mut out = String::new();
        out.push_str(&format!(
            "seeds: {}  passed: {}  failed: {}  wall: {:.1}s\n",
            self.results.len(),
            self.results.len() - self.failures().len(),
            self.failures().len(),
            wall
        ));
        out.push_str(&format!(
            "throughput: {:.1} seeds/s, {:.0} seeds/min, {:.0} simulated s per wall s ({:.0} simulated s total)\n",
            self.results.len() as f64 / wall,
            self.results.len() as f64 / wall * 60.0,
            self.simulated_seconds() / wall,
            self.simulated_seconds()
        ));
        let fired = self.fired_by_point();
        if !fired.is_empty() {
            out.push_str("fault points fired:");
            for (name, (seeds, times)) in &fired {
                out.push_str(&format!(" {name} ({seeds} seeds, {times}x)"));
            }
            out.push('\n');
        }
        let by_class = self.failures_by_class();
        if !by_class.is_empty() {
            out.push_str("failures by class:\n");
            for (class, count) in &by_class {
                out.push_str(&format!("  {class}: {count}\n"));
            }
            out.push_str("failing seeds (replay each with the command shown):\n");
            for failure in self.failures() {
                out.push_str(&format!(
                    "  seed {} [{}] {}\n    {}\n",
                    failure.seed,
                    failure.classes.join(","),
                    failure.first,
                    replay(failure.seed)
                ));
            }
        }
        out
    }
}

/// Runs every seed of `seeds` as a child process, `jobs` at a time, in seed order of start;
/// results are returned in seed order. Progress goes to stderr.
pub fn sweep(exe: &Path, child_args: &[String], seeds: Range<u64>, jobs: usize) -> SweepReport {
    let jobs = jobs.clamp(1, MAX_JOBS);
    let total = seeds.end - seeds.start;
    let started = Instant::now();
    let (sender, receiver) = mpsc::channel::<RunSummary>();
    let mut next = seeds.start;
    let mut running = 0usize;
    let mut results = Vec::with_capacity(total as usize);
    let mut failed = 0usize;
    let mut last_progress = 0u64;
    let interactive = std::io::stderr().is_terminal();
    while results.len() < total as usize {
        while running < jobs && next < seeds.end {
            let (exe, args, sender, seed) =
                (exe.to_path_buf(), child_args.to_vec(), sender.clone(), next);
            std::thread::spawn(move || {
                let _ = sender.send(run_child(&exe, &args, seed));
            });
            running += 1;
            next += 1;
        }
        let result = receiver.recv().expect("a sweep worker thread vanished");
        running -= 1;
        failed += !result.passed() as usize;
        results.push(result);
        let done = results.len() as u64;
        // Progress about every 2% on a terminal (redrawn in place), every 10% otherwise.
        let steps = if interactive { 50 } else { 10 };
        if done == total || done * steps / total > last_progress * steps / total {
            last_progress = done;
            let width = 30;
            let filled = (done * width / total) as usize;
            let elapsed = started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "{}[{}{}] {done}/{total} seeds, {failed} failed, {:.1} seeds/s   {}",
                if interactive { "\r" } else { "" },
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                done as f64 / elapsed,
                if interactive { "" } else { "\n" }
            );
            let _ = std::io::stderr().flush();
        }
    }
    if interactive {
        eprintln!();
    }
    results.sort_by_key(|r| r.seed);
    SweepReport {
        results,
        wall: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_with_exclusive_end() {
        assert_eq!(parse_seed_range("0..200").unwrap(), 0..200);
        assert_eq!(parse_seed_range("7").unwrap(), 7..8);
        assert!(parse_seed_range("5..5").is_err());
        assert!(parse_seed_range("x..5").is_err());
    }

    #[test]
    fn result_lines_round_trip() {
        let summary = RunSummary {
            seed: 17,
            sim_ms: 30_000,
            trace_hash: 0xdead_beef,
            trace_lines: 1234,
            operations: 99,
            classes: vec!["lost-write".into(), "liveness".into()],
            first: "lost-write: p1#3 acknowledged at partition 0 offset 3".into(),
            fired: vec![("short-read".into(), 12), ("slow-fsync".into(), 1)],
        };
        let line = summary.to_line();
        assert!(line.contains("status=fail"));
        assert_eq!(RunSummary::parse_line(&line), Some(summary.clone()));
        let ok = RunSummary {
            classes: vec![],
            first: String::new(),
            fired: vec![],
            ..summary
        };
        assert_eq!(RunSummary::parse_line(&ok.to_line()), Some(ok));
        assert_eq!(RunSummary::parse_line("garbage"), None);
    }

    #[test]
    fn a_sweep_of_a_child_that_reports_nothing_fails_as_panic() {
        // `false` is a real process that exits non-zero without a RESULT line.
        let report = sweep(Path::new("false"), &[], 0..3, 2);
        assert_eq!(report.results.len(), 3);
        assert_eq!(report.failures().len(), 3);
        assert_eq!(report.failures_by_class().get("panic"), Some(&3));
        let text = report.render(&|seed| format!("replay --seed {seed}"));
        assert!(text.contains("replay --seed 2"), "{text}");
    }

    #[test]
    fn a_sweep_parses_children_results() {
        // A shell child that prints a passing RESULT line for the seed it is given.
        let args: Vec<String> = vec![
            "-c".into(),
            "echo noise; echo \"RESULT seed=$2 status=ok sim_ms=1000 trace_hash=00000000000000ff trace_lines=3 operations=5 classes=- first=\"".into(),
            "sh".into(),
        ];
        let report = sweep(Path::new("sh"), &args, 10..14, 3);
        assert_eq!(report.failures().len(), 0, "{:?}", report.results);
        assert_eq!(
            report.results.iter().map(|r| r.seed).collect::<Vec<_>>(),
            vec![10, 11, 12, 13]
        );
        assert_eq!(report.simulated_seconds(), 4.0);
    }
}
