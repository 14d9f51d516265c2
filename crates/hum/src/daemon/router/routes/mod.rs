//! Which worker holds each sid, which asker waits for each turn, and what
//! becomes of turns nobody waits for: a plain value with no I/O and no
//! clock (time is passed in). Every change that should reach a peer comes
//! back as an [`Effect`]; the router's shell turns those into tones.
//!
//! The rules it keeps:
//! - **Sticky:** a sid's turns in flight are all on the worker that holds
//!   the sid; the sid is freed only when that worker leaves or its cell is
//!   gone with no turn in flight.
//! - **A turn is named by sid and rid:** a worker's tone reaches that
//!   turn's asker and no other; a prompt re-sending the rid of a turn whose
//!   asker is gone takes it over.
//! - **Nothing runs for nobody:** a gone asker's queued turns are cancelled
//!   at once, its running ones after the grace (unless it comes back for
//!   them), and at once when a prompt of someone connected waits behind
//!   them; a new prompt for a sid cancels the sid's turns nobody waits for.
//! - **Each turn is cancelled at most once**, and a worker that leaves
//!   ends each of its turns once ([`Effect::Lost`]).

mod claims;

#[cfg(test)]
pub(super) use claims::CLAIM_WAIT;

use super::ConnId;
use crate::reports::HeldTurn;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// A prompt forwarded to a worker and not yet finished. Its sid and rid
/// name it: what the worker sends about it carries both, and goes to its
/// asker only.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Turn {
    /// Who waits for it; none for a turn a worker told this humd of after
    /// a restart, until its asker comes back for it (same sid and rid).
    pub asker: Option<ConnId>,
    pub worker: ConnId,
    /// The asker's rid, or one humd gave the prompt when it had none.
    pub rid: String,
    /// humd already asked the worker to cancel it (its asker is gone or
    /// stopped reading); never asked twice.
    pub cancel_sent: bool,
    /// The worker said something about it: it has a cell (it is not
    /// queued). A queued turn of a gone asker is cancelled at once; only
    /// a running one waits the grace.
    pub running: bool,
    /// Its asker's name, the model it asked for and when it was routed:
    /// what its usage is filed under.
    pub bee: String,
    pub model: Option<String>,
    pub started: Instant,
}

/// Why humd cancels a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Abandoned {
    /// Its asker sent a `cancel` (not an abandonment: not counted).
    Asked,
    /// The asker's connection closed (after the grace).
    AskerGone,
    /// The asker stopped reading and was cut off.
    SlowAsker,
    /// A budget was used up and `budgets.hardStop` is on.
    BudgetSpent,
}

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
    /// Another connected asker waits for that turn: the prompt waits
    /// (up to [`CLAIM_WAIT`]) for that connection's end, which humd may
    /// not have read yet (the bee reconnected).
    Waiting,
    /// Another connected asker waits for that turn and another prompt
    /// already waits to take it.
    Taken,
}

/// What the shell must do for the routes' sake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Effect {
    /// Ask `worker` to cancel the turn `sid`/`rid` (sent once per turn).
    Cancel {
        worker: ConnId,
        sid: String,
        rid: String,
        asker: Option<ConnId>,
        why: Abandoned,
    },
    /// The turn's worker went away: its asker (if any) is told
    /// `worker_lost`.
    Lost {
        asker: Option<ConnId>,
        sid: String,
        rid: String,
    },
    /// A prompt that waited for a turn's asker to go took the turn over:
    /// the turn's output goes to `asker` from now on, and the tools its
    /// prompt lent are the sid's.
    Adopted {
        asker: ConnId,
        sid: String,
        rid: String,
        tools: Option<serde_json::Value>,
    },
    /// The turn a prompt waited to take over went with its worker: that
    /// prompt is answered (its turn is counted lost once, at its asker's).
    ClaimLost {
        asker: ConnId,
        sid: String,
        rid: String,
    },
    /// A prompt waited [`CLAIM_WAIT`] for a turn whose asker stayed: it is
    /// refused.
    Refused {
        asker: ConnId,
        sid: String,
        rid: String,
    },
}

/// What a bee's `cancel` for a sid comes to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SidCancel {
    /// These turns (one) are cancelled.
    Turns(Vec<Effect>),
    /// Every turn of the sid is being cancelled already.
    Already,
    /// No turn in flight: the worker holding the sid (if one does) is
    /// asked to cancel whatever it runs for it.
    Idle(Option<ConnId>),
}

