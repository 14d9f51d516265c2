//! OpenAI's shapes: `GET /v1/models`, `POST /v1/chat/completions`
//! (non-streaming, and `stream: true` as `chat.completion.chunk` SSE ending
//! with `data: [DONE]`), function calling (`tools`, `tool_calls`, `role:
//! "tool"` results; see [`super::calls`]), and its error shape. The request
//! itself goes through [`super::respond`].

use super::affinity::Message;
use super::calls::ToolAnswer;
use super::functions::{self, Choice, FunctionSpec};
use super::requests::{self, ChatRequest};
use super::respond::{self, Ask, Dialect, Frame};
use super::Gateway;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use thrum::{ErrorCode, ToolCall, Usage};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn usage(u: &Usage) -> Value {
    let (p, c) = (u.input_tokens, u.output_tokens);
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p.saturating_add(c)})
}

pub async fn models(gw: Arc<Gateway>, headers: HeaderMap) -> Response {
    if !super::authorized(&gw, &headers) {
        return respond::error::<OpenAi>(&ErrorCode::Unauthorized, OpenAi::UNAUTHORIZED, None);
    }
    model_list(&gw).await
}

/// `GET /v1/models` for a caller let in already.
pub async fn model_list(gw: &Gateway) -> Response {
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
        Err(e) => respond::error::<OpenAi>(&ErrorCode::Unavailable, &e, Some(1000)),
    }
}

/// A call's arguments as OpenAI carries them: a JSON string.
fn arguments(c: &ToolCall) -> String {
    if c.args.is_null() {
        "{}".to_owned()
    } else {
        c.args.to_string()
    }
}

/// A call as OpenAI returns it.
fn tool_call(c: &ToolCall) -> Value {
    json!({"id": c.call_id, "type": "function",
           "function": {"name": c.tool_name, "arguments": arguments(c)}})
}

/// One reply of Chat Completions: its id, time and model, and how many
/// calls a stream has announced.
pub struct OpenAi {
    id: String,
    created: u64,
    model: String,
    calls: usize,
}

impl OpenAi {
    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn completion(&self, message: Value, finish: &str, u: &Usage) -> Value {
        json!({"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
               "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
               "usage": usage(u)})
    }

    fn last(&self, finish: &str, u: &Usage) -> Vec<Frame> {
        let mut last = self.chunk(json!({}), json!(finish));
        last["usage"] = usage(u);
        vec![Frame::Data(last), Frame::Done]
    }
}

impl Dialect for OpenAi {
    const UNAUTHORIZED: &'static str = "missing or wrong bearer token";

    fn ask(body: &[u8]) -> Result<Ask, String> {
        let req: ChatRequest = requests::parse(body)?;
        if req.messages.is_empty() {
            return Err("`messages` must be a non-empty list".into());
        }
        let choice = Choice::openai(req.tool_choice.as_ref())?;
        let specs: Vec<FunctionSpec> = req
            .tools
            .iter()
            .flatten()
            .map(|t| {
                let f = &t.function;
                FunctionSpec::new(&f.name, f.description.as_deref(), f.parameters.as_ref())
            })
            .collect();
        let offered = functions::offered(specs, &choice)?;
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
        // The `tool` messages at the end answer the calls a previous
        // response ended with, and continue that turn.
        let answers = functions::trailing_results(&req.messages, |m| {
            (m.role == "tool").then(|| ToolAnswer {
                call_id: m.tool_call_id.clone().unwrap_or_default(),
                output: m.content.text(false),
                is_error: false,
            })
        });
        // A new turn answers a user message; a continued one, tool results.
        if answers.is_empty() && messages.last().is_none_or(|m| m.role != "user") {
            return Err("the last message must be the user's".into());
        }
        let format = super::structured::read_openai(req.response_format.as_ref())?;
        Ok(Ask {
            model: req.model,
            system: (!system.is_empty()).then(|| system.join("\n")),
            messages,
            answers,
            offered,
            choice,
            user: req.user,
            stream: req.stream == Some(true),
            format,
            previous: None,
            store: false,
            by_position: false,
        })
    }

    fn error_body(code: &ErrorCode, message: &str) -> Value {
        let face = super::errors::face(code);
        let (kind, oa_code) = (face.openai.0, face.openai.1.unwrap_or(code.as_str()));
        json!({"error": {"message": message, "type": kind, "code": oa_code, "param": null}})
    }

    fn reply(model: &str) -> Self {
        OpenAi {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: now(),
            model: model.to_owned(),
            calls: 0,
        }
    }

    fn finished(&self, text: &str, u: &Usage) -> Value {
        self.completion(json!({"role": "assistant", "content": text}), "stop", u)
    }

    fn called(&self, text: &str, calls: &[ToolCall], u: &Usage) -> Value {
        let content = if text.is_empty() {
            Value::Null
        } else {
            json!(text)
        };
        let listed: Vec<Value> = calls.iter().map(tool_call).collect();
        self.completion(
            json!({"role": "assistant", "content": content, "tool_calls": listed}),
            "tool_calls",
            u,
        )
    }

    fn open(&mut self, _started: &Usage) -> Vec<Frame> {
        vec![Frame::Data(self.chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ))]
    }

    fn text(&mut self, text: &str) -> Vec<Frame> {
        vec![Frame::Data(
            self.chunk(json!({"content": text}), Value::Null),
        )]
    }

    /// Announced with its name, then its arguments in two pieces (clients
    /// must join them).
    fn call(&mut self, c: &ToolCall) -> Vec<Frame> {
        let index = self.calls;
        self.calls += 1;
        let head = json!({"tool_calls": [{"index": index, "id": c.call_id, "type": "function",
                          "function": {"name": c.tool_name, "arguments": ""}}]});
        let mut frames = vec![Frame::Data(self.chunk(head, Value::Null))];
        let args = arguments(c);
        let (a, b) = functions::halves(&args);
        for piece in [a, b].into_iter().filter(|p| !p.is_empty()) {
            let d = json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]});
            frames.push(Frame::Data(self.chunk(d, Value::Null)));
        }
        frames
    }

    fn calls_done(&mut self, u: &Usage) -> Vec<Frame> {
        self.last("tool_calls", u)
    }

    fn finish(&mut self, u: &Usage) -> Vec<Frame> {
        self.last("stop", u)
    }

    fn fail(&mut self, code: &ErrorCode, message: &str) -> Vec<Frame> {
        vec![
            Frame::Data(
                json!({"error": {"message": message, "type": "server_error", "code": code.as_str()}}),
            ),
            Frame::Done,
        ]
    }
}

#[cfg(test)]
mod tests;
