//! A loopback mock of the Anthropic Messages API, enough for the real
//! `claude` CLI to run offline (BRIEF section 4): `POST /v1/messages`
//! answers with SSE streaming, `HEAD /` with 200. The answer is derived
//! from the request — "MOCK-REPLY #<user turns>: you said <last user text>"
//! — so a test can check which conversation the CLI sent. Every request
//! body is recorded.
//!
//! A user message `RUN_BASH: <command>` is answered with a Bash `tool_use`
//! running that command; once the CLI sends the tool's result back, the
//! answer is "MOCK-REPLY ran <command>". `CALL_TOOL: <name> <json input>`
//! is answered with a `tool_use` of that tool; once its result comes back,
//! the answer is "MOCK-REPLY tool said <the result's text>". A request
//! whose last user text contains `HOLD` is answered only once the test
//! releases it (a model call kept open). `ANSWER: <text>` is answered with
//! exactly `<text>` (the rest of its line), as a model that obeys a
//! structured-output instruction would.

#![allow(dead_code)]

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Value>>,
    /// Hold every answer this long (a slow API: cells stuck mid-bootstrap).
    delay_ms: Mutex<u64>,
    /// Requests whose last user text contains `HOLD` wait until this is
    /// set (a model call a test keeps open as long as it likes).
    holds_released: Mutex<bool>,
    release: tokio::sync::Notify,
}

/// The running mock.
#[derive(Clone)]
pub struct MockApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

/// The text of the last real user message of a request body.
pub fn last_user_text(body: &Value) -> String {
    conversation(body).1
}

/// The text of the last real user message (system reminders skipped) and
/// how many user turns carry text.
fn conversation(body: &Value) -> (usize, String) {
    let mut turns = 0;
    let mut last = String::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        if m["role"] != "user" {
            continue;
        }
        let texts: Vec<String> = match &m["content"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(blocks) => blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .filter(|t| !t.trim_start().starts_with("<system-reminder>"))
                .map(str::to_owned)
                .collect(),
            _ => vec![],
        };
        if let Some(t) = texts.last() {
            turns += 1;
            last = t.clone();
        }
    }
    (turns, last)
}

/// The `message_start` event every answer opens with.
fn message_start(model: &str) -> String {
    let id = format!("msg_mock_{}", uuid::Uuid::new_v4().simple());
    sse(
        "message_start",
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    )
}

/// An SSE response carrying `body`.
fn event_stream(body: String) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header("request-id", "req_mock")
        .body(Body::from(body))
        .unwrap()
}

fn sse(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

async fn messages(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().unwrap().push(request.clone());
    let delay = *shared.delay_ms.lock().unwrap();
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (turns, last) = conversation(&request);
    if last.contains("HOLD") {
        loop {
            let released = shared.release.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if *shared.holds_released.lock().unwrap() {
                break;
            }
            released.await;
        }
    }
    let model = request["model"]
        .as_str()
        .unwrap_or("claude-mock")
        .to_owned();
    let last_message = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    let answered_tool = last_message["content"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_result"));
    if let Some(command) = last.strip_prefix("RUN_BASH: ") {
        if !answered_tool {
            let input = json!({"command": command, "description": "mock tool call"});
            return tool_use(&model, "Bash", &input);
        }
    }
    if let Some(call) = last.strip_prefix("CALL_TOOL: ") {
        if !answered_tool {
            let (name, input) = call.split_once(' ').unwrap_or((call, "{}"));
            let input: Value = serde_json::from_str(input).unwrap_or(json!({}));
            return tool_use(&model, name, &input);
        }
    }
    let text = if let Some(exact) = last.strip_prefix("ANSWER: ") {
        exact.lines().next().unwrap_or("").trim().to_owned()
    } else if let Some(command) = last.strip_prefix("RUN_BASH: ") {
        format!("MOCK-REPLY ran {command}")
    } else if last.starts_with("CALL_TOOL: ") {
        format!("MOCK-REPLY tool said <{}>", tool_result_text(&last_message))
    } else {
        format!("MOCK-REPLY #{turns}: you said <{last}>")
    };
    let words: Vec<String> = text
        .split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            }
        })
        .collect();
    let mut out = message_start(&model);
    out += &sse(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    for w in &words {
        out += &sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
        );
    }
    out += &sse(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    out += &sse(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": words.len()}}),
    );
    out += &sse("message_stop", json!({"type": "message_stop"}));
    event_stream(out)
}

/// The text of the `tool_result` blocks of a message (their content is a
/// string or a list of text blocks).
fn tool_result_text(message: &Value) -> String {
    let mut text = String::new();
    for b in message["content"].as_array().into_iter().flatten() {
        if b["type"] != "tool_result" {
            continue;
        }
        match &b["content"] {
            Value::String(s) => text += s,
            Value::Array(parts) => {
                for p in parts {
                    text += p["text"].as_str().unwrap_or("");
                }
            }
            _ => {}
        }
    }
    // claude 2.1.332 appends a `<system-reminder>` to tool results.
    match text.find("<system-reminder>") {
        Some(at) => text[..at].trim_end().to_owned(),
        None => text,
    }
}

/// A streamed `tool_use` asking the CLI to run `name` with `input`.
fn tool_use(model: &str, name: &str, input: &Value) -> Response {
    let input = input.to_string();
    let mut out = message_start(model);
    out += &sse(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": format!("toolu_mock_{}", uuid::Uuid::new_v4().simple()), "name": name, "input": {}}}),
    );
    out += &sse(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input}}),
    );
    out += &sse(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    out += &sse(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 20}}),
    );
    out += &sse("message_stop", json!({"type": "message_stop"}));
    event_stream(out)
}

async fn head_root() -> impl IntoResponse {
    StatusCode::OK
}

impl MockApi {
    /// Serves on 127.0.0.1 (a free port) until the runtime ends.
    pub async fn start() -> MockApi {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/v1/messages", axum::routing::post(messages))
            .route("/", axum::routing::head(head_root).get(head_root))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockApi { addr, shared }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bodies of every `POST /v1/messages` so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Answers the requests held for `HOLD`, and every later one at once.
    pub fn release_holds(&self) {
        *self.shared.holds_released.lock().unwrap() = true;
        self.shared.release.notify_waiters();
    }

    pub fn set_delay(&self, d: Duration) {
        *self.shared.delay_ms.lock().unwrap() = d.as_millis() as u64;
    }
}

/// The real `claude` binary for these tests: `$HUM_TEST_CLAUDE`. In CI its
/// absence is a failure; elsewhere the test says loudly that it did not run.
pub fn real_claude() -> Option<std::path::PathBuf> {
    match std::env::var_os("HUM_TEST_CLAUDE").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = std::path::PathBuf::from(p);
            assert!(p.exists(), "HUM_TEST_CLAUDE={} does not exist", p.display());
            Some(p)
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("HUM_TEST_CLAUDE is not set: .ci/run must install @anthropic-ai/claude-code and point it at the binary")
        }
        None => {
            // Straight to fd 2: the test harness captures eprintln!.
            use std::io::Write;
            let _ = std::io::stderr()
                .write_all(b"\n*** NOT RUN: the real claude CLI tests need HUM_TEST_CLAUDE=/path/to/claude (see .ci/run) ***\n");
            None
        }
    }
}
