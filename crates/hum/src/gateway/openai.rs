//! OpenAI's shapes: `GET /v1/models`, `POST /v1/chat/completions`
//! (non-streaming, and `stream: true` as `chat.completion.chunk` SSE ending
//! with `data: [DONE]`), function calling (`tools`, `tool_calls`, `role:
//! "tool"` results; see [`super::calls`]), and its error shape.

use super::affinity::Message;
use super::calls::{self, Opened, ToolAnswer};
use super::functions::{self, Choice, FunctionSpec};
use super::requests::{self, ChatRequest};
use super::turn::{Collected, Failure, Step, Streamed};
use super::Gateway;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An error in OpenAI's shape with the status code its `code` maps to.
pub fn error(code: &thrum::ErrorCode, message: &str, retry_after_ms: Option<u64>) -> Response {
    let face = super::errors::face(code);
    let (kind, oa_code) = (face.openai.0, face.openai.1.unwrap_or(code.as_str()));
    let body = json!({"error": {"message": message, "type": kind, "code": oa_code, "param": null}});
    super::with_retry_after(
        (face.status, axum::Json(body)).into_response(),
        retry_after_ms,
    )
}

fn usage(u: &Value) -> Value {
    let p = u["input_tokens"].as_u64().unwrap_or(0);
    let c = u["output_tokens"].as_u64().unwrap_or(0);
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

pub async fn models(gw: Arc<Gateway>, headers: HeaderMap) -> Response {
    if !super::authorized(&gw, &headers) {
        return error(
            &thrum::ErrorCode::Unauthorized,
            "missing or wrong bearer token",
            None,
        );
    }
    match crate::client::fetch_status(&gw.socket).await {
        Ok(status) => {
            let mut ids: Vec<String> = status.workers.into_iter().flat_map(|w| w.models).collect();
            ids.sort();
            ids.dedup();
            let data: Vec<Value> = ids
                .iter()
                .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "hum"}))
                .collect();
            axum::Json(json!({"object": "list", "data": data})).into_response()
        }
        Err(e) => error(&thrum::ErrorCode::Unavailable, &e, Some(1000)),
    }
}

/// A call as OpenAI returns it: `arguments` is a JSON string.
fn tool_call(c: &thrum::ToolCall) -> Value {
    json!({"id": c.call_id, "type": "function",
           "function": {"name": c.tool_name, "arguments": arguments(c)}})
}

fn arguments(c: &thrum::ToolCall) -> String {
    if c.args.is_null() {
        "{}".to_owned()
    } else {
        c.args.to_string()
    }
}

