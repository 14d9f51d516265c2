//! OpenAI's shapes: `GET /v1/models`, `POST /v1/chat/completions`
//! (non-streaming, and `stream: true` as `chat.completion.chunk` SSE ending
//! with `data: [DONE]`), and its error shape.

use super::affinity::Message;
use super::requests::{self, ChatRequest};
use super::turn::{Failure, Step, Turn};
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
pub fn error(code: &str, message: &str, retry_after_ms: Option<u64>) -> Response {
    let (kind, oa_code) = match code {
        "overloaded" => ("rate_limit_error", "overloaded"),
        "no_worker" => ("invalid_request_error", "model_not_found"),
        "bad_request" => ("invalid_request_error", "bad_request"),
        "unauthorized" => ("authentication_error", "invalid_api_key"),
        "unavailable" => ("server_error", "unavailable"),
        other => ("server_error", other),
    };
    let body = json!({"error": {"message": message, "type": kind, "code": oa_code, "param": null}});
    super::with_retry_after(
        (super::status_of(code), axum::Json(body)).into_response(),
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
        return error("unauthorized", "missing or wrong bearer token", None);
    }
    match crate::status::fetch(&gw.socket).await {
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
        Err(e) => error("unavailable", &e, Some(1000)),
    }
}

pub async fn chat(gw: Arc<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    if !super::authorized(&gw, &headers) {
        return error("unauthorized", "missing or wrong bearer token", None);
    }
    let req: ChatRequest = match requests::parse(&body) {
        Ok(r) => r,
        Err(e) => return error("bad_request", &e, None),
    };
    let model = req.model.clone();
    if req.messages.is_empty() {
        return error("bad_request", "`messages` must be a non-empty list", None);
    }
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
    if messages.last().is_none_or(|m| m.role != "user") {
        return error("bad_request", "the last message must be the user's", None);
    }
    let header = super::session_header(&headers);
    let decision = gw.affinity.lock().expect("affinity lock").decide(
        header.as_deref(),
        req.user.as_deref(),
        &messages,
    );
    let system = (!system.is_empty()).then(|| system.join("\n"));
    let mut turn =
        match Turn::start(&gw.socket, &decision.sid, &decision.prompt, &model, system).await {
            Ok(t) => t,
            Err(f) => return error(&f.code, &f.message, f.retry_after_ms),
        };
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now();
    let sid = decision.sid.clone();
    if req.stream != Some(true) {
        return match turn.collect().await {
            Ok((text, u)) => {
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
            Err(f) => error(&f.code, &f.message, f.retry_after_ms),
        };
    }
    // Streaming: a refusal still gets its own status (429 + Retry-After for
    // an overloaded pool); the 200 and its stream start once a cell has the
    // turn.
    if let Err(f) = turn.admitted().await {
        return error(&f.code, &f.message, f.retry_after_ms);
    }
    // Streaming: the first bytes leave with the first chunk. A client that
    // goes away drops the receiver; the producer then drops the turn, which
    // cancels it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let frame = |v: Value| Event::default().data(v.to_string());
    tokio::spawn(async move {
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
        loop {
            let step = tokio::select! {
                step = turn.next() => step,
                // The client left: dropping `turn` cancels it.
                () = tx.closed() => return,
            };
            match step {
                Step::Text(t) => {
                    text.push_str(&t);
                    if tx
                        .send(frame(chunk(json!({"content": t}), Value::Null)))
                        .await
                        .is_err()
                    {
                        return; // dropping `turn` cancels it
                    }
                }
                Step::Finish { usage: u } => {
                    gw.affinity.lock().expect("affinity lock").remember(
                        &decision.sid,
                        &messages,
                        &text,
                    );
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
            }
        }
    });
    // Comments keep the connection alive; clients ignore them.
    super::sse_response(rx, KeepAlive::new(), &sid)
}
