//! A prompt that sends again the rid of a turn in flight: the bee is back
//! for that turn. Whose turn it becomes, and when.
//!
//! humd reads each connection in its own task, with no order between
//! them: a bee that lost its connection and dialled again at once may
//! have its new connection's prompt read before its old connection's end.
//! So a claim on a turn whose asker still looks connected is not refused
//! at once: it waits (at most [`CLAIM_WAIT`]) for that asker to go, and
//! takes the turn when it does. A turn that ends meanwhile ends at the
//! waiting prompt too; past the wait, the prompt is refused.

use super::{Claim, Effect, Routes};
use crate::daemon::router::ConnId;
use std::time::{Duration, Instant};

/// How long a claim waits for the turn's asker to be seen gone. A closed
/// connection is read within milliseconds on an idle machine; this covers
/// a loaded one, and a claimer whose turn really is another's learns it
/// within this.
pub(in crate::daemon::router) const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// A prompt waiting to take over the turn `sid`/`rid`.
#[derive(Debug)]
pub(super) struct Waiting {
    pub until: Instant,
    pub claimer: ConnId,
    pub sid: String,
    pub rid: String,
    /// The tools the waiting prompt lends, the sid's once it takes over.
    pub tools: Option<serde_json::Value>,
}

impl Routes {
    /// A prompt from `asker` for `sid` with rid `rid`, at `now`: is it a
    /// turn in flight? An adopted turn's output goes to `asker` from now
    /// on.
    pub fn claim(
        &mut self,
        asker: ConnId,
        sid: &str,
        rid: &str,
        now: Instant,
        tools: Option<&serde_json::Value>,
    ) -> Claim {
        // Sent again while it waits (even after its own cancel): the same
        // claim, never a second turn of that rid.
        if self
            .waiting
            .iter()
            .any(|w| w.claimer == asker && w.sid == sid && w.rid == rid)
        {
            return Claim::Waiting;
        }
        let Some(q) = self.turns.get(sid) else {
            return Claim::New;
        };
        let Some(i) = q.iter().position(|t| t.rid == rid && !t.cancel_sent) else {
            return Claim::New;
        };
        if q[i].asker == Some(asker) {
            self.sid_asker.insert(sid.to_owned(), asker);
            return Claim::Again;
        }
        if self.asker_here(&q[i]) {
            if self.waiting.iter().any(|w| w.sid == sid && w.rid == rid) {
                return Claim::Taken;
            }
            self.waiting.push(Waiting {
                until: now + CLAIM_WAIT,
                claimer: asker,
                sid: sid.to_owned(),
                rid: rid.to_owned(),
                tools: tools.cloned(),
            });
            return Claim::Waiting;
        }
        self.adopt(asker, sid, rid);
        Claim::Adopted
    }

    /// A prompt for `sid`/`rid` came back from the node its turn was sent
    /// to (`there` says whether a connection is that node's): that node
    /// placed the sid here instead (it drains, or its cell went). The turn
    /// leaves the routes, and so does the sid's route to that node; its
    /// asker comes back (none if it has none), for the prompt to be
    /// placed again for it, with whether the turn was cancelled on its
    /// way (then it is not placed again). `None`: not such a prompt.
    pub fn bounced(
        &mut self,
        sid: &str,
        rid: &str,
        there: impl Fn(ConnId) -> bool,
    ) -> Option<(Option<ConnId>, bool)> {
        let q = self.turns.get_mut(sid)?;
        let i = q.iter().position(|t| t.rid == rid && there(t.worker))?;
        let turn = q.remove(i)?;
        if q.is_empty() {
            self.turns.remove(sid);
        }
        self.unroute(sid, there);
        Some((turn.asker, turn.cancel_sent))
    }

    /// `sid` is no longer routed to the connection it was, if `there` says
    /// that one is of the node that just placed the sid elsewhere.
    pub fn unroute(&mut self, sid: &str, there: impl Fn(ConnId) -> bool) {
        if self.sid_worker.get(sid).is_some_and(|w| there(*w)) {
            self.sid_worker.remove(sid);
        }
    }

    /// `asker` takes the turn `sid`/`rid` over.
    fn adopt(&mut self, asker: ConnId, sid: &str, rid: &str) {
        if let Some(t) = self
            .turns
            .get_mut(sid)
            .and_then(|q| q.iter_mut().find(|t| t.rid == rid))
        {
            t.asker = Some(asker);
        }
        self.sid_asker.insert(sid.to_owned(), asker);
        self.orphans.retain(|(_, s, r)| !(s == sid && r == rid));
    }

    /// `gone`'s connection closed: the turns of its that a prompt waits
    /// for are that prompt's now (cancelled or not: a cancel its new
    /// connection sent ends there).
    pub(super) fn hand_over(&mut self, gone: ConnId) -> Vec<Effect> {
        let mut effects = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            let held_by_gone = self
                .turns
                .get(&w.sid)
                .and_then(|q| q.iter().find(|t| t.rid == w.rid))
                .is_some_and(|t| t.asker == Some(gone));
            if held_by_gone && w.claimer != gone {
                self.adopt(w.claimer, &w.sid, &w.rid);
                effects.push(Effect::Adopted {
                    asker: w.claimer,
                    sid: w.sid,
                    rid: w.rid,
                    tools: w.tools,
                });
            } else {
                self.waiting.push(w);
            }
        }
        effects
    }

    /// The turn `sid`/`rid` ended: the prompt that waited for it, if one
    /// did (it is told the end too).
    pub fn claim_ended(&mut self, sid: &str, rid: &str) -> Option<ConnId> {
        let i = self
            .waiting
            .iter()
            .position(|w| w.sid == sid && w.rid == rid)?;
        Some(self.waiting.remove(i).claimer)
    }

    /// Turns a worker took with it: the prompts waiting for them are told
    /// too.
    pub(super) fn lost_claims(&mut self, lost: &[Effect]) -> Vec<Effect> {
        lost.iter()
            .filter_map(|e| match e {
                Effect::Lost { sid, rid, .. } => {
                    let claimer = self.claim_ended(sid, rid)?;
                    Some(Effect::ClaimLost {
                        asker: claimer,
                        sid: sid.clone(),
                        rid: rid.clone(),
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// `asker` sends a new prompt for `sid`: it moved on, so it no longer
    /// waits to take over an older turn of that sid (which, once its own
    /// asker is seen gone, is cancelled like any turn nobody waits for).
    pub fn moved_on(&mut self, asker: ConnId, sid: &str) {
        self.waiting
            .retain(|w| !(w.claimer == asker && w.sid == sid));
    }

    /// Claims that waited their time out by `now`: refused.
    pub(super) fn claims_due(&mut self, now: Instant) -> Vec<Effect> {
        let (due, kept) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.until <= now);
        self.waiting = kept;
        due.into_iter()
            .map(|w: Waiting| Effect::Refused {
                asker: w.claimer,
                sid: w.sid,
                rid: w.rid,
            })
            .collect()
    }
}
