//! The driver: runs a [`Node`] on tokio (real, or madsim's under `--cfg madsim`).
//!
//! Tasks:
//! - the accept loop hands each connection a reader task and a writer task;
//! - a reader reads size-prefixed frames (refusing any over `socket.request.max.bytes`),
//!   decodes them (in parallel with other connections) and queues them for the step loop; at
//!   most [`MAX_IN_FLIGHT_PER_CONNECTION`] requests of one connection are unanswered at a time;
//! - the one step loop owns the node: it steps each event, carries out the effects, and sleeps
//!   until the next event or `next_deadline()` (on its own OS thread in production, a task
//!   under madsim);
//! - a writer encodes its connection's responses and writes them in request order (the node
//!   may answer out of order while a fetch long-polls, a produce or an offset commit waits for
//!   fsync, or a JoinGroup waits for its join phase);
//! - an accepted connection is announced to the node (`Input::ConnectionOpened` with the peer
//!   host, which the group coordinator reports as the member's client host);
//! - the disk thread runs the log's SyncJobs (an OS thread in production; under madsim a
//!   spawned task, since the simulation has no OS threads).
//!
//! Only `tokio::{net, time, sync, spawn, io}` are used, and every `select!` is `biased;`, so the
//! same code runs deterministically under madsim.

mod connection;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::broker::{ConnectionId, Effect, Input, LogId, RequestId};
use crate::config::NodeConfig;
use crate::log::SyncJob;
use crate::node::Node;
use crate::protocol::codec::DecodedRequest;
use crate::storage::Storage;
use crate::Millis;
use connection::Outgoing;

/// Requests of one connection that may be queued or in progress at once (Kafka clients keep
/// at most 5 in flight for idempotent producers, librdkafka up to 1M by default).
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 1_000;
/// Events the step loop handles before looking at its timer again.
const MAX_EVENTS_PER_TURN: usize = 256;

/// The wall clock in ms since the epoch (madsim's virtual clock under simulation).
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as Millis)
        .unwrap_or(0)
}

/// What the step loop is told.
pub(crate) enum Event {
    Connected {
        connection: ConnectionId,
        /// The peer, for the group coordinator's client_host.
        peer: SocketAddr,
        outgoing: mpsc::UnboundedSender<Outgoing>,
        close: watch::Sender<bool>,
    },
    Request {
        id: RequestId,
        request: Box<DecodedRequest>,
    },
    Closed(ConnectionId),
    SyncDone {
        log: LogId,
        up_to_offset: i64,
        result: Result<(), String>,
    },
}

/// A running node.
pub struct NodeHandle {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<anyhow::Result<()>>>,
}

impl NodeHandle {
    /// The address the node listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Clean shutdown: stop serving, sync and close every log, write clean-shutdown markers.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.stopped.take() {
            Some(stopped) => stopped
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("step loop ended without reporting"))),
            None => Ok(()),
        }
    }

    /// Waits until the node stops by itself (a fatal error) — for the CLI.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        match self.stopped.as_mut() {
            Some(stopped) => {
                let result = stopped
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("step loop ended")));
                self.stopped = None;
                result
            }
            None => Ok(()),
        }
    }
}

/// Starts a node: binds its listener, recovers its state from `storage`, and serves.
pub async fn start(config: NodeConfig, storage: Arc<dyn Storage>) -> anyhow::Result<NodeHandle> {
    let bind = crate::config::listener_address(&config.listeners).to_string();
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|err| anyhow::anyhow!("binding {bind}: {err}"))?;
    let local_addr = listener.local_addr()?;
    let advertised = match &config.advertised_listeners {
        Some(address) => crate::config::listener_address(address).to_string(),
        None => local_addr.to_string(),
    };
    let now = now_ms();
    let seed = config
        .karst_seed
        .unwrap_or_else(|| (now as u64).rotate_left(17) ^ (config.node_id as u64));
    let max_frame_bytes = config.socket_request_max_bytes.max(0) as usize;
    let queue = config.queued_max_requests.max(1);
    let node = Node::open(config, &advertised, storage, seed, now)?;

    let (events_tx, events_rx) = mpsc::channel::<Event>(queue);
    let (sync_done_tx, sync_done_rx) = mpsc::unbounded_channel::<Event>();
    let disk = DiskThread::start(sync_done_tx);
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let (stopped_tx, stopped_rx) = oneshot::channel();
    let accept = tokio::spawn(accept_loop(listener, events_tx, max_frame_bytes));
    let run = async move {
        let result = step_loop(node, events_rx, sync_done_rx, disk, shutdown_rx).await;
        accept.abort();
        let _ = stopped_tx.send(result);
    };
    spawn_step_loop(run)?;
    Ok(NodeHandle {
        local_addr,
        shutdown: Some(shutdown_tx),
        stopped: Some(stopped_rx),
    })
}