#[derive(Debug, Default)]
pub(super) struct Routes {
    /// Sticky: the worker holding each sid's cell.
    sid_worker: HashMap<String, ConnId>,
    /// The asker that last prompted each sid: its cell's news goes there.
    sid_asker: HashMap<String, ConnId>,
    /// Turns in flight per sid, oldest first.
    turns: HashMap<String, VecDeque<Turn>>,
    /// Connections open now.
    here: HashSet<ConnId>,
    /// How long a gone asker's running turns wait for it to come back.
    grace: Duration,
    /// Gone askers whose turns are cancelled at the deadline.
    gone: Vec<(Instant, ConnId)>,
    /// Turns a worker told of with no asker here (humd restarted), by sid
    /// and rid: cancelled at the deadline unless their asker came back.
    orphans: Vec<(Instant, String, String)>,
    /// Prompts that re-sent the rid of a turn whose asker still looked
    /// connected, at most one per turn.
    waiting: Vec<claims::Waiting>,
}

impl Routes {
    pub fn new(grace: Duration) -> Routes {
        Routes {
            grace,
            ..Routes::default()
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// A connection opened.
    pub fn joined(&mut self, conn: ConnId) {
        self.here.insert(conn);
    }

    /// Whether someone connected waits for `turn`.
    fn asker_here(&self, turn: &Turn) -> bool {
        turn.asker.is_some_and(|a| self.here.contains(&a))
    }

    /// The worker holding `sid`, if one does.
    /// Every sid a worker holds, and which.
    pub fn held(&self) -> impl Iterator<Item = (&String, ConnId)> {
        self.sid_worker.iter().map(|(s, w)| (s, *w))
    }

    /// The sids a worker holds with no turn in flight or queued.
    pub fn idle_sids(&self) -> Vec<(String, ConnId)> {
        self.sid_worker
            .iter()
            .filter(|(sid, _)| !self.turns.contains_key(*sid))
            .map(|(sid, w)| (sid.clone(), *w))
            .collect()
    }

    /// Whether `sid` has a turn in flight or queued.
    pub fn busy(&self, sid: &str) -> bool {
        self.turns.contains_key(sid)
    }

    pub fn worker_of(&self, sid: &str) -> Option<ConnId> {
        self.sid_worker.get(sid).copied()
    }

    /// The connected asker that last prompted `sid`.
    pub fn sid_asker(&self, sid: &str) -> Option<ConnId> {
        self.sid_asker
            .get(sid)
            .copied()
            .filter(|a| self.here.contains(a))
    }

    /// How many turns `worker` has in flight.
    pub fn load(&self, worker: ConnId) -> usize {
        self.turns
            .values()
            .flatten()
            .filter(|t| t.worker == worker)
            .count()
    }

    /// Where in its sid's queue the turn is that a tone of `worker` is
    /// about: the one with the tone's rid; a tone without one (a worker of
    /// an older hum) is about the worker's oldest turn of the sid.
    fn turn_index(&self, sid: &str, worker: ConnId, rid: Option<&str>) -> Option<usize> {
        self.turns
            .get(sid)?
            .iter()
            .position(|t| t.worker == worker && rid.is_none_or(|r| t.rid == r))
    }

    /// The turn a tone of `worker` is about, if it is in flight.
    pub fn turn(&self, sid: &str, worker: ConnId, rid: Option<&str>) -> Option<&Turn> {
        let i = self.turn_index(sid, worker, rid)?;
        self.turns.get(sid).map(|q| &q[i])
    }

    /// The connected asker of the turn a tone of `worker` is about.
    pub fn turn_asker(&self, sid: &str, worker: ConnId, rid: Option<&str>) -> Option<ConnId> {
        let turn = self.turn(sid, worker, rid)?;
        turn.asker.filter(|_| self.asker_here(turn))
    }

    /// A new prompt for `sid` is about to be forwarded: the sid's turns
    /// nobody waits for are cancelled first (their bee has moved on), so
    /// the new prompt runs next and its answer is its own.
    pub fn supersede(&mut self, sid: &str) -> Vec<Effect> {
        let here = &self.here;
        let gone: Vec<String> = self
            .turns
            .get(sid)
            .into_iter()
            .flatten()
            .filter(|t| !t.cancel_sent && !t.asker.is_some_and(|a| here.contains(&a)))
            .map(|t| t.rid.clone())
            .collect();
        self.cancel_where(
            |s, t| s == sid && gone.contains(&t.rid),
            Abandoned::AskerGone,
        )
    }

    /// A prompt was forwarded to `worker`: a new turn in flight.
    pub fn routed(&mut self, sid: &str, worker: ConnId, turn: Turn) {
        debug_assert_eq!(turn.worker, worker);
        self.sid_worker.insert(sid.to_owned(), worker);
        if let Some(asker) = turn.asker {
            self.sid_asker.insert(sid.to_owned(), asker);
        }
        self.turns
            .entry(sid.to_owned())
            .or_default()
            .push_back(turn);
    }

    /// A tone of `worker` about a turn of `sid`: the turn it names, taken
    /// out of flight when the tone ends it (`finish`, `error`), else
    /// marked running.
    pub fn worker_said(
        &mut self,
        worker: ConnId,
        sid: &str,
        rid: Option<&str>,
        ends_turn: bool,
    ) -> Option<Turn> {
        let i = self.turn_index(sid, worker, rid)?;
        let q = self.turns.get_mut(sid)?;
        if !ends_turn {
            q[i].running = true;
            return Some(q[i].clone());
        }
        let turn = q.remove(i);
        if q.is_empty() {
            self.turns.remove(sid);
        }
        turn
    }

    /// `worker` says the cell of `sid` is gone: with no turn in flight the
    /// sid is free (the next prompt may go to the least loaded worker).
    pub fn cell_gone(&mut self, worker: ConnId, sid: &str) {
        if !self.turns.contains_key(sid) && self.sid_worker.get(sid) == Some(&worker) {
            self.sid_worker.remove(sid);
        }
    }

    /// A bee's `cancel` for `sid`: the turn it names by `rid`, else the
    /// sid's oldest turn not cancelled yet.
    pub fn cancel(&mut self, sid: &str, rid: Option<&str>) -> SidCancel {
        let target = self.turns.get(sid).and_then(|q| {
            q.iter()
                .find(|t| !t.cancel_sent && rid == Some(t.rid.as_str()))
                .or_else(|| q.iter().find(|t| !t.cancel_sent))
                .map(|t| t.rid.clone())
        });
        match target {
            Some(target) => SidCancel::Turns(
                self.cancel_where(|s, t| s == sid && t.rid == target, Abandoned::Asked),
            ),
            None if self.turns.contains_key(sid) => SidCancel::Already,
            None => SidCancel::Idle(self.worker_of(sid)),
        }
    }

    /// Cancels every turn `pick` (given its sid) names that was not
    /// cancelled yet, each once.
    pub fn cancel_where(
        &mut self,
        pick: impl Fn(&str, &Turn) -> bool,
        why: Abandoned,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (sid, q) in self.turns.iter_mut() {
            for t in q.iter_mut().filter(|t| !t.cancel_sent && pick(sid, t)) {
                t.cancel_sent = true;
                effects.push(Effect::Cancel {
                    worker: t.worker,
                    sid: sid.clone(),
                    rid: t.rid.clone(),
                    asker: t.asker,
                    why,
                });
            }
        }
        effects
    }

    /// Cancels every turn of `asker`, queued or running.
    pub fn abandon(&mut self, asker: ConnId, why: Abandoned) -> Vec<Effect> {
        self.cancel_where(|_, t| t.asker == Some(asker), why)
    }

    /// An asker's (or forager's) connection closed at `now`. Nobody waits
    /// for its turns: they are cancelled. A running one may wait the
    /// grace for its asker to come back for it, unless a prompt of someone
    /// still here is queued behind it for its sid (that bee moved on; its
    /// new prompt may have come before humd saw this connection close);
    /// nothing is started for an asker who is gone.
    pub fn asker_left(&mut self, asker: ConnId, now: Instant) -> Vec<Effect> {
        // A prompt that waits for its turn takes it first: that bee is here.
        let mut effects = self.hand_over(asker);
        self.forget(asker);
        if self.grace.is_zero() {
            effects.extend(self.abandon(asker, Abandoned::AskerGone));
            return effects;
        }
        let passed: Vec<String> = self
            .turns
            .iter()
            .filter(|(_, q)| {
                let mine = q.iter().position(|t| t.asker == Some(asker));
                mine.is_some_and(|i| q.iter().skip(i + 1).any(|t| self.asker_here(t)))
            })
            .map(|(sid, _)| sid.clone())
            .collect();
        effects.extend(self.cancel_where(
            |sid, t| t.asker == Some(asker) && (!t.running || passed.iter().any(|p| p == sid)),
            Abandoned::AskerGone,
        ));
        if self
            .turns
            .values()
            .flatten()
            .any(|t| t.asker == Some(asker) && !t.cancel_sent)
        {
            self.gone.push((now + self.grace, asker));
        }
        effects
    }

    /// A connection that was neither asker nor worker closed.
    pub fn other_left(&mut self, conn: ConnId) {
        self.forget(conn);
    }

    fn forget(&mut self, conn: ConnId) {
        self.here.remove(&conn);
        self.sid_asker.retain(|_, a| *a != conn);
        self.waiting.retain(|w| w.claimer != conn);
    }

    /// A worker's connection closed: its sids are free and each of its
    /// turns ends, once, at its asker.
    pub fn worker_left(&mut self, worker: ConnId) -> Vec<Effect> {
        self.forget(worker);
        self.sid_worker.retain(|_, w| *w != worker);
        let mut effects = Vec::new();
        for (sid, q) in self.turns.iter_mut() {
            q.retain(|t| {
                if t.worker != worker {
                    return true;
                }
                effects.push(Effect::Lost {
                    asker: t.asker,
                    sid: sid.clone(),
                    rid: t.rid.clone(),
                });
                false
            });
        }
        self.turns.retain(|_, q| !q.is_empty());
        let turns = &self.turns;
        self.orphans.retain(|(_, sid, _)| turns.contains_key(sid));
        let waited = self.lost_claims(&effects);
        effects.extend(waited);
        effects
    }

    /// A worker linked and told the turns it still holds (it did not see
    /// this humd before: their askers' connections died with the last
    /// one). Each waits the grace for a prompt with its sid and rid, then
    /// is cancelled. Returns how many were new to this humd.
    pub fn worker_held(
        &mut self,
        worker: ConnId,
        held: Vec<HeldTurn>,
        now: Instant,
    ) -> (usize, Vec<Effect>) {
        let mut told = 0;
        for held in held {
            if self
                .turn_index(&held.sid, worker, Some(&held.rid))
                .is_some()
            {
                // Known already: this humd forwarded it.
                continue;
            }
            told += 1;
            let turn = Turn {
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
            };
            self.routed(&held.sid, worker, turn);
            if !self.grace.is_zero() {
                self.orphans.push((now + self.grace, held.sid, held.rid));
            }
        }
        let effects = if self.grace.is_zero() {
            self.cancel_where(
                |_, t| t.worker == worker && t.asker.is_none(),
                Abandoned::AskerGone,
            )
        } else {
            Vec::new()
        };
        (told, effects)
    }

    /// When [`Routes::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.gone
            .iter()
            .map(|(at, _)| *at)
            .chain(self.orphans.iter().map(|(at, _, _)| *at))
            .chain(self.waiting.iter().map(|w| w.until))
            .min()
    }

    /// Cancels the turns of askers whose grace ran out by `now`, and the
    /// turns a worker told of that nobody took back.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let due: Vec<ConnId> = self
            .gone
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        self.gone.retain(|(at, _)| *at > now);
        let mut effects = Vec::new();
        for asker in due {
            effects.extend(self.abandon(asker, Abandoned::AskerGone));
        }
        let orphans: Vec<(String, String)> = self
            .orphans
            .iter()
            .filter(|(at, _, _)| *at <= now)
            .map(|(_, s, r)| (s.clone(), r.clone()))
            .collect();
        self.orphans.retain(|(at, _, _)| *at > now);
        for (sid, rid) in orphans {
            effects.extend(self.cancel_where(
                |s, t| s == sid && t.rid == rid && t.asker.is_none(),
                Abandoned::AskerGone,
            ));
        }
        effects.extend(self.claims_due(now));
        effects
    }

    /// Every turn in flight with its sid (for tests and invariants).
    #[cfg(test)]
    pub fn all(&self) -> impl Iterator<Item = (&str, &Turn)> {
        self.turns
            .iter()
            .flat_map(|(s, q)| q.iter().map(move |t| (s.as_str(), t)))
    }

    #[cfg(test)]
    pub fn is_here(&self, conn: ConnId) -> bool {
        self.here.contains(&conn)
    }
}