pub async fn chat(gw: Arc<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    if !super::authorized(&gw, &headers) {
        return error(
            &thrum::ErrorCode::Unauthorized,
            "missing or wrong bearer token",
            None,
        );
    }
    let req: ChatRequest = match requests::parse(&body) {
        Ok(r) => r,
        Err(e) => return error(&thrum::ErrorCode::BadRequest, &e, None),
    };
    let model = req.model.clone();
    if req.messages.is_empty() {
        return error(
            &thrum::ErrorCode::BadRequest,
            "`messages` must be a non-empty list",
            None,
        );
    }
    let choice = match Choice::openai(req.tool_choice.as_ref()) {
        Ok(c) => c,
        Err(e) => return error(&thrum::ErrorCode::BadRequest, &e, None),
    };
    let specs: Vec<FunctionSpec> = req
        .tools
        .iter()
        .flatten()
        .map(|t| FunctionSpec {
            name: t.function.name.clone(),
            description: t.function.description.clone(),
            schema: t
                .function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
        .collect();
    let offered = match functions::offered(specs, &choice) {
        Ok(o) => o,
        Err(e) => return error(&thrum::ErrorCode::BadRequest, &e, None),
    };
    let is_system = |role: &str| role == "system" || role == "developer";
    let system: Vec<String> = req
        .messages
        .iter()
        .filter(|m| is_system(&m.role))
        .map(|m| m.content.text(false))
        .collect();
    let messages: Vec<Message> = req
        .messages
        .iter()
        .filter(|m| !is_system(&m.role))
        .map(|m| Message::new(&m.role, &m.content.text(false)))
        .collect();
    // Results of the calls a previous response ended with: the `tool`
    // messages at the end continue that turn.
    let answers: Vec<ToolAnswer> = req
        .messages
        .iter()
        .rev()
        .take_while(|m| m.role == "tool")
        .map(|m| ToolAnswer {
            call_id: m.tool_call_id.clone().unwrap_or_default(),
            output: m.content.text(false),
            is_error: false,
        })
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    // A new turn answers a user message; a continued one, tool results.
    if answers.is_empty() && messages.last().is_none_or(|m| m.role != "user") {
        return error(
            &thrum::ErrorCode::BadRequest,
            "the last message must be the user's",
            None,
        );
    }
    let opening = calls::Opening {
        answers,
        header: super::session_header(&headers),
        bee: super::bee_header(&headers),
        user: req.user.as_deref(),
        messages: &messages,
        model: &model,
        system: (!system.is_empty()).then(|| system.join("\n")),
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
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now();
    if req.stream != Some(true) {
        return match turn.collect().await {
            Ok(Collected::Finished { text, usage: u }) => {
                gw.affinity
                    .lock()
                    .expect("affinity lock")
                    .remember(&sid, &messages, &text);
                let resp = axum::Json(json!({
                    "id": id, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": null}],
                    "usage": usage(&u),
                }))
                .into_response();
                super::with_session(resp, &sid)
            }
            Ok(Collected::Calls { text, calls, turn }) => {
                let listed: Vec<Value> = calls.iter().map(tool_call).collect();
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
                let content = if text.is_empty() {
                    Value::Null
                } else {
                    json!(text)
                };
                let resp = axum::Json(json!({
                    "id": id, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "tool_calls": listed}, "finish_reason": "tool_calls", "logprobs": null}],
                    "usage": usage(&used),
                }))
                .into_response();
                super::with_session(resp, &sid)
            }
            Err(f) => error(&f.code, &f.message, f.retry_after_ms),
        };
    }
    // Streaming: a refusal still gets its own status (429 + Retry-After for
    // an overloaded pool); the 200 and its stream start once a cell has the
    // turn (a resumed turn has one already).
    if !resumed {
        if let Err(f) = turn.admitted().await {
            return error(&f.code, &f.message, f.retry_after_ms);
        }
    }
    // Streaming: the first bytes leave with the first chunk. A client that
    // goes away drops the receiver; the producer then drops the turn, which
    // cancels it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let frame = |v: Value| Event::default().data(v.to_string());
    let stream_sid = sid.clone();
    tokio::spawn(async move {
        let sid = stream_sid;
        let chunk = |delta: Value, finish: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        if tx
            .send(frame(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )))
            .await
            .is_err()
        {
            return;
        }
        let mut text = String::new();
        let mut calls: Vec<thrum::ToolCall> = Vec::new();
        loop {
            let step = match turn.next_streamed(calls.len(), &tx).await {
                Streamed::Step(step) => step,
                // The client left: dropping `turn` cancels it.
                Streamed::Gone => return,
                // No more calls made together: the response ends with
                // them, and the turn waits for their results.
                Streamed::CallsDone => {
                    let mut last = chunk(json!({}), json!("tool_calls"));
                    last["usage"] = usage(&functions::usage_of(&calls));
                    if !gw
                        .parked
                        .park(turn, &sid, owner.clone(), calls, gw.tool_wait)
                    {
                        let _ = tx.send(frame(json!({"error": {"message": "too many turns wait for tool results", "type": "server_error", "code": thrum::ErrorCode::Overloaded.as_str()}}))).await;
                    } else {
                        let _ = tx.send(frame(last)).await;
                    }
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    return;
                }
            };
            let sent = match step {
                Step::Text(t) => {
                    text.push_str(&t);
                    tx.send(frame(chunk(json!({"content": t}), Value::Null)))
                        .await
                }
                Step::ToolCall(c) => {
                    // Announced with its name, then its arguments in pieces.
                    let index = calls.len();
                    let args = arguments(&c);
                    let head = json!({"tool_calls": [{"index": index, "id": c.call_id, "type": "function",
                                      "function": {"name": c.tool_name, "arguments": ""}}]});
                    let mut sent = tx.send(frame(chunk(head, Value::Null))).await;
                    let (a, b) = functions::halves(&args);
                    for piece in [a, b] {
                        if sent.is_ok() && !piece.is_empty() {
                            let d = json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]});
                            sent = tx.send(frame(chunk(d, Value::Null))).await;
                        }
                    }
                    calls.push(c);
                    sent
                }
                Step::Finish { usage: u } => {
                    gw.affinity
                        .lock()
                        .expect("affinity lock")
                        .remember(&sid, &messages, &text);
                    let mut last = chunk(json!({}), json!("stop"));
                    last["usage"] = usage(&u);
                    let _ = tx.send(frame(last)).await;
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    return;
                }
                Step::Error(Failure { code, message, .. }) => {
                    let _ = tx.send(frame(json!({"error": {"message": message, "type": "server_error", "code": code}}))).await;
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    return;
                }
            };
            if sent.is_err() {
                return; // dropping `turn` cancels it
            }
        }
    });
    // Comments keep the connection alive; clients ignore them.
    super::sse_response(rx, KeepAlive::new(), &sid)
}
