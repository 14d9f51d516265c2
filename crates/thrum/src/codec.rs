//! Async readers and writers over any `AsyncRead`/`AsyncWrite`.
//!
//! [`LineReader`] yields bounded raw lines (the worker reads a CLI's stdout
//! with it); [`ToneReader`] decodes them into tones, dropping and counting
//! what is not a tone. Both are cancel-safe: no bytes are lost if a `recv`
//! future is dropped, because bytes are consumed only after they were framed.

use crate::budget::{BudgetExceeded, ByteBudget};
pub use crate::frame::RawLine;
use crate::frame::{FrameEvent, LineFramer};
use crate::stats::WireStats;
use crate::tone::{DecodeError, EncodeError, Head, RawTone, Tone};
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Buffer a reader with a shared budget keeps between lines: small, so
/// thousands of idle peers cost little; charged only above it.
const BUDGETED_RETAIN: usize = 4 * 1024;

/// Bounded line reader over a buffered async reader.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    framer: LineFramer,
    at_eof: bool,
    /// The shared budget this reader charges its unfinished line to.
    budget: Option<Arc<ByteBudget>>,
    charged: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R, max_line: usize) -> Self {
        Self {
            inner,
            framer: LineFramer::new(max_line),
            at_eof: false,
            budget: None,
            charged: 0,
        }
    }

    /// Charges unfinished lines to `budget`, shared with other readers. A
    /// line that does not fit is abandoned and reported once as an error of
    /// kind `OutOfMemory` carrying [`BudgetExceeded`]; reading goes on.
    pub fn with_budget(mut self, budget: Arc<ByteBudget>) -> Self {
        self.budget = Some(budget);
        self.framer.set_retained_capacity(BUDGETED_RETAIN);
        self
    }

    /// Brings the charge in line with what the framer holds; false when
    /// the growth did not fit.
    fn recharge(&mut self) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        // What a reader keeps between lines is its fixed cost, not charged.
        let held = self
            .framer
            .held()
            .saturating_sub(self.framer.retained_capacity());
        if held > self.charged {
            if !budget.try_charge(held - self.charged) {
                return false;
            }
        } else {
            budget.release(self.charged - held);
        }
        self.charged = held;
        true
    }

    /// Frees the line last returned (it is freed at the next read anyway);
    /// with a budget, its bytes are given back at once.
    pub fn release_line(&mut self) {
        self.framer.release_line();
        self.recharge();
    }

    /// The next line, or `None` at end of input.
    pub async fn next_line(&mut self) -> io::Result<Option<RawLine<'_>>> {
        loop {
            if self.at_eof {
                return Ok(None);
            }
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                self.at_eof = true;
                return Ok(match self.framer.finish() {
                    Some(FrameEvent::Line) => Some(RawLine::Line(self.framer.line())),
                    _ => None,
                });
            }
            let (used, event) = self.framer.feed(chunk);
            self.inner.consume(used);
            if !self.recharge() {
                self.framer.abandon_line();
                self.recharge();
                let limit = self.budget.as_ref().map_or(0, |b| b.limit());
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    BudgetExceeded { limit },
                ));
            }
            match event {
                Some(FrameEvent::Line) => return Ok(Some(RawLine::Line(self.framer.line()))),
                Some(FrameEvent::TooLong { limit }) => return Ok(Some(RawLine::TooLong { limit })),
                None => {}
            }
        }
    }

    /// Bytes skipped as parts of over-long lines so far.
    pub fn discarded_bytes(&self) -> u64 {
        self.framer.discarded_bytes()
    }
}

impl<R> Drop for LineReader<R> {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.charged);
        }
    }
}

/// What a [`ToneReader`] hands up.
// Tones are the common case; boxing them to shrink the rare rejection would
// cost an allocation per tone.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Tone(Tone),
    /// Something the peer sent that deserves an answer but is not usable.
    Rejected(Rejected),
}

/// Input the reader refused, reported so the connection can answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("line longer than {limit} bytes discarded")]
    TooLong { limit: usize },
    /// The server's shared budget for unfinished lines was spent: this line
    /// was dropped; a later one may fit.
    #[error("{0}")]
    Busy(BudgetExceeded),
    #[error("{error}")]
    Invalid {
        rid: Option<String>,
        error: DecodeError,
    },
}

/// Decodes tones from a byte stream. Lines that are not tones (not JSON, not
/// an object, no `chi`) are dropped and counted; blank lines are ignored.
#[derive(Debug)]
pub struct ToneReader<R> {
    lines: LineReader<R>,
    /// Length of the line the last tone was decoded from.
    last_len: usize,
    stats: Arc<WireStats>,
    discarded_seen: u64,
}

