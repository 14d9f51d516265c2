//! The sids a request of this gateway has a turn on. A conversation found
//! by its history goes back to its sid only when no turn is on it: two
//! clients going on from the same history at once (a retry, two
//! evaluators) would otherwise queue on one cell, and the second would
//! answer with the first one's message in its context.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Sids with turns under way, and how many (an explicit session header may
/// put two on one sid: the pool queues them, as the client asked).
#[derive(Debug, Default)]
pub struct InFlight {
    sids: Arc<Mutex<HashMap<String, usize>>>,
}

/// One turn's hold on its sid, given back when dropped with the turn.
#[derive(Debug)]
pub struct Claim {
    sids: Arc<Mutex<HashMap<String, usize>>>,
    sid: String,
}

impl InFlight {
    /// Whether a turn is on `sid`.
    pub fn busy(&self, sid: &str) -> bool {
        self.lock().contains_key(sid)
    }

    /// A turn goes on `sid` until the claim is dropped.
    pub fn claim(&self, sid: &str) -> Claim {
        *self.lock().entry(sid.to_owned()).or_default() += 1;
        Claim {
            sids: self.sids.clone(),
            sid: sid.to_owned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        lock(&self.sids)
    }
}

/// The table, whatever a panicking holder left it as (counts only).
fn lock(sids: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    sids.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut sids = lock(&self.sids);
        if let Some(n) = sids.get_mut(&self.sid) {
            *n -= 1;
            if *n == 0 {
                sids.remove(&self.sid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sid_is_busy_until_its_last_claim_is_dropped() {
        let f = InFlight::default();
        assert!(!f.busy("s"));
        let a = f.claim("s");
        let b = f.claim("s");
        assert!(f.busy("s") && !f.busy("t"));
        drop(a);
        assert!(f.busy("s"), "one turn is still on it");
        drop(b);
        assert!(!f.busy("s"));
        assert!(
            f.lock().is_empty(),
            "nothing is kept for a sid no turn is on"
        );
    }
}
