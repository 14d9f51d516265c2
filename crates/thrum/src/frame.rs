//! Sans-I/O NDJSON framing with a hard limit on line length.
//!
//! [`LineFramer`] is fed whatever bytes a reader has buffered and says how many
//! it consumed and whether a line is complete. It never holds more than
//! `max_line` bytes: a longer line is reported as [`FrameEvent::TooLong`] the
//! moment it crosses the limit, and the rest of it is skipped up to its
//! newline without being stored. The next line is read normally. Sync and
//! async readers share this one implementation.

use std::io::{self, BufRead};

/// Default line limit. Large enough for a prompt carrying a pasted file or a
/// tool result of a few megabytes; small enough that a thousand connections
/// each sending one cannot exhaust memory.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024 * 1024;

/// After a line this large, the buffer is released rather than kept, so one
/// big tone does not pin megabytes on an idle connection forever.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// What feeding bytes produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameEvent {
    /// A complete line (without its `\n`, and without a trailing `\r`) is
    /// available from [`LineFramer::line`] until the next call to `feed`.
    Line,
    /// The current line passed `limit` bytes. It is being discarded; the
    /// framer resumes at the byte after its newline.
    TooLong { limit: usize },
}

/// Splits a byte stream into lines of at most `max_line` bytes.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    max_line: usize,
    /// Capacity kept between lines; anything larger is freed.
    retain: usize,
    /// The line in `buf` was handed out and must be cleared on the next feed.
    line_ready: bool,
    /// The current line went over the limit; skip to its newline.
    discarding: bool,
    /// Bytes skipped while discarding, for the statistics.
    discarded: u64,
}

impl LineFramer {
    /// A framer for lines of at most `max_line` bytes (the newline excluded).
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_line,
            retain: RETAINED_CAPACITY,
            line_ready: false,
            discarding: false,
            discarded: 0,
        }
    }

    /// The limit this framer enforces.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Total bytes thrown away as parts of over-long lines.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded
    }

    /// Feeds bytes; returns how many were consumed (always at least one when
    /// `chunk` is not empty) and the event they completed, if any.
    pub fn feed(&mut self, chunk: &[u8]) -> (usize, Option<FrameEvent>) {
        self.release_line();
        if chunk.is_empty() {
            return (0, None);
        }
        let newline = memchr::memchr(b'\n', chunk);
        let body = &chunk[..newline.unwrap_or(chunk.len())];
        let consumed = newline.map_or(chunk.len(), |i| i + 1);

        if self.discarding {
            self.discarded += body.len() as u64;
            if newline.is_some() {
                self.discarding = false;
            }
            return (consumed, None);
        }
        if self.buf.len() + body.len() > self.max_line {
            self.discarded += (self.buf.len() + body.len()) as u64;
            self.clear_buf();
            // If the newline is in this chunk, the long line ends here and the
            // next feed starts a fresh line.
            self.discarding = newline.is_none();
            return (
                consumed,
                Some(FrameEvent::TooLong {
                    limit: self.max_line,
                }),
            );
        }
        self.buf.extend_from_slice(body);
        if newline.is_some() {
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            self.line_ready = true;
            return (consumed, Some(FrameEvent::Line));
        }
        (consumed, None)
    }

    /// Call at end of input: a final line without a newline still counts.
    pub fn finish(&mut self) -> Option<FrameEvent> {
        self.release_line();
        if self.discarding {
            self.discarding = false;
            return None;
        }
        if self.buf.is_empty() {
            return None;
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        self.line_ready = true;
        Some(FrameEvent::Line)
    }

    /// The line completed by the last [`FrameEvent::Line`].
    pub fn line(&self) -> &[u8] {
        if self.line_ready {
            &self.buf
        } else {
            &[]
        }
    }

    /// Bytes currently held for an unfinished line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of memory the framer holds (its buffer's capacity), which is
    /// what a shared budget must count.
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Drops the unfinished line: what is held is freed and the rest of the
    /// line is skipped up to its newline, as for an over-long line.
    pub fn abandon_line(&mut self) {
        if self.line_ready {
            return;
        }
        self.discarded += self.buf.len() as u64;
        self.clear_buf();
        self.buf = Vec::new();
        self.discarding = true;
    }

    /// Frees the line handed out by the last [`FrameEvent::Line`] now,
    /// rather than at the next `feed`.
    pub fn release_line(&mut self) {
        if self.line_ready {
            self.line_ready = false;
            self.clear_buf();
        }
    }

    fn clear_buf(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > self.retain {
            self.buf = Vec::new();
        }
    }

    /// Keeps at most `bytes` of buffer between lines (default 64 KiB). A
    /// server with thousands of mostly idle peers keeps this small.
    pub fn set_retained_capacity(&mut self, bytes: usize) {
        self.retain = bytes;
    }

    /// The capacity kept between lines.
    pub fn retained_capacity(&self) -> usize {
        self.retain
    }
}