impl<R: AsyncBufRead + Unpin> ToneReader<R> {
    pub fn new(inner: R, max_line: usize, stats: Arc<WireStats>) -> Self {
        Self {
            lines: LineReader::new(inner, max_line),
            last_len: 0,
            stats,
            discarded_seen: 0,
        }
    }

    pub fn stats(&self) -> &Arc<WireStats> {
        &self.stats
    }

    /// Bytes of the line the last tone returned was decoded from.
    pub fn last_line_len(&self) -> usize {
        self.last_len
    }

    /// See [`LineReader::with_budget`]; a line that does not fit is handed up
    /// as [`Rejected::Busy`].
    pub fn with_budget(mut self, budget: Arc<ByteBudget>) -> Self {
        self.lines = self.lines.with_budget(budget);
        self
    }

    /// The next tone or rejection; `None` at end of input.
    pub async fn recv(&mut self) -> io::Result<Option<Inbound>> {
        Ok(self.next(Tone::decode).await?.map(|next| match next {
            Ok(tone) => Inbound::Tone(tone),
            Err(rejected) => Inbound::Rejected(rejected),
        }))
    }

    /// Like [`ToneReader::recv`], but only the tone's [`Head`] is decoded
    /// and its line is kept, for a router that forwards it unchanged.
    pub async fn recv_raw(&mut self) -> io::Result<Option<InboundRaw>> {
        let raw = |line: &[u8]| {
            Head::read(line).map(|head| RawTone {
                head,
                line: line.to_vec(),
            })
        };
        Ok(self.next(raw).await?.map(|next| match next {
            Ok(tone) => InboundRaw::Tone(tone),
            Err(rejected) => InboundRaw::Rejected(rejected),
        }))
    }

    /// The next line made into a `T` by `parse`, or why it was refused;
    /// `None` at end of input. Lines that are not tones at all are dropped
    /// and counted.
    async fn next<T>(
        &mut self,
        parse: impl Fn(&[u8]) -> Result<T, DecodeError>,
    ) -> io::Result<Option<Result<T, Rejected>>> {
        loop {
            let next = match self.lines.next_line().await {
                Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                    match e.get_ref().and_then(|e| e.downcast_ref::<BudgetExceeded>()) {
                        Some(b) => {
                            WireStats::bump(&self.stats.too_long, 1);
                            return Ok(Some(Err(Rejected::Busy(*b))));
                        }
                        None => return Err(e),
                    }
                }
                other => other?,
            };
            // Decide with the borrowed line, act once the borrow has ended.
            let step = match next {
                None => Step::Eof,
                Some(RawLine::TooLong { limit }) => Step::TooLong(limit),
                Some(RawLine::Line(line)) if line.iter().all(u8::is_ascii_whitespace) => {
                    Step::Blank
                }
                Some(RawLine::Line(line)) => match parse(line) {
                    Ok(tone) => {
                        self.last_len = line.len();
                        Step::Tone(tone)
                    }
                    Err(
                        error @ (DecodeError::Invalid { .. } | DecodeError::TooManyMembers { .. }),
                    ) => Step::Invalid(rid_of(line), error),
                    Err(error) => Step::Malformed(error, line.len()),
                },
            };
            self.lines.release_line();
            let discarded = self.lines.discarded_bytes();
            WireStats::bump(&self.stats.discarded_bytes, discarded - self.discarded_seen);
            self.discarded_seen = discarded;
            match step {
                Step::Eof => return Ok(None),
                Step::Blank => {}
                Step::TooLong(limit) => {
                    WireStats::bump(&self.stats.too_long, 1);
                    tracing::warn!(
                        event = "thrum.line.too_long",
                        limit,
                        "discarding an over-long line"
                    );
                    return Ok(Some(Err(Rejected::TooLong { limit })));
                }
                Step::Tone(tone) => {
                    WireStats::bump(&self.stats.tones_in, 1);
                    return Ok(Some(Ok(tone)));
                }
                Step::Invalid(rid, error) => {
                    WireStats::bump(&self.stats.invalid, 1);
                    tracing::debug!(event = "thrum.tone.invalid", %error, "rejected a tone");
                    return Ok(Some(Err(Rejected::Invalid { rid, error })));
                }
                Step::Malformed(error, len) => {
                    WireStats::bump(&self.stats.malformed, 1);
                    tracing::debug!(event = "thrum.line.malformed", %error, len, "dropped a line");
                }
            }
        }
    }
}

/// What [`ToneReader::recv_raw`] hands up.
#[derive(Debug, PartialEq)]
pub enum InboundRaw {
    Tone(RawTone),
    Rejected(Rejected),
}

