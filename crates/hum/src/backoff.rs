//! Waiting longer after each failure: the one backoff hum uses (the
//! worker's reconnects to humd, `hum up`'s restarts of its children).

use std::time::Duration;

/// Exponential backoff from `min` to `max`, doubling per failure, each delay
/// spread by ±`jitter` so a herd of clients does not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    /// Fraction of a delay it may move either way (0.25: ±25 %).
    jitter: f64,
}

impl Backoff {
    /// Doubling from `min` up to `max`, with ±25 % jitter.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            jitter: 0.25,
        }
    }

    /// The same, every delay exactly as doubled (for a single client whose
    /// waits are read by people, like `hum up`'s restarts).
    pub fn exact(mut self) -> Backoff {
        self.jitter = 0.0;
        self
    }

    /// The delay before the next try; the one after it is twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        // Uniform in [1 - jitter, 1 + jitter].
        base.mul_f64(1.0 - self.jitter + 2.0 * self.jitter * fastrand::f64())
    }

    /// The delay `next_delay` would give now, without jitter or doubling.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_and_reset_to_the_floor() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500)).exact();
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_a_quarter_either_way_and_varies() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(5));
            let d = b.next_delay().as_millis() as u64;
            assert!((750..=1250).contains(&d), "{d}");
            seen.insert(d);
        }
        assert!(seen.len() > 20, "no spread: {seen:?}");
    }
}
