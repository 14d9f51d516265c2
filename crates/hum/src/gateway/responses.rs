//! OpenAI's Responses shapes (`POST /v1/responses`): `input` as a string
//! or items (messages, `function_call_output`), `instructions`, function
//! `tools` and `tool_choice`, `text.format`, and `stream: true` as the
//! Responses event sequence (`response.created` … `response.completed`).
//! The request itself goes through [`super::respond`], as Chat
//! Completions' does: a conversation is recognised from its items, and a
//! turn ending with calls is parked until their outputs come.
//!
//! A response's id names its conversation ([`super::response_ids`]): a
//! follow-up's `previous_response_id` goes to that sid's cell (its history
//! there, or resumed from its transcript), with only the new items; an id
//! hum did not give out is a 404. A finished response is kept for
//! `GET /v1/responses/{id}` unless it said `store: false` ([`super::kept`]).

use super::affinity::Message;
use super::calls::ToolAnswer;
use super::functions::{self, Choice, FunctionSpec};
use super::respond::{Ask, Dialect, Frame};
use serde::Deserialize;
use serde_json::{json, Value};
use thrum::{ErrorCode, ToolCall, Usage};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A request's fields hum reads; others are accepted and ignored.
#[derive(Deserialize)]
struct Request {
    model: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    previous_response_id: Option<String>,
    /// Keep the response for `GET /v1/responses/{id}` (OpenAI's default).
    #[serde(default)]
    store: Option<bool>,
}

/// The text of a message's `content`: a string, or its text parts.
fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `tool_choice` in Chat Completions' words, which [`Choice`] reads.
fn choice(v: Option<&Value>) -> Result<Choice, String> {
    match v {
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").cloned().unwrap_or(Value::Null);
            Choice::openai(Some(
                &json!({"type": "function", "function": {"name": name}}),
            ))
        }
        other => Choice::openai(other),
    }
}

/// `text.format` in `response_format`'s words.
fn format(text: Option<&Value>) -> Result<Option<super::structured::Wanted>, String> {
    let Some(f) = text.and_then(|t| t.get("format")) else {
        return Ok(None);
    };
    let shaped = match f.get("type").and_then(Value::as_str) {
        Some("json_schema") => json!({"type": "json_schema", "json_schema": {
            "name": f.get("name").cloned().unwrap_or(json!("answer")),
            "schema": f.get("schema").cloned().unwrap_or(Value::Null)}}),
        _ => f.clone(),
    };
    super::structured::read_openai(Some(&shaped))
        .map_err(|e| e.replace("response_format", "text.format"))
}

/// The function tools offered (other kinds are refused: hum has none).
fn specs(tools: &[Value]) -> Result<Vec<FunctionSpec>, String> {
    tools
        .iter()
        .map(|t| match t.get("type").and_then(Value::as_str) {
            Some("function") => Ok(FunctionSpec::new(
                t.get("name").and_then(Value::as_str).unwrap_or_default(),
                t.get("description").and_then(Value::as_str),
                t.get("parameters"),
            )),
            other => Err(format!(
                "tools: only function tools are served here, not {}",
                other.unwrap_or("one without a type")
            )),
        })
        .collect()
}

/// What `input` holds.
struct Conversation {
    system: Vec<String>,
    messages: Vec<Message>,
    /// The call outputs it ends with.
    answers: Vec<ToolAnswer>,
}

/// The conversation in `input`.
fn conversation(input: &Value) -> Result<Conversation, String> {
    let items: Vec<Value> = match input {
        Value::String(s) => vec![json!({"role": "user", "content": s})],
        Value::Array(items) => items.clone(),
        _ => return Err("`input` must be a string or a list of items".into()),
    };
    let (mut system, mut messages, mut answers) = (Vec::new(), Vec::new(), Vec::new());
    for item in &items {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                let text = content_text(item.get("content").unwrap_or(&Value::Null));
                if role == "system" || role == "developer" {
                    system.push(text);
                } else {
                    messages.push(Message::new(role, &text));
                }
                answers.clear();
            }
            "function_call_output" => answers.push(ToolAnswer {
                call_id: item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                output: match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                },
                is_error: false,
            }),
            // The calls themselves, and reasoning: the cell has them.
            _ => {}
        }
    }
    Ok(Conversation {
        system,
        messages,
        answers,
    })
}

/// One reply of the Responses API: its ids, time, model, the output so
/// far, and where a stream is.
pub struct Responses {
    id: String,
    created: u64,
    model: String,
    seq: u64,
    /// The message item under way in a stream, and its text so far.
    message: Option<(String, String)>,
    /// Items done, for the final `response`.
    output: Vec<Value>,
}

