//! One client connection: a reader task (frames in, decoded requests to the step loop) and a
//! writer task (responses out, in request order).

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};

use super::{Event, MAX_IN_FLIGHT_PER_CONNECTION};
use crate::broker::{ConnectionId, RequestId};
use crate::protocol::codec::{self, Decoded};
use crate::protocol::fetch_frame::{self, Frames};

/// Read buffer grown in steps of this size.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A writer flushes once this much is encoded, even if more responses are ready.
const WRITE_FLUSH_BYTES: usize = 1 << 20;
/// ... or once this many record sets wait to be written from where they are, which keeps most
/// flushes to one vectored write (the kernel takes at most IOV_MAX, 1024, slices per call, two
/// per record set; std splits longer lists and `write_frames` writes the rest).
const WRITE_FLUSH_RECORD_SETS: usize = 256;

/// What the writer is given.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Response {
        sequence: u64,
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        response: Box<ResponseKind>,
    },
    /// A complete frame prepared by the reader (ApiVersions with UNSUPPORTED_VERSION).
    Raw { sequence: u64, frame: BytesMut },
    /// No answer for this sequence (acks=0).
    Nothing { sequence: u64 },
}

impl Outgoing {
    fn sequence(&self) -> u64 {
        match self {
            Outgoing::Response { sequence, .. }
            | Outgoing::Raw { sequence, .. }
            | Outgoing::Nothing { sequence } => *sequence,
        }
    }
}

/// Registers the connection with the step loop and spawns its tasks. False if the step loop
/// has stopped.
pub(crate) async fn spawn(
    connection: ConnectionId,
    peer: std::net::SocketAddr,
    stream: tokio::net::TcpStream,
    events: mpsc::Sender<Event>,
    max_frame_bytes: usize,
) -> bool {
    let (outgoing_tx, outgoing_rx) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = watch::channel(false);
    if events
        .send(Event::Connected {
            connection,
            peer,
            outgoing: outgoing_tx.clone(),
            close: close_tx.clone(),
        })
        .await
        .is_err()
    {
        return false;
    }
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION));
    #[cfg(not(madsim))]
    let (read_half, write_half) = stream.into_split();
    #[cfg(madsim)]
    let (read_half, write_half) = tokio::io::split(stream);
    let read_half = crate::buggify::short_reads(read_half);
    tokio::spawn(writer(
        connection,
        write_half,
        outgoing_rx,
        close_rx.clone(),
        permits.clone(),
    ));
    tokio::spawn(async move {
        reader(
            connection,
            read_half,
            &events,
            &outgoing_tx,
            close_rx,
            permits,
            max_frame_bytes,
        )
        .await;
        let _ = close_tx.send(true);
        let _ = events.send(Event::Closed(connection)).await;
    });
    true
}

