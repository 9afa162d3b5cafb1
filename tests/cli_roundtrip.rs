//! The command-line tools end to end against a real node: `karst topics create`, 10k lines
//! piped through `karst produce`, read back with `karst consume`, compared; describe/alter/
//! delete; and a clear error when nothing listens at --bootstrap-server.

mod client_support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use client_support::Node;

fn karst(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_karst"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn karst");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            pipe.write_all(&input).unwrap();
        });
    }
    child.wait_with_output().expect("karst output")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "karst failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn ten_thousand_lines_through_produce_and_consume() {
    let node = Node::start(&[]);
    let b = node.bootstrap();
    let out = ok(&karst(
        &[
            "topics",
            "--bootstrap-server",
            &b,
            "create",
            "lines",
            "--partitions",
            "1",
        ],
        None,
    ));
    assert!(out.contains("Created topic lines"), "{out}");
    let lines: Vec<String> = (0..10_000)
        .map(|n| format!("line {n:05} {}", "abcdefghij".repeat(n % 7)))
        .collect();
    let input = lines.join("\n") + "\n";
    ok(&karst(
        &[
            "produce",
            "--bootstrap-server",
            &b,
            "--topic",
            "lines",
            "--compression",
            "lz4",
        ],
        Some(input.as_bytes()),
    ));
    let out = ok(&karst(
        &[
            "consume",
            "--bootstrap-server",
            &b,
            "--topic",
            "lines",
            "--from-beginning",
            "--max-messages",
            "10000",
            "--timeout-ms",
            "10000",
        ],
        None,
    ));
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 10_000);
    assert_eq!(got, lines.iter().map(String::as_str).collect::<Vec<_>>());

    // Keys, headers, partitions and offsets are printed in Kafka's formatter layout.
    ok(&karst(
        &[
            "topics",
            "--bootstrap-server",
            &b,
            "create",
            "keyed",
            "--partitions",
            "3",
        ],
        None,
    ));
    ok(&karst(
        &[
            "produce",
            "--bootstrap-server",
            &b,
            "--topic",
            "keyed",
            "--key-separator",
            ":",
            "--header",
            "source=test",
            "--acks",
            "1",
        ],
        Some(b"k1:one\nk2:two\nk1:three\n"),
    ));
    let out = ok(&karst(
        &[
            "consume",
            "--bootstrap-server",
            &b,
            "--topic",
            "keyed",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "10000",
            "--print-key",
            "--print-headers",
            "--print-offset",
        ],
        None,
    ));
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    // k1's two records share a partition, so they are offsets 0 and 1 there, in order.
    assert!(got.contains(&"Offset:0\tsource:test\tk1\tone"), "{got:?}");
    assert!(got.contains(&"Offset:1\tsource:test\tk1\tthree"), "{got:?}");
    assert!(got.contains(&"Offset:0\tsource:test\tk2\ttwo"), "{got:?}");

    // --offset on one partition.
    let out = ok(&karst(
        &[
            "consume",
            "--bootstrap-server",
            &b,
            "--topic",
            "lines",
            "--partition",
            "0",
            "--offset",
            "9998",
            "--max-messages",
            "2",
            "--timeout-ms",
            "10000",
        ],
        None,
    ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![lines[9998].as_str(), lines[9999].as_str()]
    );
}

#[test]
fn topics_describe_alter_delete() {
    let node = Node::start(&[]);
    let b = node.bootstrap();
    ok(&karst(
        &[
            "topics",
            "--bootstrap-server",
            &b,
            "create",
            "t",
            "--partitions",
            "2",
            "--config",
            "retention.ms=60000",
        ],
        None,
    ));
    let out = ok(&karst(&["topics", "--bootstrap-server", &b, "list"], None));
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["t"]);
    ok(&karst(
        &[
            "topics",
            "--bootstrap-server",
            &b,
            "alter",
            "t",
            "--partitions",
            "3",
            "--add-config",
            "retention.ms=1000",
        ],
        None,
    ));
    let out = ok(&karst(
        &["topics", "--bootstrap-server", &b, "describe", "t"],
        None,
    ));
    assert!(out.contains("PartitionCount: 3"), "{out}");
    assert!(out.contains("retention.ms=1000"), "{out}");
    assert_eq!(out.matches("\tPartition: ").count(), 3, "{out}");
    assert!(out.contains("Leader: 1"), "{out}");
    ok(&karst(
        &["topics", "--bootstrap-server", &b, "delete", "t"],
        None,
    ));
    let out = ok(&karst(&["topics", "--bootstrap-server", &b, "list"], None));
    assert!(out.trim().is_empty(), "{out}");
}

#[test]
fn clear_error_when_no_broker_listens() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let output = karst(&["topics", "--bootstrap-server", &addr, "list"], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.contains("--bootstrap-server"), "{stderr}");
}
