//! A thrum connection: an [`Inbox`] to read tones from and a cloneable
//! [`Outbox`] to queue tones on, with a writer task between the outbox and
//! the socket.
//!
//! The outbound queue is bounded in **bytes** (`Limits::outbox_bytes`), so a
//! peer that stops reading can hold at most that much of our memory. The
//! choice when it is full: [`Outbox::try_send`] never waits — it counts the
//! overflow, logs `thrum.outbox.overflow` and **closes the connection**. A
//! daemon routing chunks cannot drop one silently (the turn would be corrupt
//! without anyone knowing) and cannot wait (one stuck bee would stall every
//! worker writing through it); closing makes the failure visible to both
//! sides, and the peer's reconnect starts clean. Producers that may wait, such
//! as a bee talking to its one daemon, use [`Outbox::send`], which waits for
//! room instead.

use crate::budget::ByteBudget;
use crate::codec::{Inbound, InboundRaw, ToneReader};
use crate::frame::DEFAULT_MAX_LINE;
use crate::stats::WireStats;
use crate::tone::{EncodeError, RawTone, Tone};
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

mod channel;
pub use channel::Lines;

/// Default bound on bytes queued for one peer: one maximal line fits, and a
/// thousand stuck peers cannot take more than a few GiB between them before
/// each is cut off.
pub const DEFAULT_OUTBOX_BYTES: usize = DEFAULT_MAX_LINE + 1;
const _: () = assert!(
    DEFAULT_OUTBOX_BYTES > DEFAULT_MAX_LINE,
    "a maximal line must fit the queue"
);

/// How much of a burst the writer gathers before writing: syscalls per tone
/// fall when a turn streams many small chunks.
const WRITE_BUFFER: usize = 64 * 1024;

/// Longest line a connection accepts whatever `Limits` say: one line's bytes
/// must fit the u32 the outbound queue counts them in.
const MAX_LINE_CEILING: usize = u32::MAX as usize - 1;

/// Per-connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line accepted or sent (newline excluded).
    pub max_line: usize,
    /// Most bytes queued for the peer; raised to `max_line + 1` if smaller so
    /// every legal tone can be queued.
    pub outbox_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: DEFAULT_MAX_LINE,
            outbox_bytes: DEFAULT_OUTBOX_BYTES,
        }
    }
}

/// Why a tone was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connection is closed")]
    Closed,
    #[error("outbound queue full ({queued_limit} bytes); connection closed")]
    Overflow { queued_limit: usize },
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// What [`Outbox::offer`] could not do.
#[derive(Debug)]
pub enum Offer {
    /// No room now; the encoded line, to offer again later.
    Full(Vec<u8>),
    Closed,
    Encode(EncodeError),
}

struct Shared {
    label: Arc<str>,
    stats: Arc<WireStats>,
    max_line: usize,
    outbox_bytes: usize,
    /// Bytes that may still be queued.
    budget: Semaphore,
    /// Cancelled when nothing more can be sent: overflow, write failure,
    /// `abort`, or the writer finishing.
    closed: CancellationToken,
    /// Cancelled when we stop reading the peer: overflow, `abort`, or the
    /// writer finishing for any reason but a failed write. A write fails
    /// when the peer has gone, and what it wrote before going is still to
    /// be read (its last answer may be there): the reader goes on to the
    /// peer's end of input.
    reading: CancellationToken,
    /// Cancelled once the writer task has let go of the socket.
    done: CancellationToken,
}

impl Shared {
    fn new(limits: Limits, label: Arc<str>) -> Arc<Shared> {
        // Queue space is counted in semaphore permits, which come in u32s.
        let max_line = limits.max_line.min(MAX_LINE_CEILING);
        let outbox_bytes = limits.outbox_bytes.max(max_line + 1);
        Arc::new(Shared {
            label,
            stats: Arc::new(WireStats::default()),
            max_line,
            outbox_bytes,
            budget: Semaphore::new(outbox_bytes),
            closed: CancellationToken::new(),
            reading: CancellationToken::new(),
            done: CancellationToken::new(),
        })
    }
}

enum Outgoing {
    Line(Vec<u8>),
    /// Flush what is queued, then shut the write side.
    Close,
}

/// Reading half of a connection.
pub struct Inbox<R> {
    reader: ToneReader<BufReader<R>>,
    shared: Arc<Shared>,
}

/// Writing half of a connection; clones share one queue.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

/// Both halves of a new connection.
pub struct Connection<R> {
    pub inbox: Inbox<R>,
    pub outbox: Outbox,
}

impl Connection<OwnedReadHalf> {
    /// Wraps a Unix stream. Must be called inside a tokio runtime (it spawns
    /// the writer task).
    pub fn unix(stream: UnixStream, limits: Limits, label: impl Into<Arc<str>>) -> Self {
        let (read, write): (OwnedReadHalf, OwnedWriteHalf) = stream.into_split();
        Connection::new(read, write, limits, label)
    }
}

