//! Anthropic's shapes: `POST /v1/messages`, plain and streaming (its SSE
//! event names and order), and its error shape.

use super::affinity::Message;
use super::requests::{self, MessagesRequest};
use super::turn::{Failure, Step, Turn};
use super::Gateway;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;

/// An error in Anthropic's shape with the status code its `code` maps to.
pub fn error(code: &str, message: &str, retry_after_ms: Option<u64>) -> Response {
    let kind = match code {
        "overloaded" => "rate_limit_error",
        "no_worker" => "not_found_error",
        "bad_request" => "invalid_request_error",
        "unauthorized" => "authentication_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    super::with_retry_after(
        (super::status_of(code), axum::Json(body)).into_response(),
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

pub async fn messages(gw: Arc<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    if !super::authorized(&gw, &headers) {
        return error("unauthorized", "missing or wrong x-api-key", None);
    }
    let req: MessagesRequest = match requests::parse(&body) {
        Ok(r) => r,
        Err(e) => return error("bad_request", &e, None),
    };
    let model = req.model.clone();
    if req.messages.is_empty() {
        return error(
            "bad_request",
            "messages: at least one message is required",
            None,
        );
    }
    let messages: Vec<Message> = req
        .messages
        .iter()
        .map(|m| Message::new(&m.role, &m.content.text(true)))
        .collect();
    if messages.last().is_none_or(|m| m.role != "user") {
        return error(
            "bad_request",
            "messages: the last message must have role user",
            None,
        );
    }
    let system = Some(req.system.text(true)).filter(|s| !s.is_empty());
    let header = super::session_header(&headers);
    let decision = gw.affinity.lock().expect("affinity lock").decide(
        header.as_deref(),
        req.metadata.user_id.as_deref(),
        &messages,
    );
    let mut turn =
        match Turn::start(&gw.socket, &decision.sid, &decision.prompt, &model, system).await {
            Ok(t) => t,
            Err(f) => return error(&f.code, &f.message, f.retry_after_ms),
        };
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let sid = decision.sid.clone();
    if req.stream != Some(true) {
        return match turn.collect().await {
            Ok((text, u)) => {
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
            Err(f) => error(&f.code, &f.message, f.retry_after_ms),
        };
    }
    // A refusal keeps its own status: the stream starts once a cell has the
    // turn.
    if let Err(f) = turn.admitted().await {
        return error(&f.code, &f.message, f.retry_after_ms);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let start = json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}});
        let opening = [
            sse("message_start", start),
            sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
        ];
        for frame in opening {
            if tx.send(frame).await.is_err() {
                return;
            }
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
                    let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}});
                    if tx.send(sse("content_block_delta", delta)).await.is_err() {
                        return; // dropping `turn` cancels it
                    }
                }
                Step::Finish { usage: u } => {
                    gw.affinity.lock().expect("affinity lock").remember(
                        &decision.sid,
                        &messages,
                        &text,
                    );
                    let closing = [
                        sse(
                            "content_block_stop",
                            json!({"type": "content_block_stop", "index": 0}),
                        ),
                        sse(
                            "message_delta",
                            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": u["output_tokens"].as_u64().unwrap_or(0)}}),
                        ),
                        sse("message_stop", json!({"type": "message_stop"})),
                    ];
                    for frame in closing {
                        let _ = tx.send(frame).await;
                    }
                    return;
                }
                Step::Error(Failure { code, message, .. }) => {
                    let _ = tx.send(sse("error", json!({"type": "error", "error": {"type": "api_error", "message": format!("{code}: {message}")}}))).await;
                    return;
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
