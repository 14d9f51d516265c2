//! The router's shell around [`Routes`]: what the routes decide about
//! turns (cancel one on its worker, tell an asker its worker is gone)
//! becomes tones, counters and log lines here (and a prompt that claims a
//! turn in flight is sorted out here), and a worker's report of
//! the turns it still holds is read here.

use super::routes::{Claim, Effect};
use super::*;
use crate::reports::WorkerTurns;

impl Router {
    /// Carries out what the routes decided; returns how many turns it
    /// touched.
    pub(super) fn apply(&mut self, effects: Vec<Effect>) -> usize {
        let n = effects.len();
        for effect in effects {
            match effect {
                Effect::Cancel {
                    worker,
                    sid,
                    rid,
                    asker,
                    why,
                } => self.send_cancel(worker, &sid, &rid, asker, why),
                Effect::Lost { asker, sid, rid } => {
                    self.stats.worker_lost += 1;
                    if let Some(asker) = asker {
                        self.tell_worker_lost(asker, &sid, &rid);
                    }
                }
                Effect::Adopted {
                    asker,
                    sid,
                    rid,
                    tools,
                } => {
                    self.stats.turns_adopted += 1;
                    self.asker_tools(&sid, tools.as_ref());
                    tracing::info!(event = "daemon.turn_adopted", conn = asker, sid = %sid, rid = %rid, "a returning asker takes its turn back");
                    self.ack(asker, Some(&rid), true);
                }
                Effect::ClaimLost { asker, sid, rid } => {
                    self.ack(asker, Some(&rid), true);
                    self.tell_worker_lost(asker, &sid, &rid);
                }
                Effect::Refused { asker, sid, rid } => {
                    self.stats.bad_requests += 1;
                    let message = format!(
                        "sid {sid} has a turn with rid {rid} in flight for another connection"
                    );
                    tracing::info!(event = "daemon.refused", conn = asker, chi = "prompt", code = ErrorCode::BadRequest.as_str(), detail = %message, "request refused");
                    self.send(
                        asker,
                        error(ErrorCode::BadRequest, message, Some(&sid), Some(&rid)),
                    );
                    self.ack(asker, Some(&rid), false);
                }
            }
        }
        n
    }

    fn tell_worker_lost(&mut self, asker: ConnId, sid: &str, rid: &str) {
        let e = error(
            ErrorCode::WorkerLost,
            "the worker serving this turn went away",
            Some(sid),
            Some(rid),
        );
        self.send(asker, e);
    }

    /// Asks `worker` to cancel one turn, named by its rid.
    fn send_cancel(
        &mut self,
        worker: ConnId,
        sid: &str,
        rid: &str,
        asker: Option<ConnId>,
        why: Abandoned,
    ) {
        match why {
            Abandoned::AskerGone => self.stats.cancelled_gone_askers += 1,
            Abandoned::SlowAsker => self.stats.cancelled_slow_askers += 1,
            Abandoned::BudgetSpent | Abandoned::Asked => {}
        }
        if why == Abandoned::Asked {
            tracing::info!(event = "daemon.turn_cancel", conn = asker, sid = %sid, rid = %rid, "a bee cancels a turn");
        } else {
            tracing::info!(event = "daemon.turn_abandoned", conn = asker, sid = %sid, rid = %rid, why = ?why, "cancelling a turn");
        }
        let mut cancel = Tone::new(thrum::Cancel::default()).with_sid(sid);
        cancel.envelope.rid = Some(rid.to_owned());
        cancel.envelope.from = Some("daemon".into());
        let hive = self.hive_of(worker);
        cancel.envelope.sigil = Some(thrum::sigil(&hive, sid));
        self.send(worker, cancel);
    }

    /// A worker linked and told the turns it still holds (it did not see
    /// this humd before: their askers' connections died with the last
    /// one).
    pub(super) fn worker_turns(&mut self, worker: ConnId, line: &[u8]) {
        let report: WorkerTurns = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(event = "daemon.worker_turns_unreadable", conn = worker, error = %e, "a worker's list of its turns did not read");
                return;
            }
        };
        self.stats.abandoned_humd_gone += report.abandoned;
        let (told, effects) = self
            .routes
            .worker_held(worker, report.turns, Instant::now());
        tracing::info!(
            event = "daemon.worker_turns",
            conn = worker,
            held = told,
            abandoned = report.abandoned,
            grace_ms = self.routes.grace().as_millis() as u64,
            "a worker told the turns it holds"
        );
        self.apply(effects);
    }

    /// A prompt that sends the rid of a turn in flight for its sid: that
    /// turn is taken over (or waits to be, or is refused) and nothing is
    /// forwarded. False for a new prompt.
    pub(super) fn reclaimed(
        &mut self,
        id: ConnId,
        sid: &str,
        rid: &str,
        tools: Option<&Value>,
    ) -> bool {
        match self.routes.claim(id, sid, rid, Instant::now(), tools) {
            Claim::New => return false,
            Claim::Adopted => {
                self.apply(vec![Effect::Adopted {
                    asker: id,
                    sid: sid.to_owned(),
                    rid: rid.to_owned(),
                    tools: tools.cloned(),
                }]);
            }
            Claim::Again => {
                self.asker_tools(sid, tools);
                self.ack(id, Some(rid), true);
            }
            // Acked (or refused) once the turn's asker is seen gone, or
            // stays.
            Claim::Waiting => {
                tracing::info!(event = "daemon.turn_claim_waits", conn = id, sid = %sid, rid = %rid, "a prompt for a turn in flight waits for its asker's old connection to end");
            }
            Claim::Taken => {
                self.apply(vec![Effect::Refused {
                    asker: id,
                    sid: sid.to_owned(),
                    rid: rid.to_owned(),
                }]);
            }
        }
        true
    }
}
