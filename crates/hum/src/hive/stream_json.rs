//! claude's stream-json, decoded once: the lines hum reads (the session's
//! `system/init`, the stream events of a message, the `assistant` message,
//! the turn's `result`) as types, every other line as [`Line::Other`].
//! Reading never fails: a field of an unexpected type reads as absent, so a
//! CLI that changes a field's shape degrades a turn's detail, not the turn.
//! Fields hum passes on as they came (`tools`, `usage`) stay JSON; a
//! model's fields in `modelUsage` other than its counters and cost too.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

fn index<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(d)?.as_u64())
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Value::deserialize(d)? == Value::Bool(true))
}

/// A cost: a finite amount not below zero.
fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Value::deserialize(d)?
        .as_f64()
        .filter(|c| c.is_finite() && *c >= 0.0))
}

/// `modelUsage`: a model whose entry is not an object reads as no
/// counters; a `modelUsage` that is not an object as none.
fn models<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, ModelCounts>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(m) => Some(m.into_iter().map(|(name, v)| (name, read(&v))).collect()),
        _ => None,
    })
}

fn some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Some(Value::deserialize(d)?).filter(|v| !v.is_null()))
}

/// One stdout line of the CLI.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `{"type": "system", "subtype": "init", …}`: the turn's first event.
    Init(Init),
    /// A stream event of the message being written.
    Stream(StreamEvent),
    /// The whole `assistant` message (its id and usage).
    Assistant(Message),
    /// The turn's end.
    Result(Box<TurnResult>),
    /// Anything else hum does not read.
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Init {
    #[serde(deserialize_with = "text")]
    pub session_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub model: Option<String>,
    #[serde(deserialize_with = "some")]
    pub tools: Option<Value>,
}

/// A message's id and its usage so far.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Message {
    #[serde(deserialize_with = "text")]
    pub id: Option<String>,
    #[serde(deserialize_with = "some")]
    pub usage: Option<Value>,
}

/// The stream events hum forwards or reads.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    MessageStart(Message),
    /// The message's usage as it grows.
    MessageDelta {
        usage: Option<Value>,
    },
    BlockStart {
        index: Option<u64>,
        kind: BlockKind,
    },
    BlockDelta {
        index: Option<u64>,
        delta: Delta,
    },
    BlockStop {
        index: Option<u64>,
    },
    Other,
}

/// What a content block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Text,
    /// Thinking, redacted or not.
    Thinking,
    Other,
}

/// A piece of a content block.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Text(Option<String>),
    Thinking(Option<String>),
    /// A piece of a tool use's input, as JSON text.
    InputJson(Option<String>),
    Other,
}

/// The turn's `result`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TurnResult {
    #[serde(deserialize_with = "text")]
    pub subtype: Option<String>,
    #[serde(deserialize_with = "flag")]
    pub is_error: bool,
    /// The answer, or what went wrong.
    #[serde(deserialize_with = "text")]
    pub result: Option<String>,
    #[serde(deserialize_with = "some")]
    pub errors: Option<Value>,
    #[serde(deserialize_with = "text")]
    pub stop_reason: Option<String>,
    #[serde(deserialize_with = "some")]
    pub usage: Option<Value>,
    /// The session's cost so far as claude reports it; this turn's once
    /// the worker's meter has been by.
    #[serde(deserialize_with = "amount")]
    pub total_cost_usd: Option<f64>,
    /// Per model, the session's counters so far (this turn's once
    /// metered).
    #[serde(rename = "modelUsage", deserialize_with = "models")]
    pub model_usage: Option<BTreeMap<String, ModelCounts>>,
    #[serde(deserialize_with = "some")]
    pub duration_ms: Option<Value>,
    /// Not claude's: the session's total, which the worker's meter adds.
    #[serde(rename = "sessionCostUsd", deserialize_with = "amount")]
    pub session_cost_usd: Option<f64>,
}

