//! Which worker a prompt goes to: the one holding its sid, else (alone)
//! the least loaded here. On a cluster node, prompts for sids no worker
//! here holds wait while the cluster says which
//! node takes them (humd of a cluster node only; alone, nothing waits).
//! The router never waits for the answer: it asks without blocking, holds
//! the sid's prompts, and routes them when `Placed` comes.

use super::*;
use tokio::sync::mpsc;

/// Connections of the cluster's links to other nodes have ids from here
/// up; the socket's count up from 0 and never get this far.
pub const REMOTE_CONNS: ConnId = 1 << 62;

/// Sids whose placement may be awaited at once; past it a new sid is
/// refused as `overloaded` (the cluster is not answering fast enough).
const MAX_PLACING: usize = 10_000;

/// Prompts of one sid that may wait for its placement: a placement takes
/// milliseconds, a bee sending more meanwhile is flooding, and each held
/// prompt may be a whole line (8 MiB) no longer counted in any budget.
const MAX_HELD_PER_SID: usize = 16;

/// Where a new sid goes, as the cluster said.
pub use crate::daemon::cluster::Placement;

/// What the router asks the cluster.
#[derive(Debug)]
pub struct PlaceRequest {
    pub sid: String,
    pub model: Option<String>,
    /// The node the prompt came from (its link's), when it was forwarded:
    /// that node placed it here; the map is only checked.
    pub from_node: Option<String>,
}

/// What the router tells the cluster's loop.
#[derive(Debug)]
pub enum ToCluster {
    /// Where does this new sid go?
    Place(PlaceRequest),
    /// A turn of `sid` ended well on this node: its transcript is at
    /// `path`, to keep a copy of.
    Saved {
        sid: String,
        path: std::path::PathBuf,
    },
    /// What a turn asked here cost, for the other nodes' budgets.
    Spent(SpentNote),
    /// This node drains (`hum drain`), or stops draining.
    Drain(bool),
    /// What this node's own foragers serve now (tool specs and
    /// capabilities), for the other nodes' cells.
    Catalogue {
        tools: Vec<serde_json::Value>,
        provides: Vec<String>,
    },
}

/// What one turn cost, as the node of its asker recorded it.
pub use crate::usage::shared::SharedTurn as SpentNote;

/// A prompt held until its sid is placed.
pub(super) struct Held {
    id: ConnId,
    role: Role,
    tone: Tone,
    at: Instant,
}

/// The router's side of placement: where it asks, and what waits.
pub(super) struct Placing {
    asks: mpsc::Sender<ToCluster>,
    held: HashMap<String, Vec<Held>>,
    /// The catalogue the cluster last took (to say only changes).
    shared: (Vec<Value>, Vec<String>),
}

impl Placing {
    pub(super) fn new(asks: mpsc::Sender<ToCluster>) -> Placing {
        Placing {
            asks,
            held: HashMap::new(),
            shared: Default::default(),
        }
    }

    /// Tells the cluster what this node's foragers serve, if it changed;
    /// false when the cluster did not take it now (to be said again).
    pub(super) fn share_catalogue(&mut self, now: (Vec<Value>, Vec<String>)) -> bool {
        if now == self.shared {
            return true;
        }
        let (tools, provides) = now.clone();
        if self
            .asks
            .try_send(ToCluster::Catalogue { tools, provides })
            .is_err()
        {
            return false;
        }
        self.shared = now;
        true
    }

    /// Tells the cluster what a turn cost (dropped, and said, when the
    /// cluster is not taking news now).
    pub(super) fn spent(&self, note: SpentNote) {
        if self.asks.try_send(ToCluster::Spent(note)).is_err() {
            tracing::warn!(
                event = "cluster.spend_not_shared",
                "the other nodes do not hear of this turn's cost"
            );
        }
    }
}

/// The `hid` of the link that carries another node's cells' calls of the
/// tools of foragers here (`calls:<node>`); only a link's hello is read so.
pub const CALLS_HID_PREFIX: &str = "calls:";

