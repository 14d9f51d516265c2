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

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// Sessions whose meters a worker keeps: more than any pool holds cells,
/// so a session evicted and resumed by this worker continues its count.
/// One forgotten (or a worker restarted) counts its first resumed turn
/// with the session's earlier cost.
const SESSIONS: usize = 16_384;

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

    /// See [`CostMeter::per_turn`].
    pub fn per_turn(&self, session: &str, event: &mut Value) {
        if event["type"] != "result" {
            return;
        }
        let mut m = self.0.lock().expect("meters lock");
        m.get_or_insert_mut(session.to_owned(), CostMeter::default)
            .per_turn(event);
    }
}

/// The `modelUsage` counters claude accumulates, and its cost.
const COUNTERS: [&str; 4] = [
    "inputTokens",
    "outputTokens",
    "cacheReadInputTokens",
    "cacheCreationInputTokens",
];

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

fn cost_of(v: &Value) -> Option<f64> {
    v.as_f64().filter(|c| c.is_finite() && *c >= 0.0)
}

impl CostMeter {
    /// Rewrites a `result` event in place: `total_cost_usd` and
    /// `modelUsage` become this turn's; `sessionCostUsd` keeps the
    /// session's total. Other events are left alone. A total lower than
    /// the last one (a CLI that does not accumulate, or restarted its
    /// count) is taken as this turn's whole. With an unknown base, the
    /// turn's cost and model usage are removed (the totals are learnt).
    pub fn per_turn(&mut self, event: &mut Value) {
        if event["type"] != "result" {
            return;
        }
        let Some(obj) = event.as_object_mut() else {
            return;
        };
        if std::mem::take(&mut self.unknown_base) {
            if let Some(total) = obj.remove("total_cost_usd").as_ref().and_then(cost_of) {
                self.total = Some(total);
                obj.insert("sessionCostUsd".into(), Value::from(total));
            }
            if let Some(models) = obj.remove("modelUsage") {
                for (name, m) in models.as_object().into_iter().flatten().take(MAX_MODELS) {
                    let now = COUNTERS.map(|k| m[k].as_u64().unwrap_or(0));
                    let cost = cost_of(&m["costUSD"]).unwrap_or(0.0);
                    self.models.insert(name.clone(), (now, cost));
                }
                // The model it spent most on, named without numbers: what
                // the turn is filed under.
                let main = self
                    .models
                    .iter()
                    .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1).then(b.0.cmp(a.0)))
                    .map(|(name, _)| name.clone());
                if let Some(name) = main {
                    obj.insert("modelUsage".into(), serde_json::json!({ name: {} }));
                }
            }
            return;
        }
        if let Some(total) = obj.get("total_cost_usd").and_then(cost_of) {
            let turn = match self.total {
                Some(last) if total >= last => total - last,
                _ => total,
            };
            self.total = Some(total);
            obj.insert("total_cost_usd".into(), Value::from(turn));
            obj.insert("sessionCostUsd".into(), Value::from(total));
        }
        let Some(models) = obj.get_mut("modelUsage").and_then(Value::as_object_mut) else {
            return;
        };
        for (name, usage) in models.iter_mut() {
            let Some(m) = usage.as_object_mut() else {
                continue;
            };
            let now: [u64; 4] = COUNTERS.map(|k| m.get(k).and_then(Value::as_u64).unwrap_or(0));
            let cost = m.get("costUSD").and_then(cost_of).unwrap_or(0.0);
            let last = self.models.get(name).copied();
            let grew = last.is_none_or(|(counts, c)| {
                now.iter().zip(counts).all(|(n, l)| *n >= l) && cost >= c
            });
            let (counts, c) = match last {
                Some(prev) if grew => prev,
                _ => ([0; 4], 0.0),
            };
            for (i, k) in COUNTERS.iter().enumerate() {
                if m.contains_key(*k) {
                    m.insert((*k).into(), Value::from(now[i] - counts[i]));
                }
            }
            if m.contains_key("costUSD") {
                m.insert("costUSD".into(), Value::from(cost - c));
            }
            if self.models.len() < MAX_MODELS || self.models.contains_key(name) {
                self.models.insert(name.clone(), (now, cost));
            }
        }
    }
}

