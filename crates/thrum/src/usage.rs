//! What a turn or a model call used, typed: the token counts of `usage`
//! (claude's names, which the wire keeps), and the cost fields a `finish`
//! or an agent's `error` carries beside it (`costUsd`, `modelUsage`,
//! `sessionCostUsd`). The tones keep these fields as they came, so no byte
//! changes on the way through; these are the one reading of them.
//! Reading never fails: a count that is not a count reads as 0, a cost that
//! is not a number as none.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Value::deserialize(d)?.as_u64().unwrap_or(0))
}

fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Value::deserialize(d)?.as_f64())
}

/// Token counts, as `usage` carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    #[serde(deserialize_with = "count")]
    pub input_tokens: u64,
    #[serde(deserialize_with = "count")]
    pub output_tokens: u64,
    #[serde(deserialize_with = "count")]
    pub cache_read_input_tokens: u64,
    #[serde(deserialize_with = "count")]
    pub cache_creation_input_tokens: u64,
}

impl Usage {
    /// Reads a `usage` value; anything but an object reads as nothing used.
    pub fn read(v: &Value) -> Usage {
        Usage::deserialize(v).unwrap_or_default()
    }
}

/// One model's share of a turn, as claude's `modelUsage` says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ModelUsage {
    #[serde(deserialize_with = "count")]
    pub input_tokens: u64,
    #[serde(deserialize_with = "count")]
    pub output_tokens: u64,
    #[serde(deserialize_with = "count")]
    pub cache_read_input_tokens: u64,
    #[serde(deserialize_with = "count")]
    pub cache_creation_input_tokens: u64,
    #[serde(rename = "costUSD", deserialize_with = "amount")]
    pub cost_usd: Option<f64>,
}

/// What a `finish` or an agent's `error` says the turn used and cost.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Billing {
    #[serde(deserialize_with = "usage_field")]
    pub usage: Usage,
    /// The turn's own cost; none when the worker could not tell it.
    #[serde(deserialize_with = "amount")]
    pub cost_usd: Option<f64>,
    /// Per model, as claude named them.
    #[serde(deserialize_with = "models")]
    pub model_usage: BTreeMap<String, ModelUsage>,
    /// The session's cost so far, as the CLI reported it.
    #[serde(deserialize_with = "amount")]
    pub session_cost_usd: Option<f64>,
}

fn usage_field<'de, D: Deserializer<'de>>(d: D) -> Result<Usage, D::Error> {
    Ok(Usage::read(&Value::deserialize(d)?))
}

fn models<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, ModelUsage>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(m) => m
            .into_iter()
            .map(|(name, v)| (name, ModelUsage::deserialize(&v).unwrap_or_default()))
            .collect(),
        _ => BTreeMap::new(),
    })
}

impl Billing {
    /// Reads a `finish` or `error` tone's fields (its JSON object);
    /// anything else reads as nothing said.
    pub fn read(fields: &Value) -> Billing {
        Billing::deserialize(fields).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_finish_reads_as_its_tokens_costs_and_models() {
        let b = Billing::read(
            &json!({"chi": "finish", "usage": {"input_tokens": 3, "output_tokens": 5,
            "cache_read_input_tokens": 7, "cache_creation_input_tokens": 11, "service_tier": "standard"},
            "costUsd": 0.25, "sessionCostUsd": 1.5,
            "modelUsage": {"m": {"inputTokens": 3, "outputTokens": 5, "costUSD": 0.25}}}),
        );
        assert_eq!(
            b.usage,
            Usage {
                input_tokens: 3,
                output_tokens: 5,
                cache_read_input_tokens: 7,
                cache_creation_input_tokens: 11
            }
        );
        assert_eq!((b.cost_usd, b.session_cost_usd), (Some(0.25), Some(1.5)));
        assert_eq!(b.model_usage["m"].output_tokens, 5);
        assert_eq!(b.model_usage["m"].cost_usd, Some(0.25));
    }

    #[test]
    fn odd_values_read_as_nothing_never_as_an_error() {
        let b = Billing::read(
            &json!({"usage": "lots", "costUsd": "free", "modelUsage": [1, 2],
                                      "sessionCostUsd": null}),
        );
        assert_eq!(b, Billing::default());
        let b = Billing::read(&json!({"usage": {"input_tokens": -1, "output_tokens": 2.5},
                                      "modelUsage": {"m": 7}}));
        assert_eq!(b.usage, Usage::default());
        assert_eq!(b.model_usage["m"], ModelUsage::default());
        assert_eq!(Billing::read(&json!(42)), Billing::default());
        assert_eq!(Usage::read(&Value::Null), Usage::default());
    }
}
