//! The tool desk alone: no sockets, no processes, no clock.

use super::*;
use std::time::Duration;

#[test]
fn a_call_goes_to_the_asker_that_lent_the_tool_else_its_forager() {
    let lent = ["mine".to_owned()];
    let forager = |t: &str| (t != "nobodys").then_some(9);
    let local = |t: &str| (t == "here").then_some(8);
    let owner = |tool, lent: Option<&[String]>, caller, from_node| {
        owner_of(tool, lent, caller, from_node, local, forager)
    };
    assert_eq!(
        owner("mine", Some(&lent), Some(3), false),
        Some(3),
        "the asker's own"
    );
    assert_eq!(
        owner("other", Some(&lent), Some(3), false),
        Some(9),
        "not lent: the forager"
    );
    assert_eq!(
        owner("mine", Some(&lent), None, false),
        Some(9),
        "its asker is gone"
    );
    assert_eq!(
        owner("mine", None, Some(3), false),
        Some(9),
        "no tools lent"
    );
    assert_eq!(owner("nobodys", Some(&lent), Some(3), false), None);
    // From another node: a forager here, or nobody.
    assert_eq!(owner("mine", Some(&lent), Some(3), true), None);
    assert_eq!(owner("here", None, None, true), Some(8));
}

fn call(owner: ConnId, sid: &str, caller: Option<ConnId>) -> Call {
    Call {
        worker: 1,
        rid: None,
        caller,
        owner,
        sid: sid.into(),
        tool: "t".into(),
        args: Value::Null,
        started: Instant::now(),
    }
}

fn full(calls: &[Call], owner: ConnId, sid: &str, caller: Option<ConnId>) -> Option<&'static str> {
    full_share(calls.iter(), owner, sid, caller)
}

#[test]
fn an_owner_that_never_answers_fills_its_own_share_only() {
    let calls: Vec<Call> = (0..MAX_CALLS_PER_OWNER)
        .map(|i| call(7, &format!("s{}", i % 100), None))
        .collect();
    assert_eq!(
        full(&calls, 7, "new", None),
        Some("waiting for the bee that serves this tool")
    );
    assert_eq!(
        full(&calls, 8, "new", None),
        None,
        "another owner's tools are served"
    );
}

#[test]
fn one_sid_or_one_bee_calling_without_end_fills_its_own_share_only() {
    let by_sid: Vec<Call> = (0..MAX_CALLS_PER_SID)
        .map(|i| call(10 + i as ConnId, "loud", None))
        .collect();
    assert_eq!(
        full(&by_sid, 9_999, "loud", None),
        Some("in flight for this session")
    );
    assert_eq!(full(&by_sid, 9_999, "quiet", None), None);
    let by_bee: Vec<Call> = (0..MAX_CALLS_PER_OWNER)
        .map(|i| call(10 + i as ConnId, &format!("s{i}"), Some(3)))
        .collect();
    assert_eq!(
        full(&by_bee, 9_999, "fresh", Some(3)),
        Some("in flight for this session's bee")
    );
    assert_eq!(full(&by_bee, 9_999, "fresh", Some(4)), None, "another bee");
    assert_eq!(
        full(&by_bee, 9_999, "fresh", None),
        None,
        "no caller counts as none"
    );
}

#[test]
fn the_whole_table_has_a_ceiling() {
    let calls: Vec<Call> = (0..MAX_CALLS_IN_FLIGHT)
        .map(|i| call(i as ConnId, &format!("s{i}"), None))
        .collect();
    assert_eq!(full(&calls, ConnId::MAX, "x", None), Some("in flight"));
}

const WORKER: ConnId = 1;
const FORAGER: ConnId = 20;
const ASKER: ConnId = 30;

/// A desk where FORAGER offers `t`.
fn desk() -> ToolDesk {
    let mut d = ToolDesk::default();
    d.registry
        .offer(FORAGER, &[serde_json::json!({"name": "t"})]);
    d
}

fn ask(call_id: &str, tool: &str, sid: &str) -> CallAsk {
    CallAsk {
        call_id: call_id.into(),
        tool: tool.into(),
        sid: sid.into(),
        worker: WORKER,
        rid: Some("r".into()),
        args: Value::Null,
        caller: Some(ASKER),
        from_node: false,
        turn_known: true,
    }
}

