//! `karst node` on a data directory whose topic registry is lost (both `karst.topics.*` slots
//! present, neither readable) exits non-zero with the error on stderr instead of serving with
//! no topics, as Kafka refuses to start on unreadable metadata (docs/architecture.md, Broker).

mod broker_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker_support::*;
use karst::protocol::batch::testing::simple_batch;

#[test]
fn a_lost_registry_stops_the_node_with_an_error_naming_the_files() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let node = NodeProcess::start_in(&data_dir, &[]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("orders", 1), 0);
    let (code, _) = client.produce(9, -1, "orders", 0, simple_batch(2, 0));
    assert_eq!(code, 0);
    assert_eq!(node.terminate(), Some(0));
    for slot in ["karst.topics.0", "karst.topics.1"] {
        let path = data_dir.join(slot);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0xFF;
        std::fs::write(&path, bytes).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_karst"))
        .args(["node", "--listeners", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning karst node");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > IO_TIMEOUT {
            let _ = child.kill();
            panic!("the node did not exit: it started on a lost registry");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "exit {status}; stderr: {stderr}");
    assert!(!stdout.contains("listening on"), "{stdout}");
    for expected in [
        data_dir.display().to_string().as_str(),
        "karst.topics.0",
        "karst.topics.1",
        "Refusing to start",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing: {stderr}");
    }
    assert!(data_dir.join("orders-0").is_dir());
}
