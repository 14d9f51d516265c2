//! claude's `result` reports a turn's `usage` for that turn alone, but
//! `total_cost_usd` and `modelUsage` for the whole session so far
//! (captured, 2.1.332: the second turn of one process reports `usage`
//! input 10 and `modelUsage` input 20, and a cost that is both turns'; a
//! process started with `--resume` reports the earlier processes' turns of
//! the session too, measured by the real-CLI tests). One [`CostMeter`] per
//! session ([`SessionMeters`], carried from one process of a session to
//! the next) turns those into this turn's share before the result is
//! translated, so everything downstream — the `finish` tone, humd's
//! accounting, budgets, `hum usage` — sees per-turn numbers. The session's
//! total stays on the tone as `sessionCostUsd`.
//!
//! A session this worker has not seen before that resumes (the worker
//! restarted, or another one ran it) has no known base: its first result's
//! cost and model usage are removed rather than guessed, and humd, which
//! keeps every sid's last `sessionCostUsd` across restarts, takes the
//! turn's share from that.

use super::stream_json::{Line, ModelCounts, TurnResult};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Sessions whose meters a worker keeps: more than any pool holds cells,
/// so a session evicted and resumed by this worker continues its count.
/// One forgotten (or a worker restarted) counts its first resumed turn
/// with the session's earlier cost.
const SESSIONS: usize = 16_384;

/// Models remembered per process: claude uses one or two.
const MAX_MODELS: usize = 64;

/// Each session's meter, carried across its processes.
#[derive(Debug)]
pub struct SessionMeters(Mutex<lru::LruCache<String, CostMeter>>);

impl Default for SessionMeters {
    fn default() -> Self {
        SessionMeters(Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(SESSIONS).expect("non-zero"),
        )))
    }
}

impl SessionMeters {
    /// A process starts for `session`: a new session counts from nothing;
    /// a resumed one goes on from its last process's totals (claude
    /// restores them), unknown when this worker never saw it.
    pub fn process_started(&self, session: &str, resumed: bool) {
        let mut m = self.0.lock().expect("meters lock");
        if !resumed {
            m.put(session.to_owned(), CostMeter::default());
        } else if m.get(session).is_none() {
            m.put(
                session.to_owned(),
                CostMeter {
                    unknown_base: true,
                    ..CostMeter::default()
                },
            );
        }
    }

    /// A decoded stdout line of `session`'s process: a `result` becomes
    /// this turn's share (see [`CostMeter::per_turn`]); other lines are
    /// left alone.
    pub fn per_turn(&self, session: &str, line: &mut Line) {
        let Line::Result(result) = line else {
            return;
        };
        let mut m = self.0.lock().expect("meters lock");
        m.get_or_insert_mut(session.to_owned(), CostMeter::default)
            .per_turn(result);
    }
}

/// What one session's processes reported so far.
#[derive(Debug, Default)]
pub struct CostMeter {
    total: Option<f64>,
    /// Per model: the counters and the cost last reported.
    models: HashMap<String, ([u64; 4], f64)>,
    /// Resumed with totals from processes this meter never saw: the next
    /// result's share cannot be told here.
    unknown_base: bool,
}

