//! The router's turns, each named by its sid and rid: which turn a
//! worker's tone is about (so it reaches that turn's asker and nobody
//! else), a prompt that claims a turn in flight by sending its rid again,
//! a bee that moved on (its old turns cancelled before its new prompt),
//! and the turns a worker still holds when it links to a restarted humd.

use super::*;
use crate::reports::WorkerTurns;

/// What a prompt's rid says about the turns in flight for its sid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// No turn in flight has that rid: the prompt is new.
    New,
    /// The turn's asker was gone: the prompt's connection takes it over
    /// (its output comes here from now on); nothing is forwarded.
    Adopted,
    /// The same connection sent the same prompt again: it is the same
    /// turn; nothing is forwarded.
    Again,
    /// Another connected asker waits for that turn.
    Taken,
}

impl Router {
    /// Whether someone connected waits for `turn`.
    pub(super) fn asker_here(&self, turn: &Turn) -> bool {
        turn.asker.is_some_and(|a| self.peers.contains_key(&a))
    }

    /// Where in its sid's queue the turn is that a tone of `worker` is
    /// about: the one with the tone's rid; a tone without one (a worker of
    /// an older hum) is about the worker's oldest turn of the sid.
    pub(super) fn turn_index(&self, sid: &str, worker: ConnId, rid: Option<&str>) -> Option<usize> {
        self.turns
            .get(sid)?
            .iter()
            .position(|t| t.worker == worker && rid.is_none_or(|r| t.rid == r))
    }

    /// The connected asker of the turn a tone of `worker` is about.
    pub(super) fn turn_asker(
        &self,
        sid: &str,
        worker: ConnId,
        rid: Option<&str>,
    ) -> Option<ConnId> {
        let i = self.turn_index(sid, worker, rid)?;
        let turn = &self.turns.get(sid)?[i];
        turn.asker.filter(|_| self.asker_here(turn))
    }

    /// A prompt from `id` for `sid` with rid `rid`: is it a turn in flight?
    pub(super) fn claim(&mut self, id: ConnId, sid: &str, rid: &str) -> Claim {
        let here: Vec<bool> = match self.turns.get(sid) {
            Some(q) => q.iter().map(|t| self.asker_here(t)).collect(),
            None => return Claim::New,
        };
        let Some(q) = self.turns.get_mut(sid) else {
            return Claim::New;
        };
        let Some(i) = q.iter().position(|t| t.rid == rid && !t.cancel_sent) else {
            return Claim::New;
        };
        let turn = &mut q[i];
        if turn.asker == Some(id) {
            return Claim::Again;
        }
        if here[i] {
            return Claim::Taken;
        }
        turn.asker = Some(id);
        self.stats.turns_adopted += 1;
        self.orphans.retain(|(_, s, r)| !(s == sid && r == rid));
        tracing::info!(event = "daemon.turn_adopted", conn = id, sid = %sid, rid = %rid, "a returning asker takes its turn back");
        Claim::Adopted
    }

    /// A new prompt for `sid`: the sid's turns nobody waits for are
    /// cancelled first (their bee has moved on), so the new prompt runs
    /// next and its answer is its own.
    pub(super) fn supersede(&mut self, sid: &str) {
        let gone: Vec<String> = self
            .turns
            .get(sid)
            .into_iter()
            .flatten()
            .filter(|t| !t.cancel_sent && !self.asker_here(t))
            .map(|t| t.rid.clone())
            .collect();
        if !gone.is_empty() {
            self.cancel_turns_where(
                |s, t| s == sid && gone.contains(&t.rid),
                Abandoned::AskerGone,
            );
        }
    }

    /// A worker linked and told the turns it still holds (it did not see
    /// this humd before: their askers' connections died with the last
    /// one). Each waits the asker grace for a prompt with its sid and rid,
    /// then is cancelled.
    pub(super) fn worker_turns(&mut self, worker: ConnId, line: &[u8]) {
        let report: WorkerTurns = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(event = "daemon.worker_turns_unreadable", conn = worker, error = %e, "a worker's list of its turns did not read");
                return;
            }
        };
        self.stats.abandoned_humd_gone += report.abandoned;
        let now = Instant::now();
        let mut told = 0;
        for held in report.turns {
            if self
                .turn_index(&held.sid, worker, Some(&held.rid))
                .is_some()
            {
                // Known already: this humd forwarded it.
                continue;
            }
            told += 1;
            self.sid_worker.insert(held.sid.clone(), worker);
            self.turns
                .entry(held.sid.clone())
                .or_default()
                .push_back(Turn {
                    asker: None,
                    worker,
                    rid: held.rid.clone(),
                    cancel_sent: false,
                    // A worker keeps only running turns when humd goes.
                    running: true,
                    bee: held
                        .bee
                        .filter(|b| !b.is_empty())
                        .unwrap_or_else(|| "unnamed".into()),
                    model: held.model,
                    started: now,
                });
            if !self.asker_gone_grace.is_zero() {
                self.orphans
                    .push((now + self.asker_gone_grace, held.sid, held.rid));
            }
        }
        tracing::info!(
            event = "daemon.worker_turns",
            conn = worker,
            held = told,
            abandoned = report.abandoned,
            grace_ms = self.asker_gone_grace.as_millis() as u64,
            "a worker told the turns it holds"
        );
        if self.asker_gone_grace.is_zero() {
            self.cancel_turns_where(
                |_, t| t.worker == worker && t.asker.is_none(),
                Abandoned::AskerGone,
            );
        }
    }

    /// Cancels the turns told of by a worker whose grace ran out and that
    /// nobody took back.
    pub(super) fn orphans_due(&mut self, now: Instant) {
        let due: Vec<(String, String)> = self
            .orphans
            .iter()
            .filter(|(at, _, _)| *at <= now)
            .map(|(_, s, r)| (s.clone(), r.clone()))
            .collect();
        self.orphans.retain(|(at, _, _)| *at > now);
        for (sid, rid) in due {
            self.cancel_turns_where(
                |s, t| s == sid && t.rid == rid && t.asker.is_none(),
                Abandoned::AskerGone,
            );
        }
    }
}