fn usage(u: &Usage) -> Value {
    let (i, o) = (u.input_tokens, u.output_tokens);
    json!({"input_tokens": i, "input_tokens_details": {"cached_tokens": u.cache_read_input_tokens},
           "output_tokens": o, "output_tokens_details": {"reasoning_tokens": 0},
           "total_tokens": i.saturating_add(o)})
}

fn arguments(c: &ToolCall) -> String {
    if c.args.is_null() {
        "{}".to_owned()
    } else {
        c.args.to_string()
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(c: &ToolCall, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{}", c.call_id), "call_id": c.call_id,
           "name": c.tool_name, "arguments": arguments(c), "status": status})
}

impl Responses {
    fn response(&self, status: &str, output: Vec<Value>, u: Option<&Usage>) -> Value {
        json!({"id": self.id, "object": "response", "created_at": self.created, "status": status,
               "model": self.model, "output": output, "usage": u.map(usage),
               "error": null, "incomplete_details": null, "instructions": null, "metadata": {},
               "parallel_tool_calls": true, "temperature": null, "top_p": null,
               "tool_choice": "auto", "tools": []})
    }

    /// One event: its type in its `data` too, numbered.
    fn event(&mut self, name: &'static str, mut data: Value) -> Frame {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Frame::Named(name, data)
    }

    /// The message item under way ends.
    fn close_message(&mut self) -> Vec<Frame> {
        let Some((id, text)) = self.message.take() else {
            return Vec::new();
        };
        let index = self.output.len();
        let done = message_item(&id, &text, "completed");
        self.output.push(done.clone());
        vec![
            self.event("response.output_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": text})),
            self.event("response.content_part.done", json!({"item_id": id, "output_index": index,
                "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}})),
            self.event("response.output_item.done", json!({"output_index": index, "item": done})),
        ]
    }

    fn completed(&mut self, u: &Usage) -> Vec<Frame> {
        let mut frames = self.close_message();
        let response = self.response("completed", self.output.clone(), Some(u));
        frames.push(self.event("response.completed", json!({"response": response})));
        frames
    }
}

impl Dialect for Responses {
    const UNAUTHORIZED: &'static str = "missing or wrong bearer token";

    fn ask(body: &[u8]) -> Result<Ask, String> {
        let req: Request = super::requests::parse(body)?;
        let Conversation {
            mut system,
            messages,
            answers,
        } = conversation(&req.input)?;
        if let Some(i) = req.instructions.filter(|i| !i.is_empty()) {
            system.insert(0, i);
        }
        // (A follow-up naming the previous response may carry only its
        // new items.)
        if answers.is_empty()
            && req.previous_response_id.is_none()
            && messages.last().is_none_or(|m| m.role != "user")
        {
            return Err("the last input item must be the user's message".into());
        }
        let choice = choice(req.tool_choice.as_ref())?;
        let offered = functions::offered(specs(&req.tools)?, &choice)?;
        Ok(Ask {
            model: req.model,
            system: (!system.is_empty()).then(|| system.join("\n")),
            messages,
            answers,
            offered,
            choice,
            user: req.user,
            stream: req.stream == Some(true),
            format: format(req.text.as_ref())?,
            previous: req.previous_response_id,
            store: req.store != Some(false),
            by_position: false,
        })
    }

    fn error_body(code: &ErrorCode, message: &str) -> Value {
        let face = super::errors::face(code);
        let (kind, oa_code) = (face.openai.0, face.openai.1.unwrap_or(code.as_str()));
        json!({"error": {"message": message, "type": kind, "code": oa_code, "param": null}})
    }

    fn of_sid(&mut self, sid: &str, ids: &super::response_ids::ResponseIds) {
        self.id = ids.mint(sid);
    }

    fn reply(model: &str) -> Self {
        Responses {
            id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
            created: now(),
            model: model.to_owned(),
            seq: 0,
            message: None,
            output: Vec::new(),
        }
    }

    fn finished(&self, text: &str, u: &Usage) -> Value {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        self.response(
            "completed",
            vec![message_item(&id, text, "completed")],
            Some(u),
        )
    }

    fn called(&self, text: &str, calls: &[ToolCall], u: &Usage) -> Value {
        let mut output = Vec::new();
        if !text.is_empty() {
            let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            output.push(message_item(&id, text, "completed"));
        }
        output.extend(calls.iter().map(|c| call_item(c, "completed")));
        self.response("completed", output, Some(u))
    }

