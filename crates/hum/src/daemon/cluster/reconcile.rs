//! A sid with a cell on two nodes: it happens only while NATS is away
//! (each node then serves its own askers' new sids itself). When NATS is
//! back, the node that served a sid alone writes it into the map; if the
//! map says another node holds it, the two settle it: the cell with the
//! newer turn stays, the other is torn down, and the map names the one
//! kept. One request and its answer, so no second cell outlives the pass.

use super::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Turn times remembered (one per sid that ended a good turn here): past
/// this, the oldest tenth is forgotten (a sid whose time is forgotten
/// counts as not turned here lately, which is true of it).
const MAX_TURN_TIMES: usize = 100_000;

/// How long the holder gets to answer before the pass is tried again.
const ASK_WITHIN: Duration = Duration::from_secs(2);

/// When each sid last ended a good turn on this node (wall clock, ms).
#[derive(Default)]
pub(super) struct TurnTimes {
    at: HashMap<String, u64>,
}

impl TurnTimes {
    pub(super) fn note(&mut self, sid: &str, at_ms: u64) {
        if self.at.len() >= MAX_TURN_TIMES && !self.at.contains_key(sid) {
            let mut times: Vec<u64> = self.at.values().copied().collect();
            times.sort_unstable();
            let cut = times[times.len() / 10];
            self.at.retain(|_, t| *t > cut);
        }
        self.at.insert(sid.to_owned(), at_ms);
    }

    pub(super) fn get(&self, sid: &str) -> Option<u64> {
        self.at.get(sid).copied()
    }

    pub(super) fn forget(&mut self, sid: &str) {
        self.at.remove(sid);
    }
}

/// What the node that served a sid alone asks its holder.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ask {
    sid: String,
    /// The node asking.
    node: String,
    /// When the asking node's cell of the sid last ended a turn.
    at_ms: Option<u64>,
}

/// Which of the two cells stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum Keeps {
    /// The node that asked: the holder tore its cell down.
    Asker,
    /// The holder: the asker tears its own down.
    Holder,
}

/// The rule: the newer turn stays; a tie, or neither knowing, stays where
/// the map already says (the holder), so nothing moves for nothing.
pub(super) fn keeps(holders: Option<u64>, askers: Option<u64>) -> Keeps {
    match (holders, askers) {
        (Some(h), Some(a)) if a > h => Keeps::Asker,
        (None, Some(_)) => Keeps::Asker,
        _ => Keeps::Holder,
    }
}

pub(super) fn subject(cluster: &str, node: &str) -> String {
    format!("hum.{cluster}.reconcile.{node}")
}

impl Node {
    /// Another node served a sid of ours while NATS was away: the cell
    /// with the newer turn stays; if it is the asker's, ours goes now.
    pub(super) fn answer_reconcile(&mut self, store: &kv::Store, msg: async_nats::Message) {
        let Some(reply) = msg.reply else {
            return;
        };
        let Ok(ask) = serde_json::from_slice::<Ask>(&msg.payload) else {
            return;
        };
        let verdict = keeps(self.turn_times.get(&ask.sid), ask.at_ms);
        if verdict == Keeps::Asker {
            self.turn_times.forget(&ask.sid);
        }
        let (store, router, client) = (store.clone(), self.router.clone(), self.client.clone());
        tokio::spawn(async move {
            if verdict == Keeps::Asker {
                // The map names the asker before this cell goes, so a
                // prompt here meanwhile is forwarded, not served anew.
                let at = crate::usage::unix_ms().max(0) as u64;
                let node = ask.node.clone();
                if sidmap::claim(&store, &ask.sid, &node, |n| n == node, at)
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = router.send(RouterMsg::TearDown(ask.sid.clone())).await;
            }
            tracing::info!(event = "cluster.sid_reconciled", sid = %ask.sid, asker = %ask.node, keeps = ?verdict, "a sid two nodes served while NATS was away is settled");
            let body = serde_json::to_vec(&verdict).unwrap_or_default();
            let _ = client.publish(reply, body.into()).await;
        });
    }
}

