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
