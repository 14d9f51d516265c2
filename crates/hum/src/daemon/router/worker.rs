//! The router's worker side: a worker's tones routed by their head to the
//! asker that waits for them, peers leaving, and the turns nobody waits for
//! any more (cancelled at once, or after the asker's grace).

use super::*;

impl Router {
    /// When [`Router::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.gone
            .iter()
            .map(|(at, _)| *at)
            .chain(self.orphans.iter().map(|(at, _, _)| *at))
            .chain(self.announce_due)
            .min()
    }

    /// Cancels the turns of askers whose grace has run out, and sends a
    /// catalogue announcement that was held back.
    pub fn tick(&mut self, now: Instant) {
        if self.announce_due.is_some_and(|at| at <= now) {
            self.announce_due = None;
            self.announce_tools();
        }
        let due: Vec<ConnId> = self
            .gone
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        self.gone.retain(|(at, _)| *at > now);
        for id in due {
            self.abandon_turns_of(id, Abandoned::AskerGone);
        }
        self.orphans_due(now);
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
            self.abandon_turns_of(id, Abandoned::SlowAsker);
        }
    }

    /// Asks the workers to cancel every turn of asker `id`, queued or in
    /// flight, each once, through the same path as a bee's own `cancel`.
    pub(super) fn abandon_turns_of(&mut self, id: ConnId, why: Abandoned) {
        self.cancel_turns_where(|_, t| t.asker == Some(id), why);
    }

    /// Asks the workers to cancel every turn `pick` (given its sid) names
    /// that was not cancelled yet, each once; returns how many.
    pub(super) fn cancel_turns_where(
        &mut self,
        pick: impl Fn(&str, &Turn) -> bool,
        why: Abandoned,
    ) -> usize {
        let mut mine: Vec<(String, Turn)> = Vec::new();
        for (sid, q) in self.turns.iter_mut() {
            for t in q.iter_mut().filter(|t| !t.cancel_sent && pick(sid, t)) {
                t.cancel_sent = true;
                mine.push((sid.clone(), t.clone()));
            }
        }
        let n = mine.len();
        for (sid, turn) in mine {
            match why {
                Abandoned::AskerGone => self.stats.cancelled_gone_askers += 1,
                Abandoned::SlowAsker => self.stats.cancelled_slow_askers += 1,
                Abandoned::BudgetSpent | Abandoned::Asked => {}
            }
            if why == Abandoned::Asked {
                tracing::info!(event = "daemon.turn_cancel", conn = turn.asker, sid = %sid, rid = %turn.rid, "a bee cancels a turn");
            } else {
                tracing::info!(event = "daemon.turn_abandoned", conn = turn.asker, sid = %sid, rid = %turn.rid, why = ?why, "cancelling a turn");
            }
            let mut cancel = Tone::new(thrum::Cancel::default()).with_sid(&sid);
            cancel.envelope.rid = Some(turn.rid.clone());
            cancel.envelope.from = Some("daemon".into());
            let hive = self.hive_of(turn.worker);
            cancel.envelope.sigil = Some(thrum::sigil(&hive, &sid));
            self.send(turn.worker, cancel);
        }
        n
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
                if matches!(p.kind.as_str(), "cell-died" | "cell-evicted")
                    && !self.turns.contains_key(&sid)
                    && self.sid_worker.get(&sid) == Some(&id)
                {
                    self.sid_worker.remove(&sid);
                }
            }
            let asker = self.sid_asker.get(&sid).copied();
            if !asker.is_some_and(|a| self.send_raw(a, tone)) {
                self.stats.dropped_for_gone_askers += 1;
            }
            return;
        }
        // A turn's tone goes to that turn's asker, never to another
        // prompt's: the turn is named by the tone's rid.
        let ends_turn = matches!(tone.head.chi.as_str(), "finish" | "error");
        let index = self.turn_index(&sid, id, tone.head.rid.as_deref());
        let turn = match index {
            Some(i) if ends_turn => {
                let q = self.turns.get_mut(&sid).expect("indexed");
                let t = q.remove(i);
                if q.is_empty() {
                    self.turns.remove(&sid);
                }
                t
            }
            Some(i) => self.turns.get_mut(&sid).map(|q| {
                q[i].running = true;
                q[i].clone()
            }),
            None => None,
        };
        if ends_turn {
            if let Some(t) = &turn {
                let chi = tone.head.chi.clone();
                self.account(&sid, t, &chi, &tone.line);
            }
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
        // Output for its sids has nowhere to go now (nor calls of its tools).
        self.sid_asker.retain(|_, a| *a != id);
        let asked = &self.sid_asker;
        self.sid_tools.retain(|sid, _| asked.contains_key(sid));
        if let Role::Asker { .. } | Role::Forager = peer.role {
            // Nobody waits for its turns: cancel them. A running one may
            // wait the grace for its asker to come back for it; nothing is
            // started for an asker who is gone.
            if self.asker_gone_grace.is_zero() {
                self.abandon_turns_of(id, Abandoned::AskerGone);
            } else {
                // A running turn waits for its asker, unless a prompt of
                // someone still here is queued behind it for its sid: that
                // bee moved on (its new prompt may have come before humd
                // saw this connection close).
                let passed: Vec<String> = self
                    .turns
                    .iter()
                    .filter(|(_, q)| {
                        let mine = q.iter().position(|t| t.asker == Some(id));
                        mine.is_some_and(|i| q.iter().skip(i + 1).any(|t| self.asker_here(t)))
                    })
                    .map(|(sid, _)| sid.clone())
                    .collect();
                self.cancel_turns_where(
                    |sid, t| t.asker == Some(id) && (!t.running || passed.iter().any(|p| p == sid)),
                    Abandoned::AskerGone,
                );
                if self
                    .turns
                    .values()
                    .flatten()
                    .any(|t| t.asker == Some(id) && !t.cancel_sent)
                {
                    self.gone.push((Instant::now() + self.asker_gone_grace, id));
                }
            }
        }
        if let Role::Worker { .. } = peer.role {
            self.sid_worker.retain(|_, w| *w != id);
            let lost: Vec<(String, Turn)> = self
                .turns
                .iter()
                .flat_map(|(sid, q)| {
                    q.iter()
                        .filter(|t| t.worker == id)
                        .map(|t| (sid.clone(), t.clone()))
                })
                .collect();
            for q in self.turns.values_mut() {
                q.retain(|t| t.worker != id);
            }
            self.turns.retain(|_, q| !q.is_empty());
            for (sid, turn) in lost {
                self.stats.worker_lost += 1;
                let e = error(
                    thrum::ErrorCode::WorkerLost,
                    "the worker serving this turn went away",
                    Some(&sid),
                    Some(&turn.rid),
                );
                if let Some(asker) = turn.asker {
                    self.send(asker, e);
                }
            }
            self.orphans
                .retain(|(_, sid, _)| self.turns.contains_key(sid));
        }
    }
}
