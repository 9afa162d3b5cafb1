//! One TCP connection to one broker: Kafka framing (a 4-byte big-endian size, then the
//! message), correlation of responses to requests, pipelining, and ApiVersions negotiation.
//!
//! Contract:
//! - [`Connection::connect`] opens the socket and sends ApiVersions (v3, falling back to v0 when
//!   the broker answers UNSUPPORTED_VERSION as KIP-511 prescribes) before any other request; the
//!   version of every later request is the highest both sides support ([`Connection::version_for`]).
//! - Any number of requests may be outstanding (up to [`MAX_QUEUED_REQUESTS`] queued for
//!   writing); Kafka answers them in order, and each answer is routed by its correlation id.
//! - A write or read failure, an oversized or unparsable frame, or a response with an unknown
//!   correlation id closes the connection and fails every outstanding request with
//!   [`ClientError::Disconnected`]; the connection is then dead for good ([`Connection::is_closed`]),
//!   and the caller reconnects.
//! - A request that gets no answer within `request.timeout.ms` fails with
//!   [`ClientError::Timeout`] and closes the connection (as the Java client does), since a
//!   later answer could not be told apart from a stale one by anyone but us.
//! - Produce with acks=0 gets no response: [`Connection::send_no_response`].
//!
//! Only the reader and writer tasks touch the socket; they use `tokio::{net, io, sync, spawn}`
//! so the same code runs under madsim.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{ClientError, Result};

/// Requests queued for the writer task of one connection; senders wait when it is full.
pub const MAX_QUEUED_REQUESTS: usize = 1024;
/// Frames written together before one flush (bounds the writer's batching loop).
const MAX_FRAMES_PER_FLUSH: usize = 64;
/// The ApiVersions version we try first (KIP-511).
const API_VERSIONS_FIRST: i16 = 3;
/// UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;
/// Starting buffer for a request other than Produce (a Fetch of a few partitions, Metadata,
/// a group request); larger ones grow it.
const SMALL_REQUEST_BYTES: usize = 256;

type Reply = oneshot::Sender<Result<Bytes>>;

struct Pending {
    reply: Reply,
    response_header_version: i16,
}

struct Outgoing {
    correlation_id: i32,
    frame: Bytes,
    pending: Option<Pending>,
}

struct Shared {
    addr: String,
    closed: AtomicBool,
    close_reason: Mutex<Option<String>>,
    pending: Mutex<BTreeMap<i32, Pending>>,
    shutdown: Notify,
}

impl Shared {
    fn close(&self, reason: String) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        *self.close_reason.lock().unwrap() = Some(reason.clone());
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        for (_, p) in pending {
            let _ = p.reply.send(Err(ClientError::Disconnected {
                addr: self.addr.clone(),
                reason: reason.clone(),
            }));
        }
        self.shutdown.notify_one();
    }

    fn disconnected(&self) -> ClientError {
        ClientError::Disconnected {
            addr: self.addr.clone(),
            reason: self
                .close_reason
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| "closed".to_string()),
        }
    }
}

