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
        extra: Map::new(),
    })
}

/// Translates one parsed stdout line; `None` when nothing is forwarded.
pub fn translate(event: &Value) -> Option<Translated> {
    match event["type"].as_str()? {
        "system" if event["subtype"] == "init" => {
            Some(Translated::Started(Body::SessionReady(SessionReady {
                nest_id: event["session_id"].as_str().map(str::to_owned),
                model: event["model"].as_str().map(str::to_owned),
                tools: event.get("tools").cloned(),
                extra: Map::new(),
            })))
        }
        "stream_event" => stream_event(&event["event"]).map(Translated::Tone),
        "result" => Some(Translated::Ended(result(event))),
        _ => None,
    }
}

fn stream_event(ev: &Value) -> Option<Body> {
    let index = ev["index"].as_u64();
    match ev["type"].as_str()? {
        "content_block_start" => match ev["content_block"]["type"].as_str()? {
            "text" => Some(chunk(ChunkType::TextStart, index, None, None)),
            "thinking" | "redacted_thinking" => {
                Some(chunk(ChunkType::ReasoningStart, index, None, None))
            }
            _ => None,
        },
        "content_block_delta" => {
            let delta = &ev["delta"];
            match delta["type"].as_str()? {
                "text_delta" => Some(chunk(
                    ChunkType::TextDelta,
                    index,
                    delta["text"].as_str(),
                    None,
                )),
                "thinking_delta" => Some(chunk(
                    ChunkType::ReasoningDelta,
                    index,
                    delta["thinking"].as_str(),
                    None,
                )),
                "input_json_delta" => Some(chunk(
                    ChunkType::ToolInputDelta,
                    index,
                    None,
                    delta["partial_json"].as_str(),
                )),
                _ => None,
            }
        }
        "content_block_stop" => Some(chunk(ChunkType::ContentBlockStop, index, None, None)),
        _ => None,
    }
}

fn result(event: &Value) -> Body {
    if event["is_error"] == true {
        let message = event["result"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                event["errors"].as_array().map(|e| {
                    e.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "the agent reported an error".to_owned());
        let mut tone = ErrorTone::new(thrum::ErrorCode::AgentError, message);
        tone.subtype = event["subtype"].as_str().map(str::to_owned);
        tone.usage = event.get("usage").cloned();
        tone.extra = extra(&[
            ("costUsd", event.get("total_cost_usd")),
            ("modelUsage", event.get("modelUsage")),
            ("sessionCostUsd", event.get("sessionCostUsd")),
        ]);
        return Body::Error(tone);
    }
    Body::Finish(Finish {
        finish_reason: Some(
            event["stop_reason"]
                .as_str()
                .unwrap_or("end_turn")
                .to_owned(),
        ),
        usage: event.get("usage").cloned(),
        extra: extra(&[
            ("costUsd", event.get("total_cost_usd")),
            ("durationMs", event.get("duration_ms")),
            ("modelUsage", event.get("modelUsage")),
            ("sessionCostUsd", event.get("sessionCostUsd")),
            // What thrum 0.7's worker sent as its finishReason.
            ("subtype", event.get("subtype")),
        ]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<Value> {
        let path = format!(
            "{}/tests/fixtures/claude-2.1.332/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

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
        let mut expected = vec![ChunkType::TextStart];
        expected.extend(std::iter::repeat_n(ChunkType::TextDelta, 5));
        expected.push(ChunkType::ContentBlockStop);
        assert_eq!(kinds, expected);
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
        assert_eq!(finish.finish_reason.as_deref(), Some("end_turn"));
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
