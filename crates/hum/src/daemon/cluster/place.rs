//! Where a new sid goes: the placement rule's choice unless the sid map
//! says it lives elsewhere, asked from a task of its own; a sid that moves
//! here brings its transcript.

use super::*;

impl Node {
    /// Where a new sid goes: the placement rule's choice, unless the map
    /// says it lives on a node that still holds sids. The map is asked
    /// from a task of its own; its answer goes to the router.
    pub(super) fn place(&mut self, js: &Js, ask: PlaceRequest) {
        let now = Instant::now();
        let me = self.settings.node.clone();
        let reachable: HashSet<String> = self
            .ready
            .iter()
            .filter(|n| self.nodes.holds(n, now))
            .cloned()
            .chain(std::iter::once(me.clone()))
            .collect();
        // A forwarded prompt was placed here by its node: only checked.
        let want = match &ask.from_node {
            Some(_) => me.clone(),
            None => match self
                .nodes
                .place(ask.model.as_deref(), now, |n| reachable.contains(n))
            {
                Placement::Here => me.clone(),
                Placement::Node(n) => n,
            },
        };
        let store = js.sids.clone();
        let kept = js.transcripts.clone();
        let router = self.router.clone();
        tokio::spawn(async move {
            let claimed = tokio::time::timeout(
                sidmap::CLAIM_WITHIN,
                sidmap::claim(
                    &store,
                    &ask.sid,
                    &want,
                    |n| reachable.contains(n),
                    crate::usage::unix_ms().max(0) as u64,
                ),
            )
            .await;
            let (placement, moved_from) = match claimed {
                Ok(Ok(c)) if c.node == me => (Placement::Here, c.moved_from),
                Ok(Ok(c)) => (Placement::Node(c.node), None),
                Ok(Err(e)) => {
                    tracing::warn!(event = "cluster.place_failed", sid = %ask.sid, error = %e, "placed here instead");
                    (Placement::Here, None)
                }
                Err(_) => {
                    tracing::warn!(event = "cluster.place_failed", sid = %ask.sid, "the sid map did not answer in time; placed here");
                    (Placement::Here, None)
                }
            };
            // A session that moved here from a node that is gone: its
            // transcript comes with it.
            let restore = match &moved_from {
                Some(from) => {
                    tracing::info!(event = "cluster.sid_moved", sid = %ask.sid, from = %from, to = %me, "a session moves here");
                    kept.fetch(&ask.sid).await
                }
                None => None,
            };
            tracing::debug!(event = "cluster.placed", sid = %ask.sid, placement = ?placement, "placed");
            answer(&router, ask.sid, placement, restore).await;
        });
    }
}