impl Router {
    /// `sid` leaves this node: the cluster settled it on another (two
    /// served it while NATS was away), or this node drains. Its cell here
    /// is torn down through the worker's one teardown path, as a `cleanup`
    /// would.
    pub(super) fn tear_down_here(&mut self, sid: &str, why: &'static str) {
        let Some(worker) = self.routes.worker_of(sid).filter(|w| !is_remote(*w)) else {
            return;
        };
        tracing::info!(event = "cluster.cell_moves_away", sid = %sid, worker, why, "the sid leaves this node: its cell here goes");
        self.cancel_calls_of_sid(sid);
        let mut t = Tone::new(thrum::Cleanup::default()).with_sid(sid);
        t.envelope.from = Some("daemon".into());
        t.envelope.sigil = Some(thrum::sigil(&self.hive_of(worker), sid));
        self.send(worker, t);
    }

    /// The cluster's view with the sids routed from here to another node
    /// (and to which), for status.
    pub(super) fn sids_elsewhere(
        &self,
        mut view: crate::reports::ClusterStatus,
    ) -> crate::reports::ClusterStatus {
        let mut elsewhere: Vec<(String, String)> = Vec::new();
        let mut count = 0;
        for (sid, worker) in self.routes.held().filter(|(_, w)| is_remote(*w)) {
            count += 1;
            if elsewhere.len() < crate::reports::MAX_SIDS_SHOWN {
                let node = self
                    .peers
                    .get(&worker)
                    .and_then(|p| p.hid.as_deref())
                    .map(|h| h.strip_prefix("node:").unwrap_or(h).to_owned())
                    .unwrap_or_default();
                elsewhere.push((sid.clone(), node));
            }
        }
        elsewhere.sort();
        view.sids_elsewhere = elsewhere;
        view.sids_elsewhere_count = count;
        view
    }

    /// A cancel of `sid` while its prompts wait for placement: the one it
    /// names by rid, else all of them, end now as cancelled turns (each
    /// asker gets its `finish`); returns how many.
    pub(super) fn cancel_held(&mut self, sid: &str, rid: Option<&str>) -> usize {
        let Some(held) = self.placing.as_mut().and_then(|p| p.held.get_mut(sid)) else {
            return 0;
        };
        let mut gone = Vec::new();
        held.retain_mut(|h| {
            let named = rid.is_none_or(|r| h.tone.rid() == Some(r));
            if named {
                gone.push((h.id, h.tone.rid().map(str::to_owned)));
            }
            !named
        });
        // The placement's answer still comes; with nothing held it routes
        // nothing.
        for (asker, turn_rid) in &gone {
            let mut t = Tone::new(thrum::Finish {
                finish_reason: Some(thrum::FinishReason::Cancelled),
                ..Default::default()
            })
            .with_sid(sid);
            t.envelope.rid = turn_rid.clone();
            t.envelope.from = Some("daemon".into());
            self.send(*asker, t);
        }
        gone.len()
    }

    /// `hum drain`: no new sids here, the idle cells go now and the busy
    /// ones when their turns end; their sids move on their next prompts
    /// (with their transcripts). Only a cluster node drains.
    pub(super) fn drain(&mut self, id: ConnId, rid: Option<&str>, on: bool) {
        let Some(placing) = &self.placing else {
            let message = "only a cluster node drains (this humd serves alone)".to_owned();
            self.send(id, error(ErrorCode::BadRequest, message, None, rid));
            return self.ack(id, rid, false);
        };
        if placing.asks.try_send(ToCluster::Drain(on)).is_err() {
            let message = "the cluster is busy; try again".to_owned();
            self.send(id, error(ErrorCode::Overloaded, message, None, rid));
            return self.ack(id, rid, false);
        }
        self.draining = on;
        tracing::info!(event = "cluster.draining", on, "this node drains");
        if on {
            for (sid, worker) in self.routes.idle_sids() {
                if !is_remote(worker) {
                    self.tear_down_here(&sid, "draining");
                }
            }
        }
        self.ack(id, rid, true);
    }

    /// A turn of `sid` ended on a worker here: on a draining node, its cell
    /// goes once the sid has no other turn.
    pub(super) fn drained_turn(&mut self, worker: ConnId, sid: &str) {
        if self.draining && !is_remote(worker) && !self.routes.busy(sid) {
            self.tear_down_here(sid, "draining");
        }
    }
}

/// Whether a connection is one of the cluster's links.
pub fn is_remote(id: ConnId) -> bool {
    id >= REMOTE_CONNS
}

impl Router {
    /// Makes this humd a cluster node: new sids are placed by `asks`.
    pub fn set_placer(&mut self, asks: mpsc::Sender<ToCluster>) {
        self.placing = Some(Placing::new(asks));
    }

