//! [`Routes`] alone: no sockets, no processes, no clock. Each rule of the
//! routes has a test named after it (the property test of all of them is
//! in `routes_props.rs`).

use super::super::routes::{Abandoned, Claim, Effect, Routes, SidCancel, Turn, CLAIM_WAIT};
use super::super::ConnId;
use crate::reports::HeldTurn;
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(30);
const W1: ConnId = 1;
const W2: ConnId = 2;
const A: ConnId = 10;
const B: ConnId = 11;

/// A turn of `asker` on `worker` (shared with the property test).
pub(super) fn turn(asker: ConnId, worker: ConnId, rid: &str, at: Instant) -> Turn {
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
            _ => None,
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
    assert_eq!(r.claim(back, "s", "r1", now, None), Claim::Adopted);
    assert_eq!(r.turn_asker("s", W1, Some("r1")), Some(back));
    assert_eq!(r.sid_asker("s"), Some(back));
    // Its old connection's deadline passes: the turn is someone's now.
    assert!(r.tick(now + GRACE).is_empty());
    // The same connection sending it again is the same turn.
    assert_eq!(r.claim(back, "s", "r1", now, None), Claim::Again);
    // A new rid is a new prompt.
    assert_eq!(r.claim(back, "s", "r", now, None), Claim::New);
}

#[test]
fn a_turn_whose_asker_stays_connected_is_not_claimed_by_another() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "r1", now));
    r.worker_said(W1, "s", Some("r1"), false);
    // The claim waits for A's end, which humd may not have read yet.
    assert_eq!(r.claim(B, "s", "r1", now, None), Claim::Waiting);
    assert_eq!(r.claim(B, "s", "r1", now, None), Claim::Waiting);
    assert_eq!(r.next_deadline(), Some(now + CLAIM_WAIT));
    // One claim waits per turn; a third connection's is refused at once.
    let c: ConnId = 12;
    r.joined(c);
    assert_eq!(r.claim(c, "s", "r1", now, None), Claim::Taken);
    assert!(r
        .tick(now + CLAIM_WAIT - Duration::from_millis(1))
        .is_empty());
    assert_eq!(
        r.tick(now + CLAIM_WAIT),
        [Effect::Refused {
            asker: B,
            sid: "s".into(),
            rid: "r1".into()
        }]
    );
    assert_eq!(r.turn_asker("s", W1, Some("r1")), Some(A));
    assert_eq!(r.next_deadline(), None);
    // A's end now leaves the turn to the grace, not to B.
    assert!(r.asker_left(A, now + CLAIM_WAIT).is_empty());
    assert_eq!(r.turn("s", W1, Some("r1")).unwrap().asker, Some(A));
}

#[test]
fn a_claim_made_before_its_asker_is_seen_gone_takes_the_turn_when_it_is() {
    let now = Instant::now();
    // Even with no grace: the bee is back, so its turn is not cancelled.
    for grace in [GRACE, Duration::ZERO] {
        let mut r = routes(grace);
        r.routed("s", W1, turn(A, W1, "r1", now));
        r.worker_said(W1, "s", Some("r1"), false);
        assert_eq!(r.claim(B, "s", "r1", now, None), Claim::Waiting);
        // Its new connection cancels the turn before A's end is read.
        let SidCancel::Turns(c) = r.cancel("s", None) else {
            panic!("the turn is cancelled")
        };
        assert_eq!(cancelled(&c), [("s", "r1", Abandoned::Asked)]);
        let left = r.asker_left(A, now);
        assert_eq!(
            left,
            [Effect::Adopted {
                asker: B,
                sid: "s".into(),
                rid: "r1".into(),
                tools: None
            }],
            "grace {grace:?}"
        );
        assert_eq!(r.turn_asker("s", W1, Some("r1")), Some(B));
        assert_eq!(r.sid_asker("s"), Some(B));
        assert!(r.tick(now + GRACE + CLAIM_WAIT).is_empty());
    }
}

#[test]
fn a_turn_that_ends_while_a_claim_waits_ends_at_the_claimer_too() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "r1", now));
    r.routed("t", W1, turn(A, W1, "r2", now));
    assert_eq!(r.claim(B, "s", "r1", now, None), Claim::Waiting);
    assert_eq!(r.claim(B, "t", "r2", now, None), Claim::Waiting);
    r.worker_said(W1, "s", Some("r1"), true);
    assert_eq!(r.claim_ended("s", "r1"), Some(B));
    assert_eq!(r.claim_ended("s", "r1"), None);
    // A worker that leaves takes its turns: the waiting prompt hears it.
    let lost = r.worker_left(W1);
    assert!(
        lost.contains(&Effect::ClaimLost {
            asker: B,
            sid: "t".into(),
            rid: "r2".into()
        }),
        "{lost:?}"
    );
    assert!(
        r.tick(now + CLAIM_WAIT).is_empty(),
        "nothing waits any more"
    );
}

