//! Ollama's shapes: `POST /api/chat` (messages, `tools` and `tool_calls`,
//! `format`, `stream` — true unless said otherwise — as NDJSON lines) and
//! `POST /api/generate` (a prompt and a system message), each a
//! [`Dialect`] on the gateway's one pipeline ([`super::respond`]), so
//! affinity, parked tool turns, structured output and errors work as they
//! do for the other APIs. The door itself (its listener, who gets in, the
//! model listings) is [`door`].
//!
//! Ollama names no tool call: a `tool` message answers the call at its
//! place, the `n`th result the `n`th call of the turn that waits for them.
//! `/api/generate`'s `context` (token ids of an earlier answer) has no
//! meaning for an agent that keeps its own session: it is ignored, and
//! none is returned; a conversation goes on through `/api/chat`.
//! Durations are nanoseconds of this request's wall time: until the
//! agent's first content (`prompt_eval_duration`) and after it
//! (`eval_duration`); nothing is loaded (`load_duration` 0).

pub mod door;
pub mod meta;

use super::affinity::Message;
use super::calls::ToolAnswer;
use super::functions::{self, Choice, FunctionSpec};
use super::respond::{Ask, Dialect, Frame, Wire};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Instant;
use thrum::{ErrorCode, ToolCall, Usage};

/// Now, as Ollama writes times (RFC 3339, nanoseconds, UTC).
pub fn created_at() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// `POST /api/chat`'s fields hum reads; others (`options`, `keep_alive`,
/// `think`) are accepted and ignored.
#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    tools: Vec<Tool>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    images: Option<Vec<Value>>,
    /// An assistant message's calls, as a previous answer gave them (with
    /// hum's ids, when the client kept them).
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct Tool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: ToolFunction,
}

#[derive(Deserialize)]
struct ToolFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

/// `POST /api/generate`'s fields hum reads; `context`, `template`, `raw`,
/// `suffix`, `options` and `keep_alive` are accepted and ignored.
#[derive(Deserialize)]
struct GenerateRequest {
    model: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    images: Option<Vec<Value>>,
}

const NO_IMAGES: &str =
    "images are not served by hum's Ollama door (its agents are given text only)";

/// `format`: `"json"` (any JSON object) or a JSON Schema.
fn format(v: Option<&Value>) -> Result<Option<super::structured::Wanted>, String> {
    let shaped = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) if s == "json" => json!({"type": "json_object"}),
        Some(Value::String(s)) => {
            return Err(format!(
                "format: {s:?} is neither \"json\" nor a JSON Schema"
            ))
        }
        Some(schema) => {
            json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
        }
    };
    super::structured::read_openai(Some(&shaped))
        .map_err(|e| e.replace("response_format", "format"))
}