    fn open(&mut self, _started: &Usage) -> Vec<Frame> {
        let response = self.response("in_progress", Vec::new(), None);
        vec![
            self.event("response.created", json!({"response": response.clone()})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    fn text(&mut self, text: &str) -> Vec<Frame> {
        let mut frames = Vec::new();
        let index = self.output.len();
        if self.message.is_none() {
            let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            frames.push(self.event("response.output_item.added", json!({"output_index": index,
                "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}})));
            frames.push(self.event("response.content_part.added", json!({"item_id": id, "output_index": index,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})));
            self.message = Some((id, String::new()));
        }
        let id = match self.message.as_mut() {
            Some((id, so_far)) => {
                so_far.push_str(text);
                id.clone()
            }
            None => String::new(),
        };
        frames.push(self.event(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text}),
        ));
        frames
    }

    /// Announced, then its arguments in two pieces, then done.
    fn call(&mut self, c: &ToolCall) -> Vec<Frame> {
        let mut frames = self.close_message();
        let index = self.output.len();
        let item_id = format!("fc_{}", c.call_id);
        let mut added = call_item(c, "in_progress");
        added["arguments"] = json!("");
        frames.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        ));
        let args = arguments(c);
        let (a, b) = functions::halves(&args);
        for piece in [a, b].into_iter().filter(|p| !p.is_empty()) {
            frames.push(self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": index, "delta": piece}),
            ));
        }
        frames.push(self.event(
            "response.function_call_arguments.done",
            json!({"item_id": item_id, "output_index": index, "arguments": args}),
        ));
        let done = call_item(c, "completed");
        self.output.push(done.clone());
        frames.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        ));
        frames
    }

    fn calls_done(&mut self, u: &Usage) -> Vec<Frame> {
        self.completed(u)
    }

    fn finish(&mut self, u: &Usage) -> Vec<Frame> {
        self.completed(u)
    }

    fn fail(&mut self, code: &ErrorCode, message: &str) -> Vec<Frame> {
        let mut response = self.response("failed", self.output.clone(), None);
        response["error"] = json!({"code": code.as_str(), "message": message});
        vec![self.event("response.failed", json!({"response": response}))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_items_become_the_conversation_and_trailing_outputs_its_answers() {
        let body = json!({"model": "sim", "instructions": "be brief",
            "input": [{"role": "developer", "content": "no jokes"},
                      {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                      {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                      {"type": "function_call_output", "call_id": "c1", "output": "sunny"}],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "w"},
            "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}}});
        let ask = Responses::ask(body.to_string().as_bytes()).unwrap();
        assert_eq!(ask.system.as_deref(), Some("be brief\nno jokes"));
        assert_eq!(ask.messages.len(), 1);
        assert_eq!(
            (
                ask.answers[0].call_id.as_str(),
                ask.answers[0].output.as_str()
            ),
            ("c1", "sunny")
        );
        assert_eq!(ask.choice, Choice::Named("w".into()));
        assert!(ask.format.is_some());
        let plain = Responses::ask(br#"{"model": "sim", "input": "hi", "stream": true}"#).unwrap();
        assert!(plain.stream && plain.answers.is_empty());
        let next = Responses::ask(
            br#"{"model": "sim", "input": "more", "previous_response_id": "resp_1"}"#,
        )
        .unwrap();
        assert_eq!(next.previous.as_deref(), Some("resp_1"));
        for bad in [
            r#"{"model": "sim", "input": "hi", "tools": [{"type": "web_search"}]}"#,
            r#"{"model": "sim", "input": 3}"#,
            r#"{"model": "sim", "input": [{"role": "assistant", "content": "x"}]}"#,
        ] {
            assert!(Responses::ask(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stream_is_the_responses_event_sequence_numbered_and_whole_at_the_end() {
        let mut r = Responses::reply("sim");
        let mut frames = r.open(&Usage::default());
        frames.extend(r.text("Hel"));
        frames.extend(r.text("lo"));
        let call = ToolCall {
            call_id: "call-1".into(),
            tool_name: "w".into(),
            args: json!({"city": "Paris"}),
            usage: None,
            extra: Default::default(),
        };
        frames.extend(r.call(&call));
        frames.extend(r.calls_done(&Usage {
            input_tokens: 3,
            output_tokens: 5,
            ..Default::default()
        }));
        let names: Vec<&str> = frames
            .iter()
            .map(|f| match f {
                Frame::Named(n, _) => *n,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names[..4],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added"
            ]
        );
        assert!(names.contains(&"response.function_call_arguments.done"));
        assert_eq!(names.last(), Some(&"response.completed"));
        let Frame::Named(_, last) = frames.last().unwrap() else {
            unreachable!()
        };
        let output = last["response"]["output"].as_array().unwrap();
        assert_eq!(output[0]["content"][0]["text"], "Hello");
        assert_eq!(output[1]["call_id"], "call-1");
        assert_eq!(last["response"]["usage"]["total_tokens"], 8);
        let seqs: Vec<u64> = frames
            .iter()
            .map(|f| match f {
                Frame::Named(_, v) => v["sequence_number"].as_u64().unwrap(),
                _ => unreachable!(),
            })
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    }
}