/// One raw line, or notice that one was too long.
#[derive(Debug, PartialEq, Eq)]
pub enum RawLine<'a> {
    Line(&'a [u8]),
    /// A line passed the limit; it is being skipped, not stored.
    TooLong {
        limit: usize,
    },
}

/// Reads `reader` to its end, calling `on_line` for every line (a final line
/// without a newline included) or over-long line. The synchronous twin of
/// [`crate::LineReader`], for files and a child's stdin.
pub fn each_line<R: BufRead>(
    mut reader: R,
    max_line: usize,
    mut on_line: impl FnMut(RawLine<'_>),
) -> io::Result<()> {
    let mut framer = LineFramer::new(max_line);
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            if framer.finish() == Some(FrameEvent::Line) {
                on_line(RawLine::Line(framer.line()));
            }
            return Ok(());
        }
        let (used, event) = framer.feed(chunk);
        reader.consume(used);
        match event {
            Some(FrameEvent::Line) => on_line(RawLine::Line(framer.line())),
            Some(FrameEvent::TooLong { limit }) => on_line(RawLine::TooLong { limit }),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and collects what comes out.
    fn run(framer: &mut LineFramer, input: &[u8], step: usize) -> Vec<Result<Vec<u8>, usize>> {
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let take = step.min(rest.len());
            let (n, ev) = framer.feed(&rest[..take]);
            assert!(n > 0 && n <= take);
            rest = &rest[n..];
            match ev {
                Some(FrameEvent::Line) => out.push(Ok(framer.line().to_vec())),
                Some(FrameEvent::TooLong { limit }) => out.push(Err(limit)),
                None => {}
            }
            assert!(framer.buffered() <= framer.max_line());
        }
        if let Some(FrameEvent::Line) = framer.finish() {
            out.push(Ok(framer.line().to_vec()));
        }
        out
    }

    #[test]
    fn splits_lines_and_strips_cr() {
        for step in [1, 2, 3, 100] {
            let mut f = LineFramer::new(100);
            let out = run(&mut f, b"a\r\nbc\n\nlast", step);
            assert_eq!(
                out,
                vec![
                    Ok(b"a".to_vec()),
                    Ok(b"bc".to_vec()),
                    Ok(vec![]),
                    Ok(b"last".to_vec())
                ]
            );
        }
    }

    #[test]
    fn line_at_the_limit_passes_one_over_is_reported_once() {
        for step in [1, 4, 7, 1000] {
            let mut f = LineFramer::new(5);
            let out = run(&mut f, b"12345\n123456\nok\n1234567890123\nz", step);
            assert_eq!(
                out,
                vec![
                    Ok(b"12345".to_vec()),
                    Err(5),
                    Ok(b"ok".to_vec()),
                    Err(5),
                    Ok(b"z".to_vec())
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn discarded_bytes_are_counted() {
        let mut f = LineFramer::new(3);
        run(&mut f, b"abcdefgh\nxy\n", 2);
        assert_eq!(f.discarded_bytes(), 8);
    }

    #[test]
    fn each_line_reads_to_the_end() {
        let mut seen = Vec::new();
        each_line(&b"ab\nxxxxxxxx\ncd"[..], 4, |l| {
            seen.push(match l {
                RawLine::Line(l) => Ok(l.to_vec()),
                RawLine::TooLong { limit } => Err(limit),
            })
        })
        .unwrap();
        assert_eq!(seen, vec![Ok(b"ab".to_vec()), Err(4), Ok(b"cd".to_vec())]);
    }

    #[test]
    fn big_buffers_are_released_after_the_line() {
        let mut f = LineFramer::new(1 << 20);
        let big = vec![b'x'; 500_000];
        f.feed(&big);
        f.feed(b"\n");
        f.feed(b"y");
        assert!(f.buf.capacity() <= RETAINED_CAPACITY);
    }
}
