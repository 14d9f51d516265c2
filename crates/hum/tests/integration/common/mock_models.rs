//! Loopback mocks of the model APIs the real ACP agents call, enough for
//! them to run offline: Gemini's `streamGenerateContent` (SSE, for Gemini
//! CLI) and OpenAI's chat completions (SSE, for opencode's
//! OpenAI-compatible provider). Both answer from the request, as the
//! Messages mock does for claude:
//!
//! - "MOCK says (turn <user turns>): <last user text>";
//! - `CALL_TOOL <name> <json>` → a call of the declared tool whose name is
//!   or ends with `<name>` (MCP tools come prefixed), then, once its result
//!   comes back, "MOCK tool result: <result>";
//! - `WRITE_FILE <path> <text>` → a call of the agent's own file-writing
//!   tool (a permission ask in the agents' default modes);
//! - `SLOW` → the answer in 40 pieces 250 ms apart (a turn to cancel).
//!
//! Every request body is recorded.

#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which API a mock speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Api {
    Gemini,
    OpenAiChat,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Value>>,
}

/// The running mock.
#[derive(Clone)]
pub struct MockModel {
    pub addr: SocketAddr,
    pub api: Api,
    shared: Arc<Shared>,
}

/// What the mock answers.
#[derive(Debug, PartialEq)]
enum Reply {
    Text { text: String, slow: bool },
    Call { name: String, args: Value },
}

