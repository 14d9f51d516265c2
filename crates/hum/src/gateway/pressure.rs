//! A parked turn never holds a cell another prompt waits for: while turns
//! are parked, the gateway looks at humd's status every
//! [`PRESSURE_EVERY`], and when prompts are queued for a cell, that many
//! parked turns give their cells back, oldest first (their calls can still
//! be answered late: see `released`).

use super::Gateway;
use std::sync::Arc;
use std::time::Duration;

/// How often the gateway checks for prompts waiting behind parked turns:
/// a small share of the admission timeout a queued prompt has.
pub const PRESSURE_EVERY: Duration = Duration::from_millis(250);

/// Prompts waiting for a cell, over every worker humd knows.
pub fn queued(status: &crate::reports::DaemonStatus) -> usize {
    status
        .workers
        .iter()
        .filter_map(|w| w.status.as_ref())
        .map(|s| s.pool.queued)
        .sum()
}

/// Runs for the gateway's life.
pub async fn watch(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(PRESSURE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if gw.parked.count() == 0 {
            continue;
        }
        let Ok(status) = crate::client::fetch_status(&gw.socket).await else {
            continue;
        };
        let waiting = queued(&status);
        if waiting > 0 {
            let n = gw.parked.release_oldest(waiting);
            if n > 0 {
                tracing::info!(
                    event = "gateway.parked_preempted",
                    released = n,
                    queued = waiting,
                    "prompts wait for a cell: parked turns give theirs back"
                );
            }
        }
    }
}
