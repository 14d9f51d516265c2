//! One turn's usage, read from the `finish` or `error` that ended it:
//! claude's `usage` (input, output, cache-read, cache-creation tokens),
//! `costUsd` (its `total_cost_usd`) and `modelUsage` (the same per model),
//! as [`thrum::Billing`] reads them, bounded here. Pure: any JSON in,
//! numbers out, never a panic.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Tokens of one kind, as the `kind` label of `hum_tokens_total`.
pub const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_creation"];

/// Token counts and cost: of a turn, of one model in it, or a sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tally {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cost_usd: f64,
}

impl Tally {
    /// The counts in [`TOKEN_KINDS`] order.
    pub fn tokens(&self) -> [u64; 4] {
        [
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_creation_tokens,
        ]
    }

    pub fn add(&mut self, other: &Tally) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cache_creation_tokens = self
            .cache_creation_tokens
            .saturating_add(other.cache_creation_tokens);
        self.cost_usd += other.cost_usd;
    }
}

/// What a turn's last tone says it cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spent {
    /// The whole turn.
    pub total: Tally,
    /// Per model (claude's `modelUsage`), largest cost first; empty when
    /// the CLI did not say.
    pub models: Vec<(String, Tally)>,
    /// Whether the tone said what the turn cost (`costUsd`): the worker
    /// leaves it out when it cannot tell the turn's share of a resumed
    /// session's total.
    pub cost_known: bool,
    /// The session's cost so far, as the CLI reports it.
    pub session_cost: Option<f64>,
}

/// The most a CLI may claim one turn cost: anything above is a corrupt
/// line, not a bill (and would poison every sum after it).
const MAX_TURN_COST_USD: f64 = 1.0e6;

/// Models kept per turn: claude reports one or two; a line naming
/// thousands is not believed beyond these.
const MAX_MODELS_PER_TURN: usize = 16;

/// The longest model name kept.
const MAX_MODEL_NAME: usize = 128;

fn cost(v: Option<f64>) -> f64 {
    match v {
        Some(c) if c.is_finite() && (0.0..=MAX_TURN_COST_USD).contains(&c) => c,
        _ => 0.0,
    }
}

impl Spent {
    /// Reads a `finish` or `error` tone's fields (its JSON object).
    pub fn from_fields(fields: &Value) -> Spent {
        let b = thrum::Billing::read(fields);
        let total = Tally {
            input_tokens: b.usage.input_tokens,
            output_tokens: b.usage.output_tokens,
            cache_read_tokens: b.usage.cache_read_input_tokens,
            cache_creation_tokens: b.usage.cache_creation_input_tokens,
            cost_usd: cost(b.cost_usd),
        };
        let mut models: Vec<(String, Tally)> = b
            .model_usage
            .into_iter()
            .filter(|(name, _)| !name.is_empty() && name.len() <= MAX_MODEL_NAME)
            .take(MAX_MODELS_PER_TURN)
            .map(|(name, m)| {
                (
                    name,
                    Tally {
                        input_tokens: m.input_tokens,
                        output_tokens: m.output_tokens,
                        cache_read_tokens: m.cache_read_input_tokens,
                        cache_creation_tokens: m.cache_creation_input_tokens,
                        cost_usd: cost(m.cost_usd),
                    },
                )
            })
            .collect();
        models.sort_by(|a, b| b.1.cost_usd.total_cmp(&a.1.cost_usd).then(a.0.cmp(&b.0)));
        Spent {
            total,
            models,
            cost_known: b.cost_usd.is_some(),
            session_cost: b
                .session_cost_usd
                .filter(|c| c.is_finite() && (0.0..=MAX_TURN_COST_USD * 1e3).contains(c)),
        }
    }

    /// The model a turn is filed under: the one it spent most on, else
    /// the one the prompt named, else `unknown`.
    pub fn main_model(&self, asked: Option<&str>) -> String {
        self.models
            .first()
            .map(|(m, _)| m.clone())
            .or_else(|| {
                asked
                    .filter(|m| !m.is_empty() && m.len() <= MAX_MODEL_NAME)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// Per model for the metrics and the database: `modelUsage` when the
    /// CLI gave it, else the whole turn under its main model.
    pub fn by_model(&self, asked: Option<&str>) -> Vec<(String, Tally)> {
        if self.models.is_empty() {
            vec![(self.main_model(asked), self.total)]
        } else {
            self.models.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_claude_finish_reads_as_its_tokens_cost_and_models() {
        // The shape of claude 2.1.332's result, as translated to `finish`.
        let f = json!({"chi": "finish", "finishReason": "end_turn",
            "usage": {"input_tokens": 20, "cache_creation_input_tokens": 3,
                      "cache_read_input_tokens": 4, "output_tokens": 12},
            "costUsd": 0.00008,
            "modelUsage": {
                "claude-haiku-4-5": {"inputTokens": 5, "outputTokens": 2, "costUSD": 0.00001},
                "claude-sonnet-4-5": {"inputTokens": 15, "outputTokens": 10,
                    "cacheReadInputTokens": 4, "cacheCreationInputTokens": 3, "costUSD": 0.00007}}});
        let s = Spent::from_fields(&f);
        assert_eq!(s.total.tokens(), [20, 12, 4, 3]);
        assert_eq!(s.total.cost_usd, 0.00008);
        assert_eq!(s.main_model(Some("sonnet")), "claude-sonnet-4-5");
        assert_eq!(s.models.len(), 2);
        assert_eq!(s.models[1].1.tokens(), [5, 2, 0, 0]);
    }

    #[test]
    fn without_model_usage_the_turn_is_filed_under_the_asked_model() {
        let s = Spent::from_fields(&json!({"usage": {"input_tokens": 1}, "costUsd": 0.5}));
        assert_eq!(s.by_model(Some("sim")), vec![("sim".into(), s.total)]);
        assert_eq!(s.main_model(None), "unknown");
    }

    #[test]
    fn hostile_numbers_count_as_nothing() {
        for bad in [json!(-1), json!("7"), json!(1e300), json!(null), json!([1])] {
            let s = Spent::from_fields(
                &json!({"usage": {"input_tokens": bad, "output_tokens": bad},
                "costUsd": bad, "modelUsage": {"m": {"costUSD": bad}, "": {}}}),
            );
            assert_eq!(s.total, Tally::default());
            assert_eq!(s.session_cost, None);
            assert_eq!(s.models.len(), 1);
            assert_eq!(s.models[0].1.cost_usd, 0.0);
        }
        let many: serde_json::Map<String, Value> =
            (0..1000).map(|i| (format!("m{i}"), json!({}))).collect();
        assert_eq!(
            Spent::from_fields(&json!({"modelUsage": many}))
                .models
                .len(),
            MAX_MODELS_PER_TURN
        );
    }
}