#[test]
fn a_call_is_routed_once_and_answered_only_by_its_owner() {
    let now = Instant::now();
    let mut d = desk();
    assert_eq!(d.route(ask("c1", "t", "s"), now), Ok(FORAGER));
    assert_eq!(d.in_flight(), 1);
    // The same id again is refused while it is in flight.
    assert_eq!(d.route(ask("c1", "t", "s"), now), Err(Refusal::Duplicate));
    assert_eq!(
        d.answer("c1", ASKER, false, now).unwrap_err(),
        NotAnswerable::NotYours
    );
    let call = d
        .answer("c1", FORAGER, false, now + Duration::from_millis(5))
        .unwrap();
    assert_eq!((call.sid.as_str(), call.worker), ("s", WORKER));
    assert_eq!(
        d.answer("c1", FORAGER, false, now).unwrap_err(),
        NotAnswerable::NotWaiting,
        "answered once"
    );
    assert_eq!(d.stats.by_outcome.get("ok"), Some(&1));
    assert_eq!(d.stats.by_outcome.get("refused"), Some(&1));
}

#[test]
fn a_call_of_an_ended_turn_or_an_unserved_tool_goes_to_nobody() {
    let now = Instant::now();
    let mut d = desk();
    let over = CallAsk {
        turn_known: false,
        ..ask("c1", "t", "s")
    };
    assert_eq!(d.route(over.clone(), now), Err(Refusal::TurnOver));
    // Another node checked its own turn: the call is served here.
    let from_node = CallAsk {
        from_node: true,
        caller: None,
        ..over
    };
    assert_eq!(d.route(from_node, now), Ok(FORAGER));
    assert_eq!(
        d.route(ask("c2", "nobodys", "s"), now),
        Err(Refusal::Unrouted)
    );
    assert_eq!(Refusal::Unrouted.message("x"), "no bee serves the tool x");
    assert_eq!(d.stats.by_outcome.get("cancelled"), Some(&1));
    assert_eq!(d.stats.by_outcome.get("unrouted"), Some(&1));
}

#[test]
fn lent_tools_go_to_their_asker_until_it_lends_none_and_count_as_parked_turns() {
    let now = Instant::now();
    let mut d = desk();
    d.lend("s", vec!["t".into()]);
    assert_eq!(d.route(ask("c1", "t", "s"), now), Ok(ASKER));
    assert_eq!(d.route(ask("c2", "t", "s"), now), Ok(ASKER));
    // Two calls of one turn waiting for its own asker: one parked turn.
    assert_eq!(d.parked_turns(), 1);
    assert_eq!(d.route(ask("c3", "t", "other"), now), Ok(FORAGER));
    d.lend("s", Vec::new());
    assert_eq!(d.route(ask("c4", "t", "s"), now), Ok(FORAGER));
    d.lend("gone", vec!["t".into()]);
    d.keep_lent(|sid| sid != "gone");
    assert_eq!(d.route(ask("c5", "t", "gone"), now), Ok(FORAGER));
}

#[test]
fn what_a_leaving_peer_owned_or_made_ends_once_and_is_counted() {
    let now = Instant::now();
    let mut d = desk();
    d.route(ask("c1", "t", "s"), now).unwrap();
    d.route(ask("c2", "t", "s2"), now).unwrap();
    let mut owned = d.ids_where(|c| c.owner == FORAGER);
    owned.sort();
    assert_eq!(owned, ["c1", "c2"]);
    assert!(d.end("c1", CallEnd::OwnerGone).is_some());
    assert!(d.end("c1", CallEnd::OwnerGone).is_none(), "ended once");
    assert_eq!(d.ids_where(|c| c.sid == "s2"), ["c2"]);
    assert!(d.end("c2", CallEnd::TurnCancelled).is_some());
    assert_eq!(d.in_flight(), 0);
    assert_eq!(d.stats.by_outcome.get("owner_gone"), Some(&1));
    assert_eq!(d.stats.by_outcome.get("cancelled"), Some(&1));
}