impl CostMeter {
    /// Makes a `result` this turn's: its cost and model counters become
    /// this turn's share and `sessionCostUsd` keeps the session's total.
    /// A total lower than the last one (a CLI that does not accumulate,
    /// or restarted its count) is taken as this turn's whole. With an
    /// unknown base, the turn's cost and model counters are removed (the
    /// totals are learnt), and the model it spent most on is named
    /// without numbers: what the turn is filed under.
    pub fn per_turn(&mut self, r: &mut TurnResult) {
        if std::mem::take(&mut self.unknown_base) {
            if let Some(total) = r.total_cost_usd.take() {
                self.total = Some(total);
                r.session_cost_usd = Some(total);
            }
            if let Some(models) = r.model_usage.take() {
                for (name, m) in models.into_iter().take(MAX_MODELS) {
                    let cost = m.cost_usd.unwrap_or(0.0);
                    self.models.insert(name, (m.counts(), cost));
                }
                let main = self
                    .models
                    .iter()
                    .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1).then(b.0.cmp(a.0)))
                    .map(|(name, _)| name.clone());
                r.model_usage = main.map(|name| BTreeMap::from([(name, ModelCounts::default())]));
            }
            return;
        }
        if let Some(total) = r.total_cost_usd {
            let turn = match self.total {
                Some(last) if total >= last => total - last,
                _ => total,
            };
            self.total = Some(total);
            r.total_cost_usd = Some(turn);
            r.session_cost_usd = Some(total);
        }
        for (name, m) in r.model_usage.iter_mut().flatten() {
            let now = m.counts();
            let cost = m.cost_usd.unwrap_or(0.0);
            let last = self.models.get(name).copied();
            let grew = last.is_none_or(|(counts, c)| {
                now.iter().zip(counts).all(|(n, l)| *n >= l) && cost >= c
            });
            let (counts, c) = match last {
                Some(prev) if grew => prev,
                _ => ([0; 4], 0.0),
            };
            m.subtract(counts);
            if let Some(own) = &mut m.cost_usd {
                *own -= c;
            }
            if self.models.len() < MAX_MODELS || self.models.contains_key(name) {
                self.models.insert(name.clone(), (now, cost));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A `result` line as the worker decodes it.
    fn result(v: Value) -> TurnResult {
        match Line::read(&v) {
            Line::Result(r) => *r,
            other => panic!("not a result: {other:?}"),
        }
    }

    fn fixture_results() -> Vec<TurnResult> {
        ["turn1.jsonl", "turn2.jsonl"]
            .iter()
            .flat_map(|f| crate::hive::fixture(f))
            .filter_map(|l| match Line::read(&l) {
                Line::Result(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    const HAIKU: &str = "claude-haiku-4-5";

    #[test]
    fn the_captured_second_turn_costs_only_its_own_share() {
        let mut results = fixture_results();
        assert_eq!(results.len(), 2);
        // As captured: the second turn's modelUsage holds both turns.
        let counts = |r: &TurnResult| r.model_usage.as_ref().unwrap()[HAIKU].clone();
        assert_eq!(counts(&results[1]).input_tokens, Some(20));
        let mut meter = CostMeter::default();
        for r in &mut results {
            meter.per_turn(r);
        }
        let (m0, m1) = (counts(&results[0]), counts(&results[1]));
        assert_eq!((m0.input_tokens, m0.output_tokens), (Some(10), Some(5)));
        assert_eq!((m1.input_tokens, m1.output_tokens), (Some(10), Some(7)));
        // The model's other fields pass on as they came.
        assert_eq!(
            m1.rest,
            results[1].model_usage.as_ref().unwrap()[HAIKU].rest
        );
        let c0 = results[0].total_cost_usd.unwrap();
        let c1 = results[1].total_cost_usd.unwrap();
        // Haiku 4.5 at $1 / $5 per million: 10 in + 7 out.
        assert!((c1 - 0.000045).abs() < 1e-12, "{c1}");
        assert!((c0 + c1 - results[1].session_cost_usd.unwrap()).abs() < 1e-12);
        assert!((m1.cost_usd.unwrap() - c1).abs() < 1e-12);
    }

    #[test]
    fn a_resumed_session_goes_on_from_its_last_process() {
        let meters = SessionMeters::default();
        let metered = |session: &str, v: Value| {
            let mut line = Line::read(&v);
            meters.per_turn(session, &mut line);
            match line {
                Line::Result(r) => *r,
                other => panic!("{other:?}"),
            }
        };
        let total = |t: f64| json!({"type": "result", "total_cost_usd": t});
        meters.process_started("s", false);
        assert_eq!(metered("s", total(0.5)).total_cost_usd, Some(0.5));
        // Evicted, resumed: the new process reports the session's 0.5 too.
        meters.process_started("s", true);
        let b = metered("s", total(0.75));
        assert_eq!(
            (b.total_cost_usd, b.session_cost_usd),
            (Some(0.25), Some(0.75))
        );
        // A session resumed here first: its first share is not guessed,
        // the next ones are.
        meters.process_started("t", true);
        let d = metered(
            "t",
            json!({"type": "result", "total_cost_usd": 2.0,
                "modelUsage": {"m": {"inputTokens": 100, "costUSD": 2.0}}}),
        );
        assert_eq!(d.total_cost_usd, None);
        assert_eq!(
            serde_json::to_value(&d.model_usage).unwrap(),
            json!({"m": {}}),
            "named, no numbers"
        );
        assert_eq!(d.session_cost_usd, Some(2.0));
        let e = metered(
            "t",
            json!({"type": "result", "total_cost_usd": 2.5,
                "modelUsage": {"m": {"inputTokens": 130, "costUSD": 2.5}}}),
        );
        assert_eq!(e.total_cost_usd, Some(0.5));
        assert_eq!(e.model_usage.unwrap()["m"].input_tokens, Some(30));
        // A new session under the same id counts from nothing.
        meters.process_started("s", false);
        assert_eq!(metered("s", total(0.1)).total_cost_usd, Some(0.1));
        // Other lines are left alone.
        let mut other = Line::read(&json!({"type": "assistant", "total_cost_usd": 9}));
        let before = other.clone();
        meters.per_turn("s", &mut other);
        assert_eq!(other, before);
    }

    #[test]
    fn a_total_that_falls_is_a_turn_of_its_own_and_bad_values_read_as_none() {
        let mut meter = CostMeter::default();
        meter.per_turn(&mut result(
            json!({"type": "result", "total_cost_usd": 0.5}),
        ));
        let mut b = result(json!({"type": "result", "total_cost_usd": 0.25,
            "modelUsage": {"m": {"inputTokens": 3, "costUSD": 0.25}}}));
        meter.per_turn(&mut b);
        assert_eq!(b.total_cost_usd, Some(0.25));
        let mut c = result(
            json!({"type": "result", "total_cost_usd": "lots", "modelUsage": [],
                   "sessionCostUsd": -1}),
        );
        meter.per_turn(&mut c);
        assert_eq!(
            (c.total_cost_usd, c.model_usage, c.session_cost_usd),
            (None, None, None)
        );
        // A model whose counters went down (a restarted count) is this
        // turn's whole.
        let mut d = result(json!({"type": "result",
            "modelUsage": {"m": {"inputTokens": 1, "costUSD": 0.1, "contextWindow": 200000}}}));
        meter.per_turn(&mut d);
        let m = &d.model_usage.unwrap()["m"];
        assert_eq!((m.input_tokens, m.cost_usd), (Some(1), Some(0.1)));
        assert_eq!(m.rest["contextWindow"], 200000);
    }
}
