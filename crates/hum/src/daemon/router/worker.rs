//! The router's worker side: a worker's tones routed by their head to the
//! asker that waits for them, peers leaving, and the turns nobody waits for
//! any more (cancelled at once, or after the asker's grace).

use super::*;

impl Router {
    /// When [`Router::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.routes
            .next_deadline()
            .into_iter()
            .chain(self.desk.announce_due)
            .min()
    }

    /// Cancels the turns of askers whose grace has run out, and sends a
    /// catalogue announcement that was held back.
    pub fn tick(&mut self, now: Instant) {
        if self.desk.announce_due.is_some_and(|at| at <= now) {
            self.desk.announce_due = None;
            self.announce_tools();
        }
        let effects = self.routes.tick(now);
        self.apply(effects);
    }

    /// A peer stopped reading and its connection was closed (outbox
    /// overflow). If it was an asker, its turns are cancelled on their
    /// workers: a bee that does not read loses its own turns, and the
    /// worker's link, shared with every other bee, carries on.
    pub(super) fn stalled(&mut self, id: ConnId) {
        if matches!(
            self.peers.get(&id).map(|p| &p.role),
            Some(Role::Asker { .. } | Role::Forager)
        ) {
            let effects = self.routes.abandon(id, Abandoned::SlowAsker);
            self.apply(effects);
        }
    }

    pub(super) fn worker_tone(&mut self, id: ConnId, tone: RawTone) {
        if tone.head.chi == crate::reports::WORKER_STATUS {
            if let Some(p) = self.peers.get_mut(&id) {
                // Kept as it came; read only when someone asks for status.
                p.status = Some(tone.line);
            }
            return;
        }
        if tone.head.chi == crate::reports::WORKER_TURNS {
            return self.worker_turns(id, &tone.line);
        }
        if tone.head.chi == crate::reports::TRANSCRIPT_SAVED {
            return self.transcript_saved(id, &tone.line);
        }
        if matches!(
            tone.head.chi.as_str(),
            "tool-call" | "cancel" | "permission-ask"
        ) {
            return match tone.decode() {
                Ok(t) => match &t.body {
                    Body::ToolCall(_) => self.tool_call(id, t),
                    Body::PermissionAsk(_) => self.permission_ask(id, t),
                    Body::Cancel(c) => {
                        if let Some(call) = c.call_id.clone() {
                            self.call_cancelled_by_worker(id, &call);
                        }
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::warn!(event = "daemon.worker_tone_unreadable", conn = id, error = %e, "a worker's tool tone did not decode")
                }
            };
        }
        let Some(sid) = tone.head.sid.clone() else {
            // A worker's sid-less error answers one of its own requests.
            return;
        };
        // Lifecycle news of the sid's cell, not of a turn: to the sid's
        // latest asker. A cell that is gone frees its sid: the next prompt
        // for it may go to the least loaded worker, and the map stays as
        // small as the worker's pool plus the turns in flight.
        if tone.head.chi == "pulse" {
            if let Ok(Tone {
                body: Body::Pulse(p),
                ..
            }) = tone.decode()
            {
                if matches!(p.kind.as_str(), "cell-died" | "cell-evicted") {
                    self.routes.cell_gone(id, &sid);
                }
            }
            let asker = self.routes.sid_asker(&sid);
            if !asker.is_some_and(|a| self.send_raw(a, tone)) {
                self.stats.dropped_for_gone_askers += 1;
            }
            return;
        }
        // A turn's tone goes to that turn's asker, never to another
        // prompt's: the turn is named by the tone's rid.
        let ends_turn = matches!(tone.head.chi.as_str(), "finish" | "error");
        // A turn on another node: how long its first word took to come.
        if placing::is_remote(id) {
            if let Some(t) = self
                .routes
                .turn(&sid, id, tone.head.rid.as_deref())
                .filter(|t| !t.running)
            {
                let took = t.started.elapsed();
                let node = placing::node_of_peer(&self.peers, id).unwrap_or("unknown");
                self.cluster_timings.forwarded(node, took);
            }
        }
        let turn = self
            .routes
            .worker_said(id, &sid, tone.head.rid.as_deref(), ends_turn);
        if ends_turn {
            if let Some(t) = &turn {
                let chi = tone.head.chi.clone();
                self.account(&sid, t, &chi, &tone.line);
            }
        }
        // A prompt that waited to take this turn over hears how it ended.
        let claimer = turn
            .as_ref()
            .filter(|_| ends_turn)
            .and_then(|t| self.routes.claim_ended(&sid, &t.rid));
        if let (Some(claimer), Some(t)) = (claimer, &turn) {
            self.ack(claimer, Some(&t.rid), true);
            self.send_raw(claimer, tone.clone());
        }
        let asker = turn
            .as_ref()
            .and_then(|t| t.asker)
            .filter(|a| self.peers.contains_key(a));
        let delivered = match asker {
            Some(a) => self.send_raw(a, tone),
            None => false,
        };
        if !delivered {
            self.stats.dropped_for_gone_askers += 1;
        }
        if ends_turn {
            self.drained_turn(id, &sid);
        }
    }

    pub(super) fn left(&mut self, id: ConnId) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        if peer.probe {
            tracing::debug!(event = "daemon.left", conn = id, role = ?peer.role, "status probe done");
        } else {
            tracing::info!(event = "daemon.left", conn = id, role = ?peer.role, "peer disconnected");
        }
        // Its tool calls end, its tools leave the registry.
        self.tools_peer_left(id, &peer.role);
        let effects = match peer.role {
            Role::Asker { .. } | Role::Forager => self.routes.asker_left(id, Instant::now()),
            Role::Worker { .. } => self.routes.worker_left(id),
            Role::Unknown | Role::Calls => {
                self.routes.other_left(id);
                Vec::new()
            }
        };
        // Output for its sids has nowhere to go now (nor calls of its tools).
        let routes = &self.routes;
        self.desk.keep_lent(|sid| routes.sid_asker(sid).is_some());
        self.apply(effects);
    }
}