impl<R: AsyncRead + Unpin> Connection<R> {
    /// Wraps any reader/writer pair. `label` names the peer in logs.
    pub fn new<W>(read: R, write: W, limits: Limits, label: impl Into<Arc<str>>) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Shared::new(limits, label.into());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(rx, write, shared.clone()));
        Connection {
            inbox: Inbox {
                reader: ToneReader::new(
                    BufReader::new(read),
                    shared.max_line,
                    shared.stats.clone(),
                ),
                shared: shared.clone(),
            },
            outbox: Outbox { tx, shared },
        }
    }
}

impl<R: AsyncRead + Unpin> Inbox<R> {
    /// The next tone or rejection; `None` when the peer closed or the
    /// connection was closed from our side. Cancel-safe.
    pub async fn recv(&mut self) -> io::Result<Option<Inbound>> {
        tokio::select! {
            biased;
            _ = self.shared.reading.cancelled() => Ok(None),
            next = self.reader.recv() => next,
        }
    }

    /// The next tone with only its head decoded (see
    /// [`ToneReader::recv_raw`]). Cancel-safe.
    pub async fn recv_raw(&mut self) -> io::Result<Option<InboundRaw>> {
        tokio::select! {
            biased;
            _ = self.shared.reading.cancelled() => Ok(None),
            next = self.reader.recv_raw() => next,
        }
    }

    /// The next tone if one can be had without waiting (already buffered, or
    /// readable right now); `None` if it would have to wait. For draining
    /// what arrived together: a zero timeout would instead wait for the
    /// timer wheel's next millisecond tick. Cancel-safe.
    pub async fn recv_ready(&mut self) -> Option<io::Result<Option<Inbound>>> {
        tokio::select! {
            biased;
            next = self.recv() => Some(next),
            () = std::future::ready(()) => None,
        }
    }

    /// [`Inbox::recv_ready`] with only the head decoded (see
    /// [`Inbox::recv_raw`]). Cancel-safe.
    pub async fn recv_raw_ready(&mut self) -> Option<io::Result<Option<InboundRaw>>> {
        tokio::select! {
            biased;
            next = self.recv_raw() => Some(next),
            () = std::future::ready(()) => None,
        }
    }

    pub fn stats(&self) -> &Arc<WireStats> {
        &self.shared.stats
    }

    /// Bytes of the line the last tone returned was decoded from.
    pub fn last_line_len(&self) -> usize {
        self.reader.last_line_len()
    }

