//! claude's stream-json → thrum tones (BRIEF section 3).
//!
//! - `system/init` → `session-ready` {nestId, model, tools}: the turn's first
//!   event.
//! - `stream_event` content blocks → `chunk`: `text_start` /
//!   `reasoning_start`, `text_delta` / `reasoning_delta` {delta},
//!   `tool_input_delta` {partialJson}, `content_block_stop`, each with
//!   `blockIdx`.
//! - `result` → `finish` {finishReason (claude's stop reason), subtype (the
//!   result's, thrum 0.7's finishReason), usage, costUsd, durationMs,
//!   modelUsage} when it succeeded, `error` {code: "agent_error", message,
//!   subtype, usage, costUsd, modelUsage} when `is_error` (a failed turn
//!   is paid for too: hum's usage accounting reads both).
//! - Everything else (status, message_start/stop, assistant, …) is not
//!   forwarded.

use super::stream_json::{BlockKind, Delta, Line, StreamEvent, TurnResult};
use serde_json::{Map, Value};
use thrum::{Body, Chunk, ChunkType, ErrorTone, Finish, SessionReady};

/// What one stdout event means for the turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    /// The turn's first event, carrying `session-ready`.
    Started(Body),
    /// A tone to forward.
    Tone(Body),
    /// The turn's last event, carrying `finish` or `error`.
    Ended(Body),
}

