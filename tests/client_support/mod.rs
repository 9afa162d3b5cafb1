//! Helpers of the client and CLI integration tests: a real `karst node` process on an
//! ephemeral port, and a frame-aware TCP proxy that can cut connections on purpose.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `karst node` process with its own data directory.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Node {
    /// A node on an ephemeral port with a fresh data directory.
    pub fn start(extra: &[&str]) -> Node {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut node = Node::start_in(&data_dir, "127.0.0.1:0", extra);
        node._temp = Some(temp);
        node
    }

    /// A node on `listener` with data in `data_dir`; `extra` are more command-line arguments.
    pub fn start_in(data_dir: &Path, listener: &str, extra: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_karst"))
            .arg("node")
            .arg("--listeners")
            .arg(listener)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning karst node");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Node {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// SIGTERM (clean shutdown) and wait.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// Stops the node and starts it again on the same port and data directory.
    pub fn restart(&mut self, extra: &[&str]) {
        self.stop();
        let temp = self._temp.take();
        let listener = self.addr.to_string();
        // The port was just released; retry briefly in case the OS still holds it.
        for attempt in 0..50 {
            let started =
                std::panic::catch_unwind(|| Node::start_in(&self.data_dir, &listener, extra));
            match started {
                Ok(mut node) => {
                    node._temp = temp;
                    std::mem::swap(self, &mut node);
                    return;
                }
                Err(_) if attempt < 49 => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of a node. It reads the client's request frames and, for every
/// `drop_every`-th Produce request (api key 0), forwards it to the broker, waits until the
/// broker has had time to write it, then closes both sides before the response comes back:
/// the client sees a lost connection for a request the broker did execute.
pub struct ChaosProxy {
    pub addr: SocketAddr,
    pub drops: Arc<AtomicUsize>,
}

impl ChaosProxy {
    /// Binds the proxy's port now (so the node can advertise it); `start` connects it.
    pub async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    pub fn start(
        listener: tokio::net::TcpListener,
        upstream: SocketAddr,
        drop_every: usize,
        max_drops: usize,
    ) -> ChaosProxy {
        let addr = listener.local_addr().unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let produce_seen = Arc::new(AtomicUsize::new(0));
        let drops_out = drops.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let drops = drops.clone();
                let produce_seen = produce_seen.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    loop {
                        let mut size = [0u8; 4];
                        if client_read.read_exact(&mut size).await.is_err() {
                            break;
                        }
                        let mut frame = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
                        if client_read.read_exact(&mut frame).await.is_err() {
                            break;
                        }
                        let api_key = if frame.len() >= 2 {
                            i16::from_be_bytes([frame[0], frame[1]])
                        } else {
                            -1
                        };
                        let mut cut = false;
                        if api_key == 0 {
                            let n = produce_seen.fetch_add(1, Ordering::SeqCst) + 1;
                            if n.is_multiple_of(drop_every)
                                && drops.load(Ordering::SeqCst) < max_drops
                            {
                                drops.fetch_add(1, Ordering::SeqCst);
                                // No answer may reach the client from here on.
                                down.abort();
                                cut = true;
                            }
                        }
                        if server_write.write_all(&size).await.is_err()
                            || server_write.write_all(&frame).await.is_err()
                        {
                            break;
                        }
                        if cut {
                            // Let the broker execute the request, then close both sides.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                    }
                    down.abort();
                });
            }
        });
        ChaosProxy {
            addr,
            drops: drops_out,
        }
    }
}

/// librdkafka's mock cluster (from the pinned confluent-kafka in `.venv`), run by
/// `tests/interop/mock_cluster.py`. It lives until this handle is dropped (the helper
/// exits when its stdin closes).
pub struct MockCluster {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
    bootstrap: String,
}

impl MockCluster {
    /// Starts a mock cluster of `brokers` brokers. Returns None (after printing why) when
    /// `.venv` is missing, except under CI=true where that is a failure.
    pub fn start(brokers: u32) -> Option<MockCluster> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/bin/python");
        if !python.exists() {
            let why = format!(
                "{} is missing: librdkafka's mock cluster comes from the confluent-kafka pinned \
                 in tests/interop/requirements.txt",
                python.display()
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let mut child = Command::new(python)
            .arg(root.join("tests/interop/mock_cluster.py"))
            .arg(brokers.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning the mock cluster helper");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading the mock bootstrap");
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap ")
            .unwrap_or_else(|| panic!("mock cluster helper said {line:?}"))
            .to_string();
        Some(MockCluster {
            child,
            stdin,
            stdout,
            bootstrap,
        })
    }

    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Creates a topic (the mock does not serve CreateTopics).
    pub fn create_topic(&mut self, name: &str, partitions: i32) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("helper stdin");
        writeln!(stdin, "topic {name} {partitions}").expect("writing to the helper");
        stdin.flush().expect("flushing the helper");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("helper answer");
        assert_eq!(line.trim(), "ok", "creating {name} on the mock cluster");
    }
}

impl MockCluster {
    /// The next requests of `api_key` fail with `codes`, one each, in order.
    pub fn push_request_errors(&mut self, api_key: i16, codes: &[i16]) {
        use std::io::Write;
        let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
        let stdin = self.stdin.as_mut().expect("helper stdin");
        writeln!(stdin, "errors {api_key} {}", codes.join(" ")).expect("writing to the helper");
        stdin.flush().expect("flushing the helper");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("helper answer");
        assert_eq!(line.trim(), "ok", "injecting errors on the mock cluster");
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        // Closing stdin ends the helper; kill it if it does not go.
        self.stdin.take();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a shared test body runs: a real `karst node` or librdkafka's mock cluster.
pub enum Target {
    Karst(Node),
    Mock(MockCluster),
}

impl Target {
    /// A karst node with fast group settings for tests (no initial rebalance delay, short
    /// session timeouts allowed).
    pub fn karst() -> Target {
        let fast_groups = [
            "--set",
            "group.initial.rebalance.delay.ms=0",
            "--set",
            "group.min.session.timeout.ms=500",
        ];
        match std::panic::catch_unwind(|| Node::start(&fast_groups)) {
            Ok(node) => Target::Karst(node),
            Err(_) => {
                // A node without the group coordinator rejects these settings.
                eprintln!("karst node refused the group settings; starting it without them");
                Target::Karst(Node::start(&[]))
            }
        }
    }

    /// The mock cluster with three brokers, or None when it cannot run here (see
    /// [`MockCluster::start`]).
    pub fn mock() -> Option<Target> {
        MockCluster::start(3).map(Target::Mock)
    }

    /// Whether the coordinator accepts an OffsetCommit of the current generation while a
    /// rebalance is pending, as Kafka does (the commit a member makes before it rejoins). The
    /// librdkafka mock does not: in its Joining state it answers every OffsetCommit with
    /// REBALANCE_IN_PROGRESS (rd_kafka_mock_cgrp_check_state), so a member's pre-rejoin commit
    /// is lost there and the partition's next owner re-reads from the previous commit.
    pub fn commits_during_rebalance(&self) -> bool {
        matches!(self, Target::Karst(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Karst(_) => "karst",
            Target::Mock(_) => "librdkafka mock",
        }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Target::Karst(node) => node.bootstrap(),
            Target::Mock(mock) => mock.bootstrap(),
        }
    }

    pub async fn create_topic(&mut self, name: &str, partitions: i32) {
        match self {
            Target::Karst(node) => {
                let admin =
                    karst::client::Admin::new(karst::client::ClientConfig::new(&node.bootstrap()))
                        .await
                        .unwrap();
                let results = admin
                    .create_topics(&[karst::client::NewTopic::new(name, partitions, 1)], false)
                    .await
                    .unwrap();
                results[0].1.clone().unwrap();
            }
            Target::Mock(mock) => mock.create_topic(name, partitions),
        }
    }

    /// Whether the target serves the classic group protocol (the seven APIs librdkafka also
    /// requires). A karst node gets it with the coordinator wiring (GROUPS_CONTRACT.md).
    pub async fn serves_groups(&self) -> bool {
        let cluster =
            karst::client::Cluster::connect(karst::client::ClientConfig::new(&self.bootstrap()))
                .await
                .unwrap();
        let conn = cluster.any_connection().await.unwrap();
        // FindCoordinator, OffsetCommit, OffsetFetch, JoinGroup, SyncGroup, Heartbeat, LeaveGroup.
        [10i16, 8, 9, 11, 14, 12, 13]
            .iter()
            .all(|k| conn.api_versions().contains_key(k))
    }
}

/// `RUST_LOG=karst=debug` shows the client's protocol decisions when a test fails.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A record's value as text (tests write UTF-8 values; a missing value reads as "").
pub fn value(r: &karst::client::ConsumerRecord) -> String {
    String::from_utf8(r.value.clone().unwrap_or_default().to_vec()).unwrap()
}