/// One model's entry in a `result`'s `modelUsage`: the counters and cost
/// the meter works on (absent ones stay absent), everything else as it
/// came.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ModelCounts {
    #[serde(deserialize_with = "index", skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(deserialize_with = "index", skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(deserialize_with = "index", skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(deserialize_with = "index", skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(
        rename = "costUSD",
        deserialize_with = "amount",
        skip_serializing_if = "Option::is_none"
    )]
    pub cost_usd: Option<f64>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl ModelCounts {
    /// The four token counters, absent ones as 0.
    pub fn counts(&self) -> [u64; 4] {
        [
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        ]
        .map(|c| c.unwrap_or(0))
    }

    /// Takes `base` off each counter that is present.
    pub fn subtract(&mut self, base: [u64; 4]) {
        let fields = [
            &mut self.input_tokens,
            &mut self.output_tokens,
            &mut self.cache_read_input_tokens,
            &mut self.cache_creation_input_tokens,
        ];
        for (field, b) in fields.into_iter().zip(base) {
            if let Some(n) = field {
                *n = n.saturating_sub(b);
            }
        }
    }
}

impl TurnResult {
    /// The error messages claude listed (`errors`), strings only.
    pub fn error_list(&self) -> Vec<&str> {
        match &self.errors {
            Some(Value::Array(e)) => e.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct Tagged {
    #[serde(rename = "type", default, deserialize_with = "text")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "text")]
    subtype: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Wrapped {
    event: Value,
    message: Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEvent {
    #[serde(rename = "type", deserialize_with = "text")]
    kind: Option<String>,
    #[serde(deserialize_with = "index")]
    index: Option<u64>,
    message: Value,
    #[serde(deserialize_with = "some")]
    usage: Option<Value>,
    content_block: Value,
    delta: Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawDelta {
    #[serde(rename = "type", deserialize_with = "text")]
    kind: Option<String>,
    #[serde(deserialize_with = "text")]
    text: Option<String>,
    #[serde(deserialize_with = "text")]
    thinking: Option<String>,
    #[serde(deserialize_with = "text")]
    partial_json: Option<String>,
}

fn read<'a, T: Deserialize<'a> + Default>(v: &'a Value) -> T {
    T::deserialize(v).unwrap_or_default()
}

impl Line {
    /// Reads one parsed stdout line.
    pub fn read(v: &Value) -> Line {
        let Ok(tag) = Tagged::deserialize(v) else {
            return Line::Other;
        };
        match (tag.kind.as_deref(), tag.subtype.as_deref()) {
            (Some("system"), Some("init")) => Line::Init(read(v)),
            (Some("stream_event"), _) => Line::Stream(StreamEvent::read(&read::<Wrapped>(v).event)),
            (Some("assistant"), _) => Line::Assistant(read(&read::<Wrapped>(v).message)),
            (Some("result"), _) => Line::Result(Box::new(read(v))),
            _ => Line::Other,
        }
    }
}

impl StreamEvent {
    fn read(v: &Value) -> StreamEvent {
        let e: RawEvent = read(v);
        match e.kind.as_deref() {
            Some("message_start") => StreamEvent::MessageStart(read(&e.message)),
            Some("message_delta") => StreamEvent::MessageDelta { usage: e.usage },
            Some("content_block_start") => {
                let block: RawEvent = read(&e.content_block);
                let kind = match block.kind.as_deref() {
                    Some("text") => BlockKind::Text,
                    Some("thinking" | "redacted_thinking") => BlockKind::Thinking,
                    _ => BlockKind::Other,
                };
                StreamEvent::BlockStart {
                    index: e.index,
                    kind,
                }
            }
            Some("content_block_delta") => {
                let d: RawDelta = read(&e.delta);
                let delta = match d.kind.as_deref() {
                    Some("text_delta") => Delta::Text(d.text),
                    Some("thinking_delta") => Delta::Thinking(d.thinking),
                    Some("input_json_delta") => Delta::InputJson(d.partial_json),
                    _ => Delta::Other,
                };
                StreamEvent::BlockDelta {
                    index: e.index,
                    delta,
                }
            }
            Some("content_block_stop") => StreamEvent::BlockStop { index: e.index },
            _ => StreamEvent::Other,
        }
    }
}

#[cfg(test)]
mod tests;