/// Production: the step loop gets its own OS thread (a single-threaded runtime), so appends run
/// in parallel with the connection tasks reading and decoding the next requests instead of
/// taking turns with them on a shared worker.
#[cfg(not(madsim))]
fn spawn_step_loop(
    run: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("karst-step".to_string())
        .spawn(move || runtime.block_on(run))?;
    Ok(())
}

/// Simulation: no OS threads; the step loop is one more task.
#[cfg(madsim)]
fn spawn_step_loop(
    run: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tokio::spawn(run);
    Ok(())
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    events: mpsc::Sender<Event>,
    max_frame_bytes: usize,
) {
    let mut next_connection: ConnectionId = 0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_connection += 1;
        let connection = next_connection;
        tracing::debug!(connection, %peer, "accepted");
        // Registering waits for room in the bounded event queue, so a saturated step loop
        // stops the accepting and the kernel's backlog pushes back on new clients.
        #[cfg(not(madsim))]
        if !connection::spawn(connection, peer, stream, events.clone(), max_frame_bytes).await {
            return; // the step loop is gone
        }
        // The simulator's delayed accept holds up its own connection only: awaited here, one
        // delay held every connection queued behind it, and after a pause the node spent many
        // seconds on clients that had long given up (groups seed 653). `start` aborts this
        // loop when the step loop ends; a task that finds it gone drops its connection.
        #[cfg(madsim)]
        {
            let events = events.clone();
            tokio::spawn(async move {
                crate::buggify::delayed_accept().await;
                connection::spawn(connection, peer, stream, events, max_frame_bytes).await;
            });
        }
    }
}

/// Runs SyncJobs off the event loop and reports completions.
struct DiskThread {
    #[cfg(not(madsim))]
    jobs: std::sync::mpsc::Sender<(LogId, SyncJob)>,
    #[cfg(madsim)]
    done: mpsc::UnboundedSender<Event>,
}