/// The chat's conversation read into an [`Ask`].
fn chat(req: ChatRequest) -> Result<Ask, String> {
    if req
        .messages
        .iter()
        .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty()))
    {
        return Err(NO_IMAGES.into());
    }
    let offered = req
        .tools
        .iter()
        .map(|t| match t.kind.as_deref() {
            None | Some("function") => Ok(FunctionSpec::new(
                &t.function.name,
                t.function.description.as_deref(),
                t.function.parameters.as_ref(),
            )),
            Some(other) => Err(format!(
                "tools: only function tools are served, not {other}"
            )),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let choice = Choice::openai(None)?;
    let offered = functions::offered(offered, &choice)?;
    let text = |m: &ChatMessage| m.content.clone().unwrap_or_default();
    let system: Vec<String> = req
        .messages
        .iter()
        .filter(|m| m.role == "system")
        .map(text)
        .collect();
    let messages: Vec<Message> = req
        .messages
        .iter()
        .filter(|m| m.role != "system")
        .map(|m| Message::new(&m.role, &text(m)))
        .collect();
    // The `tool` messages at the end answer the calls the previous answer
    // ended with, in their order (Ollama names no call).
    let mut answers = functions::trailing_results(&req.messages, |m| {
        (m.role == "tool").then(|| ToolAnswer {
            call_id: String::new(),
            output: text(m),
            is_error: false,
        })
    });
    // A client that kept the ids hum gave its calls (raw JSON, the JS
    // client) names what each result answers; others answer by place.
    let asked = req.messages.len() - answers.len();
    let ids: Vec<&str> = asked
        .checked_sub(1)
        .and_then(|i| req.messages[i].tool_calls.as_ref())
        .map(|calls| {
            calls
                .iter()
                .filter_map(|c| c.get("id").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if !answers.is_empty() && ids.len() == answers.len() {
        for (a, id) in answers.iter_mut().zip(ids) {
            a.call_id = id.to_owned();
        }
    }
    if answers.is_empty() && messages.last().is_none_or(|m| m.role != "user") {
        return Err("the last message must be the user's (or the results of the tool calls the previous answer made)".into());
    }
    Ok(Ask {
        model: req.model,
        system: (!system.is_empty()).then(|| system.join("\n")),
        messages,
        answers,
        offered,
        choice,
        user: None,
        stream: req.stream != Some(false),
        format: format(req.format.as_ref())?,
        previous: None,
        store: false,
        by_position: true,
    })
}

/// A generate request read into an [`Ask`]: one user message.
fn generate(req: GenerateRequest) -> Result<Ask, String> {
    if req.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(NO_IMAGES.into());
    }
    if req.prompt.is_empty() {
        return Err("`prompt` must not be empty".into());
    }
    Ok(Ask {
        model: req.model,
        system: req.system.filter(|s| !s.is_empty()),
        messages: vec![Message::new("user", &req.prompt)],
        answers: Vec::new(),
        offered: Vec::new(),
        choice: Choice::Auto,
        user: None,
        stream: req.stream != Some(false),
        format: format(req.format.as_ref())?,
        previous: None,
        store: false,
        by_position: true,
    })
}

/// The body's model and whether it asks for nothing (no messages, or an
/// empty prompt): Ollama's way of loading a model, answered at once with
/// `done_reason: "load"`.
pub fn load_only(body: &[u8], generate: bool) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let model = v.get("model")?.as_str()?.to_owned();
    // Absent, or empty; anything else is read (and refused) as a request.
    let empty = match v.get(if generate { "prompt" } else { "messages" }) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => generate && s.is_empty(),
        Some(Value::Array(a)) => !generate && a.is_empty(),
        Some(_) => false,
    };
    empty.then_some(model)
}

/// One reply of Ollama's `/api/chat` (`GENERATE` false) or
/// `/api/generate` (true): its model and clock.
pub struct Ollama<const GENERATE: bool> {
    model: String,
    started: Instant,
    first: Option<Instant>,
    /// Calls streamed so far.
    calls: usize,
}

/// `/api/chat`.
pub type OllamaChat = Ollama<false>;
/// `/api/generate`.
pub type OllamaGenerate = Ollama<true>;

/// A call as Ollama returns it: arguments as an object.
fn tool_call(c: &ToolCall, index: usize) -> Value {
    let args = if c.args.is_object() {
        c.args.clone()
    } else {
        json!({})
    };
    json!({"id": c.call_id, "function": {"index": index, "name": c.tool_name, "arguments": args}})
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<const GENERATE: bool> Ollama<GENERATE> {
    /// A line (or whole answer) carrying `text`, and `calls` if any.
    fn piece(&self, text: &str, calls: &[Value]) -> Value {
        let mut v = json!({"model": self.model, "created_at": created_at()});
        if GENERATE {
            v["response"] = json!(text);
        } else {
            let mut message = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                message["tool_calls"] = json!(calls);
            }
            v["message"] = message;
        }
        v["done"] = json!(false);
        v
    }

    /// The last line: done, why, and the counts and durations.
    fn done(&self, mut v: Value, reason: &str, u: &Usage) -> Value {
        let end = Instant::now();
        let first = self.first.unwrap_or(end);
        v["done"] = json!(true);
        v["done_reason"] = json!(reason);
        v["total_duration"] = json!(nanos(end - self.started));
        v["load_duration"] = json!(0);
        v["prompt_eval_count"] = json!(u
            .input_tokens
            .saturating_add(u.cache_read_input_tokens)
            .saturating_add(u.cache_creation_input_tokens));
        v["prompt_eval_duration"] = json!(nanos(first.saturating_duration_since(self.started)));
        v["eval_count"] = json!(u.output_tokens);
        v["eval_duration"] = json!(nanos(end.saturating_duration_since(first)));
        v
    }

    /// The answer to a request that only loads its model.
    pub fn loaded(model: &str) -> Value {
        let me = Self::reply(model);
        let mut v = me.piece("", &[]);
        v["done"] = json!(true);
        v["done_reason"] = json!("load");
        v
    }
}

impl<const GENERATE: bool> Dialect for Ollama<GENERATE> {
    const UNAUTHORIZED: &'static str = "unauthorized: send the gateway's token as `Authorization: Bearer …` (the ollama clients send $OLLAMA_API_KEY so)";
    const WIRE: Wire = Wire::Ndjson;

    fn ask(body: &[u8]) -> Result<Ask, String> {
        if GENERATE {
            generate(super::requests::parse(body)?)
        } else {
            chat(super::requests::parse(body)?)
        }
    }

    fn error_body(_code: &ErrorCode, message: &str) -> Value {
        json!({"error": message})
    }

    fn reply(model: &str) -> Self {
        Ollama {
            model: model.to_owned(),
            started: Instant::now(),
            first: None,
            calls: 0,
        }
    }

    fn first_content(&mut self, at: Instant) {
        self.first.get_or_insert(at);
    }

    fn finished(&self, text: &str, u: &Usage) -> Value {
        self.done(self.piece(text, &[]), "stop", u)
    }

    fn called(&self, text: &str, calls: &[ToolCall], u: &Usage) -> Value {
        let listed: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| tool_call(c, i))
            .collect();
        self.done(self.piece(text, &listed), "stop", u)
    }

    fn open(&mut self, _started: &Usage) -> Vec<Frame> {
        Vec::new()
    }

    fn text(&mut self, text: &str) -> Vec<Frame> {
        vec![Frame::Data(self.piece(text, &[]))]
    }

    /// Each call in a line of its own, as Ollama streams them.
    fn call(&mut self, c: &ToolCall) -> Vec<Frame> {
        let index = self.calls;
        self.calls += 1;
        vec![Frame::Data(self.piece("", &[tool_call(c, index)]))]
    }

    fn calls_done(&mut self, u: &Usage) -> Vec<Frame> {
        vec![Frame::Data(self.done(self.piece("", &[]), "stop", u))]
    }

    fn finish(&mut self, u: &Usage) -> Vec<Frame> {
        vec![Frame::Data(self.done(self.piece("", &[]), "stop", u))]
    }

    fn fail(&mut self, _code: &ErrorCode, message: &str) -> Vec<Frame> {
        vec![Frame::Data(json!({"error": message}))]
    }
}

#[cfg(test)]
mod tests;