impl Node {
    /// This node's heartbeats did not reach NATS for longer than the node
    /// timeout (a network cut, NATS away): the others took it for gone and
    /// may have moved its sids, each on a newer prompt. A cell here whose
    /// sid the map now puts on another node is stale: it goes. (Sids this node served alone meanwhile are settled by turn
    /// times, `register_alone`.)
    pub(super) fn after_being_away(&mut self, js: &Js, held: Vec<String>, away: Duration) {
        let me = self.settings.node.clone();
        let held: Vec<String> = held
            .into_iter()
            .filter(|s| !self.unregistered.contains(s))
            .collect();
        tracing::info!(event = "cluster.back", node = %me, away_ms = away.as_millis() as u64, cells = held.len(), "this node's heartbeats reach the cluster again: checking its cells' sids");
        let (store, router) = (js.sids.clone(), self.router.clone());
        tokio::spawn(async move {
            for sid in held {
                match sidmap::holder(&store, &sid).await {
                    Ok(Some(node)) if node != me => {
                        tracing::warn!(event = "cluster.stale_cell", sid = %sid, lives_on = %node, "the sid moved while this node was away: its cell here goes");
                        let _ = router.send(RouterMsg::TearDown(sid)).await;
                    }
                    _ => {}
                }
            }
        });
    }
}

/// What settling a sid needs, taken from the node for a task of its own.
pub(super) struct Settler {
    pub client: async_nats::Client,
    pub store: kv::Store,
    pub router: mpsc::Sender<RouterMsg>,
    pub cluster: String,
    pub me: String,
}

impl Settler {
    /// Settles `sid`, which this node served alone and `holder` holds in the
    /// map: returns false when it could not be settled now (tried again at the
    /// next pass).
    pub(super) async fn settle(&self, holder: &str, sid: &str, at_ms: Option<u64>) -> bool {
        let Settler {
            client,
            store,
            router,
            cluster,
            me,
        } = self;
        let ask = Ask {
            sid: sid.to_owned(),
            node: me.to_owned(),
            at_ms,
        };
        let Ok(body) = serde_json::to_vec(&ask) else {
            return true;
        };
        let answer = tokio::time::timeout(
            ASK_WITHIN,
            client.request(subject(cluster, holder), body.into()),
        )
        .await;
        let verdict = match answer {
            Ok(Ok(m)) => match serde_json::from_slice::<Keeps>(&m.payload) {
                Ok(v) => v,
                Err(_) => return false,
            },
            _ => return false,
        };
        match verdict {
            Keeps::Holder => {
                tracing::info!(event = "cluster.sid_reconciled", sid = %sid, kept = %holder, "this node's second cell of the sid goes");
                let _ = router.send(RouterMsg::TearDown(sid.to_owned())).await;
                true
            }
            Keeps::Asker => {
                // The holder's cell is gone: the map names this node (unless a
                // third node took the sid meanwhile, which it may keep).
                let at = crate::usage::unix_ms().max(0) as u64;
                match sidmap::claim(store, sid, me, |n| n == me, at).await {
                    Ok(c) => {
                        tracing::info!(event = "cluster.sid_reconciled", sid = %sid, kept = %c.node, "the sid's newer cell stays");
                        true
                    }
                    Err(_) => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newer_turn_stays_and_a_tie_stays_where_the_map_says() {
        assert_eq!(keeps(Some(10), Some(20)), Keeps::Asker);
        assert_eq!(keeps(Some(20), Some(10)), Keeps::Holder);
        assert_eq!(keeps(Some(10), Some(10)), Keeps::Holder);
        // The holder never ended a turn of it lately: the asker's stays.
        assert_eq!(keeps(None, Some(1)), Keeps::Asker);
        // Neither knows: nothing moves.
        assert_eq!(keeps(None, None), Keeps::Holder);
        assert_eq!(keeps(Some(1), None), Keeps::Holder);
    }

    #[test]
    fn turn_times_stay_bounded_and_forget_the_oldest_first() {
        let mut t = TurnTimes::default();
        for i in 0..MAX_TURN_TIMES as u64 {
            t.note(&format!("s{i}"), i);
        }
        t.note("newest", u64::MAX);
        assert!(t.at.len() <= MAX_TURN_TIMES, "{}", t.at.len());
        assert_eq!(t.get("s0"), None, "the oldest went");
        assert_eq!(t.get("newest"), Some(u64::MAX));
        assert_eq!(
            t.get(&format!("s{}", MAX_TURN_TIMES - 1)),
            Some(MAX_TURN_TIMES as u64 - 1)
        );
        t.forget("newest");
        assert_eq!(t.get("newest"), None);
    }
}
