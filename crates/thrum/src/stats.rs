//! Counters kept per reader and per connection, readable at any time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What went over one connection (or through one reader). All counters only
/// grow; `snapshot` reads them for status output and tests.
#[derive(Debug, Default)]
pub struct WireStats {
    /// Tones decoded and handed to the caller.
    pub tones_in: AtomicU64,
    /// Lines that were not JSON objects with a `chi`: dropped.
    pub malformed: AtomicU64,
    /// Objects with a known `chi` but the wrong shape: handed up as rejected.
    pub invalid: AtomicU64,
    /// Lines over the length limit: discarded without being stored.
    pub too_long: AtomicU64,
    /// Bytes thrown away as parts of over-long lines.
    pub discarded_bytes: AtomicU64,
    /// Tones queued for writing.
    pub tones_out: AtomicU64,
    /// Tones refused because the outbound queue was full (the connection is
    /// closed when that happens).
    pub overflows: AtomicU64,
}

/// A plain copy of [`WireStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub tones_in: u64,
    pub malformed: u64,
    pub invalid: u64,
    pub too_long: u64,
    pub discarded_bytes: u64,
    pub tones_out: u64,
    pub overflows: u64,
}

impl WireStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            tones_in: self.tones_in.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            invalid: self.invalid.load(Relaxed),
            too_long: self.too_long.load(Relaxed),
            discarded_bytes: self.discarded_bytes.load(Relaxed),
            tones_out: self.tones_out.load(Relaxed),
            overflows: self.overflows.load(Relaxed),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }
}
