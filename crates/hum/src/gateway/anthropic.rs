//! Anthropic's shapes: `POST /v1/messages`, plain and streaming (its SSE
//! event names and order), tool use (`tools`, `tool_use` blocks,
//! `tool_result` answers; see [`super::calls`]), and its error shape.

use super::affinity::Message;
use super::calls::{self, Opened, ToolAnswer};
use super::functions::{self, Choice, FunctionSpec};
use super::requests::{self, Content, MessagesRequest};
use super::turn::{Collected, Failure, Step, Streamed};
use super::Gateway;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;

/// An error in Anthropic's shape with the status code its `code` maps to.
pub fn error(code: &thrum::ErrorCode, message: &str, retry_after_ms: Option<u64>) -> Response {
    let face = super::errors::face(code);
    let kind = face.anthropic;
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    super::with_retry_after(
        (face.status, axum::Json(body)).into_response(),
        retry_after_ms,
    )
}

fn usage(u: &Value) -> Value {
    json!({"input_tokens": u["input_tokens"].as_u64().unwrap_or(0), "output_tokens": u["output_tokens"].as_u64().unwrap_or(0)})
}

/// One event of Anthropic's stream: its name, and its JSON.
fn sse(event: &str, data: Value) -> Event {
    Event::default().event(event).data(data.to_string())
}

/// A call as a `tool_use` content block.
fn tool_use(c: &thrum::ToolCall) -> Value {
    let input = if c.args.is_null() {
        json!({})
    } else {
        c.args.clone()
    };
    json!({"type": "tool_use", "id": c.call_id, "name": c.tool_name, "input": input})
}