    /// Holds `tone` (a prompt for `sid`, which no worker here holds) until
    /// the cluster places it; returns it when there is no cluster, or it
    /// cannot be asked now (then the sid is served here).
    pub(super) fn hold_for_placement(
        &mut self,
        id: ConnId,
        role: &Role,
        sid: &str,
        model: Option<&str>,
        tone: Tone,
    ) -> Option<Tone> {
        let from_node = is_remote(id)
            .then(|| self.node_of_conn(id))
            .flatten()
            .map(str::to_owned);
        self.hold_placing(id, role, sid, model, tone, from_node)
    }

    /// The node a link's connection is to.
    pub(super) fn node_of_conn(&self, id: ConnId) -> Option<&str> {
        node_of_peer(&self.peers, id)
    }

    /// Whether two connections are links to one other node.
    pub(super) fn same_node(&self, a: ConnId, b: ConnId) -> bool {
        is_remote(a)
            && is_remote(b)
            && self
                .node_of_conn(a)
                .is_some_and(|n| self.node_of_conn(b) == Some(n))
    }

    /// [`Router::hold_for_placement`], for a prompt the cluster placed on
    /// this node from `from_node` (it only checks), if it did.
    pub(super) fn hold_placing(
        &mut self,
        id: ConnId,
        role: &Role,
        sid: &str,
        model: Option<&str>,
        tone: Tone,
        from_node: Option<String>,
    ) -> Option<Tone> {
        let Some(placing) = &mut self.placing else {
            return Some(tone);
        };
        if let Some(waiting) = placing.held.get_mut(sid) {
            if waiting.len() < MAX_HELD_PER_SID {
                waiting.push(Held {
                    id,
                    role: role.clone(),
                    tone,
                    at: Instant::now(),
                });
                return None;
            }
            self.refuse(
                id,
                &tone,
                ErrorCode::Overloaded,
                format!("{MAX_HELD_PER_SID} prompts of sid {sid} already wait for the cluster to place it; retry later"),
            );
            return None;
        }
        if placing.held.len() >= MAX_PLACING {
            self.refuse(
                id,
                &tone,
                ErrorCode::Overloaded,
                "too many sids are waiting for the cluster to place them; retry later".into(),
            );
            return None;
        }
        let ask = PlaceRequest {
            sid: sid.to_owned(),
            model: model.map(str::to_owned),
            from_node,
        };
        match placing.asks.try_send(ToCluster::Place(ask)) {
            Ok(()) => {
                placing.held.insert(
                    sid.to_owned(),
                    vec![Held {
                        id,
                        role: role.clone(),
                        tone,
                        at: Instant::now(),
                    }],
                );
                None
            }
            Err(_) => {
                self.stats.placed_here_unasked += 1;
                tracing::warn!(event = "cluster.place_unasked", sid = %sid,
                    "the cluster cannot be asked now; the sid is served here");
                Some(tone)
            }
        }
    }

    /// The cluster's answer for `sid`: its held prompts go there, in the
    /// order they came (those whose asker left are dropped). `restore`: the
    /// transcript of a sid that moved here, for the worker to put in place.
    pub(super) fn placed(
        &mut self,
        sid: &str,
        placement: Placement,
        restore: Option<std::path::PathBuf>,
    ) {
        let Some(held) = self.placing.as_mut().and_then(|p| p.held.remove(sid)) else {
            return;
        };
        if let Some(first) = held.first() {
            self.cluster_timings
                .placement_seconds
                .observe(first.at.elapsed());
        }
        for mut h in held {
            if !self.peers.contains_key(&h.id) {
                continue;
            }
            if let (Some(path), Body::Prompt(p)) = (&restore, &mut h.tone.body) {
                p.extra.insert(
                    crate::reports::PROMPT_RESTORE_TRANSCRIPT.into(),
                    Value::String(path.to_string_lossy().into_owned()),
                );
            }
            self.route_prompt(h.id, &h.role, h.tone, Some(&placement));
        }
    }