#[allow(clippy::large_enum_variant)] // lives for one loop iteration
enum Step<T> {
    Eof,
    Blank,
    TooLong(usize),
    Tone(T),
    Invalid(Option<String>, DecodeError),
    Malformed(DecodeError, usize),
}

/// The `rid` of a rejected tone, if it had a string one, so the rejection can
/// be matched to its request.
fn rid_of(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct RidOnly {
        rid: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<RidOnly>(line).ok()?.rid? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// Writes tones as lines, one write and flush per tone.
#[derive(Debug)]
pub struct ToneWriter<W> {
    inner: W,
    max_line: usize,
}

impl<W: AsyncWrite + Unpin> ToneWriter<W> {
    pub fn new(inner: W, max_line: usize) -> Self {
        Self { inner, max_line }
    }

    /// Encodes and writes one tone. A tone over the line limit is refused
    /// before anything is written.
    pub async fn send(&mut self, tone: &Tone) -> io::Result<()> {
        let line = tone.encode_line(self.max_line).map_err(|e| match e {
            EncodeError::TooLong { .. } => io::Error::new(io::ErrorKind::InvalidInput, e),
            EncodeError::Json(e) => io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        self.inner.write_all(&line).await?;
        self.inner.flush().await
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bodies::*;
    use crate::ChunkType;
    use tokio::io::BufReader;

    async fn collect(input: &[u8], max: usize) -> (Vec<Inbound>, Arc<WireStats>) {
        let stats = Arc::new(WireStats::default());
        let mut r = ToneReader::new(BufReader::with_capacity(7, input), max, stats.clone());
        let mut out = Vec::new();
        while let Some(x) = r.recv().await.unwrap() {
            out.push(x);
        }
        (out, stats)
    }

    #[tokio::test]
    async fn malformed_lines_are_dropped_and_counted() {
        let input = b"not json\n[1]\n\"s\"\n{\"no\":\"chi\"}\n\xff\xfe{\n   \n{\"chi\":\"cleanup\",\"sid\":\"a\"}\n";
        let (out, stats) = collect(input, 1024).await;
        assert_eq!(
            out,
            vec![Inbound::Tone(Tone::new(Cleanup::default()).with_sid("a"))]
        );
        let s = stats.snapshot();
        assert_eq!(
            (s.malformed, s.tones_in, s.invalid, s.too_long),
            (5, 1, 0, 0)
        );
    }

    #[tokio::test]
    async fn invalid_known_tones_are_handed_up_with_their_rid() {
        let (out, stats) =
            collect(b"{\"chi\":\"echo\",\"rid\":\"r1\",\"ok\":\"yes\"}\n", 1024).await;
        assert!(
            matches!(&out[..], [Inbound::Rejected(Rejected::Invalid { rid: Some(r), .. })] if r == "r1"),
            "{out:?}"
        );
        assert_eq!(stats.snapshot().invalid, 1);
    }

    #[tokio::test]
    async fn over_long_line_is_reported_and_reader_stays_usable() {
        let mut input = vec![b'{'; 5000];
        input.extend_from_slice(b"\n{\"chi\":\"cancel\",\"sid\":\"b\"}\n");
        let (out, stats) = collect(&input, 100).await;
        assert_eq!(
            out,
            vec![
                Inbound::Rejected(Rejected::TooLong { limit: 100 }),
                Inbound::Tone(Tone::new(Cancel::default()).with_sid("b")),
            ]
        );
        let s = stats.snapshot();
        assert_eq!((s.too_long, s.discarded_bytes), (1, 5000));
    }

    #[tokio::test]
    async fn writer_then_reader_round_trips() {
        let (a, b) = tokio::io::duplex(64);
        let tone = Tone::new(Chunk {
            chunk_type: ChunkType::TextDelta,
            block_idx: Some(0),
            delta: Some("héllo\nworld".into()),
            partial_json: None,
            usage: None,
            extra: Default::default(),
        })
        .with_sid("s");
        let sent = tone.clone();
        let writer = tokio::spawn(async move {
            let mut w = ToneWriter::new(a, 1024);
            w.send(&sent).await.unwrap();
            w.send(&sent).await.unwrap();
        });
        let mut r = ToneReader::new(BufReader::new(b), 1024, Default::default());
        assert_eq!(r.recv().await.unwrap(), Some(Inbound::Tone(tone.clone())));
        assert_eq!(r.recv().await.unwrap(), Some(Inbound::Tone(tone)));
        writer.await.unwrap();
        assert_eq!(r.recv().await.unwrap(), None);
    }
}
