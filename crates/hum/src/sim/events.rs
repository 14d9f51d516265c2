//! The events of one claude turn, with the same types, order and key fields
//! as the captured `claude-2.1.332/turn1.jsonl`.

use serde_json::{json, Value};
use std::time::SystemTime;

/// Version reported in system/init, so a reader can tell a simulator apart.
pub const SIM_VERSION: &str = concat!("sim-", env!("CARGO_PKG_VERSION"));

/// Tools reported when the command line does not choose them.
pub const DEFAULT_TOOLS: [&str; 6] = ["Bash", "Edit", "Glob", "Grep", "Read", "Write"];

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Token usage of a turn, in the shape claude reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
    /// The turn's cost as reported, when a knob set it; else a price.
    pub cost: Option<f64>,
}

impl Usage {
    /// Input and output tokens only, priced.
    pub fn tokens(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        }
    }

    /// The cost knob's, or a made-up but stable price (Sonnet's list
    /// prices per token), so cost fields are never zero.
    pub fn cost_usd(&self) -> f64 {
        self.cost.unwrap_or(
            self.input_tokens as f64 * 3e-6
                + self.output_tokens as f64 * 15e-6
                + self.cache_read_tokens as f64 * 0.3e-6
                + self.cache_creation_tokens as f64 * 3.75e-6,
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "output_tokens": self.output_tokens,
            "service_tier": "standard",
        })
    }

    /// This and `other` together (what a process has spent after a turn).
    pub fn plus(&self, other: &Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens + other.input_tokens,
            output_tokens: self.output_tokens + other.output_tokens,
            cache_read_tokens: self.cache_read_tokens + other.cache_read_tokens,
            cache_creation_tokens: self.cache_creation_tokens + other.cache_creation_tokens,
            cost: Some(self.cost_usd() + other.cost_usd()),
        }
    }

    /// One model's entry of `modelUsage`, as claude 2.1.332 prints it.
    fn model_json(&self) -> Value {
        json!({
            "inputTokens": self.input_tokens, "outputTokens": self.output_tokens,
            "cacheReadInputTokens": self.cache_read_tokens,
            "cacheCreationInputTokens": self.cache_creation_tokens,
            "webSearchRequests": 0, "costUSD": self.cost_usd(),
            "contextWindow": 200000, "maxOutputTokens": 32000,
        })
    }
}

/// What every event of a turn shares.
#[derive(Debug, Clone)]
pub struct Turn {
    pub session_id: String,
    pub model: String,
    pub message_id: String,
}

impl Turn {
    pub fn new(session_id: &str, model: &str) -> Self {
        Turn {
            session_id: session_id.to_owned(),
            model: model.to_owned(),
            message_id: format!("msg_sim_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    pub fn init(&self, cwd: &str, tools: &[String], mcp_servers: &[String]) -> Value {
        let servers: Vec<Value> = mcp_servers
            .iter()
            .map(|n| json!({"name": n, "status": "connected"}))
            .collect();
        json!({
            "type": "system", "subtype": "init", "cwd": cwd, "session_id": self.session_id,
            "tools": tools, "mcp_servers": servers, "model": self.model,
            "permissionMode": "bypassPermissions", "slash_commands": [], "apiKeySource": "none",
            "claude_code_version": SIM_VERSION, "output_style": "default", "agents": [], "skills": [],
            "plugins": [], "uuid": uuid(),
        })
    }

    pub fn status(&self) -> Value {
        json!({"type": "system", "subtype": "status", "status": "requesting", "session_id": self.session_id, "uuid": uuid()})
    }

    /// A `stream_event` wrapping one Messages API streaming event.
    pub fn stream(&self, event: Value) -> Value {
        json!({
            "type": "stream_event", "event": event, "session_id": self.session_id,
            "parent_tool_use_id": null, "uuid": uuid(), "api_message_id": self.message_id,
        })
    }

    pub fn message_start(&self, usage: Usage) -> Value {
        self.stream(json!({"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": Usage { output_tokens: 0, ..usage }.json(),
        }}))
    }

    pub fn block_start(&self, index: usize, kind: BlockKind) -> Value {
        let block = match kind {
            BlockKind::Text => json!({"type": "text", "text": ""}),
            BlockKind::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
        };
        self.stream(json!({"type": "content_block_start", "index": index, "content_block": block}))
    }

    pub fn delta(&self, index: usize, kind: BlockKind, text: &str) -> Value {
        let delta = match kind {
            BlockKind::Text => json!({"type": "text_delta", "text": text}),
            BlockKind::Thinking => json!({"type": "thinking_delta", "thinking": text}),
        };
        self.stream(json!({"type": "content_block_delta", "index": index, "delta": delta}))
    }

    pub fn block_stop(&self, index: usize) -> Value {
        self.stream(json!({"type": "content_block_stop", "index": index}))
    }

    pub fn assistant(&self, thinking: Option<&str>, text: &str, usage: Usage) -> Value {
        let mut content = Vec::new();
        if let Some(t) = thinking {
            content.push(json!({"type": "thinking", "thinking": t, "signature": ""}));
        }
        content.push(json!({"type": "text", "text": text}));
        self.assistant_message(content, usage)
    }

    /// The `assistant` event carrying one whole message's `content`.
    fn assistant_message(&self, content: Vec<Value>, usage: Usage) -> Value {
        json!({
            "type": "assistant",
            "message": {
                "id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                "content": content, "stop_reason": null, "stop_sequence": null,
                "usage": Usage { output_tokens: 0, ..usage }.json(),
            },
            "parent_tool_use_id": null, "session_id": self.session_id, "uuid": uuid(),
            "timestamp": now_rfc3339(),
        })
    }

    pub fn message_delta(&self, usage: Usage) -> Value {
        self.stream(json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": usage.output_tokens}}))
    }

    /// A `tool_use` block opening (its input follows as JSON deltas).
    pub fn tool_use_start(&self, index: usize, id: &str, name: &str) -> Value {
        self.stream(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}))
    }