/// The result's cost fields as the tones carry them.
fn costs(r: &TurnResult) -> [(&'static str, Option<Value>); 3] {
    [
        ("costUsd", r.total_cost_usd.map(Value::from)),
        (
            "modelUsage",
            r.model_usage
                .as_ref()
                .and_then(|m| serde_json::to_value(m).ok()),
        ),
        ("sessionCostUsd", r.session_cost_usd.map(Value::from)),
    ]
}

fn extra(pairs: &[(&str, Option<&Value>)]) -> Map<String, Value> {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            v.filter(|v| !v.is_null())
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect()
}

fn chunk(kind: ChunkType, index: Option<u64>, delta: Option<&str>, partial: Option<&str>) -> Body {
    Body::Chunk(Chunk {
        chunk_type: kind,
        block_idx: index,
        delta: delta.map(str::to_owned),
        partial_json: partial.map(str::to_owned),
        usage: None,
        extra: Map::new(),
    })
}

/// Translates one parsed stdout line; `None` when nothing is forwarded.
pub fn translate(event: &Value) -> Option<Translated> {
    translate_line(&Line::read(event))
}

/// Translates one decoded stdout line.
pub fn translate_line(line: &Line) -> Option<Translated> {
    match line {
        Line::Init(init) => Some(Translated::Started(Body::SessionReady(SessionReady {
            nest_id: init.session_id.clone(),
            model: init.model.clone(),
            tools: init.tools.clone(),
            extra: Map::new(),
        }))),
        Line::Stream(ev) => stream_event(ev).map(Translated::Tone),
        Line::Result(r) => Some(Translated::Ended(result(r))),
        Line::Assistant(_) | Line::Other => None,
    }
}

fn stream_event(ev: &StreamEvent) -> Option<Body> {
    match ev {
        StreamEvent::BlockStart { index, kind } => match kind {
            BlockKind::Text => Some(chunk(ChunkType::TextStart, *index, None, None)),
            BlockKind::Thinking => Some(chunk(ChunkType::ReasoningStart, *index, None, None)),
            BlockKind::Other => None,
        },
        StreamEvent::BlockDelta { index, delta } => match delta {
            Delta::Text(t) => Some(chunk(ChunkType::TextDelta, *index, t.as_deref(), None)),
            Delta::Thinking(t) => {
                Some(chunk(ChunkType::ReasoningDelta, *index, t.as_deref(), None))
            }
            Delta::InputJson(j) => {
                Some(chunk(ChunkType::ToolInputDelta, *index, None, j.as_deref()))
            }
            Delta::Other => None,
        },
        StreamEvent::BlockStop { index } => {
            Some(chunk(ChunkType::ContentBlockStop, *index, None, None))
        }
        // A model call began: its input and cache tokens, for clients that
        // report them as the message starts (Anthropic's stream does).
        StreamEvent::MessageStart(m) => m.usage.as_ref().map(|u| {
            Body::Chunk(Chunk {
                chunk_type: ChunkType::MessageStart,
                block_idx: None,
                delta: None,
                partial_json: None,
                usage: Some(u.clone()),
                extra: Map::new(),
            })
        }),
        _ => None,
    }
}

fn result(r: &TurnResult) -> Body {
    if r.is_error {
        let listed = r.error_list().join("; ");
        let message = r
            .result
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| Some(listed).filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "the agent reported an error".to_owned());
        let mut tone = ErrorTone::new(thrum::ErrorCode::AgentError, message);
        tone.subtype = r.subtype.clone();
        tone.usage = r.usage.clone();
        let [cost, models, session] = costs(r);
        tone.extra = extra(&[
            (cost.0, cost.1.as_ref()),
            (models.0, models.1.as_ref()),
            (session.0, session.1.as_ref()),
        ]);
        return Body::Error(tone);
    }
    let [cost, models, session] = costs(r);
    Body::Finish(Finish {
        finish_reason: Some(
            r.stop_reason
                .as_deref()
                .map_or(thrum::FinishReason::EndTurn, thrum::FinishReason::from),
        ),
        usage: r.usage.clone(),
        extra: extra(&[
            (cost.0, cost.1.as_ref()),
            ("durationMs", r.duration_ms.as_ref()),
            (models.0, models.1.as_ref()),
            (session.0, session.1.as_ref()),
            // What thrum 0.7's worker sent as its finishReason.
            (
                "subtype",
                r.subtype
                    .as_ref()
                    .map(|s| Value::String(s.clone()))
                    .as_ref(),
            ),
        ]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::hive::fixture;

    #[test]
    fn the_captured_turn_becomes_session_ready_chunks_and_finish() {
        let out: Vec<Translated> = fixture("turn1.jsonl")
            .iter()
            .filter_map(translate)
            .collect();
        let Translated::Started(Body::SessionReady(ready)) = &out[0] else {
            panic!("{:?}", out[0])
        };
        assert_eq!(
            ready.nest_id.as_deref(),
            Some("19cf0c83-a5c4-4073-a51e-1ad8789cbb72")
        );
        assert_eq!(ready.model.as_deref(), Some("claude-haiku-4-5"));
        let kinds: Vec<ChunkType> = out
            .iter()
            .filter_map(|t| match t {
                Translated::Tone(Body::Chunk(c)) => Some(c.chunk_type.clone()),
                _ => None,
            })
            .collect();
        let mut expected = vec![ChunkType::MessageStart, ChunkType::TextStart];
        expected.extend(std::iter::repeat_n(ChunkType::TextDelta, 5));
        expected.push(ChunkType::ContentBlockStop);
        assert_eq!(kinds, expected);
        // The message's start carries its input tokens, as claude said them.
        let Translated::Tone(Body::Chunk(start)) = &out[1] else {
            panic!("{:?}", out[1])
        };
        let usage = thrum::Usage::read(start.usage.as_ref().unwrap());
        assert!(usage.input_tokens > 0, "{usage:?}");
        let text: String = out
            .iter()
            .filter_map(|t| match t {
                Translated::Tone(Body::Chunk(c)) => c.delta.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(text, "MOCK-REPLY #1: you said <hi>");
        let Some(Translated::Ended(Body::Finish(finish))) = out.last() else {
            panic!("{:?}", out.last())
        };
        assert_eq!(finish.finish_reason, Some(thrum::FinishReason::EndTurn));
        assert_eq!(finish.extra["subtype"], "success");
        assert_eq!(finish.usage.as_ref().unwrap()["output_tokens"], 5);
        assert!(finish.extra["costUsd"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn an_error_result_becomes_an_error_with_the_clis_message() {
        let out = translate(&fixture("resume-unknown.stdout.jsonl")[0]).unwrap();
        let Translated::Ended(Body::Error(e)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(e.code, thrum::ErrorCode::AgentError);
        assert!(e
            .message
            .unwrap()
            .starts_with("No conversation found with session ID"));
        assert_eq!(e.subtype.as_deref(), Some("error_during_execution"));
    }

    #[test]
    fn thinking_and_tool_input_become_their_chunks() {
        let think = serde_json::json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}});
        let Some(Translated::Tone(Body::Chunk(c))) = translate(&think) else {
            panic!()
        };
        assert_eq!(
            (c.chunk_type, c.block_idx, c.delta.as_deref()),
            (ChunkType::ReasoningDelta, Some(0), Some("hm"))
        );
        let tool = serde_json::json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}}});
        let Some(Translated::Tone(Body::Chunk(c))) = translate(&tool) else {
            panic!()
        };
        assert_eq!(
            (c.chunk_type, c.partial_json.as_deref()),
            (ChunkType::ToolInputDelta, Some("{\"a\""))
        );
        assert_eq!(translate(&serde_json::json!({"type": "assistant"})), None);
        assert_eq!(translate(&serde_json::json!({"no": "type"})), None);
        assert_eq!(translate(&serde_json::json!([1, 2])), None);
    }
}
