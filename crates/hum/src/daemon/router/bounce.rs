//! Prompts that come back between two nodes. A node routes a sid to the
//! node its cell was on; when that node has let the cell go (it drains)
//! and the cluster places the sid on the first node, the prompt goes back
//! there: the placing node sends it back without keeping a turn of it, and
//! the first node, finding its own turn in flight to that node, takes the
//! turn out and places it again as its asker's (checked against the sid
//! map, the session's transcript fetched).

use super::placing::{is_remote, link_to, node_of_peer, Placement};
use super::*;

impl Router {
    /// A prompt that comes back from the node its turn went to (that node
    /// placed the sid here: it drains, or its cell went): held for this
    /// node's placement as its asker's, checked and with the transcript
    /// fetched as any prompt placed here from there. True when it was one.
    pub(super) fn bounced(
        &mut self,
        id: ConnId,
        sid: &str,
        rid: &str,
        model: Option<&str>,
        tone: &Tone,
    ) -> bool {
        if !is_remote(id) {
            return false;
        }
        // Borrowed from the peers (no copy on the path of every forwarded
        // prompt), owned only once it is one.
        let peers = &self.peers;
        let Some(node) = node_of_peer(peers, id) else {
            return false;
        };
        let Some((asker, cancelled)) = self.routes.bounced(sid, rid, |c| link_to(peers, c, node))
        else {
            return false;
        };
        let node = node.to_owned();
        if cancelled {
            // Cancelled while it went there and back (the cancel found no
            // turn there): it ends here, cancelled, and runs nowhere.
            tracing::info!(event = "cluster.prompt_bounced", sid = %sid, rid = %rid, node = %node, outcome = "cancelled", "the sid's node sent back a prompt its asker had cancelled: it ends here");
            if let Some(asker) = asker {
                let mut t = Tone::new(thrum::Finish {
                    finish_reason: Some(thrum::FinishReason::Cancelled),
                    ..Default::default()
                })
                .with_sid(sid);
                t.envelope.rid = Some(rid.to_owned());
                t.envelope.from = Some("daemon".into());
                self.send(asker, t);
            }
            return true;
        }
        tracing::info!(event = "cluster.prompt_bounced", sid = %sid, rid = %rid, node = %node, "the sid's node placed its prompt here: it is served here");
        let Some((asker, role)) =
            asker.and_then(|a| self.peers.get(&a).map(|p| (a, p.role.clone())))
        else {
            // Its asker is gone: nothing waits for the turn.
            return true;
        };
        if let Some(back) = self.hold_placing(asker, &role, sid, model, tone.clone(), Some(node)) {
            // No cluster to ask now: served here.
            self.route_prompt(asker, &role, back, Some(&Placement::Here));
        }
        true
    }

    /// Sends `tone` (a prompt that came from `id`'s node) back to that
    /// node through `worker`, keeping no turn of it here: its answer goes
    /// from there to its asker. If it cannot go, that node's turn ends
    /// as `worker_lost`.
    pub(super) fn send_back(
        &mut self,
        id: ConnId,
        worker: ConnId,
        sid: &str,
        rid: &str,
        tone: Tone,
    ) {
        tracing::info!(event = "cluster.prompt_sent_back", sid = %sid, rid = %rid, "the sid was placed on the node its prompt came from: sent back there");
        if !self.send(worker, tone) {
            self.stats.worker_lost += 1;
            let lost = error(
                ErrorCode::WorkerLost,
                "the node the sid was placed on could not take the prompt",
                Some(sid),
                Some(rid),
            );
            self.send(id, lost);
        }
    }
}
