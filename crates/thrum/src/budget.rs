//! A byte budget shared by many readers: bounds the total bytes of
//! unfinished lines held across every connection of a server, not only per
//! connection.
//!
//! Each [`LineReader`](crate::LineReader) with a budget charges the bytes of
//! the line it is assembling and gives them back once the line is complete
//! (or the reader is dropped). A reader whose line would take the total
//! over the limit abandons that line (the rest of it is skipped up to its
//! newline, like an over-long line) and reports it, so a few hundred peers
//! that each trickle a huge partial line cannot hold gigabytes between them.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The shared counter; wrap in an `Arc` and hand a clone to each reader.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
}

/// A line was abandoned because the shared budget was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server holds {limit} bytes of unfinished lines across its connections; this line was dropped")]
pub struct BudgetExceeded {
    pub limit: usize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they fit under the limit.
    pub fn try_charge(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `n` bytes taken earlier.
    pub fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_limit_and_release_makes_room() {
        let b = ByteBudget::new(100);
        assert!(b.try_charge(60));
        assert!(!b.try_charge(41), "61 + 41 > 100");
        assert!(b.try_charge(40));
        assert_eq!(b.used(), 100);
        b.release(60);
        assert!(b.try_charge(50));
        assert!(!b.try_charge(usize::MAX), "no overflow");
    }
}
