//! A 100 MiB line must cost nothing like 100 MiB. Alone in its own test
//! binary so the process's peak RSS (VmHWM) is this test's alone.

use std::pin::Pin;
use std::task::{Context, Poll};
use thrum::{Inbound, Rejected, Tone, ToneReader};
use tokio::io::{AsyncRead, BufReader, ReadBuf};

/// Produces `len` bytes of `{` then `\n` then `tail`, without ever holding
/// the long line in memory.
struct LongLine {
    remaining: u64,
    tail: &'static [u8],
}

impl AsyncRead for LongLine {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.remaining > 0 {
            let n = (buf.remaining() as u64).min(self.remaining) as usize;
            buf.put_slice(&vec![b'{'; n]);
            self.remaining -= n as u64;
        } else if !self.tail.is_empty() {
            let n = buf.remaining().min(self.tail.len());
            buf.put_slice(&self.tail[..n]);
            self.tail = &self.tail[n..];
        }
        Poll::Ready(Ok(()))
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test]
async fn a_100_mib_line_is_discarded_in_bounded_memory() {
    const LINE: u64 = 100 * 1024 * 1024;
    let before = peak_rss_kib();
    let source = LongLine {
        remaining: LINE,
        tail: b"\n{\"chi\":\"cleanup\",\"sid\":\"after\"}\n",
    };
    let stats = std::sync::Arc::new(thrum::WireStats::default());
    let mut reader = ToneReader::new(
        BufReader::with_capacity(64 * 1024, source),
        thrum::DEFAULT_MAX_LINE,
        stats.clone(),
    );

    let first = reader.recv().await.unwrap();
    assert_eq!(
        first,
        Some(Inbound::Rejected(Rejected::TooLong {
            limit: thrum::DEFAULT_MAX_LINE
        }))
    );
    let second = reader.recv().await.unwrap();
    assert_eq!(
        second,
        Some(Inbound::Tone(
            Tone::new(thrum::Cleanup::default()).with_sid("after")
        ))
    );
    assert_eq!(reader.recv().await.unwrap(), None);

    let grown_mib = (peak_rss_kib() - before) / 1024;
    // The framer may hold up to the 8 MiB limit before giving up on a line,
    // plus read buffers; 100 MiB of line must not show up.
    assert!(
        grown_mib < 24,
        "peak RSS grew by {grown_mib} MiB for a 100 MiB line"
    );
    let s = stats.snapshot();
    assert_eq!((s.too_long, s.discarded_bytes, s.tones_in), (1, LINE, 1));
}