    pub fn input_delta(&self, index: usize, partial_json: &str) -> Value {
        self.stream(json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial_json}}))
    }

    /// The message that asks for tools ends with `stop_reason: tool_use`.
    pub fn message_delta_tool_use(&self, usage: Usage) -> Value {
        self.stream(json!({"type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": usage.output_tokens}}))
    }

    /// The whole assistant message asking for `calls` (id, name, input).
    pub fn assistant_tool_uses(&self, calls: &[(String, String, Value)], usage: Usage) -> Value {
        let content: Vec<Value> = calls
            .iter()
            .map(|(id, name, input)| json!({"type": "tool_use", "id": id, "name": name, "input": input}))
            .collect();
        self.assistant_message(content, usage)
    }

    /// The tools' results, as the user message claude writes for them.
    pub fn tool_results(&self, results: &[(String, String, bool)]) -> Value {
        let content: Vec<Value> = results
            .iter()
            .map(|(id, text, is_error)| {
                json!({"tool_use_id": id, "type": "tool_result",
                "content": [{"type": "text", "text": text}], "is_error": is_error})
            })
            .collect();
        json!({
            "type": "user", "message": {"role": "user", "content": content},
            "parent_tool_use_id": null, "session_id": self.session_id, "uuid": uuid(),
            "timestamp": now_rfc3339(),
        })
    }

    pub fn message_stop(&self) -> Value {
        self.stream(json!({"type": "message_stop"}))
    }

    /// A turn's successful end. As claude's: `usage` is the turn's,
    /// `total_cost_usd` and `modelUsage` the process's so far (`spent`).
    pub fn success(
        &self,
        text: &str,
        usage: Usage,
        spent: Usage,
        num_turns: u64,
        duration_ms: u64,
    ) -> Value {
        json!({
            "type": "result", "subtype": "success", "is_error": false,
            "duration_ms": duration_ms, "duration_api_ms": duration_ms, "num_turns": num_turns,
            "result": text, "stop_reason": "end_turn", "session_id": self.session_id,
            "total_cost_usd": spent.cost_usd(), "usage": usage.json(),
            "modelUsage": {self.model.clone(): spent.model_json()},
            "permission_denials": [], "terminal_reason": "completed", "uuid": uuid(),
        })
    }

    /// An `is_error` result that ends a turn (the process lives on).
    pub fn failure(
        &self,
        message: &str,
        usage: Usage,
        spent: Usage,
        num_turns: u64,
        duration_ms: u64,
    ) -> Value {
        json!({
            "type": "result", "subtype": "error_during_execution", "is_error": true,
            "duration_ms": duration_ms, "duration_api_ms": duration_ms, "num_turns": num_turns,
            "result": message, "stop_reason": null, "session_id": self.session_id,
            "total_cost_usd": spent.cost_usd(), "usage": usage.json(),
            "modelUsage": {self.model.clone(): spent.model_json()},
            "permission_denials": [], "errors": [message], "uuid": uuid(),
        })
    }
}

impl Turn {
    /// The answer to a `control_request` (claude 2.1.332 answers an
    /// interrupt with this, then ends the turn).
    pub fn control_response(request_id: &str) -> Value {
        json!({"type": "control_response", "response": {"subtype": "success",
               "request_id": request_id, "response": {"still_queued": []}}})
    }

    /// The user message claude records when a turn is interrupted.
    pub fn interrupted_marker(&self) -> Value {
        json!({"type": "user", "message": {"role": "user", "content": [
                   {"type": "text", "text": "[Request interrupted by user]"}]},
               "parent_tool_use_id": null, "session_id": self.session_id, "uuid": uuid(),
               "timestamp": now_rfc3339()})
    }

    /// The result of an interrupted turn, as claude prints it: an error
    /// during execution with `terminal_reason: aborted_streaming`.
    /// (claude reports an interrupted turn's `usage` as none, and what the
    /// call cost in `total_cost_usd` and `modelUsage`, fixture
    /// `interrupt.jsonl`.)
    pub fn aborted(&self, spent: Usage, num_turns: u64, duration_ms: u64) -> Value {
        json!({
            "type": "result", "subtype": "error_during_execution", "is_error": true,
            "duration_ms": duration_ms, "duration_api_ms": 0, "num_turns": num_turns,
            "stop_reason": null, "session_id": self.session_id,
            "total_cost_usd": spent.cost_usd(), "usage": Usage::default().json(),
            "modelUsage": {self.model.clone(): spent.model_json()},
            "permission_denials": [], "terminal_reason": "aborted_streaming",
            "errors": [], "uuid": uuid(),
        })
    }
}

/// What `--resume <unknown id>` prints before exiting 1 (fixture
/// `resume-unknown.stdout.jsonl`).
pub fn resume_not_found(session_id: &str) -> Value {
    json!({
        "type": "result", "subtype": "error_during_execution", "duration_ms": 0, "duration_api_ms": 0,
        "is_error": true, "num_turns": 0, "stop_reason": null, "session_id": session_id,
        "total_cost_usd": 0, "usage": Usage::default().json(),
        "modelUsage": {}, "permission_denials": [], "uuid": uuid(),
        "errors": [format!("No conversation found with session ID: {session_id}")],
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Text,
    Thinking,
}
