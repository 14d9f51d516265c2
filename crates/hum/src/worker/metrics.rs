//! What a worker counts, for humd's `/metrics`: sent inside each
//! `worker-status` as cumulative counters and histograms (bucket counts),
//! which humd sums across workers and serves as Prometheus text.

use serde::Serialize;
use std::collections::BTreeMap;

/// A histogram of seconds with fixed bucket bounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Histogram {
    /// Upper bounds, seconds, ascending (the +Inf bucket is implied).
    pub bounds: Vec<f64>,
    /// Observations per bucket, not cumulative; one more than `bounds`.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe_ms(&mut self, ms: u64) {
        let secs = ms as f64 / 1000.0;
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += secs;
        self.count += 1;
    }
}

/// Everything a worker counts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerMetrics {
    pub spawns: u64,
    pub reuses: u64,
    /// By "reason/rung".
    pub teardowns: BTreeMap<String, u64>,
    /// Turns ended, by outcome (`done`, `cancelled`, `overloaded`, …).
    pub turns: BTreeMap<String, u64>,
    /// Processes of previous instances ended at start-up.
    pub orphans_swept: u64,
    pub teardown_seconds: Histogram,
    pub admission_wait_seconds: Histogram,
    pub turn_seconds: Histogram,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            spawns: 0,
            reuses: 0,
            teardowns: BTreeMap::new(),
            turns: BTreeMap::new(),
            orphans_swept: 0,
            teardown_seconds: Histogram::new(&[0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0]),
            admission_wait_seconds: Histogram::new(&[
                0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            turn_seconds: Histogram::new(&[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let mut h = Histogram::new(&[0.01, 0.1]);
        h.observe_ms(5);
        h.observe_ms(10);
        h.observe_ms(50);
        h.observe_ms(5000);
        assert_eq!(h.counts, vec![2, 1, 1]);
        assert_eq!(h.count, 4);
        assert!((h.sum - 5.065).abs() < 1e-9);
    }
}
