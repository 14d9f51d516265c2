//! Typed bodies, one per known `chi`.
//!
//! Every body keeps the fields it does not know in `extra`, so a tone decoded
//! and encoded again carries them untouched. Fields a sender may omit are
//! `Option`s; a JSON `null` reads as absent. Values whose shape the spec
//! leaves open (`content`, `usage`, `tools`, …) stay as JSON values.

use crate::vocab::{ChunkType, Decision, ErrorCode, FinishReason, PulseKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields we do not know, kept in their original order.
pub type Extra = Map<String, Value>;

/// `bee` in a hello: the spec shows a list (`["worker"]`); a lone string is
/// accepted and written back as it came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bees {
    One(String),
    Many(Vec<String>),
}

impl Bees {
    /// Whether this hello announces the given role (`"worker"`, …).
    pub fn contains(&self, role: &str) -> bool {
        match self {
            Bees::One(r) => r == role,
            Bees::Many(rs) => rs.iter().any(|r| r == role),
        }
    }

    /// Whether this hello announces `role`.
    pub fn has(&self, role: &crate::Role) -> bool {
        self.contains(role.as_str())
    }

    /// A hello's `bee` naming one role, as a list (the spec's shape).
    pub fn of(role: crate::Role) -> Bees {
        Bees::Many(vec![role.as_str().to_owned()])
    }
}

/// What kind of peer a worker is.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Propensity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulness: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `hello`: the first tone on every connection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bee: Option<Bees>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propensity: Option<Propensity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chis: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hid: Option<String>,
    /// Workers only: the hive they serve (`claude-cli`, `sim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hive: Option<String>,
    /// Workers only: the model ids they accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Foragers only: the tools they serve, `{name, description,
    /// inputSchema}` each (kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// Foragers only: the names of `tools`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_names: Option<Vec<String>>,
    /// Foragers only: the capabilities they serve in the agent's stead
    /// (`["fs"]`: the agent's own file tools are turned off while such a
    /// forager is connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provides: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Hello {
    /// An asker's working directory (`cwd`, the old system's clients
    /// send it): where its prompts run unless they name their own. A
    /// `cwd` that is not a string reads as none.
    pub fn cwd(&self) -> Option<&str> {
        self.extra.get("cwd").and_then(Value::as_str)
    }
}

/// `breath`: the daemon's state snapshot, sent in answer to `hello`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Breath {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_version: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `echo`: the daemon's acknowledgement of a tone that carried a `rid`
/// (the rid travels in the envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Echo {
    pub ok: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `prompt`: one turn asked of the session named by the envelope's `sid`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prompt {
    /// The user's message: a string or a list of content blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disallowed_tools: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Value>,
    /// The agent's own tools the turn's cell may have: `"default"`,
    /// `"none"` or a list (fewer than its hive's, never more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin_tools: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Prompt {
    /// The prompt's text: `text`, else `content` when it is a string, else the
    /// concatenated `text` of its text blocks.
    pub fn user_text(&self) -> Option<String> {
        if let Some(t) = &self.text {
            return Some(t.clone());
        }
        match self.content.as_ref()? {
            Value::String(s) => Some(s.clone()),
            Value::Array(blocks) => {
                let parts: Vec<&str> = blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect();
                (!parts.is_empty()).then(|| parts.concat())
            }
            _ => None,
        }
    }
}

/// `cancel`: stop the turn of `sid` (and `rid`, when given), or with
/// `callId`, abort that one tool call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `cleanup`: drop every piece of state of `sid`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cleanup {
    #[serde(flatten)]
    pub extra: Extra,
}

/// `tool-result`: the result of a tool call, from the bee that ran it.
/// Some senders put it in `output`, some in `result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    pub call_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ToolResult {
    /// The call's output, whichever field carries it: `output`, `result`,
    /// or `content` (the third spelling of thrum 0.7's bees).
    pub fn output(&self) -> Option<&Value> {
        self.output
            .as_ref()
            .or(self.result.as_ref())
            .or(self.extra.get("content"))
    }

    /// Whether the call failed: `isError`, else (thrum 0.7's rule for its
    /// `result` spelling) a `result` object whose `error` is set.
    pub fn failed(&self) -> bool {
        self.is_error.unwrap_or_else(|| {
            self.output.is_none()
                && self.result.as_ref().is_some_and(|r| match r.get("error") {
                    Some(Value::String(e)) => !e.is_empty(),
                    Some(Value::Bool(b)) => *b,
                    Some(Value::Object(_)) => true,
                    _ => false,
                })
        })
    }

    /// A result saying the call failed, with `message` as its output.
    pub fn error(call_id: &str, tool_name: Option<&str>, message: impl Into<String>) -> Self {
        ToolResult {
            call_id: call_id.to_owned(),
            tool_name: tool_name.map(str::to_owned),
            output: Some(Value::String(message.into())),
            result: None,
            is_error: Some(true),
            extra: Extra::new(),
        }
    }
}

