//! A restart keeps every acknowledged record: after a clean shutdown (SIGTERM, exit code 0)
//! and after kill -9 with the durable flush policy (acks=all answered only after fsync).
//! Topic ids and idempotent producer state survive too.

mod broker_support;

use broker_support::*;
use karst::protocol::batch::testing::{build_batch, simple_batch, TestRecord};

#[test]
fn clean_shutdown_and_restart_keep_data_and_topic_ids() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let node = NodeProcess::start_in(&dir, &[]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("kept", 2), 0);
    let id = topic_id(&mut client, "kept");
    let batch = simple_batch(5, 100);
    assert_eq!(client.produce(9, 1, "kept", 1, batch.clone()), (0, 0));
    let (producer_id, epoch) = client.init_producer_id();
    let idempotent = build_batch(
        &[TestRecord {
            value: Some(b"once".to_vec()),
            ..Default::default()
        }],
        200,
        producer_id,
        epoch,
        0,
    );
    assert_eq!(client.produce(9, -1, "kept", 0, idempotent.clone()), (0, 0));
    drop(client);
    assert_eq!(
        node.terminate(),
        Some(0),
        "SIGTERM exits cleanly with code 0"
    );

    let node = NodeProcess::start_in(&dir, &[]);
    let mut client = node.connect();
    assert_eq!(topic_id(&mut client, "kept"), id, "topic ids persist");
    let data = client.fetch(16, "kept", id, 1, 0, 0);
    assert_eq!(data.high_watermark, 5);
    assert_eq!(
        batches(data.records.as_ref().unwrap()),
        vec![(0, batch[8..].to_vec())]
    );
    // The producer state was rebuilt from the log: the retry is still a duplicate.
    assert_eq!(client.produce(9, -1, "kept", 0, idempotent), (0, 0));
    assert_eq!(client.list_offset("kept", 0, -1), (0, 1, -1));
    // A new producer id is never one handed out before the restart.
    let (new_id, _) = client.init_producer_id();
    assert!(new_id > producer_id);
}

#[test]
fn kill_9_with_durable_policy_loses_nothing_acknowledged() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let node = NodeProcess::start_in(&dir, &["log.flush.policy=durable"]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("durable", 1), 0);
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let batch = simple_batch(1 + i % 3, i as i64);
        let (error, base_offset) = client.produce(10, -1, "durable", 0, batch.clone());
        assert_eq!(error, 0);
        acknowledged.push((base_offset, batch[8..].to_vec()));
    }
    node.kill();

    let node = NodeProcess::start_in(&dir, &["log.flush.policy=durable"]);
    let mut client = node.connect();
    let mut got = Vec::new();
    let mut offset = 0;
    for _ in 0..100 {
        let data = client.fetch(12, "durable", uuid::Uuid::nil(), 0, offset, 0);
        assert_eq!(data.error_code, 0);
        let read = batches(data.records.as_ref().unwrap());
        if read.is_empty() {
            break;
        }
        let last = read.last().unwrap();
        let header = karst::protocol::batch::parse_header(&{
            let mut full = last.0.to_be_bytes().to_vec();
            full.extend_from_slice(&last.1);
            full
        })
        .unwrap();
        offset = header.next_offset();
        got.extend(read);
    }
    assert_eq!(
        got.len(),
        acknowledged.len(),
        "every acknowledged batch is back"
    );
    assert!(got == acknowledged, "byte-identical after recovery");
}

/// DeleteTopics removes the topic and its data for good: a topic re-created under the same
/// name starts empty with a new id, also after a restart.
#[test]
fn deleted_topic_stays_deleted_and_recreation_starts_empty() {
    use kafka_protocol::messages::*;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let node = NodeProcess::start_in(&dir, &[]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("gone", 1), 0);
    let old_id = topic_id(&mut client, "gone");
    assert_eq!(client.produce(9, 1, "gone", 0, simple_batch(4, 0)), (0, 0));
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(
            kafka_protocol::protocol::StrBytes::from_static_str("gone"),
        )])
        .with_timeout_ms(5000);
    let ResponseKind::DeleteTopics(response) =
        client.call(ApiKey::DeleteTopics, 4, RequestKind::DeleteTopics(request))
    else {
        panic!()
    };
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(
        client.list_offset("gone", 0, -1).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(client.create_topic("gone", 1), 0);
    let new_id = topic_id(&mut client, "gone");
    assert_ne!(new_id, old_id);
    assert_eq!(client.list_offset("gone", 0, -1), (0, 0, -1));
    drop(client);
    assert_eq!(node.terminate(), Some(0));

    let node = NodeProcess::start_in(&dir, &[]);
    let mut client = node.connect();
    assert_eq!(topic_id(&mut client, "gone"), new_id);
    assert_eq!(client.list_offset("gone", 0, -1), (0, 0, -1));
}

#[test]
fn logs_redirected_to_a_file_are_plain_text() {
    // An operator's `karst node 2>node.log` must not fill the file with colour escape codes.
    let temp = tempfile::tempdir().unwrap();
    let log_path = temp.path().join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_karst"))
        .args(["node", "--listeners", "127.0.0.1:0", "--data-dir"])
        .arg(temp.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawning karst node");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("listening on "), "{line:?}");
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("clean shutdown complete"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a redirected log: {text:?}"
    );
}
