//! Where a new sid goes: the placement rule's choice unless the sid map
//! says it lives elsewhere, asked from a task of its own; a sid that moves
//! here brings its transcript.

use super::*;

/// Sids served here while NATS was away, remembered to be written to the
/// map when it is back; past this many the rest are not (one of them whose
/// next placement is elsewhere then has a second cell until this node
/// evicts it).
const MAX_UNREGISTERED: usize = 100_000;

/// How long a placement waits for the link to a node heard alive (a link
/// is in memory: greeted in milliseconds; this only bounds a bug).
const LINK_WITHIN: Duration = Duration::from_secs(3);

impl Node {
    /// Where a new sid goes: the placement rule's choice, unless the map
    /// says it lives on a node that still holds sids. The map is asked
    /// from a task of its own; its answer goes to the router.
    pub(super) fn place(&mut self, js: &Js, ask: PlaceRequest) {
        let now = Instant::now();
        self.load_changed();
        let me = self.settings.node.clone();
        // NATS away: served here at once (not after the map's timeout),
        // and written to the map when NATS is back.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!(event = "cluster.placed_alone", sid = %ask.sid, "NATS is away: the sid is served here");
            // Its turn starts now: newer than any the map's holder had
            // (settled by turn times when NATS is back).
            self.turn_times
                .note(&ask.sid, crate::usage::unix_ms().max(0) as u64);
            self.serving_alone(ask.sid.clone());
            let router = self.router.clone();
            tokio::spawn(async move { answer(&router, ask.sid, Placement::Here, None).await });
            return;
        }
        let reachable: HashSet<String> = self
            .ready
            .all()
            .into_iter()
            .filter(|n| self.nodes.holds(n, now))
            .chain(std::iter::once(me.clone()))
            .collect();
        let alive = self.alive(now);
        // A forwarded prompt was placed here by its node: only checked
        // (unless this node drains: then it goes on to another).
        let want = match &ask.from_node {
            Some(_) if !self.draining => me.clone(),
            _ => match self
                .nodes
                .place(ask.model.as_deref(), now, |n| reachable.contains(n))
            {
                Placement::Here => me.clone(),
                Placement::Node(n) => n,
            },
        };
        let store = js.sids.clone();
        let ready = self.ready.clone();
        let kept = js.transcripts.clone();
        let router = self.router.clone();
        tokio::spawn(async move {
            let claimed = tokio::time::timeout(
                sidmap::CLAIM_WITHIN,
                sidmap::claim(
                    &store,
                    &ask.sid,
                    &want,
                    |n| alive.contains(n),
                    crate::usage::unix_ms().max(0) as u64,
                ),
            )
            .await;
            let (placement, moved_from) = match claimed {
                Ok(Ok(c)) if c.node == me => (Placement::Here, c.moved_from),
                Ok(Ok(c)) => {
                    // Alive but not linked from here yet (this humd has
                    // just started): its link is greeted in moments.
                    let deadline = Instant::now() + LINK_WITHIN;
                    while !ready.has(&c.node) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    (Placement::Node(c.node), None)
                }
                Ok(Err(e)) => {
                    tracing::warn!(event = "cluster.place_failed", sid = %ask.sid, error = %e, "placed here instead");
                    (Placement::Here, None)
                }
                Err(_) => {
                    tracing::warn!(event = "cluster.place_failed", sid = %ask.sid, "the sid map did not answer in time; placed here");
                    (Placement::Here, None)
                }
            };
            // A session that moved here from a node that is gone, or that
            // a node forwards here after moving it (a draining node moves
            // its sids on its askers' prompts): its transcript comes with
            // it, if the cluster kept one.
            let restore = match (&moved_from, &ask.from_node, &placement) {
                (Some(from), _, Placement::Here) => {
                    tracing::info!(event = "cluster.sid_moved", sid = %ask.sid, from = %from, to = %me, "a session moves here");
                    kept.fetch(&ask.sid).await
                }
                (None, Some(_), Placement::Here) => kept.fetch(&ask.sid).await,
                _ => None,
            };
            tracing::debug!(event = "cluster.placed", sid = %ask.sid, placement = ?placement, "placed");
            answer(&router, ask.sid, placement, restore).await;
        });
    }
}

impl Node {
    /// A sid served here while NATS is away (or not settled yet): written
    /// to the map when NATS is back.
    pub(super) fn serving_alone(&mut self, sid: String) {
        if self.unregistered.len() < MAX_UNREGISTERED {
            self.unregistered.insert(sid);
        }
    }

    /// The nodes a sid stays on: this one, and every node heard alive and
    /// not draining, linked from here or not yet (a node that just started
    /// must not take a live node's sids).
    fn alive(&self, now: Instant) -> HashSet<String> {
        self.nodes
            .view(now)
            .into_iter()
            .map(|(r, _)| r.node)
            .filter(|n| self.nodes.holds(n, now))
            .chain((!self.draining).then(|| self.settings.node.clone()))
            .collect()
    }

    /// After NATS was away: the sids served here meanwhile go in the map
    /// (as this node's, unless another node that still holds sids took
    /// one first, said in the log).
    pub(super) fn register_alone(&mut self, js: &Js) {
        if self.unregistered.is_empty()
            || self.client.connection_state() != async_nats::connection::State::Connected
        {
            return;
        }
        let sids: Vec<(String, Option<u64>)> = self
            .unregistered
            .drain()
            .map(|s| {
                let at = self.turn_times.get(&s);
                (s, at)
            })
            .collect();
        let store = js.sids.clone();
        let me = self.settings.node.clone();
        let now = Instant::now();
        let holding = self.alive(now);
        let again = self.unsettled.0.clone();
        let settler = reconcile::Settler {
            client: self.client.clone(),
            store: store.clone(),
            router: self.router.clone(),
            cluster: self.settings.name.clone(),
            me: me.clone(),
        };
        tokio::spawn(async move {
            for (sid, turned) in sids {
                let at = crate::usage::unix_ms().max(0) as u64;
                match sidmap::claim(&store, &sid, &me, |n| holding.contains(n), at).await {
                    Ok(c) if c.node == me => {
                        tracing::info!(event = "cluster.sid_registered", sid = %sid, "a sid served while NATS was away is in the map")
                    }
                    Ok(c) => {
                        tracing::warn!(event = "cluster.sid_on_two_nodes", sid = %sid, other = %c.node, "a sid served here while NATS was away lives on another node too: settling it");
                        let settled = settler.settle(&c.node, &sid, turned).await;
                        if !settled {
                            let _ = again.send(sid);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(event = "cluster.sid_unregistered", sid = %sid, error = %e, "a sid served here is not in the map yet; tried again");
                        let _ = again.send(sid);
                    }
                }
            }
        });
    }
}
