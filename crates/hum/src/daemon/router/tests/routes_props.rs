//! [`Routes`] under random interleavings of prompts, worker tones,
//! cancels, askers and workers coming and going, and time passing: the
//! invariants are checked after every step, with no sockets, no processes
//! and no clock.

use super::super::routes::{Abandoned, Claim, Effect, Routes, SidCancel, Turn};
use super::super::ConnId;
use super::routes::turn;
use crate::reports::HeldTurn;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// One step of the property test. Askers and workers are slots; a slot's
/// connection id is new each time it joins, as a connection's is.
#[derive(Debug, Clone)]
enum Step {
    AskerJoins(usize),
    AskerLeaves(usize),
    AskerStalls(usize),
    /// A prompt: from asker slot, for sid, re-sending the rid of the
    /// sid's n-th turn in flight (a returning bee) or a new rid.
    Prompt(usize, usize, Option<usize>),
    /// Worker slot says something about the sid's n-th turn; ends it?
    Says(usize, usize, usize, bool),
    Cancel(usize, Option<usize>),
    CellGone(usize, usize),
    WorkerJoins(usize),
    WorkerLeaves(usize),
    /// A worker links and tells of a turn it holds for the sid.
    Held(usize, usize),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0..3usize).prop_map(Step::AskerJoins),
        1 => (0..3usize).prop_map(Step::AskerLeaves),
        1 => (0..3usize).prop_map(Step::AskerStalls),
        4 => (0..3usize, 0..3usize, proptest::option::of(0..3usize))
            .prop_map(|(a, s, r)| Step::Prompt(a, s, r)),
        4 => (0..2usize, 0..3usize, 0..3usize, any::<bool>())
            .prop_map(|(w, s, n, e)| Step::Says(w, s, n, e)),
        1 => (0..3usize, proptest::option::of(0..3usize)).prop_map(|(s, r)| Step::Cancel(s, r)),
        1 => (0..2usize, 0..3usize).prop_map(|(w, s)| Step::CellGone(w, s)),
        1 => (0..2usize).prop_map(Step::WorkerJoins),
        1 => (0..2usize).prop_map(Step::WorkerLeaves),
        1 => (0..2usize, 0..3usize).prop_map(|(w, s)| Step::Held(w, s)),
        2 => (0u64..2_500).prop_map(Step::Wait),
    ]
}

/// The property test's world: the routes, who is connected, and what has
/// been cancelled and lost so far.
struct World {
    routes: Routes,
    grace: Duration,
    now: Instant,
    next_conn: ConnId,
    next_rid: u64,
    askers: [Option<ConnId>; 3],
    workers: [Option<ConnId>; 2],
    /// Every (sid, rid) ever cancelled: each at most once.
    cancelled: HashSet<(String, String)>,
    /// When each gone asker left.
    left_at: BTreeMap<ConnId, Instant>,
}

fn sid(n: usize) -> String {
    format!("s{n}")
}

