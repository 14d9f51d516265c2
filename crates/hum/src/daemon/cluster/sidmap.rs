//! The sid → node map, a JetStream key-value bucket changed only by
//! compare-and-set: two nodes placing one sid at the same moment both read
//! the one winner back, so the whole cluster starts one cell for it.

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A placement that has not settled in this many rounds (each lost to
/// another node's write) gives up; each round is one read and one write.
const MAX_ROUNDS: usize = 8;

/// What the map holds for a sid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub sid: String,
    pub node: String,
    /// When the node took the sid (ms since the epoch, the taker's clock):
    /// on a sid found on two nodes, the later one keeps it.
    pub since_ms: u64,
}

/// The key of a sid: sids are any text, keys are not; a digest is.
pub fn key(sid: &str) -> String {
    let d = Sha256::digest(sid.as_bytes());
    d.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// What to do with a sid's entry as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// It lives on that node: send it there.
    Keep(String),
    /// No one holds it: create the entry.
    Create,
    /// Its node is gone or draining: take it over, if the entry is still
    /// at this revision.
    Replace(u64),
}

/// The rule: a sid stays where it lives while that node holds sids.
pub fn step(read: Option<(Holder, u64)>, holds: impl Fn(&str) -> bool) -> Step {
    match read {
        None => Step::Create,
        Some((h, _)) if holds(&h.node) => Step::Keep(h.node),
        Some((_, revision)) => Step::Replace(revision),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("the sid map did not answer: {0}")]
    Nats(String),
    #[error("the sid map kept changing under {MAX_ROUNDS} tries")]
    Contended,
}

/// Where a sid lives, as the map says after a claim.
#[derive(Debug, PartialEq, Eq)]
pub struct Claimed {
    pub node: String,
    /// It lived on another node that no longer holds sids: its session
    /// moves (its transcript is to be restored).
    pub moved_from: Option<String>,
}

/// Where `sid` lives: its holder if alive, else `want` once written. The
/// answer is the map's, whoever wrote it.
pub async fn claim(
    store: &kv::Store,
    sid: &str,
    want: &str,
    holds: impl Fn(&str) -> bool,
    now_ms: u64,
) -> Result<Claimed, ClaimError> {
    let key = key(sid);
    let mine = Holder {
        sid: sid.to_owned(),
        node: want.to_owned(),
        since_ms: now_ms,
    };
    let value: bytes::Bytes = serde_json::to_vec(&mine)
        .map_err(|e| ClaimError::Nats(e.to_string()))?
        .into();
    let mine = |moved_from: Option<String>| Claimed {
        node: want.to_owned(),
        moved_from,
    };
    for _ in 0..MAX_ROUNDS {
        let read = read(store, &key).await?;
        let was = read
            .as_ref()
            .map(|(h, _)| h.node.clone())
            .filter(|n| !n.is_empty() && n != want);
        match step(read, &holds) {
            Step::Keep(node) => {
                return Ok(Claimed {
                    node,
                    moved_from: None,
                })
            }
            Step::Create => match store.create(&key, value.clone()).await {
                Ok(_) => return Ok(mine(None)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ClaimError::Nats(e.to_string())),
            },
            Step::Replace(revision) => match store.update(&key, value.clone(), revision).await {
                Ok(_) => return Ok(mine(was)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(ClaimError::Nats(e.to_string())),
            },
        }
    }
    Err(ClaimError::Contended)
}

/// The node the map says holds `sid`, if any.
pub async fn holder(store: &kv::Store, sid: &str) -> Result<Option<String>, ClaimError> {
    Ok(read(store, &key(sid))
        .await?
        .map(|(h, _)| h.node)
        .filter(|n| !n.is_empty()))
}

/// The entry of `key`, with its revision; a deleted or purged one, or one
/// that does not read as a holder, is none.
async fn read(store: &kv::Store, key: &str) -> Result<Option<(Holder, u64)>, ClaimError> {
    let entry = store
        .entry(key)
        .await
        .map_err(|e| ClaimError::Nats(e.to_string()))?;
    // A tombstone (create() would fail on it, update() works) or a value
    // that is no holder: held by nobody, at that revision.
    let nobody = |revision| {
        let h = Holder {
            sid: String::new(),
            node: String::new(),
            since_ms: 0,
        };
        (h, revision)
    };
    Ok(entry.map(|e| {
        if e.operation != kv::Operation::Put {
            return nobody(e.revision);
        }
        match serde_json::from_slice::<Holder>(&e.value) {
            Ok(h) => (h, e.revision),
            Err(_) => nobody(e.revision),
        }
    }))
}

/// How long a placement may take before the prompt runs here instead.
pub const CLAIM_WITHIN: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    fn held(node: &str) -> Option<(Holder, u64)> {
        Some((
            Holder {
                sid: "s".into(),
                node: node.into(),
                since_ms: 1,
            },
            7,
        ))
    }

    #[test]
    fn an_unknown_sid_is_created() {
        assert_eq!(step(None, |_| true), Step::Create);
    }

    #[test]
    fn a_sid_stays_on_a_live_node() {
        assert_eq!(step(held("b"), |n| n == "b"), Step::Keep("b".into()));
    }

    #[test]
    fn a_sid_of_a_gone_node_is_replaced_at_the_revision_read() {
        assert_eq!(step(held("b"), |n| n == "a"), Step::Replace(7));
    }

    #[test]
    fn an_unreadable_or_deleted_entry_is_no_holder() {
        // Its node is "": nothing holds that.
        let read = Some((
            Holder {
                sid: String::new(),
                node: String::new(),
                since_ms: 0,
            },
            3,
        ));
        assert_eq!(step(read, |n| !n.is_empty()), Step::Replace(3));
    }

    #[test]
    fn keys_are_valid_nats_keys_for_any_sid() {
        for sid in ["a", "with space", "dots.and>wild*", "ünïcode", ""] {
            let k = key(sid);
            assert_eq!(k.len(), 40);
            assert!(k.chars().all(|c| c.is_ascii_hexdigit()), "{k}");
        }
        assert_ne!(key("a"), key("b"));
    }
}
