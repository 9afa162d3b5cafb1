//! Replays the committed fuzz inputs under fuzz/regressions/<target>/ on the stable toolchain:
//! crash inputs the fuzzers found (each must now pass) and seed inputs (valid frames and batches
//! of common APIs, small damaged logs). The bodies are the fuzz targets' own
//! (fuzz/targets_common.rs), so a regression here is exactly what the fuzzer saw.
//! See docs/fuzzing.md for adding a case.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/targets_common.rs"]
mod targets;

/// Runs every file of fuzz/regressions/<target>/ through `body`; fails listing each input that
/// panicked. Fails too if the directory holds no input, so a moved directory cannot pass
/// silently.
fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    let mut failures = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).expect("read input");
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs panic:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

/// Bad input gets an error or a closed connection, never a panic (Kafka's SocketServer closes
/// the connection on an undecodable request).
#[test]
fn request_frame_regressions() {
    replay("request_frame", targets::request_frame);
}

/// A produced batch is validated (CRC-32C, lengths, record count, codec) before it is
/// appended, and an accepted one reads back byte for byte (Kafka protocol guide, Record Batch).
#[test]
fn record_batch_regressions() {
    replay("record_batch", targets::record_batch);
}

/// Kafka's log recovery: a damaged tail is cut at the first invalid batch and every durable
/// batch before it survives.
#[test]
fn log_recovery_regressions() {
    replay("log_recovery", targets::log_recovery);
}

/// Requests stepped through a whole node: no panic, invariants hold, and every response
/// encodes at the version the client asked for (Kafka protocol guide: the response version
/// is the request's).
#[test]
fn node_request_regressions() {
    replay("node_request", targets::node_request);
}
