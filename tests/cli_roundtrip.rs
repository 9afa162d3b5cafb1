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

/// One row of `karst groups describe`'s offsets table: topic, partition, current offset, log
/// end offset, lag, consumer id ("-" is None).
type OffsetsRow = (String, i32, Option<i64>, i64, Option<i64>, String);

/// The rows of the offsets table `karst groups describe` prints.
fn offsets_table(out: &str) -> Vec<OffsetsRow> {
    let mut rows = Vec::new();
    let mut lines = out.lines().skip_while(|l| !l.contains("CURRENT-OFFSET"));
    lines.next();
    for line in lines.take_while(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        rows.push((
            f[1].to_string(),
            f[2].parse().unwrap(),
            f[3].parse().ok(),
            f[4].parse().unwrap(),
            f[5].parse().ok(),
            f[6].to_string(),
        ));
    }
    rows
}

/// The NEW-OFFSET column of `karst groups reset-offsets`, by partition.
fn reset_plan(out: &str) -> Vec<(i32, i64)> {
    let mut lines = out.lines().skip_while(|l| !l.contains("NEW-OFFSET"));
    lines.next();
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect()
}

/// kafka-consumer-groups.sh's workflow with `karst`: `consume --group` commits what it printed;
/// `groups describe` shows committed offset, log end offset and lag per partition and the
/// members with their assignments; `reset-offsets` is a dry run unless --execute, is refused
/// while the group has members, and --to-earliest/--to-offset/--to-datetime/--to-latest land
/// where Kafka's tool puts them; `groups delete` removes the group.
#[test]
fn groups_describe_reset_offsets_and_delete() {
    let node = Node::start(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let b = node.bootstrap();
    ok(&karst(
        &[
            "topics",
            "--bootstrap-server",
            &b,
            "create",
            "gt",
            "--partitions",
            "3",
        ],
        None,
    ));
    let input: String = (0..30).map(|i| format!("k{i}:v{i}\n")).collect();
    ok(&karst(
        &[
            "produce",
            "--bootstrap-server",
            &b,
            "--topic",
            "gt",
            "--key-separator",
            ":",
        ],
        Some(input.as_bytes()),
    ));
    let consume = |max: &str| {
        ok(&karst(
            &[
                "consume",
                "--bootstrap-server",
                &b,
                "--topic",
                "gt",
                "--group",
                "cg",
                "--from-beginning",
                "--max-messages",
                max,
                "--timeout-ms",
                "10000",
            ],
            None,
        ))
    };
    let first = consume("10");
    assert_eq!(first.lines().count(), 10);
    assert!(
        ok(&karst(&["groups", "--bootstrap-server", &b, "list"], None))
            .lines()
            .any(|l| l == "cg")
    );

    let describe = || {
        ok(&karst(
            &[
                "groups",
                "--bootstrap-server",
                &b,
                "describe",
                "--group",
                "cg",
            ],
            None,
        ))
    };
    let out = describe();
    assert!(
        out.contains("Consumer group 'cg' has no active members."),
        "{out}"
    );
    let rows = offsets_table(&out);
    assert_eq!(rows.len(), 3, "{out}");
    let committed: i64 = rows.iter().map(|r| r.2.unwrap_or(0)).sum();
    let ends: i64 = rows.iter().map(|r| r.3).sum();
    let lag: i64 = rows.iter().map(|r| r.4.unwrap_or(r.3)).sum();
    assert_eq!((committed, ends, lag), (10, 30, 20), "{out}");

    let reset = |extra: &[&str]| {
        let mut args = vec![
            "groups",
            "--bootstrap-server",
            &b,
            "reset-offsets",
            "--group",
            "cg",
            "--topic",
            "gt",
        ];
        args.extend_from_slice(extra);
        karst(&args, None)
    };
    // Dry run: a plan of zeros, nothing changed.
    let plan = reset_plan(&ok(&reset(&["--to-earliest"])));
    assert_eq!(plan, vec![(0, 0), (1, 0), (2, 0)]);
    let committed_after: i64 = offsets_table(&describe())
        .iter()
        .map(|r| r.2.unwrap_or(0))
        .sum();
    assert_eq!(committed_after, 10, "a dry run changes nothing");
    // --to-offset is clamped to each partition's range.
    ok(&reset(&["--to-offset", "4", "--execute"]));
    for r in offsets_table(&describe()) {
        assert_eq!(r.2, Some(4.min(r.3)), "{r:?}");
    }
    // A datetime before every record is the beginning, one after them all is the end.
    ok(&reset(&[
        "--to-datetime",
        "1970-01-01T00:00:00.000",
        "--execute",
    ]));
    for r in offsets_table(&describe()) {
        assert_eq!((r.2, r.4), (Some(0), Some(r.3)), "{r:?}");
    }
    // From the beginning again: the group reads all 30.
    let all = consume("30");
    let mut values: Vec<&str> = all.lines().collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 30);
    ok(&reset(&[
        "--to-datetime",
        "2999-01-01T00:00:00Z",
        "--execute",
    ]));
    for r in offsets_table(&describe()) {
        assert_eq!((r.2, r.4), (Some(r.3), Some(0)), "{r:?}");
    }
    ok(&reset(&["--to-earliest", "--execute"]));

    // With a live member: describe shows it and its partitions; reset is refused.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut member = runtime.block_on(async {
        let mut c = karst::client::Consumer::new(karst::client::ConsumerConfig {
            client: karst::client::ClientConfig {
                client_id: "member-one".to_string(),
                ..karst::client::ClientConfig::new(&b)
            },
            group_id: Some("cg".to_string()),
            ..karst::client::ConsumerConfig::default()
        })
        .await
        .unwrap();
        c.subscribe(vec!["gt".to_string()]).await.unwrap();
        for _ in 0..100 {
            c.poll(std::time::Duration::from_millis(100)).await.unwrap();
            if c.assignment().len() == 3 {
                break;
            }
        }
        assert_eq!(c.assignment().len(), 3);
        c
    });
    let member_id = member.member_id().unwrap();
    let out = describe();
    for r in offsets_table(&out) {
        assert_eq!(r.5, member_id, "{out}");
    }
    let members_line = out
        .lines()
        .find(|l| l.starts_with("cg") && l.contains("member-one") && l.contains("gt-0"))
        .unwrap_or_else(|| panic!("no member row in {out}"));
    assert!(members_line.contains(&member_id), "{members_line}");
    assert!(out.contains("state Stable"), "{out}");
    let refused = reset(&["--to-latest", "--execute"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("inactive"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let delete = [
        "groups",
        "--bootstrap-server",
        &b,
        "delete",
        "--group",
        "cg",
    ];
    assert!(
        !karst(&delete, None).status.success(),
        "a group with members is not deleted"
    );
    runtime.block_on(async {
        member
            .poll(std::time::Duration::from_millis(10))
            .await
            .unwrap();
        member.close().await.unwrap();
    });
    let out = ok(&karst(&delete, None));
    assert!(out.contains("Deletion of requested consumer groups ('cg') was successful."));
    assert!(
        !ok(&karst(&["groups", "--bootstrap-server", &b, "list"], None))
            .lines()
            .any(|l| l == "cg")
    );
    let gone = karst(
        &[
            "groups",
            "--bootstrap-server",
            &b,
            "describe",
            "--group",
            "cg",
        ],
        None,
    );
    assert!(!gone.status.success());
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(
        stderr.contains("Consumer group 'cg' does not exist."),
        "{stderr}"
    );
}