/// Models remembered per process: claude uses one or two.
const MAX_MODELS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_results() -> Vec<Value> {
        ["turn1.jsonl", "turn2.jsonl"]
            .iter()
            .flat_map(|f| {
                let path = format!(
                    "{}/tests/fixtures/claude-2.1.332/{f}",
                    env!("CARGO_MANIFEST_DIR")
                );
                std::fs::read_to_string(path)
                    .unwrap()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|e| e["type"] == "result")
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn the_captured_second_turn_costs_only_its_own_share() {
        let mut results = fixture_results();
        assert_eq!(results.len(), 2);
        // As captured: the second turn's modelUsage holds both turns.
        assert_eq!(
            results[1]["modelUsage"]["claude-haiku-4-5"]["inputTokens"],
            20
        );
        assert_eq!(results[1]["usage"]["input_tokens"], 10);
        let mut meter = CostMeter::default();
        for r in &mut results {
            meter.per_turn(r);
        }
        let m0 = &results[0]["modelUsage"]["claude-haiku-4-5"];
        let m1 = &results[1]["modelUsage"]["claude-haiku-4-5"];
        assert_eq!(
            (m0["inputTokens"].as_u64(), m0["outputTokens"].as_u64()),
            (Some(10), Some(5))
        );
        assert_eq!(
            (m1["inputTokens"].as_u64(), m1["outputTokens"].as_u64()),
            (Some(10), Some(7))
        );
        let c0 = results[0]["total_cost_usd"].as_f64().unwrap();
        let c1 = results[1]["total_cost_usd"].as_f64().unwrap();
        // Haiku 4.5 at $1 / $5 per million: 10 in + 7 out.
        assert!((c1 - 0.000045).abs() < 1e-12, "{c1}");
        assert!((c0 + c1 - results[1]["sessionCostUsd"].as_f64().unwrap()).abs() < 1e-12);
        assert!((m1["costUSD"].as_f64().unwrap() - c1).abs() < 1e-12);
    }

    #[test]
    fn a_resumed_session_goes_on_from_its_last_process() {
        let meters = SessionMeters::default();
        let result = |total: f64| serde_json::json!({"type": "result", "total_cost_usd": total});
        meters.process_started("s", false);
        let mut a = result(0.5);
        meters.per_turn("s", &mut a);
        assert_eq!(a["total_cost_usd"], 0.5);
        // Evicted, resumed: the new process reports the session's 0.5 too.
        meters.process_started("s", true);
        let mut b = result(0.75);
        meters.per_turn("s", &mut b);
        assert_eq!(b["total_cost_usd"], 0.25);
        assert_eq!(b["sessionCostUsd"], 0.75);
        // A session resumed here first: its first share is not guessed,
        // the next ones are.
        meters.process_started("t", true);
        let mut d = serde_json::json!({"type": "result", "total_cost_usd": 2.0,
            "modelUsage": {"m": {"inputTokens": 100, "costUSD": 2.0}}});
        meters.per_turn("t", &mut d);
        assert_eq!(d.get("total_cost_usd"), None);
        assert_eq!(
            d["modelUsage"],
            serde_json::json!({"m": {}}),
            "named, no numbers"
        );
        assert_eq!(d["sessionCostUsd"], 2.0);
        let mut e = serde_json::json!({"type": "result", "total_cost_usd": 2.5,
            "modelUsage": {"m": {"inputTokens": 130, "costUSD": 2.5}}});
        meters.per_turn("t", &mut e);
        assert_eq!(e["total_cost_usd"], 0.5);
        assert_eq!(e["modelUsage"]["m"]["inputTokens"], 30);
        // A new session under the same id counts from nothing.
        meters.process_started("s", false);
        let mut c = result(0.1);
        meters.per_turn("s", &mut c);
        assert_eq!(c["total_cost_usd"], 0.1);
    }

    #[test]
    fn a_total_that_falls_is_a_turn_of_its_own_and_bad_values_are_left() {
        let mut meter = CostMeter::default();
        let mut a = serde_json::json!({"type": "result", "total_cost_usd": 0.5});
        meter.per_turn(&mut a);
        let mut b = serde_json::json!({"type": "result", "total_cost_usd": 0.25,
            "modelUsage": {"m": {"inputTokens": 3, "costUSD": 0.25}}});
        meter.per_turn(&mut b);
        assert_eq!(b["total_cost_usd"], 0.25);
        let mut c =
            serde_json::json!({"type": "result", "total_cost_usd": "lots", "modelUsage": []});
        meter.per_turn(&mut c);
        assert_eq!(c["total_cost_usd"], "lots", "left for the reader to refuse");
        let mut d = serde_json::json!({"type": "assistant", "total_cost_usd": 9});
        meter.per_turn(&mut d);
        assert_eq!(d["total_cost_usd"], 9);
    }
}