#[test]
fn a_claimer_that_leaves_stops_waiting() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "r1", now));
    r.worker_said(W1, "s", Some("r1"), false);
    assert_eq!(r.claim(B, "s", "r1", now, None), Claim::Waiting);
    assert!(r.asker_left(B, now).is_empty());
    assert_eq!(r.next_deadline(), None);
    assert!(r.asker_left(A, now).is_empty());
    assert_eq!(r.turn("s", W1, Some("r1")).unwrap().asker, Some(A));
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
    assert_eq!(r.claim(A, "s", "x", now, None), Claim::Adopted);
    let due = r.tick(now + GRACE);
    assert_eq!(cancelled(&due), [("t", "y", Abandoned::AskerGone)]);

    let mut at_once = routes(Duration::ZERO);
    let (_, e) = at_once.worker_held(W1, vec![held("s", "x")], now);
    assert_eq!(cancelled(&e), [("s", "x", Abandoned::AskerGone)]);
}

#[test]
fn a_waiting_claim_sent_again_after_its_own_cancel_is_the_same_claim_not_a_new_turn() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "r1", now));
    r.worker_said(W1, "s", Some("r1"), false);
    let tools = serde_json::json!([{"name": "mine"}]);
    assert_eq!(r.claim(B, "s", "r1", now, Some(&tools)), Claim::Waiting);
    assert!(matches!(r.cancel("s", None), SidCancel::Turns(_)));
    assert_eq!(r.claim(B, "s", "r1", now, None), Claim::Waiting);
    // It takes the turn with the tools its first prompt lent.
    assert_eq!(
        r.asker_left(A, now),
        [Effect::Adopted {
            asker: B,
            sid: "s".into(),
            rid: "r1".into(),
            tools: Some(tools)
        }]
    );
}

#[test]
fn a_claimer_that_moves_on_to_a_new_prompt_no_longer_takes_the_old_turn() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W1, turn(A, W1, "r1", now));
    r.worker_said(W1, "s", Some("r1"), false);
    assert_eq!(r.claim(B, "s", "r1", now, None), Claim::Waiting);
    // B asks something new for the sid: the shell says it moved on.
    r.moved_on(B, "s");
    r.routed("s", W1, turn(B, W1, "r2", now));
    // A's end: nobody takes r1, and B's prompt waits behind it, so it is
    // cancelled at once rather than after the grace.
    assert_eq!(
        cancelled(&r.asker_left(A, now)),
        [("s", "r1", Abandoned::AskerGone)]
    );
    assert_eq!(r.turn_asker("s", W1, Some("r2")), Some(B));
}

#[test]
fn a_turn_sent_back_by_the_node_it_went_to_leaves_the_routes_with_its_asker() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    // W2 stands for the link to the node the turn was sent to.
    r.routed("s", W2, turn(A, W2, "r1", now));
    r.routed("s", W2, turn(B, W2, "r2", now));
    let there = |c: ConnId| c == W2;
    // Another rid, or a rid sent elsewhere: not one sent back.
    assert_eq!(r.bounced("s", "r9", there), None);
    assert_eq!(r.bounced("s", "r1", |c| c == W1), None);
    assert_eq!(r.bounced("s", "r1", there), Some((Some(A), false)));
    // That turn is gone, the other stays; the sid is routed there no more.
    assert!(r.turn("s", W2, Some("r1")).is_none());
    assert!(r.turn("s", W2, Some("r2")).is_some());
    assert_eq!(r.worker_of("s"), None);
    // Sent again: a new prompt now, not a turn in flight.
    assert_eq!(r.claim(A, "s", "r1", now, None), Claim::New);
    // A turn its asker cancelled on the way comes back said so.
    let _ = r.cancel("s", Some("r2"));
    assert_eq!(r.bounced("s", "r2", there), Some((Some(B), true)));
}

#[test]
fn an_old_route_to_a_node_goes_and_another_nodes_stays() {
    let now = Instant::now();
    let mut r = routes(GRACE);
    r.routed("s", W2, turn(A, W2, "r1", now));
    r.unroute("s", |c| c == W1);
    assert_eq!(r.worker_of("s"), Some(W2));
    r.unroute("s", |c| c == W2);
    assert_eq!(r.worker_of("s"), None);
}
