//! A histogram of seconds, as status carries it and `/metrics` renders it.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A histogram of seconds with fixed bucket bounds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
        self.observe(Duration::from_millis(ms));
    }

    pub fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
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
