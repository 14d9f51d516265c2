//! The router's accounting as a plain value: budgets, a resumed session's
//! share, the hard stop's scopes and how a turn ended, with time passed
//! in and no database (no writer).

use super::super::accounting::{Accounting, TurnEnded};
use crate::usage::{Budgets, Scope, Spend};
use serde_json::json;

/// Noon, some day (Unix ms).
const NOON: i64 = 1_764_849_600_000;

fn accounting(budgets: Budgets, last_session: Vec<(String, f64)>) -> Accounting {
    Accounting::new(
        None,
        Spend::new(NOON, 0.0, Vec::new(), Vec::new()),
        budgets,
        last_session,
    )
}

fn line(v: serde_json::Value) -> Vec<u8> {
    let mut l = v.to_string().into_bytes();
    l.push(b'\n');
    l
}

fn ended<'a>(sid: &'a str, bee: &'a str, chi: &'a str, line: &'a [u8]) -> TurnEnded<'a> {
    TurnEnded {
        sid,
        bee,
        hive: "claude-cli".into(),
        model: Some("sonnet"),
        duration_ms: 10,
        chi,
        line,
    }
}

#[test]
fn a_spent_sid_budget_refuses_that_sid_only_and_counts_the_refusal() {
    let mut a = accounting(
        Budgets {
            per_sid_daily_usd: Some(0.5),
            ..Default::default()
        },
        Vec::new(),
    );
    let paid = line(json!({"chi": "finish", "sid": "s", "costUsd": 0.25}));
    for _ in 0..2 {
        assert!(a.admit(NOON, "bee", "s").is_none());
        let r = a.record(NOON, ended("s", "bee", "finish", &paid));
        assert_eq!(r.record.outcome, "done");
        assert!(r.stop.is_empty(), "no hard stop asked");
    }
    let refused = a.admit(NOON, "bee", "s").expect("spent");
    assert_eq!(refused.scope, Scope::Sid);
    assert!(
        a.admit(NOON, "bee", "other").is_none(),
        "another sid is served"
    );
    // The next day starts again.
    assert!(a.admit(NOON + 86_400_000, "bee", "s").is_none());
}

#[test]
fn a_resumed_sessions_share_is_what_its_total_grew_by() {
    let mut a = accounting(Budgets::default(), vec![("s".into(), 1.0)]);
    // The worker could not tell the turn's own cost: only the session's.
    let l = line(json!({"chi": "finish", "sid": "s", "sessionCostUsd": 1.25,
                        "modelUsage": {"claude-sonnet": {"inputTokens": 3, "costUSD": 1.25}}}));
    let r = a.record(NOON, ended("s", "bee", "finish", &l));
    assert!(
        (r.record.spent.total.cost_usd - 0.25).abs() < 1e-9,
        "{:?}",
        r.record.spent
    );
    assert_eq!(r.record.models.len(), 1);
    assert!((r.record.models[0].1.cost_usd - 0.25).abs() < 1e-9);
    // The next turn is measured from the new total; a sid never seen pays
    // its whole total.
    let l = line(json!({"chi": "finish", "sid": "s", "sessionCostUsd": 1.5}));
    let r = a.record(NOON, ended("s", "bee", "finish", &l));
    assert!((r.record.spent.total.cost_usd - 0.25).abs() < 1e-9);
    let l = line(json!({"chi": "finish", "sid": "new", "sessionCostUsd": 0.75}));
    let r = a.record(NOON, ended("new", "bee", "finish", &l));
    assert!((r.record.spent.total.cost_usd - 0.75).abs() < 1e-9);
}

#[test]
fn a_hard_stop_names_the_budgets_a_turn_used_up_once() {
    let mut a = accounting(
        Budgets {
            daily_usd: Some(10.0),
            per_bee_daily_usd: Some(1.0),
            hard_stop: true,
            ..Default::default()
        },
        Vec::new(),
    );
    let cheap = line(json!({"chi": "finish", "sid": "s", "costUsd": 0.5}));
    assert!(a
        .record(NOON, ended("s", "bee", "finish", &cheap))
        .stop
        .is_empty());
    let r = a.record(NOON, ended("t", "bee", "finish", &cheap));
    assert_eq!(r.stop, vec![Scope::Bee], "the bee's budget is used up now");
    // Already spent before this turn: its turns were stopped then.
    let r = a.record(NOON, ended("u", "bee", "finish", &cheap));
    assert!(r.stop.is_empty());
    // Another bee's spend does not stop this one's turns.
    let r = a.record(NOON, ended("v", "other", "finish", &cheap));
    assert!(r.stop.is_empty());
}

#[test]
fn how_a_turn_ended_is_named_from_its_last_tone() {
    let mut a = accounting(Budgets::default(), Vec::new());
    let mut outcome = |chi: &str, v: serde_json::Value| {
        let l = line(v);
        a.record(NOON, ended("s", "bee", chi, &l)).record.outcome
    };
    assert_eq!(
        outcome("finish", json!({"chi": "finish", "sid": "s"})),
        "done"
    );
    assert_eq!(
        outcome(
            "finish",
            json!({"chi": "finish", "sid": "s", "finishReason": "cancelled"})
        ),
        "cancelled"
    );
    assert_eq!(
        outcome(
            "error",
            json!({"chi": "error", "sid": "s", "code": "worker_lost"})
        ),
        "worker_lost"
    );
    let long = "x".repeat(65);
    assert_eq!(
        outcome("error", json!({"chi": "error", "sid": "s", "code": long})),
        "error"
    );
    assert_eq!(outcome("error", json!("not a tone")), "error");
}