    /// Charges this connection's unfinished lines to a budget shared with
    /// other connections (see [`ByteBudget`]).
    pub fn with_budget(mut self, budget: Arc<ByteBudget>) -> Self {
        self.reader = self.reader.with_budget(budget);
        self
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("peer", &self.shared.label)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Outbox {
    /// Queues a tone without waiting. When the queue is full the connection
    /// is closed (see the module documentation for why).
    pub fn try_send(&self, tone: &Tone) -> Result<(), SendError> {
        self.settle(self.offer(tone), tone.chi(), tone.sid())
    }

    /// [`Outbox::try_send`] for a tone forwarded as it came, unchanged.
    pub fn try_send_raw(&self, tone: RawTone) -> Result<(), SendError> {
        // The head stays for the overflow's log line; only the bytes move.
        let RawTone { head, mut line } = tone;
        line.push(b'\n');
        self.settle(self.offer_line(line), &head.chi, head.sid.as_deref())
    }

    /// What an offer means to a sender: a full queue closes the connection.
    fn settle(
        &self,
        offered: Result<(), Offer>,
        chi: &str,
        sid: Option<&str>,
    ) -> Result<(), SendError> {
        match offered {
            Ok(()) => Ok(()),
            Err(Offer::Full(_)) => Err(self.overflowed(chi, sid)),
            Err(Offer::Closed) => Err(SendError::Closed),
            Err(Offer::Encode(e)) => Err(SendError::Encode(e)),
        }
    }

    /// Closes a connection whose queue is full; says why.
    fn overflowed(&self, chi: &str, sid: Option<&str>) -> SendError {
        WireStats::bump(&self.shared.stats.overflows, 1);
        tracing::warn!(
            event = "thrum.outbox.overflow",
            peer = %self.shared.label,
            limit = self.shared.outbox_bytes,
            chi,
            sid,
            "peer is not reading; closing its connection"
        );
        self.shared.closed.cancel();
        self.shared.reading.cancel();
        SendError::Overflow {
            queued_limit: self.shared.outbox_bytes,
        }
    }

    /// Queues a tone if there is room now. When there is not, nothing is
    /// closed: the encoded line comes back in [`Offer::Full`] for the caller
    /// to hold until [`Outbox::room`] says it fits. For a producer that
    /// must not wait but can hold its own backlog (and slow its sources).
    pub fn offer(&self, tone: &Tone) -> Result<(), Offer> {
        let line = tone
            .encode_line(self.shared.max_line)
            .map_err(Offer::Encode)?;
        self.offer_line(line)
    }

    /// [`Outbox::offer`] for a line already encoded (newline included).
    pub fn offer_line(&self, line: Vec<u8>) -> Result<(), Offer> {
        if self.shared.closed.is_cancelled() {
            return Err(Offer::Closed);
        }
        match self.shared.budget.try_acquire_many(line.len() as u32) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(Offer::Full(line)),
            Err(TryAcquireError::Closed) => return Err(Offer::Closed),
        }
        self.enqueue(line).map_err(|_| Offer::Closed)
    }

    /// Resolves once `bytes` could be queued (or the connection closed).
    pub async fn room(&self, bytes: usize) {
        let bytes = bytes.min(self.shared.outbox_bytes) as u32;
        tokio::select! {
            biased;
            _ = self.shared.closed.cancelled() => {}
            permit = self.shared.budget.acquire_many(bytes) => drop(permit),
        }
    }

    /// Queues a tone, waiting for room while the peer catches up.
    pub async fn send(&self, tone: &Tone) -> Result<(), SendError> {
        let line = tone.encode_line(self.shared.max_line)?;
        tokio::select! {
            biased;
            _ = self.shared.closed.cancelled() => return Err(SendError::Closed),
            permit = self.shared.budget.acquire_many(line.len() as u32) => {
                permit.map_err(|_| SendError::Closed)?.forget();
            }
        }
        self.enqueue(line)
    }

    fn enqueue(&self, line: Vec<u8>) -> Result<(), SendError> {
        let len = line.len();
        if self.tx.send(Outgoing::Line(line)).is_err() {
            self.shared.budget.add_permits(len);
            return Err(SendError::Closed);
        }
        WireStats::bump(&self.shared.stats.tones_out, 1);
        Ok(())
    }

    /// Graceful close: what is queued is still written, then the write side
    /// shuts down. Tones queued after this are refused.
    pub fn close(&self) {
        let _ = self.tx.send(Outgoing::Close);
    }

    /// Immediate close: queued tones are dropped, the reader stops.
    pub fn abort(&self) {
        self.shared.closed.cancel();
        self.shared.reading.cancel();
    }

    /// Whether no more tones can be sent.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Resolves once the writer has finished with the socket.
    pub async fn closed(&self) {
        self.shared.done.cancelled().await
    }

    /// Resolves once nothing more can be sent (overflow, abort, a failed
    /// write, or the close finished), without waiting for the writer to
    /// let go of its end: for whoever must stop feeding the other side at
    /// that moment.
    pub async fn stopped(&self) {
        self.shared.closed.cancelled().await
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.outbox_bytes - self.shared.budget.available_permits()
    }

    pub fn stats(&self) -> &Arc<WireStats> {
        &self.shared.stats
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    mut write: W,
    shared: Arc<Shared>,
) {
    let outcome = tokio::select! {
        biased;
        _ = shared.closed.cancelled() => "aborted",
        result = drain(&mut rx, &mut write, &shared) => match result {
            Ok(()) => "closed",
            Err(error) => {
                tracing::debug!(event = "thrum.write.failed", peer = %shared.label, %error, "peer write failed");
                "write_failed"
            }
        },
    };
    tracing::debug!(event = "thrum.connection.closed", peer = %shared.label, outcome, "writer finished");
    shared.closed.cancel();
    if outcome != "write_failed" {
        shared.reading.cancel();
    }
    shared.budget.close();
    drop(rx);
    drop(write);
    shared.done.cancel();
}

/// Writes queued lines in order. A line alone is written as it is; lines
/// queued together are gathered into one buffer of up to [`WRITE_BUFFER`]
/// bytes first. The buffer exists only while there is a burst to write, so
/// an idle connection holds no write buffer at all (thousands of idle peers
/// would otherwise pin 64 KiB each).
async fn drain<W: AsyncWrite + Unpin>(
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    out: &mut W,
    shared: &Shared,
) -> io::Result<()> {
    let mut batch: Vec<u8> = Vec::new();
    let mut closing = false;
    while !closing {
        let Some(first) = rx.recv().await else { break };
        let first = match first {
            Outgoing::Close => break,
            Outgoing::Line(line) => line,
        };
        let mut queued = first.len();
        if rx.is_empty() || first.len() >= WRITE_BUFFER {
            out.write_all(&first).await?;
        } else {
            batch.extend_from_slice(&first);
            drop(first);
            while batch.len() < WRITE_BUFFER {
                match rx.try_recv() {
                    Ok(Outgoing::Line(line)) => {
                        queued += line.len();
                        batch.extend_from_slice(&line);
                    }
                    Ok(Outgoing::Close) => {
                        closing = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            out.write_all(&batch).await?;
            batch.clear();
            if batch.capacity() > 2 * WRITE_BUFFER {
                batch = Vec::new();
            }
        }
        shared.budget.add_permits(queued);
        if rx.is_empty() {
            out.flush().await?;
            // Idle again: give the burst's buffer back.
            batch = Vec::new();
        }
    }
    out.flush().await?;
    out.shutdown().await
}