/// Fills `buffer` until it holds at least `needed` bytes. False on EOF, error or close.
async fn fill<R: AsyncRead + Unpin>(
    stream: &mut R,
    buffer: &mut BytesMut,
    needed: usize,
    close: &mut watch::Receiver<bool>,
) -> bool {
    while buffer.len() < needed {
        if buffer.capacity() - buffer.len() < READ_CHUNK_BYTES.min(needed - buffer.len()) {
            buffer.reserve(READ_CHUNK_BYTES.max(needed - buffer.len()));
        }
        let read = tokio::select! {
            biased;
            _ = close.changed() => return false,
            read = stream.read_buf(buffer) => read,
        };
        match read {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    true
}

async fn reader<R: AsyncRead + Unpin>(
    connection: ConnectionId,
    mut stream: R,
    events: &mpsc::Sender<Event>,
    outgoing: &mpsc::UnboundedSender<Outgoing>,
    mut close: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
    max_frame_bytes: usize,
) {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut sequence = 0u64;
    loop {
        if crate::buggify::spurious_close() {
            return;
        }
        if !fill(&mut stream, &mut buffer, 4, &mut close).await {
            return;
        }
        let prefix = [buffer[0], buffer[1], buffer[2], buffer[3]];
        let size = match codec::frame_length(prefix, max_frame_bytes) {
            Ok(size) => size,
            Err(err) => {
                tracing::info!(connection, "closing connection: {err}");
                return;
            }
        };
        if !fill(&mut stream, &mut buffer, 4 + size, &mut close).await {
            return;
        }
        let _ = buffer.split_to(4);
        let frame = buffer.split_to(size).freeze();
        // Bound the requests of this connection in flight; the writer returns the permit.
        let permit = tokio::select! {
            biased;
            _ = close.changed() => return,
            permit = permits.acquire() => permit,
        };
        match permit {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        match codec::decode_request(frame) {
            Decoded::Request(request) => {
                let id = RequestId {
                    connection,
                    sequence,
                };
                if events.send(Event::Request { id, request }).await.is_err() {
                    return;
                }
            }
            Decoded::Reply(frame) => {
                if outgoing.send(Outgoing::Raw { sequence, frame }).is_err() {
                    return;
                }
            }
            Decoded::Close(reason) => {
                tracing::info!(connection, "closing connection: {reason}");
                return;
            }
        }
        sequence += 1;
    }
}

async fn writer<W: AsyncWrite + Unpin>(
    connection: ConnectionId,
    mut stream: W,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    mut close: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
) {
    let mut pending: BTreeMap<u64, Outgoing> = BTreeMap::new();
    let mut next_sequence = 0u64;
    let mut out = Frames::default();
    loop {
        let message = tokio::select! {
            biased;
            _ = close.changed() => break,
            message = outgoing.recv() => message,
        };
        let Some(message) = message else { break };
        pending.insert(message.sequence(), message);
        while let Ok(message) = outgoing.try_recv() {
            pending.insert(message.sequence(), message);
            if pending.len() >= MAX_IN_FLIGHT_PER_CONNECTION {
                break;
            }
        }
        while let Some(message) = pending.remove(&next_sequence) {
            next_sequence += 1;
            permits.add_permits(1);
            match message {
                Outgoing::Response {
                    api_key,
                    api_version,
                    correlation_id,
                    response,
                    ..
                } => {
                    if let Err(err) = fetch_frame::encode_response_frame(
                        correlation_id,
                        api_key,
                        api_version,
                        *response,
                        &mut out,
                    ) {
                        tracing::error!(
                            connection,
                            ?api_key,
                            api_version,
                            "encoding response failed: {err}"
                        );
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
                Outgoing::Raw { frame, .. } => out.inline.extend_from_slice(&frame),
                Outgoing::Nothing { .. } => {}
            }
            if out.len() >= WRITE_FLUSH_BYTES || out.records.len() >= WRITE_FLUSH_RECORD_SETS {
                if write_frames(&mut stream, &out).await.is_err() {
                    return;
                }
                out.clear();
            }
        }
        if !out.is_empty() {
            if write_frames(&mut stream, &out).await.is_err() {
                return;
            }
            out.clear();
        }
        // Nothing more is ready: push what was written out. A no-op on tokio's TcpStream, but
        // madsim's simulated stream sends only on flush, so without it no response leaves a
        // simulated node.
        if stream.flush().await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
}

/// Writes `frames` in wire order: the record sets from where they are, in vectored writes.
async fn write_frames<W: AsyncWrite + Unpin>(stream: &mut W, frames: &Frames) -> io::Result<()> {
    let slices = frames.slices();
    if let [only] = slices.as_slice() {
        return stream.write_all(only).await;
    }
    let mut slices: Vec<IoSlice<'_>> = slices.into_iter().map(IoSlice::new).collect();
    let mut left = slices.as_mut_slice();
    while !left.is_empty() {
        let written = stream.write_vectored(left).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut left, written);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Takes at most `step` bytes per call, vectored or not, as a socket whose send buffer is
    /// nearly full does.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(this.step);
            this.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let mut written = 0;
            for buf in bufs {
                let n = buf.len().min(this.step - written);
                this.out.extend_from_slice(&buf[..n]);
                written += n;
                if written == this.step {
                    break;
                }
            }
            Poll::Ready(Ok(written))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Record sets written from where they are arrive whole and in place however the socket
    /// splits the vectored writes: every write boundary, inside a slice and between slices.
    #[tokio::test]
    async fn frames_are_written_whole_through_partial_writes() {
        let mut frames = Frames::default();
        frames
            .inline
            .extend_from_slice(b"head-of-frame|middle|tail");
        frames.records.push((
            5,
            Bytes::from((0..40_000u32).map(|i| i as u8).collect::<Vec<_>>()),
        ));
        frames.records.push((5, Bytes::from(vec![7u8; 3])));
        frames.records.push((
            20,
            Bytes::from((0..20_000u32).map(|i| (i * 3) as u8).collect::<Vec<_>>()),
        ));
        let expected = frames.to_vec();
        assert_eq!(expected.len(), frames.len());
        for step in [1, 2, 7, 4096, 39_999, 1 << 20] {
            let mut socket = Trickle {
                out: Vec::new(),
                step,
            };
            write_frames(&mut socket, &frames).await.unwrap();
            assert_eq!(socket.out, expected, "step {step}");
        }
    }
}