pub async fn messages(gw: Arc<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    if !super::authorized(&gw, &headers) {
        return error(
            &thrum::ErrorCode::Unauthorized,
            "missing or wrong x-api-key",
            None,
        );
    }
    let req: MessagesRequest = match requests::parse(&body) {
        Ok(r) => r,
        Err(e) => return error(&thrum::ErrorCode::BadRequest, &e, None),
    };
    let model = req.model.clone();
    if req.messages.is_empty() {
        return error(
            &thrum::ErrorCode::BadRequest,
            "messages: at least one message is required",
            None,
        );
    }
    let choice = match Choice::anthropic(req.tool_choice.as_ref()) {
        Ok(c) => c,
        Err(e) => return error(&thrum::ErrorCode::BadRequest, &e, None),
    };
    let specs: Vec<FunctionSpec> = req
        .tools
        .iter()
        .flatten()
        .map(|t| FunctionSpec {
            name: t.name.clone(),
            description: t.description.clone(),
            schema: t
                .input_schema
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
        .collect();
    let offered = match functions::offered(specs, &choice) {
        Ok(o) => o,
        Err(e) => return error(&thrum::ErrorCode::BadRequest, &e, None),
    };
    let messages: Vec<Message> = req
        .messages
        .iter()
        .map(|m| Message::new(&m.role, &m.content.text(true)))
        .collect();
    if messages.last().is_none_or(|m| m.role != "user") {
        return error(
            &thrum::ErrorCode::BadRequest,
            "messages: the last message must have role user",
            None,
        );
    }
    // `tool_result` blocks in the last user message continue the turn whose
    // response ended with those calls.
    let answers: Vec<ToolAnswer> = match req.messages.last().map(|m| &m.content) {
        Some(Content::Blocks(blocks)) => blocks
            .iter()
            .filter_map(|b| b.tool_result())
            .map(|(call_id, output, is_error)| ToolAnswer {
                call_id,
                output,
                is_error,
            })
            .collect(),
        _ => Vec::new(),
    };
    let system = Some(req.system.text(true)).filter(|s| !s.is_empty());
    let opening = calls::Opening {
        answers,
        header: super::session_header(&headers),
        bee: super::bee_header(&headers),
        user: req.metadata.user_id.as_deref(),
        messages: &messages,
        model: &model,
        system,
        offered: &offered,
        choice: &choice,
    };
    let Opened {
        sid,
        mut turn,
        resumed,
        owner,
    } = match calls::open(&gw, opening).await {
        Ok(o) => o,
        Err(f) => return error(&f.code, &f.message, f.retry_after_ms),
    };
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    if req.stream != Some(true) {
        return match turn.collect().await {
            Ok(Collected::Finished { text, usage: u }) => {
                gw.affinity
                    .lock()
                    .expect("affinity lock")
                    .remember(&sid, &messages, &text);
                let resp = axum::Json(json!({
                    "id": id, "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn", "stop_sequence": null, "usage": usage(&u),
                }))
                .into_response();
                super::with_session(resp, &sid)
            }
            Ok(Collected::Calls { text, calls, turn }) => {
                let mut content: Vec<Value> = Vec::new();
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                content.extend(calls.iter().map(tool_use));
                let used = functions::usage_of(&calls);
                if !gw
                    .parked
                    .park(*turn, &sid, owner.clone(), calls, gw.tool_wait)
                {
                    return error(
                        &thrum::ErrorCode::Overloaded,
                        "too many turns wait for tool results",
                        Some(1000),
                    );
                }
                let resp = axum::Json(json!({
                    "id": id, "type": "message", "role": "assistant", "model": model,
                    "content": content, "stop_reason": "tool_use", "stop_sequence": null,
                    "usage": usage(&used),
                }))
                .into_response();
                super::with_session(resp, &sid)
            }
            Err(f) => error(&f.code, &f.message, f.retry_after_ms),
        };
    }
    // A refusal keeps its own status: the stream starts once a cell has the
    // turn (a resumed turn has one already).
    if !resumed {
        if let Err(f) = turn.admitted().await {
            return error(&f.code, &f.message, f.retry_after_ms);
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let stream_sid = sid.clone();
    tokio::spawn(async move {
        let sid = stream_sid;
        let start = json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}});
        if tx.send(sse("message_start", start)).await.is_err() {
            return;
        }
        let stop = |index: usize| {
            sse(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            )
        };
        let closing = |reason: &str, output_tokens: u64| {
            [
                sse(
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}),
                ),
                sse("message_stop", json!({"type": "message_stop"})),
            ]
        };
        let mut text = String::new();
        // The text block being written, and the index of the next block.
        let mut open_text: Option<usize> = None;
        let mut next_index = 0;
        let mut calls: Vec<thrum::ToolCall> = Vec::new();
        loop {
            let step = match turn.next_streamed(calls.len(), &tx).await {
                Streamed::Step(step) => step,
                // The client left: dropping `turn` cancels it.
                Streamed::Gone => return,
                // No more calls made together: the message ends with them,
                // and the turn waits for their results.
                Streamed::CallsDone => {
                    let out_tokens = functions::usage_of(&calls)["output_tokens"]
                        .as_u64()
                        .unwrap_or(0);
                    if !gw
                        .parked
                        .park(turn, &sid, owner.clone(), calls, gw.tool_wait)
                    {
                        let _ = tx.send(sse("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "too many turns wait for tool results"}}))).await;
                        return;
                    }
                    for frame in closing("tool_use", out_tokens) {
                        let _ = tx.send(frame).await;
                    }
                    return;
                }
            };
            let mut frames = Vec::new();
            match step {
                Step::Text(t) => {
                    text.push_str(&t);
                    let index = *open_text.get_or_insert_with(|| {
                        frames.push(sse(
                            "content_block_start",
                            json!({"type": "content_block_start", "index": next_index, "content_block": {"type": "text", "text": ""}}),
                        ));
                        next_index += 1;
                        next_index - 1
                    });
                    frames.push(sse(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
                    ));
                }
                Step::ToolCall(c) => {
                    if let Some(index) = open_text.take() {
                        frames.push(stop(index));
                    }
                    let index = next_index;
                    next_index += 1;
                    frames.push(sse(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "tool_use", "id": c.call_id, "name": c.tool_name, "input": {}}}),
                    ));
                    let input = tool_use(&c)["input"].to_string();
                    let (a, b) = functions::halves(&input);
                    for piece in [a, b] {
                        if !piece.is_empty() {
                            frames.push(sse(
                                "content_block_delta",
                                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                            ));
                        }
                    }
                    frames.push(stop(index));
                    calls.push(c);
                }
                Step::Finish { usage: u } => {
                    gw.affinity
                        .lock()
                        .expect("affinity lock")
                        .remember(&sid, &messages, &text);
                    if let Some(index) = open_text.take() {
                        let _ = tx.send(stop(index)).await;
                    }
                    for frame in closing("end_turn", u["output_tokens"].as_u64().unwrap_or(0)) {
                        let _ = tx.send(frame).await;
                    }
                    return;
                }
                Step::Error(Failure { code, message, .. }) => {
                    let _ = tx.send(sse("error", json!({"type": "error", "error": {"type": "api_error", "message": format!("{code}: {message}")}}))).await;
                    return;
                }
            }
            for frame in frames {
                if tx.send(frame).await.is_err() {
                    return; // dropping `turn` cancels it
                }
            }
        }
    });
    // Anthropic's own keep-alive: a `ping` event.
    super::sse_response(
        rx,
        KeepAlive::new().event(sse("ping", json!({"type": "ping"}))),
        &sid,
    )
}
