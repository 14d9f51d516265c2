//! [`Routes`] alone: no sockets, no processes, no clock. Each rule of the
//! routes has a test named after it, and a property test runs random
//! interleavings of prompts, worker tones, cancels, askers and workers
//! coming and going, and time passing, checking the invariants after every
//! step.

use super::super::routes::{Abandoned, Claim, Effect, Routes, SidCancel, Turn};
use super::super::ConnId;
use crate::reports::HeldTurn;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(30);
const W1: ConnId = 1;
const W2: ConnId = 2;
const A: ConnId = 10;
const B: ConnId = 11;

fn turn(asker: ConnId, worker: ConnId, rid: &str, at: Instant) -> Turn {
    Turn {
        asker: Some(asker),
        worker,
        rid: rid.into(),
        cancel_sent: false,
        running: false,
        bee: format!("bee-{asker}"),
        model: None,
        started: at,
    }
}

/// Routes with workers W1, W2 and askers A, B connected.
fn routes(grace: Duration) -> Routes {
    let mut r = Routes::new(grace);
    for c in [W1, W2, A, B] {
        r.joined(c);
    }
    r
}

fn cancelled(effects: &[Effect]) -> Vec<(&str, &str, Abandoned)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Cancel { sid, rid, why, .. } => Some((sid.as_str(), rid.as_str(), *why)),
            Effect::Lost { .. } => None,
        })
        .collect()
}

#[test]
fn a_sid_stays_on_the_worker_holding_it_until_its_cell_is_gone_and_idle() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "r1", now));
    assert_eq!(r.worker_of("s"), Some(W1));
    // A cell gone while a turn is in flight keeps the sid where it is.
    r.cell_gone(W1, "s");
    assert_eq!(r.worker_of("s"), Some(W1));
    // Another worker's news does not free it either.
    r.worker_said(W1, "s", Some("r1"), true);
    r.cell_gone(W2, "s");
    assert_eq!(r.worker_of("s"), Some(W1));
    r.cell_gone(W1, "s");
    assert_eq!(r.worker_of("s"), None);
}

#[test]
fn a_workers_tone_reaches_the_turn_its_rid_names_not_the_sids_latest_asker() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "ra", now));
    r.routed("s", W1, turn(B, W1, "rb", now));
    assert_eq!(r.sid_asker("s"), Some(B));
    assert_eq!(r.turn_asker("s", W1, Some("ra")), Some(A));
    assert_eq!(r.turn_asker("s", W1, Some("rb")), Some(B));
    // A tone of another worker names no turn here.
    assert_eq!(r.turn_asker("s", W2, Some("ra")), None);
    // A rid-less tone (an older worker) is about the oldest turn.
    assert_eq!(r.turn_asker("s", W1, None), Some(A));
    let ended = r.worker_said(W1, "s", Some("rb"), true).unwrap();
    assert_eq!(ended.rid, "rb");
    assert_eq!(r.turn_asker("s", W1, Some("rb")), None);
    assert!(r.worker_said(W1, "s", Some("ra"), false).unwrap().running);
}

#[test]
fn a_gone_askers_queued_turn_is_cancelled_at_once_and_its_running_one_after_the_grace() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("run", W1, turn(A, W1, "r1", now));
    r.worker_said(W1, "run", Some("r1"), false);
    r.routed("queued", W1, turn(A, W1, "r", now));
    let at_once = r.asker_left(A, now);
    assert_eq!(cancelled(&at_once), [("queued", "r", Abandoned::AskerGone)]);
    assert_eq!(r.next_deadline(), Some(now + GRACE));
    assert!(r.tick(now + GRACE - Duration::from_millis(1)).is_empty());
    let due = r.tick(now + GRACE);
    assert_eq!(cancelled(&due), [("run", "r1", Abandoned::AskerGone)]);
    // Never twice.
    assert!(r.tick(now + GRACE * 3).is_empty());
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn without_a_grace_every_turn_of_a_gone_asker_is_cancelled_at_once() {
    let now = Instant::now();
    let mut r = routes(Duration::ZERO);
    r.routed("s", W1, turn(A, W1, "r1", now));
    r.worker_said(W1, "s", Some("r1"), false);
    assert_eq!(
        cancelled(&r.asker_left(A, now)),
        [("s", "r1", Abandoned::AskerGone)]
    );
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn a_returning_asker_adopts_its_turn_by_rid_and_it_is_not_cancelled() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "r1", now));
    r.worker_said(W1, "s", Some("r1"), false);
    assert!(r.asker_left(A, now).is_empty());
    let back: ConnId = 12;
    r.joined(back);
    assert_eq!(r.claim(back, "s", "r1"), Claim::Adopted);
    assert_eq!(r.turn_asker("s", W1, Some("r1")), Some(back));
    assert_eq!(r.sid_asker("s"), Some(back));
    // Its old connection's deadline passes: the turn is someone's now.
    assert!(r.tick(now + GRACE).is_empty());
    // The same connection sending it again is the same turn.
    assert_eq!(r.claim(back, "s", "r1"), Claim::Again);
    // A new rid is a new prompt.
    assert_eq!(r.claim(back, "s", "r"), Claim::New);
}