impl DiskThread {
    #[cfg(not(madsim))]
    fn start(done: mpsc::UnboundedSender<Event>) -> DiskThread {
        let (jobs, receiver) = std::sync::mpsc::channel::<(LogId, SyncJob)>();
        std::thread::Builder::new()
            .name("karst-disk".to_string())
            .spawn(move || {
                while let Ok((log, job)) = receiver.recv() {
                    let up_to_offset = job.up_to_offset;
                    let result = job.run().map_err(|err| err.to_string());
                    if done
                        .send(Event::SyncDone {
                            log,
                            up_to_offset,
                            result,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            })
            .expect("spawning the disk thread");
        DiskThread { jobs }
    }

    #[cfg(madsim)]
    fn start(done: mpsc::UnboundedSender<Event>) -> DiskThread {
        DiskThread { done }
    }

    fn submit(&self, log: LogId, job: SyncJob) {
        #[cfg(not(madsim))]
        {
            let _ = self.jobs.send((log, job));
        }
        #[cfg(madsim)]
        {
            let done = self.done.clone();
            tokio::spawn(async move {
                crate::buggify::slow_fsync().await;
                let up_to_offset = job.up_to_offset;
                let result = job.run().map_err(|err| err.to_string());
                let _ = done.send(Event::SyncDone {
                    log,
                    up_to_offset,
                    result,
                });
            });
        }
    }
}

struct ConnectionHandle {
    outgoing: mpsc::UnboundedSender<Outgoing>,
    close: watch::Sender<bool>,
}

async fn step_loop(
    mut node: Node,
    mut events: mpsc::Receiver<Event>,
    mut sync_done: mpsc::UnboundedReceiver<Event>,
    disk: DiskThread,
    mut shutdown: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let mut connections: BTreeMap<ConnectionId, ConnectionHandle> = BTreeMap::new();
    let mut effects = Vec::new();
    // One timer for the node's deadline, re-armed only when the deadline moves: most turns
    // (a request in, its response out) leave it where it was, and a fresh sleep per turn costs
    // a timer registration each (under madsim a timer that cannot be cancelled).
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    let mut armed_for: Option<Millis> = None;
    loop {
        // A deadline that came due while the last turn's events were stepped is served before
        // sleeping again (one `next_deadline` and one clock read per turn).
        let now = now_ms();
        let mut deadline = node.next_deadline();
        if deadline.is_some_and(|deadline| deadline <= now) {
            node.step(now, Input::Timer, &mut effects);
            #[cfg(any(debug_assertions, madsim))]
            node.invariants();
            carry_out(&mut effects, &mut connections, &disk);
            deadline = node.next_deadline();
        }
        if let Some(deadline) = deadline {
            if armed_for != Some(deadline) {
                // At least 1 ms, as tokio's and madsim's `sleep` round up: a deadline still due
                // after the timer step must not spin without time passing.
                let sleep_ms = (deadline - now_ms()).max(1) as u64;
                timer.as_mut().reset(
                    tokio::time::Instant::now() + std::time::Duration::from_millis(sleep_ms),
                );
                armed_for = Some(deadline);
            }
        }
        let event = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(event) = sync_done.recv() => Some(event),
            event = events.recv() => match event {
                Some(event) => Some(event),
                None => break,
            },
            _ = &mut timer, if deadline.is_some() => {
                armed_for = None;
                None
            }
        };
        let mut handled = 0;
        let mut next = event;
        loop {
            let input = match next.take() {
                None => Some(Input::Timer),
                Some(event) => to_input(event, &mut connections),
            };
            if let Some(input) = input {
                node.step(now_ms(), input, &mut effects);
                // Every step of a test or simulated node is checked (DESIGN.md); a release
                // production node skips it.
                #[cfg(any(debug_assertions, madsim))]
                node.invariants();
                carry_out(&mut effects, &mut connections, &disk);
            }
            handled += 1;
            if handled >= MAX_EVENTS_PER_TURN {
                break;
            }
            // Drain what is already queued before sleeping again.
            next = match sync_done.try_recv() {
                Ok(event) => Some(event),
                Err(_) => match events.try_recv() {
                    Ok(event) => Some(event),
                    Err(_) => break,
                },
            };
        }
    }
    for handle in connections.values() {
        let _ = handle.close.send(true);
    }
    node.close()
}

fn to_input(
    event: Event,
    connections: &mut BTreeMap<ConnectionId, ConnectionHandle>,
) -> Option<Input> {
    match event {
        Event::Connected {
            connection,
            peer,
            outgoing,
            close,
        } => {
            connections.insert(connection, ConnectionHandle { outgoing, close });
            // Kafka's form of a client host: "/" and the address, no port.
            Some(Input::ConnectionOpened {
                connection,
                client_host: format!("/{}", peer.ip()),
            })
        }
        Event::Request { id, request } => Some(Input::Request { id, request }),
        Event::Closed(connection) => {
            connections.remove(&connection);
            Some(Input::ConnectionClosed(connection))
        }
        Event::SyncDone {
            log,
            up_to_offset,
            result,
        } => Some(Input::SyncCompleted {
            log,
            up_to_offset,
            result,
        }),
    }
}

fn carry_out(
    effects: &mut Vec<Effect>,
    connections: &mut BTreeMap<ConnectionId, ConnectionHandle>,
    disk: &DiskThread,
) {
    for effect in effects.drain(..) {
        match effect {
            Effect::Respond {
                id,
                api_key,
                api_version,
                correlation_id,
                response,
            } => {
                if let Some(handle) = connections.get(&id.connection) {
                    let _ = handle.outgoing.send(Outgoing::Response {
                        sequence: id.sequence,
                        api_key,
                        api_version,
                        correlation_id,
                        response,
                    });
                }
            }
            Effect::NoResponse { id } => {
                if let Some(handle) = connections.get(&id.connection) {
                    let _ = handle.outgoing.send(Outgoing::Nothing {
                        sequence: id.sequence,
                    });
                }
            }
            Effect::Sync { log, job } => disk.submit(log, job),
            Effect::Close { connection } => {
                if let Some(handle) = connections.get(&connection) {
                    let _ = handle.close.send(true);
                }
            }
        }
    }
}