/// `tool-call`: an agent calls a tool a bee lends it (worker → humd → the
/// tool's owner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCall {
    pub call_id: String,
    pub tool_name: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub args: Value,
    /// The usage the CLI reported for the model call that made it (read
    /// with [`crate::Usage::read`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `permission-ask`: the agent wants to use a tool that needs the user's
/// permission (worker → humd → the sid's asker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionAsk {
    pub call_id: String,
    pub tool_name: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    /// The agent's own choices, as it gave them (an ACP agent's
    /// `PermissionOption`s: `optionId`, `name`, `kind`); none: allow or
    /// deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `release-permit`: the answer to a `permission-ask`. `decision` is
/// `allow` or `deny`; humd sends one without a decision when nobody can
/// answer (the worker then applies its configured default). The ask is
/// named by `callId`, or by `permitId` as thrum 0.7's `WIRE.md` spells it
/// (see [`ReleasePermit::id`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleasePermit {
    #[serde(default)]
    pub call_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_input: Option<Value>,
    /// Which of the ask's `options` was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ReleasePermit {
    /// The ask this answers: `callId`, else the old spelling `permitId`.
    pub fn id(&self) -> &str {
        if !self.call_id.is_empty() {
            return &self.call_id;
        }
        self.extra
            .get("permitId")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// `tool-info`: the foragers' tools, as humd tells its workers whenever
/// they change (and on each worker's hello).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// The capabilities connected foragers serve (each named once, sorted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provides: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `session-ready`: the cell serving `sid` has started its turn.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionReady {
    /// The CLI's own session id, used to resume it later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nest_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `chunk`: one streamed piece of a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    pub chunk_type: ChunkType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_idx: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_json: Option<String>,
    /// `message_start`'s: the model call's usage as the CLI reported it
    /// (read with [`crate::Usage::read`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `finish`: a turn ended well.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finish {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `error`: a turn or a request failed. `code` is machine-readable
/// (`overloaded`, `no_worker`, `bad_request`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorTone {
    pub code: ErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// With `overloaded`: when trying again makes sense.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ErrorTone {
    /// An error with a code and a human-readable message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: Some(message.into()),
            subtype: None,
            usage: None,
            retry_after_ms: None,
            extra: Extra::new(),
        }
    }
}

/// `pulse`: a lifecycle event (`cell-spawned`, `cell-ready`, `cell-idle`,
/// `cell-died`, `cell-evicted`, …); its other fields depend on the kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pulse {
    pub kind: PulseKind,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A tone whose `chi` this crate does not know: every field but `chi` and
/// the envelope, as it came.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Unknown {
    #[serde(skip)]
    pub chi: String,
    #[serde(flatten)]
    pub fields: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// thrum 0.7's spellings: `permitId` for the ask, `content` for a
    /// tool's output.
    #[test]
    fn the_old_spellings_of_a_permit_answer_and_a_result_are_read() {
        let old: ReleasePermit =
            serde_json::from_value(json!({"permitId": "p-1", "decision": "allow"})).unwrap();
        assert_eq!(old.id(), "p-1");
        let new: ReleasePermit =
            serde_json::from_value(json!({"callId": "c-1", "permitId": "p-1"})).unwrap();
        assert_eq!(new.id(), "c-1");
        let r: ToolResult =
            serde_json::from_value(json!({"callId": "c", "content": "12:00"})).unwrap();
        assert_eq!(r.output(), Some(&json!("12:00")));
        let r: ToolResult =
            serde_json::from_value(json!({"callId": "c", "output": "a", "content": "b"})).unwrap();
        assert_eq!(r.output(), Some(&json!("a")));
    }

    /// thrum 0.7 said a failed call with `result.error`; `isError` wins,
    /// and hum's own `output` is never read that way.
    #[test]
    fn a_result_with_an_error_set_is_a_failed_call() {
        let failed = |v| serde_json::from_value::<ToolResult>(v).unwrap().failed();
        assert!(failed(
            json!({"callId": "c", "result": {"error": "timeout"}})
        ));
        assert!(!failed(
            json!({"callId": "c", "result": {"error": null, "rows": 3}})
        ));
        assert!(!failed(json!({"callId": "c", "result": {"error": ""}})));
        assert!(!failed(json!({"callId": "c", "result": "error"})));
        assert!(!failed(
            json!({"callId": "c", "result": {"error": "x"}, "isError": false})
        ));
        assert!(!failed(json!({"callId": "c", "output": {"error": "x"}})));
        assert!(failed(
            json!({"callId": "c", "output": "x", "isError": true})
        ));
    }
}