#[test]
fn a_turn_whose_asker_is_connected_cannot_be_claimed_by_another() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "r1", now));
    assert_eq!(r.claim(B, "s", "r1"), Claim::Taken);
    assert_eq!(r.turn_asker("s", W1, Some("r1")), Some(A));
}

#[test]
fn a_new_prompt_cancels_the_sids_turns_nobody_waits_for_first() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "old", now));
    r.worker_said(W1, "s", Some("old"), false);
    assert!(r.asker_left(A, now).is_empty());
    let superseded = r.supersede("s");
    assert_eq!(cancelled(&superseded), [("s", "old", Abandoned::AskerGone)]);
    assert!(r.supersede("s").is_empty(), "each turn is cancelled once");
    assert!(r.tick(now + GRACE).is_empty(), "and not again at the grace");
}

#[test]
fn a_running_turn_passed_by_a_connected_askers_prompt_is_cancelled_when_its_asker_goes() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "a", now));
    r.worker_said(W1, "s", Some("a"), false);
    r.routed("s", W1, turn(B, W1, "b", now));
    assert_eq!(
        cancelled(&r.asker_left(A, now)),
        [("s", "a", Abandoned::AskerGone)]
    );
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn a_bees_cancel_names_one_turn_then_says_it_is_already_done_then_asks_the_worker() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "r1", now));
    r.routed("s", W1, turn(A, W1, "r", now));
    // Named by rid: that one, not the oldest.
    let SidCancel::Turns(e) = r.cancel("s", Some("r")) else {
        panic!("a turn is cancelled")
    };
    assert_eq!(cancelled(&e), [("s", "r", Abandoned::Asked)]);
    // Unnamed: the oldest not cancelled yet.
    let SidCancel::Turns(e) = r.cancel("s", None) else {
        panic!("a turn is cancelled")
    };
    assert_eq!(cancelled(&e), [("s", "r1", Abandoned::Asked)]);
    assert_eq!(r.cancel("s", None), SidCancel::Already);
    r.worker_said(W1, "s", Some("r1"), true);
    r.worker_said(W1, "s", Some("r"), true);
    assert_eq!(r.cancel("s", None), SidCancel::Idle(Some(W1)));
    assert_eq!(r.cancel("never", None), SidCancel::Idle(None));
}

#[test]
fn a_slow_asker_loses_its_own_turns_and_no_one_elses() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s1", W1, turn(A, W1, "a", now));
    r.routed("s2", W2, turn(B, W2, "b", now));
    assert_eq!(
        cancelled(&r.abandon(A, Abandoned::SlowAsker)),
        [("s1", "a", Abandoned::SlowAsker)]
    );
}

#[test]
fn a_worker_that_leaves_ends_each_of_its_turns_once_and_frees_its_sids() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s1", W1, turn(A, W1, "a", now));
    r.routed("s1", W1, turn(B, W1, "b", now));
    r.routed("s2", W2, turn(B, W2, "c", now));
    let lost = r.worker_left(W1);
    assert_eq!(
        lost,
        [
            Effect::Lost {
                asker: Some(A),
                sid: "s1".into(),
                rid: "a".into()
            },
            Effect::Lost {
                asker: Some(B),
                sid: "s1".into(),
                rid: "b".into()
            },
        ]
    );
    assert_eq!(r.worker_of("s1"), None);
    assert_eq!(r.worker_of("s2"), Some(W2));
    assert_eq!(r.load(W1), 0);
    assert_eq!(r.load(W2), 1);
}

#[test]
fn turns_a_worker_still_holds_wait_the_grace_for_their_askers_then_are_cancelled() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    let held = |sid: &str, rid: &str| HeldTurn {
        sid: sid.into(),
        rid: rid.into(),
        bee: Some("b".into()),
        model: None,
    };
    let (told, e) = r.worker_held(W1, vec![held("s", "x"), held("t", "y")], now);
    assert_eq!((told, e.len()), (2, 0));
    assert_eq!(r.worker_of("s"), Some(W1));
    // Told again (a second report line): not counted twice.
    assert_eq!(r.worker_held(W1, vec![held("s", "x")], now).0, 0);
    assert_eq!(r.claim(A, "s", "x"), Claim::Adopted);
    let due = r.tick(now + GRACE);
    assert_eq!(cancelled(&due), [("t", "y", Abandoned::AskerGone)]);

    let mut at_once = routes(Duration::ZERO);
    let (_, e) = at_once.worker_held(W1, vec![held("s", "x")], now);
    assert_eq!(cancelled(&e), [("s", "x", Abandoned::AskerGone)]);
}

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
                    assert_eq!(e.len(), mine, "each of a gone worker's turns is lost once");
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
        match self.routes.claim(asker, &sid(s), &rid) {
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
            Claim::Again | Claim::Taken => return vec![],
        }
        // The shell's pick: the sid's worker, else any connected one.
        let Some(worker) = self
            .routes
            .worker_of(&sid(s))
            .or_else(|| self.workers.iter().flatten().copied().next())
        else {
            return vec![];
        };
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
