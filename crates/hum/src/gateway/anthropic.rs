//! Anthropic's shapes: `POST /v1/messages`, plain and streaming (its SSE
//! event names and order), tool use (`tools`, `tool_use` blocks,
//! `tool_result` answers; see [`super::calls`]), and its error shape. The
//! request itself goes through [`super::respond`].

use super::affinity::Message;
use super::calls::ToolAnswer;
use super::functions::{self, Choice, FunctionSpec};
use super::requests::{self, Content, MessagesRequest};
use super::respond::{Ask, Dialect, Frame};
use axum::response::sse::{Event, KeepAlive};
use serde_json::{json, Value};
use thrum::{ErrorCode, ToolCall, Usage};

/// Usage as the Messages API reports it, cache tokens included.
fn usage(u: &Usage) -> Value {
    json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
           "cache_read_input_tokens": u.cache_read_input_tokens,
           "cache_creation_input_tokens": u.cache_creation_input_tokens})
}

/// A call as a `tool_use` content block.
fn tool_use(c: &ToolCall) -> Value {
    let input = if c.args.is_null() {
        json!({})
    } else {
        c.args.clone()
    };
    json!({"type": "tool_use", "id": c.call_id, "name": c.tool_name, "input": input})
}

fn event(name: &'static str, data: Value) -> Frame {
    Frame::Named(name, data)
}

/// One reply of the Messages API: its id and model, and where a stream is
/// (the text block open, the next block's index).
pub struct Anthropic {
    id: String,
    model: String,
    open_text: Option<usize>,
    next_index: usize,
}

impl Anthropic {
    fn message(&self, content: Value, stop: &str, u: &Usage) -> Value {
        json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model,
               "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage(u)})
    }

    fn close_text(&mut self) -> Vec<Frame> {
        self.open_text
            .take()
            .map(|index| {
                event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                )
            })
            .into_iter()
            .collect()
    }

    fn closing(&mut self, stop: &str, u: &Usage) -> Vec<Frame> {
        let mut frames = self.close_text();
        frames.push(event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                   "usage": usage(u)}),
        ));
        frames.push(event("message_stop", json!({"type": "message_stop"})));
        frames
    }
}

impl Dialect for Anthropic {
    const UNAUTHORIZED: &'static str = "missing or wrong x-api-key";

    fn ask(body: &[u8]) -> Result<Ask, String> {
        let req: MessagesRequest = requests::parse(body)?;
        if req.messages.is_empty() {
            return Err("messages: at least one message is required".into());
        }
        let choice = Choice::anthropic(req.tool_choice.as_ref())?;
        let specs: Vec<FunctionSpec> = req
            .tools
            .iter()
            .flatten()
            .map(|t| FunctionSpec::new(&t.name, t.description.as_deref(), t.input_schema.as_ref()))
            .collect();
        let offered = functions::offered(specs, &choice)?;
        let messages: Vec<Message> = req
            .messages
            .iter()
            .map(|m| Message::new(&m.role, &m.content.text(true)))
            .collect();
        if messages.last().is_none_or(|m| m.role != "user") {
            return Err("messages: the last message must have role user".into());
        }
        // `tool_result` blocks in the last user message continue the turn
        // whose response ended with those calls.
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
        // A tool_choice naming a tool is how Anthropic's clients ask for
        // structured output: the call's input is checked.
        let format = super::structured::forced_call(&choice, &offered)?;
        Ok(Ask {
            format,
            model: req.model,
            system: Some(req.system.text(true)).filter(|s| !s.is_empty()),
            messages,
            answers,
            offered,
            choice,
            user: req.metadata.user_id,
            stream: req.stream == Some(true),
            previous: None,
            store: false,
            by_position: false,
        })
    }

    fn error_body(code: &ErrorCode, message: &str) -> Value {
        let kind = super::errors::face(code).anthropic;
        json!({"type": "error", "error": {"type": kind, "message": message}})
    }

    fn reply(model: &str) -> Self {
        Anthropic {
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            model: model.to_owned(),
            open_text: None,
            next_index: 0,
        }
    }

    fn finished(&self, text: &str, u: &Usage) -> Value {
        self.message(json!([{"type": "text", "text": text}]), "end_turn", u)
    }

    fn called(&self, text: &str, calls: &[ToolCall], u: &Usage) -> Value {
        let mut content: Vec<Value> = Vec::new();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        content.extend(calls.iter().map(tool_use));
        self.message(json!(content), "tool_use", u)
    }

    /// `message_start` with the model call's input and cache tokens, as
    /// the API sends them.
    fn open(&mut self, started: &Usage) -> Vec<Frame> {
        vec![event(
            "message_start",
            json!({"type": "message_start", "message": {"id": self.id, "type": "message", "role": "assistant",
                   "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                   "usage": usage(started)}}),
        )]
    }

    fn text(&mut self, text: &str) -> Vec<Frame> {
        let mut frames = Vec::new();
        let index = match self.open_text {
            Some(i) => i,
            None => {
                let i = self.next_index;
                self.next_index += 1;
                self.open_text = Some(i);
                frames.push(event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
                ));
                i
            }
        };
        frames.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
        ));
        frames
    }

    /// Its own block: started with its name, its input in two pieces
    /// (clients must join them), stopped.
    fn call(&mut self, c: &ToolCall) -> Vec<Frame> {
        let mut frames = self.close_text();
        let index = self.next_index;
        self.next_index += 1;
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "tool_use", "id": c.call_id, "name": c.tool_name, "input": {}}}),
        ));
        let input = tool_use(c)["input"].to_string();
        let (a, b) = functions::halves(&input);
        for piece in [a, b].into_iter().filter(|p| !p.is_empty()) {
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        frames.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        frames
    }

    fn calls_done(&mut self, u: &Usage) -> Vec<Frame> {
        self.closing("tool_use", u)
    }

    fn finish(&mut self, u: &Usage) -> Vec<Frame> {
        self.closing("end_turn", u)
    }

    fn fail(&mut self, code: &ErrorCode, message: &str) -> Vec<Frame> {
        let error = match code {
            ErrorCode::Overloaded => json!({"type": "overloaded_error", "message": message}),
            other => json!({"type": "api_error", "message": format!("{other}: {message}")}),
        };
        vec![event("error", json!({"type": "error", "error": error}))]
    }

    /// Anthropic's own keep-alive: a `ping` event.
    fn keep_alive() -> KeepAlive {
        KeepAlive::new().event(
            Event::default()
                .event("ping")
                .data(json!({"type": "ping"}).to_string()),
        )
    }
}

#[cfg(test)]
mod tests;