/// The reply to a conversation: `user_texts` in order, `last_tool_result`
/// when the conversation ends with a tool's result, `tools` declared.
fn reply(user_texts: &[String], last_tool_result: Option<String>, tools: &[String]) -> Reply {
    if let Some(result) = last_tool_result {
        return Reply::Text {
            text: format!("MOCK tool result: {result}"),
            slow: false,
        };
    }
    let last = user_texts.last().cloned().unwrap_or_default();
    if let Some(rest) = last.split("CALL_TOOL ").nth(1) {
        let (name, args) = rest.split_once(' ').unwrap_or((rest, "{}"));
        let args: Value = serde_json::from_str(args.trim()).unwrap_or(json!({}));
        let name = tools
            .iter()
            .find(|t| *t == name || t.ends_with(&format!("_{name}")))
            .cloned()
            .unwrap_or_else(|| name.to_owned());
        return Reply::Call { name, args };
    }
    if let Some(rest) = last.split("WRITE_FILE ").nth(1) {
        let (path, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let (name, args) = if tools.iter().any(|t| t == "write_file") {
            ("write_file", json!({"file_path": path, "content": text}))
        } else {
            ("write", json!({"filePath": path, "content": text}))
        };
        return Reply::Call {
            name: name.into(),
            args,
        };
    }
    Reply::Text {
        text: format!("MOCK says (turn {}): {last}", user_texts.len()),
        slow: last.contains("SLOW"),
    }
}

/// An answer cut in pieces: many when slow, a few otherwise.
fn pieces(text: &str, slow: bool) -> Vec<String> {
    let n = if slow { 40 } else { 3 };
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(n).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// An SSE body from its events, each after `gap`.
fn sse(events: Vec<String>, gap: Duration) -> Response {
    let stream = futures::stream::unfold(
        (events.into_iter(), false),
        move |(mut it, started)| async move {
            let next = it.next()?;
            if started && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            Some((Ok::<_, std::io::Error>(Bytes::from(next)), (it, true)))
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn gap(r: &Reply) -> Duration {
    match r {
        Reply::Text { slow: true, .. } => Duration::from_millis(250),
        _ => Duration::ZERO,
    }
}

// ---- Gemini ----

fn gemini_conversation(body: &Value) -> (Vec<String>, Option<String>, Vec<String>) {
    let mut texts = Vec::new();
    let mut last_result = None;
    for c in body["contents"].as_array().into_iter().flatten() {
        let parts = c["parts"].as_array().cloned().unwrap_or_default();
        if c["role"] == "user" {
            let result = parts.iter().find_map(|p| {
                let r = &p["functionResponse"]["response"];
                (!r.is_null()).then(|| r.get("output").unwrap_or(r).to_string())
            });
            // (The first turn carries a `<session_context>` part first.)
            let text = parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .rfind(|t| !t.trim_start().starts_with("<session_context>"));
            match (result, text) {
                (Some(r), _) => last_result = Some(r),
                (None, Some(t)) => {
                    texts.push(t.to_owned());
                    last_result = None;
                }
                (None, None) => {}
            }
        } else {
            last_result = None;
        }
    }
    let tools = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| {
            t["functionDeclarations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect();
    (texts, last_result, tools)
}

fn gemini_events(r: &Reply) -> Vec<String> {
    let usage = json!({"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19});
    let event = |parts: Value, finish: Option<&str>| {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash"})
        )
    };
    match r {
        Reply::Text { text, slow } => {
            let mut out: Vec<String> = pieces(text, *slow)
                .into_iter()
                .map(|p| event(json!([{"text": p}]), None))
                .collect();
            out.push(event(json!([{"text": ""}]), Some("STOP")));
            out
        }
        Reply::Call { name, args } => vec![event(
            json!([{"functionCall": {"name": name, "args": args}}]),
            Some("STOP"),
        )],
    }
}

async fn gemini(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().unwrap().push(request.clone());
    let (texts, result, tools) = gemini_conversation(&request);
    let r = reply(&texts, result, &tools);
    sse(gemini_events(&r), gap(&r))
}

// ---- OpenAI chat completions ----

fn openai_conversation(body: &Value) -> (Vec<String>, Option<String>, Vec<String>) {
    let mut texts = Vec::new();
    let mut last_result = None;
    for m in body["messages"].as_array().into_iter().flatten() {
        match m["role"].as_str() {
            Some("user") => {
                let text = match &m["content"] {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .next_back()
                        .map(str::to_owned),
                    _ => None,
                };
                if let Some(t) = text {
                    texts.push(t);
                }
                last_result = None;
            }
            Some("tool") => {
                last_result = Some(m["content"].as_str().unwrap_or_default().to_owned())
            }
            _ => last_result = None,
        }
    }
    let tools = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
        .collect();
    (texts, last_result, tools)
}

fn openai_events(r: &Reply) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0,
                   "model": "mock-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut out = Vec::new();
    let finish = match r {
        Reply::Text { text, slow } => {
            for p in pieces(text, *slow) {
                out.push(chunk(
                    json!({"role": "assistant", "content": p}),
                    Value::Null,
                ));
            }
            "stop"
        }
        Reply::Call { name, args } => {
            out.push(chunk(
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_mock_1", "type": "function",
                        "function": {"name": name, "arguments": args.to_string()}}]}),
                Value::Null,
            ));
            "tool_calls"
        }
    };
    out.push(chunk(json!({}), json!(finish)));
    out.push(format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": "mock-model",
               "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}})
    ));
    out.push("data: [DONE]\n\n".into());
    out
}

async fn openai_chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().unwrap().push(request.clone());
    // opencode asks for a session title on its own: a short answer.
    let titling = request["messages"][0]["content"]
        .as_str()
        .is_some_and(|s| s.contains("title generator"));
    let r = if titling {
        Reply::Text {
            text: "Mock title".into(),
            slow: false,
        }
    } else {
        let (texts, result, tools) = openai_conversation(&request);
        reply(&texts, result, &tools)
    };
    sse(openai_events(&r), gap(&r))
}

impl MockModel {
    /// Serves `api` on 127.0.0.1 (a free port) until the runtime ends.
    pub async fn start(api: Api) -> MockModel {
        let shared = Arc::new(Shared::default());
        let app = match api {
            Api::Gemini => {
                axum::Router::new().route("/v1beta/models/{call}", axum::routing::post(gemini))
            }
            Api::OpenAiChat => {
                axum::Router::new().route("/v1/chat/completions", axum::routing::post(openai_chat))
            }
        }
        .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockModel { addr, api, shared }
    }

    /// Every request body so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The user texts of every request so far, one list per request.
    pub fn conversations(&self) -> Vec<Vec<String>> {
        self.requests()
            .iter()
            .map(|r| match self.api {
                Api::Gemini => gemini_conversation(r).0,
                Api::OpenAiChat => openai_conversation(r).0,
            })
            .collect()
    }
}

#[test]
fn the_mock_answers_from_the_conversation() {
    let texts = vec![
        "hello".to_owned(),
        "CALL_TOOL echo {\"text\": \"hi\"}".to_owned(),
    ];
    assert_eq!(
        reply(&texts, None, &["hum_echo".into()]),
        Reply::Call {
            name: "hum_echo".into(),
            args: json!({"text": "hi"})
        }
    );
    assert_eq!(
        reply(&texts[..1], None, &[]),
        Reply::Text {
            text: "MOCK says (turn 1): hello".into(),
            slow: false
        }
    );
    assert!(
        matches!(reply(&texts, Some("ok".into()), &[]), Reply::Text { text, .. } if text == "MOCK tool result: ok")
    );
    assert_eq!(pieces("abcdefg", false).concat(), "abcdefg");
    assert_eq!(pieces("abcdefg", true).concat(), "abcdefg");
}