    /// A local worker says where a sid's transcript is after a good turn:
    /// the cluster keeps a copy (nothing to do on one machine).
    pub(super) fn transcript_saved(&mut self, id: ConnId, line: &[u8]) {
        let Some(placing) = &self.placing else {
            return;
        };
        if is_remote(id) {
            return;
        }
        #[derive(serde::Deserialize)]
        struct Saved {
            sid: String,
            path: std::path::PathBuf,
        }
        let Ok(saved) = serde_json::from_slice::<Saved>(line) else {
            return;
        };
        if placing
            .asks
            .try_send(ToCluster::Saved {
                sid: saved.sid.clone(),
                path: saved.path,
            })
            .is_err()
        {
            tracing::warn!(event = "cluster.transcript_not_kept", sid = %saved.sid,
                "the cluster is not taking transcripts now; this turn's is not copied");
        }
    }

    /// The worker that holds `sid`, if it serves `model`.
    pub(super) fn sticky(&self, sid: &str, model: Option<&str>) -> Option<ConnId> {
        self.routes
            .worker_of(sid)
            .filter(|w| self.serves(*w, model) || (model.is_none() && self.peers.contains_key(w)))
    }

    /// The least loaded of this node's own workers serving `model` (the
    /// cluster's links to other nodes are chosen only by placement).
    pub(super) fn pick_local(&self, model: Option<&str>) -> Option<ConnId> {
        let mut candidates: Vec<ConnId> = self
            .peers
            .keys()
            .copied()
            .filter(|w| !is_remote(*w) && self.serves(*w, model))
            .collect();
        if candidates.is_empty() && model.is_none() {
            // No worker of the default hive: any worker will do.
            candidates = self
                .peers
                .iter()
                .filter(|(w, p)| !is_remote(**w) && matches!(p.role, Role::Worker { .. }))
                .map(|(w, _)| *w)
                .collect();
        }
        candidates.into_iter().min_by_key(|w| (self.load(*w), *w))
    }

    /// The worker for a prompt of `sid`: the one holding it, the one the
    /// cluster placed it on, or (not asked yet) one here, unless the
    /// prompt now waits for the cluster (then none, and the tone is kept).
    pub(super) fn worker_for(
        &mut self,
        id: ConnId,
        role: &Role,
        sid: &str,
        model: Option<&str>,
        tone: Tone,
        placement: Option<&Placement>,
    ) -> Option<(Option<ConnId>, Tone)> {
        let worker = match placement {
            Some(p) => self.placed_worker(p, model),
            None => match self.sticky(sid, model) {
                // Routed to the very node that sent the prompt here: that
                // node placed the sid here since (its cell there went), so
                // the route is old; the prompt is placed here as that
                // node's, checked, with the session's transcript.
                Some(w) if self.same_node(id, w) => {
                    if let Some(node) = self.node_of_conn(w).map(str::to_owned) {
                        let peers = &self.peers;
                        self.routes.unroute(sid, |c| link_to(peers, c, &node));
                    }
                    let tone = self.hold_for_placement(id, role, sid, model, tone)?;
                    return Some((self.pick_local(model), tone));
                }
                Some(w) => Some(w),
                None => {
                    let tone = self.hold_for_placement(id, role, sid, model, tone)?;
                    return Some((self.pick_local(model), tone));
                }
            },
        };
        if matches!(placement, Some(Placement::Node(_))) && worker.is_some() {
            self.stats.placed_remote += 1;
        }
        Some((worker, tone))
    }

    /// The worker a placed prompt goes to: one of this node's own, or the
    /// link to the node the cluster named.
    pub(super) fn placed_worker(
        &self,
        placement: &Placement,
        model: Option<&str>,
    ) -> Option<ConnId> {
        match placement {
            Placement::Here => self.pick_local(model),
            Placement::Node(node) => self
                .peers
                .iter()
                .filter(|(c, p)| {
                    is_remote(**c)
                        && matches!(p.role, Role::Worker { .. })
                        && p.hid.as_deref().and_then(node_of) == Some(node.as_str())
                })
                .map(|(c, _)| *c)
                .min(),
        }
    }
}

/// Whether connection `c` is one of the links to `node`.
pub(super) fn link_to(peers: &HashMap<ConnId, Peer>, c: ConnId, node: &str) -> bool {
    is_remote(c) && node_of_peer(peers, c) == Some(node)
}

/// The node connection `c` is a link to, if it is one.
pub(super) fn node_of_peer(peers: &HashMap<ConnId, Peer>, c: ConnId) -> Option<&str> {
    peers
        .get(&c)
        .and_then(|p| p.hid.as_deref())
        .and_then(node_of)
}

/// The node a link's hid names (`node:NAME`).
pub fn node_of(hid: &str) -> Option<&str> {
    hid.strip_prefix("node:")
}