/// A connection to one broker. Cheap to share behind an `Arc`; dropping the last handle closes
/// the socket.
pub struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Outgoing>,
    next_correlation_id: AtomicI32,
    client_id: StrBytes,
    request_timeout: Duration,
    /// api key -> (min, max) advertised by the broker.
    versions: BTreeMap<i16, (i16, i16)>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared
            .close("connection dropped by the client".to_string());
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.shared.addr)
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` and negotiates API versions.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        setup_timeout_ms: u64,
        request_timeout_ms: u64,
        max_response_bytes: usize,
    ) -> Result<Connection> {
        let connect_error = |reason: String| ClientError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(
            Duration::from_millis(setup_timeout_ms),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| connect_error(format!("no connection within {setup_timeout_ms} ms")))?
        .map_err(|e| connect_error(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = tokio::io::split(stream);
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            closed: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            pending: Mutex::new(BTreeMap::new()),
            shutdown: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(MAX_QUEUED_REQUESTS);
        tokio::spawn(write_loop(shared.clone(), write_half, rx));
        tokio::spawn(read_loop(shared.clone(), read_half, max_response_bytes));
        let mut conn = Connection {
            shared,
            tx,
            next_correlation_id: AtomicI32::new(1),
            client_id: StrBytes::from_string(client_id.to_string()),
            request_timeout: Duration::from_millis(request_timeout_ms),
            versions: BTreeMap::new(),
        };
        conn.versions = conn.negotiate_versions().await.map_err(|e| match e {
            ClientError::Disconnected { reason, .. } => {
                connect_error(format!("closed during ApiVersions: {reason}"))
            }
            other => other,
        })?;
        Ok(conn)
    }

    async fn negotiate_versions(&self) -> Result<BTreeMap<i16, (i16, i16)>> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("karst"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response = self.send_versioned(&request, API_VERSIONS_FIRST).await?;
        if response.error_code == UNSUPPORTED_VERSION {
            // KIP-511: the broker answered in v0 with the versions it supports; retry with its
            // highest ApiVersions version (v0 carries no fields we would lose).
            let max = response
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                .map(|k| k.max_version)
                .unwrap_or(0)
                .min(API_VERSIONS_FIRST);
            let request = if max >= 3 {
                request
            } else {
                ApiVersionsRequest::default()
            };
            response = self.send_versioned(&request, max).await?;
        }
        if let Some(e) = ClientError::from_code(response.error_code, None) {
            return Err(e);
        }
        Ok(response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// The version ranges the broker advertised, by API key.
    pub fn api_versions(&self) -> &BTreeMap<i16, (i16, i16)> {
        &self.versions
    }

    /// The highest version of `R` both sides support, capped at `cap` (the highest version
    /// whose fields this client fills in correctly).
    pub fn version_for<R: Request>(&self, cap: i16) -> Result<i16> {
        let ours = R::VERSIONS;
        let (their_min, their_max) = self.versions.get(&R::KEY).copied().ok_or_else(|| {
            ClientError::Unsupported(format!(
                "{:?} (api key {}) is not advertised by {}",
                ApiKey::try_from(R::KEY).ok(),
                R::KEY,
                self.shared.addr
            ))
        })?;
        let max = ours.max.min(their_max).min(cap);
        let min = ours.min.max(their_min);
        if max < min {
            return Err(ClientError::Unsupported(format!(
                "no common version of api key {} (ours {}..={}, broker {}..={})",
                R::KEY,
                ours.min,
                ours.max.min(cap),
                their_min,
                their_max
            )));
        }
        Ok(max)
    }

    /// Whether the broker advertises `R` at all.
    pub fn supports<R: Request>(&self) -> bool {
        self.versions.contains_key(&R::KEY)
    }

    /// Sends `request` at the negotiated version (capped at `cap`) and awaits its response.
    pub async fn send<R: Request>(&self, request: &R, cap: i16) -> Result<R::Response> {
        let version = self.version_for::<R>(cap)?;
        self.send_versioned(request, version).await
    }

    /// Sends `request` at exactly `version` and awaits its response.
    pub async fn send_versioned<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<R::Response> {
        self.start_versioned(request, version).await?.wait().await
    }

    /// Queues `request` (negotiated version, capped at `cap`) for the socket and returns a
    /// handle on its response. Requests started one after another from one task are written
    /// in that order, which is what idempotent produce relies on.
    pub async fn start<R: Request>(
        &self,
        request: &R,
        cap: i16,
    ) -> Result<PendingResponse<R::Response>> {
        let version = self.version_for::<R>(cap)?;
        self.start_versioned(request, version).await
    }

    async fn start_versioned<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<PendingResponse<R::Response>> {
        let (frame, correlation_id) = self.encode(request, version)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let pending = Pending {
            reply: reply_tx,
            response_header_version: <R::Response as HeaderVersion>::header_version(version),
        };
        self.enqueue(Outgoing {
            correlation_id,
            frame,
            pending: Some(pending),
        })
        .await?;
        Ok(PendingResponse {
            reply: reply_rx,
            version,
            api_key: R::KEY,
            shared: self.shared.clone(),
            timeout: crate::buggify::request_timeout(self.request_timeout),
            _response: std::marker::PhantomData,
        })
    }

    /// Sends a request that has no response (Produce with acks=0); returns once it is queued
    /// for the socket.
    pub async fn send_no_response<R: Request>(&self, request: &R, cap: i16) -> Result<()> {
        let version = self.version_for::<R>(cap)?;
        let (frame, correlation_id) = self.encode(request, version)?;
        self.enqueue(Outgoing {
            correlation_id,
            frame,
            pending: None,
        })
        .await
    }

    fn encode<R: Request>(&self, request: &R, version: i16) -> Result<(Bytes, i32)> {
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let header_version = R::header_version(version);
        // Sizing a message walks it as far as encoding does, so only a Produce (whose record
        // bytes would otherwise be copied again as the buffer grows) is sized first; other
        // requests are small, and the size prefix is filled in afterwards.
        let capacity = if R::KEY == ApiKey::Produce as i16 {
            header
                .compute_size(header_version)
                .and_then(|h| request.compute_size(version).map(|b| 4 + h + b))
                .map_err(|e| self.encode_error::<R>(version, e))?
        } else {
            SMALL_REQUEST_BYTES
        };
        let mut buf = BytesMut::with_capacity(capacity);
        buf.put_i32(0);
        header
            .encode(&mut buf, header_version)
            .map_err(|e| self.encode_error::<R>(version, e))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| self.encode_error::<R>(version, e))?;
        let size = i32::try_from(buf.len() - 4).map_err(|_| {
            ClientError::Protocol(format!(
                "{} v{version} request of {} bytes is too large to frame",
                api_name(R::KEY),
                buf.len() - 4
            ))
        })?;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        Ok((buf.freeze(), correlation_id))
    }

    fn encode_error<R: Request>(&self, version: i16, e: anyhow::Error) -> ClientError {
        ClientError::Protocol(format!(
            "cannot encode {} v{version} request: {e}",
            api_name(R::KEY)
        ))
    }

    async fn enqueue(&self, outgoing: Outgoing) -> Result<()> {
        if self.is_closed() {
            return Err(self.shared.disconnected());
        }
        self.tx
            .send(outgoing)
            .await
            .map_err(|_| self.shared.disconnected())
    }
}

/// A request on its way; [`PendingResponse::wait`] gets its answer (or times out after
/// `request.timeout.ms`, closing the connection).
pub struct PendingResponse<T> {
    reply: oneshot::Receiver<Result<Bytes>>,
    version: i16,
    api_key: i16,
    shared: Arc<Shared>,
    timeout: Duration,
    _response: std::marker::PhantomData<fn() -> T>,
}

impl<T: Decodable> PendingResponse<T> {
    /// Waits `timeout` instead of `request.timeout.ms` (JoinGroup may be held by the
    /// coordinator for up to the rebalance timeout, as Kafka's clients allow for).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub async fn wait(self) -> Result<T> {
        self.wait_or(|_, _| None).await
    }

    /// Like [`PendingResponse::wait`], but a body the decoder rejects is first offered to
    /// `salvage` (the body and its version): Some(response) is returned as the answer and the
    /// connection stays open (the frame was intact, only a field broke the schema, e.g. an
    /// error response from a broker that writes a null where Kafka writes empty bytes).
    pub async fn wait_or(self, salvage: impl FnOnce(&Bytes, i16) -> Option<T>) -> Result<T> {
        let body = match tokio::time::timeout(self.timeout, self.reply).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(self.shared.disconnected()),
            Err(_) => {
                let error = ClientError::Timeout {
                    api: api_name(self.api_key),
                    addr: self.shared.addr.clone(),
                    timeout_ms: self.timeout.as_millis() as u64,
                };
                self.shared.close(error.to_string());
                return Err(error);
            }
        };
        let mut decoding = body.clone();
        T::decode(&mut decoding, self.version).or_else(|e| {
            if let Some(salvaged) = salvage(&body, self.version) {
                return Ok(salvaged);
            }
            let error = format!(
                "cannot decode {} v{} response: {e}",
                api_name(self.api_key),
                self.version
            );
            self.shared.close(error.clone());
            Err(ClientError::Protocol(error))
        })
    }
}

/// A readable name for an API key in errors.
pub fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("api key {key}"),
    }
}

async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut writer: W,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut frames = 0;
        while let Some(outgoing) = next.take() {
            if shared.closed.load(Ordering::SeqCst) {
                if let Some(p) = outgoing.pending {
                    let _ = p.reply.send(Err(shared.disconnected()));
                }
                continue;
            }
            if let Some(p) = outgoing.pending {
                // Registered before the bytes leave, so the answer always finds it.
                shared
                    .pending
                    .lock()
                    .unwrap()
                    .insert(outgoing.correlation_id, p);
            }
            if let Err(e) = writer.write_all(&outgoing.frame).await {
                shared.close(format!("write failed: {e}"));
                break;
            }
            frames += 1;
            if frames < MAX_FRAMES_PER_FLUSH {
                next = rx.try_recv().ok();
            }
        }
        if shared.closed.load(Ordering::SeqCst) {
            break;
        }
        if let Err(e) = writer.flush().await {
            shared.close(format!("write failed: {e}"));
            break;
        }
    }
    // Fail whatever is still queued, then half-close so the broker ends the connection too.
    rx.close();
    while let Ok(outgoing) = rx.try_recv() {
        if let Some(p) = outgoing.pending {
            let _ = p.reply.send(Err(shared.disconnected()));
        }
    }
    shared.close("writer stopped".to_string());
    let _ = writer.shutdown().await;
}

async fn read_loop<R: tokio::io::AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut reader: R,
    max_response_bytes: usize,
) {
    // One registration with `shutdown` for the connection's life, not one per frame.
    let shutdown = shared.shutdown.notified();
    tokio::pin!(shutdown);
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            frame = read_frame(&mut reader, max_response_bytes) => frame,
        };
        let mut frame = match frame {
            Ok(frame) => frame,
            Err(reason) => {
                shared.close(reason);
                break;
            }
        };
        if frame.len() < 4 {
            shared.close("response shorter than its correlation id".to_string());
            break;
        }
        let correlation_id = (&frame[..4]).get_i32();
        let pending = shared.pending.lock().unwrap().remove(&correlation_id);
        let Some(pending) = pending else {
            shared.close(format!(
                "response with unknown correlation id {correlation_id}"
            ));
            break;
        };
        match ResponseHeader::decode(&mut frame, pending.response_header_version) {
            Ok(_) => {
                let _ = pending.reply.send(Ok(frame));
            }
            Err(e) => {
                let reason = format!("bad response header: {e}");
                let _ = pending
                    .reply
                    .send(Err(ClientError::Protocol(reason.clone())));
                shared.close(reason);
                break;
            }
        }
    }
    if shared.closed.load(Ordering::SeqCst) {
        shared.shutdown.notify_one();
    }
}

async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    max_response_bytes: usize,
) -> std::result::Result<Bytes, String> {
    let mut size = [0u8; 4];
    reader.read_exact(&mut size).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "closed by the broker".to_string()
        } else {
            format!("read failed: {e}")
        }
    })?;
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > max_response_bytes {
        return Err(format!(
            "response size {size} outside 0..={max_response_bytes}"
        ));
    }
    let mut body = BytesMut::zeroed(size as usize);
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("read failed mid-frame: {e}"))?;
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::ApiVersionsResponse;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    use kafka_protocol::protocol::decode_request_header_from_buffer;

    /// A scripted peer speaking Kafka framing: answers ApiVersions, then echoes Metadata
    /// requests in reverse order of arrival for the pipelining test.
    async fn serve_one(listener: tokio::net::TcpListener, reverse_pairs: bool) {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut held: Option<(i32, i16)> = None;
        loop {
            let mut size = [0u8; 4];
            if stream.read_exact(&mut size).await.is_err() {
                return;
            }
            let mut body = BytesMut::zeroed(i32::from_be_bytes(size) as usize);
            stream.read_exact(&mut body).await.unwrap();
            let mut body = body.freeze();
            let header = decode_request_header_from_buffer(&mut body).unwrap();
            let mut out = BytesMut::new();
            let key = header.request_api_key;
            let version = header.request_api_version;
            let reply = |cid: i32, key: i16, version: i16, out: &mut BytesMut| {
                let mut payload = BytesMut::new();
                if key == ApiKey::ApiVersions as i16 {
                    ResponseHeader::default()
                        .with_correlation_id(cid)
                        .encode(&mut payload, 0)
                        .unwrap();
                    ApiVersionsResponse::default()
                        .with_api_keys(vec![
                            ApiVersion::default()
                                .with_api_key(18)
                                .with_min_version(0)
                                .with_max_version(4),
                            ApiVersion::default()
                                .with_api_key(3)
                                .with_min_version(0)
                                .with_max_version(9),
                        ])
                        .encode(&mut payload, version)
                        .unwrap();
                } else {
                    ResponseHeader::default()
                        .with_correlation_id(cid)
                        .encode(&mut payload, MetadataResponse::header_version(version))
                        .unwrap();
                    MetadataResponse::default()
                        .with_controller_id(kafka_protocol::messages::BrokerId(cid))
                        .encode(&mut payload, version)
                        .unwrap();
                }
                out.put_i32(payload.len() as i32);
                out.extend_from_slice(&payload);
            };
            if key == ApiKey::Metadata as i16 && reverse_pairs {
                match held.take() {
                    None => {
                        held = Some((header.correlation_id, version));
                        continue;
                    }
                    Some((cid, v)) => {
                        reply(header.correlation_id, key, version, &mut out);
                        reply(cid, key, v, &mut out);
                    }
                }
            } else {
                reply(header.correlation_id, key, version, &mut out);
            }
            stream.write_all(&out).await.unwrap();
        }
    }

    #[tokio::test]
    async fn negotiates_versions_and_routes_responses_by_correlation_id() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve_one(listener, true));
        let conn = Connection::connect(&addr, "test", 5000, 5000, 1 << 20)
            .await
            .unwrap();
        // Metadata: ours 0..=13, broker 0..=9 -> 9; capped at 7 -> 7.
        assert_eq!(conn.version_for::<MetadataRequest>(12).unwrap(), 9);
        assert_eq!(conn.version_for::<MetadataRequest>(7).unwrap(), 7);
        assert!(matches!(
            conn.version_for::<kafka_protocol::messages::ProduceRequest>(12),
            Err(ClientError::Unsupported(_))
        ));
        // Two pipelined requests answered in reverse order still reach their callers
        // (the fake broker puts the correlation id into controller_id).
        let req = MetadataRequest::default();
        let (a, b) = tokio::join!(conn.send(&req, 9), conn.send(&req, 9));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.controller_id, b.controller_id);
        assert!(a.controller_id.0 < b.controller_id.0);
    }

    #[tokio::test]
    async fn refused_connection_is_a_clear_connect_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = Connection::connect(&addr, "test", 2000, 2000, 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&addr));
    }

    #[tokio::test]
    async fn peer_close_fails_outstanding_requests() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            // Answer ApiVersions, then close on the first Metadata request.
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).await.unwrap();
            let mut body = BytesMut::zeroed(i32::from_be_bytes(size) as usize);
            stream.read_exact(&mut body).await.unwrap();
            let mut body = body.freeze();
            let header = decode_request_header_from_buffer(&mut body).unwrap();
            let mut payload = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut payload, 0)
                .unwrap();
            ApiVersionsResponse::default()
                .with_api_keys(vec![ApiVersion::default()
                    .with_api_key(3)
                    .with_min_version(0)
                    .with_max_version(12)])
                .encode(&mut payload, header.request_api_version)
                .unwrap();
            let mut out = BytesMut::new();
            out.put_i32(payload.len() as i32);
            out.extend_from_slice(&payload);
            stream.write_all(&out).await.unwrap();
            stream.read_exact(&mut size).await.unwrap();
            drop(stream);
        });
        let conn = Connection::connect(&addr, "test", 5000, 5000, 1 << 20)
            .await
            .unwrap();
        let err = conn
            .send(&MetadataRequest::default(), 12)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Disconnected { .. }), "{err}");
        assert!(conn.is_closed());
    }
}