impl World {
    fn new(grace: Duration) -> World {
        World {
            routes: Routes::new(grace),
            grace,
            now: Instant::now(),
            next_conn: 100,
            next_rid: 0,
            askers: [None; 3],
            workers: [None; 2],
            cancelled: HashSet::new(),
            left_at: BTreeMap::new(),
        }
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    fn rid(&mut self) -> String {
        self.next_rid += 1;
        format!("r{}", self.next_rid)
    }

    fn nth(&self, s: usize, n: usize) -> Option<Turn> {
        let mut q: Vec<&Turn> = self
            .routes
            .all()
            .filter(|(x, _)| *x == sid(s))
            .map(|(_, t)| t)
            .collect();
        q.sort_by(|a, b| a.rid.cmp(&b.rid));
        q.get(n).map(|t| (*t).clone())
    }

    /// Checks each effect against the world as it was, then records it.
    fn effects(&mut self, effects: Vec<Effect>, before: &[(String, Turn)]) {
        for e in effects {
            match e {
                Effect::Cancel {
                    sid,
                    rid,
                    asker,
                    why,
                    worker,
                } => {
                    // A turn may come and be cancelled in one step (a
                    // held turn with no grace): then it is in flight after.
                    let after = self.snapshot();
                    let t = before
                        .iter()
                        .chain(after.iter().filter(|(_, t)| t.cancel_sent))
                        .find(|(s, t)| *s == sid && t.rid == rid)
                        .map(|(_, t)| t.clone())
                        .expect("a cancel names a turn in flight");
                    let new = !before.iter().any(|(s, t)| *s == sid && t.rid == rid);
                    assert!(new || !t.cancel_sent, "cancelled twice: {sid}/{rid}");
                    assert_eq!((t.worker, t.asker), (worker, asker));
                    assert!(
                        self.cancelled.insert((sid.clone(), rid.clone())),
                        "cancelled twice: {sid}/{rid}"
                    );
                    if why == Abandoned::AskerGone {
                        assert!(
                            !asker.is_some_and(|a| self.routes.is_here(a)),
                            "{sid}/{rid} cancelled as abandoned while its asker is here"
                        );
                    }
                }
                Effect::Lost { sid, rid, .. } => {
                    assert!(
                        before.iter().any(|(s, t)| *s == sid && t.rid == rid),
                        "lost names a turn in flight"
                    );
                }
                Effect::Adopted {
                    asker, sid, rid, ..
                } => {
                    let was = before
                        .iter()
                        .find(|(s, t)| *s == sid && t.rid == rid)
                        .expect("an adopted turn was in flight");
                    let old = was.1.asker.expect("it had an asker");
                    assert!(old != asker && !self.routes.is_here(old), "{sid}/{rid}");
                    assert!(self.routes.is_here(asker));
                    let now = self.routes.turn(&sid, was.1.worker, Some(&rid));
                    assert_eq!(now.and_then(|t| t.asker), Some(asker));
                }
                Effect::ClaimLost { asker, sid, rid } => {
                    assert!(
                        before.iter().any(|(s, t)| *s == sid && t.rid == rid),
                        "a lost claim names a turn in flight"
                    );
                    assert!(self.routes.is_here(asker));
                }
                Effect::Refused { asker, sid, rid } => {
                    assert!(self.routes.is_here(asker), "a refusal for someone here");
                    assert!(!self
                        .routes
                        .all()
                        .any(|(s, t)| s == sid && t.rid == rid && t.asker == Some(asker)));
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<(String, Turn)> {
        self.routes
            .all()
            .map(|(s, t)| (s.to_owned(), t.clone()))
            .collect()
    }

    fn run(&mut self, step: Step) {
        let before = self.snapshot();
        let effects = match step {
            Step::AskerJoins(a) if self.askers[a].is_none() => {
                let c = self.conn();
                self.routes.joined(c);
                self.askers[a] = Some(c);
                vec![]
            }
            Step::AskerLeaves(a) => match self.askers[a].take() {
                Some(c) => {
                    self.left_at.insert(c, self.now);
                    let e = self.routes.asker_left(c, self.now);
                    // Nothing queued is kept for a gone asker.
                    for (_, t) in self.routes.all() {
                        if t.asker == Some(c) && !self.grace.is_zero() {
                            assert!(
                                t.running || t.cancel_sent,
                                "a gone asker's queued turn waits"
                            );
                        }
                    }
                    e
                }
                None => vec![],
            },
            Step::AskerStalls(a) => match self.askers[a] {
                Some(c) => {
                    let e = self.routes.abandon(c, Abandoned::SlowAsker);
                    for e in &e {
                        if let Effect::Cancel { asker, .. } = e {
                            assert_eq!(*asker, Some(c));
                        }
                    }
                    e
                }
                None => vec![],
            },
            Step::Prompt(a, s, again) => self.prompt(a, s, again),
            Step::Says(w, s, n, ends) => {
                if let (Some(wc), Some(t)) = (self.workers[w], self.nth(s, n)) {
                    if t.worker == wc {
                        let got = self.routes.worker_said(wc, &sid(s), Some(&t.rid), ends);
                        assert_eq!(got.map(|g| g.rid), Some(t.rid.clone()));
                        if ends {
                            assert!(self.routes.turn(&sid(s), wc, Some(&t.rid)).is_none());
                            // The shell tells a prompt that waited for it.
                            if let Some(c) = self.routes.claim_ended(&sid(s), &t.rid) {
                                assert!(self.routes.is_here(c));
                            }
                        }
                    }
                }
                vec![]
            }
            Step::Cancel(s, n) => {
                let rid = n.and_then(|n| self.nth(s, n)).map(|t| t.rid);
                match self.routes.cancel(&sid(s), rid.as_deref()) {
                    SidCancel::Turns(e) => {
                        assert_eq!(e.len(), 1, "a cancel names one turn");
                        e
                    }
                    SidCancel::Already => {
                        assert!(before
                            .iter()
                            .filter(|(x, _)| *x == sid(s))
                            .all(|(_, t)| t.cancel_sent));
                        vec![]
                    }
                    SidCancel::Idle(_) => {
                        assert!(!before.iter().any(|(x, _)| *x == sid(s)));
                        vec![]
                    }
                }
            }
            Step::CellGone(w, s) => {
                if let Some(wc) = self.workers[w] {
                    self.routes.cell_gone(wc, &sid(s));
                }
                vec![]
            }
            Step::WorkerJoins(w) if self.workers[w].is_none() => {
                let c = self.conn();
                self.routes.joined(c);
                self.workers[w] = Some(c);
                vec![]
            }
            Step::WorkerLeaves(w) => match self.workers[w].take() {
                Some(c) => {
                    let e = self.routes.worker_left(c);
                    let mine = before.iter().filter(|(_, t)| t.worker == c).count();
                    let turns: HashSet<(&str, &str)> = e
                        .iter()
                        .filter_map(|e| match e {
                            Effect::Lost { sid, rid, .. } => Some((sid.as_str(), rid.as_str())),
                            _ => None,
                        })
                        .collect();
                    assert_eq!(turns.len(), mine, "each of a gone worker's turns is lost");
                    let lost = e
                        .iter()
                        .filter(|e| matches!(e, Effect::Lost { .. }))
                        .count();
                    assert_eq!(lost, mine, "each is lost once");
                    assert_eq!(self.routes.load(c), 0);
                    e
                }
                None => vec![],
            },
            Step::Held(w, s) => match self.workers[w] {
                Some(wc) if self.routes.worker_of(&sid(s)).is_none_or(|x| x == wc) => {
                    let held = HeldTurn {
                        sid: sid(s),
                        rid: self.rid(),
                        bee: None,
                        model: None,
                    };
                    self.routes.worker_held(wc, vec![held], self.now).1
                }
                _ => vec![],
            },
            Step::Wait(ms) => {
                self.now += Duration::from_millis(ms);
                self.routes.tick(self.now)
            }
            Step::AskerJoins(_) | Step::WorkerJoins(_) => vec![],
        };
        self.effects(effects, &before);
        self.invariants();
    }

    fn prompt(&mut self, a: usize, s: usize, again: Option<usize>) -> Vec<Effect> {
        let Some(asker) = self.askers[a] else {
            return vec![];
        };
        // A returning bee re-sends the rid of a turn still its (one not
        // cancelled: a rid reused after its cancel is a new turn).
        let rid = match again
            .and_then(|n| self.nth(s, n))
            .filter(|t| !t.cancel_sent)
        {
            Some(t) => t.rid,
            None => self.rid(),
        };
        let was = self.snapshot();
        match self.routes.claim(asker, &sid(s), &rid, self.now, None) {
            Claim::New => {}
            Claim::Adopted => {
                let t = was.iter().find(|(_, t)| t.rid == rid).unwrap();
                assert!(
                    !t.1.asker.is_some_and(|x| self.routes.is_here(x)) || t.1.asker == Some(asker)
                );
                assert_eq!(
                    self.routes.turn_asker(&sid(s), t.1.worker, Some(&rid)),
                    Some(asker)
                );
                return vec![];
            }
            Claim::Again | Claim::Waiting | Claim::Taken => return vec![],
        }
        // The shell's pick: the sid's worker, else any connected one.
        let Some(worker) = self
            .routes
            .worker_of(&sid(s))
            .or_else(|| self.workers.iter().flatten().copied().next())
        else {
            return vec![];
        };
        self.routes.moved_on(asker, &sid(s));
        let e = self.routes.supersede(&sid(s));
        self.routes
            .routed(&sid(s), worker, turn(asker, worker, &rid, self.now));
        e
    }

    fn invariants(&self) {
        for (s, t) in self.routes.all() {
            // Sticky: every turn in flight is on the worker holding its sid.
            assert_eq!(self.routes.worker_of(s), Some(t.worker), "{s}/{}", t.rid);
            // No turn on a worker that is gone.
            assert!(self.routes.is_here(t.worker));
            // Nobody waits past the grace: a turn whose asker left longer
            // ago than the grace has been cancelled.
            if let Some(left) = t.asker.and_then(|a| self.left_at.get(&a)) {
                if self.now >= *left + self.grace {
                    assert!(t.cancel_sent, "{s}/{} outlived its asker's grace", t.rid);
                }
            }
            assert_eq!(
                self.cancelled.contains(&(s.to_owned(), t.rid.clone())),
                t.cancel_sent
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn routes_keep_their_rules_under_any_interleaving(
        grace in prop_oneof![Just(Duration::ZERO), Just(Duration::from_secs(2))],
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let mut world = World::new(grace);
        for s in steps {
            world.run(s);
        }
        // Once every asker has gone and the grace has passed, nothing runs
        // for nobody.
        for a in 0..3 {
            world.run(Step::AskerLeaves(a));
        }
        world.run(Step::Wait(grace.as_millis() as u64 + 1));
        for (s, t) in world.routes.all() {
            prop_assert!(t.cancel_sent, "{}/{} runs for nobody", s, t.rid);
        }
    }
}
