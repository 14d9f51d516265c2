//! Agents that speak the Agent Client Protocol: how a thrum turn becomes an
//! ACP `session/prompt`, and how what the agent says (`session/update`
//! notifications, the prompt's stop reason) becomes thrum tones. Pure
//! functions and one small value; the I/O is the worker's ACP runner.
//!
//! | thrum | ACP |
//! |---|---|
//! | `prompt` text (and images when `promptCapabilities.image`) | `session/prompt` content blocks |
//! | `chunk` `text_start` / `text_delta` / `content_block_stop` | `agent_message_chunk` |
//! | `chunk` `reasoning_start` / `reasoning_delta` / `content_block_stop` | `agent_thought_chunk` |
//! | `chunk` `tool_call` {toolCallId, title, kind, status, rawInput, …} | `tool_call` |
//! | `chunk` `tool_call_update` {toolCallId, status, rawOutput, content, …} | `tool_call_update` |
//! | `chunk` `plan` {entries} | `plan` |
//! | `finish` {finishReason, usage, costUsd} | the prompt's `stopReason`; usage from its `_meta` |
//! | `error` `agent_error` | the prompt answered with a JSON-RPC error |
//! | `cancel` | `session/cancel` (then the teardown ladder after `cancelGraceMs`) |
//! | `permission-ask` {options} → `release-permit` | `session/request_permission` → the chosen option |
//! | (the session-ready `nestId`) | the agent's session id, kept per sid for `session/load` |
//!
//! Other updates (`user_message_chunk`, `available_commands_update`, mode
//! and config changes) are not forwarded.

use agent_client_protocol::v1::schema::{
    ContentBlock, ImageContent, McpServer, McpServerStdio, PermissionOption, PermissionOptionKind,
    SessionUpdate, StopReason, TextContent,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use thrum::{Body, Chunk, ChunkType, FinishReason};

/// The content of the stream-json user line a prompt became
/// ([`super::launch::user_line`]) as ACP content blocks: text blocks as
/// they are, images only when the agent takes them (else said in words, so
/// the agent knows something was left out).
pub fn prompt_blocks(user_line: &[u8], images: bool) -> Vec<ContentBlock> {
    let content = serde_json::from_slice::<Value>(user_line)
        .ok()
        .and_then(|mut v| v.pointer_mut("/message/content").map(Value::take))
        .unwrap_or(Value::Null);
    match content {
        Value::String(s) => vec![ContentBlock::Text(TextContent::new(s))],
        Value::Array(items) => items.iter().filter_map(|b| block(b, images)).collect(),
        _ => vec![ContentBlock::Text(TextContent::new(String::new()))],
    }
}

/// A system prompt the agent cannot take with its session, said before
/// the cell's first prompt instead (not lost without a word).
pub fn inline_system(text: &str) -> ContentBlock {
    ContentBlock::Text(TextContent::new(format!(
        "<system-instructions>\n{text}\n</system-instructions>"
    )))
}

/// A content block of a thrum prompt, as the Messages API shapes them:
/// the kinds an ACP prompt can carry; any other reads as `Other`.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PromptBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    Image {
        source: ImageSource,
    },
    #[serde(other)]
    Other,
}

#[derive(serde::Deserialize)]
struct ImageSource {
    data: String,
    media_type: String,
}

fn block(b: &Value, images: bool) -> Option<ContentBlock> {
    match PromptBlock::deserialize(b).ok()? {
        PromptBlock::Text { text } => Some(ContentBlock::Text(TextContent::new(text))),
        PromptBlock::Image {
            source: ImageSource { data, media_type },
        } if images => Some(ContentBlock::Image(ImageContent::new(data, media_type))),
        PromptBlock::Image { source } => Some(ContentBlock::Text(TextContent::new(format!(
            "[an image ({}) was left out: this agent does not take images]",
            source.media_type
        )))),
        PromptBlock::Other => None,
    }
}

/// What kind of content block the agent's stream is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thought,
}

/// A turn's stream of updates as thrum chunks: message and thought chunks
/// become content blocks (a start, deltas, a stop, numbered as claude's
/// are), so askers see the same shapes from every hive.
#[derive(Debug, Default)]
pub struct TurnStream {
    open: Option<(Open, u64)>,
    next_index: u64,
}

impl TurnStream {
    /// The chunks one update becomes (none for updates not forwarded).
    pub fn update(&mut self, update: &SessionUpdate) -> Vec<Body> {
        match update {
            SessionUpdate::AgentMessageChunk(c) => self.content(Open::Text, &c.content),
            SessionUpdate::AgentThoughtChunk(c) => self.content(Open::Thought, &c.content),
            SessionUpdate::ToolCall(_) => self.as_is(ChunkType::ToolCall, update),
            SessionUpdate::ToolCallUpdate(_) => self.as_is(ChunkType::ToolCallUpdate, update),
            SessionUpdate::Plan(_) => self.as_is(ChunkType::Plan, update),
            _ => Vec::new(),
        }
    }

    /// The turn ended: the block still open is closed.
    pub fn close(&mut self) -> Vec<Body> {
        match self.open.take() {
            Some((_, index)) => vec![chunk(ChunkType::ContentBlockStop, Some(index), None)],
            None => Vec::new(),
        }
    }

    fn content(&mut self, kind: Open, content: &ContentBlock) -> Vec<Body> {
        let ContentBlock::Text(t) = content else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let index = match self.open {
            Some((k, i)) if k == kind => i,
            _ => {
                out.extend(self.close());
                let i = self.next_index;
                self.next_index += 1;
                self.open = Some((kind, i));
                let start = match kind {
                    Open::Text => ChunkType::TextStart,
                    Open::Thought => ChunkType::ReasoningStart,
                };
                out.push(chunk(start, Some(i), None));
                i
            }
        };
        let delta = match kind {
            Open::Text => ChunkType::TextDelta,
            Open::Thought => ChunkType::ReasoningDelta,
        };
        out.push(chunk(delta, Some(index), Some(&t.text)));
        out
    }

    /// A tool call, its update or a plan: the update's own fields (less
    /// its tag) beside the chunk type, after the block still open closes.
    fn as_is(&mut self, kind: ChunkType, update: &SessionUpdate) -> Vec<Body> {
        let mut out = self.close();
        let mut extra = match serde_json::to_value(update) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        extra.remove("sessionUpdate");
        out.push(Body::Chunk(Chunk {
            chunk_type: kind,
            block_idx: None,
            delta: None,
            partial_json: None,
            usage: None,
            extra,
        }));
        out
    }
}

fn chunk(kind: ChunkType, index: Option<u64>, delta: Option<&str>) -> Body {
    Body::Chunk(Chunk {
        chunk_type: kind,
        block_idx: index,
        delta: delta.map(str::to_owned),
        partial_json: None,
        usage: None,
        extra: Map::new(),
    })
}

/// How a prompt's stop reason reads in a `finish`.
pub fn finish_reason(stop: &StopReason) -> FinishReason {
    match stop {
        StopReason::EndTurn => FinishReason::EndTurn,
        StopReason::MaxTokens => FinishReason::MaxTokens,
        StopReason::Refusal => FinishReason::Refusal,
        StopReason::Cancelled => FinishReason::Cancelled,
        StopReason::MaxTurnRequests => FinishReason::from("max_turn_requests"),
        other => FinishReason::from(
            serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "other".to_owned())
                .as_str(),
        ),
    }
}

/// The `finish` of a turn the agent answered with `stop`. The usage is
/// what the answer's `_meta` says (`usage` in claude's shape), else its
/// token counts (`usage`, in claude's words); the cost its `_meta`'s
/// `costUsd`; `historyCarried: false` when the sid's earlier turns did not
/// reach this session.
pub fn finish(
    stop: &StopReason,
    meta: Option<&Map<String, Value>>,
    tokens: Option<&agent_client_protocol::v1::schema::Usage>,
    history_carried: bool,
) -> Body {
    let mut extra = Map::new();
    if let Some(cost) = meta
        .and_then(|m| m.get("costUsd"))
        .filter(|v| v.is_number())
    {
        extra.insert("costUsd".into(), cost.clone());
    }
    if !history_carried {
        extra.insert("historyCarried".into(), Value::Bool(false));
    }
    Body::Finish(thrum::Finish {
        finish_reason: Some(finish_reason(stop)),
        usage: meta
            .and_then(|m| m.get("usage"))
            .filter(|u| u.is_object())
            .cloned()
            .or_else(|| tokens.map(claude_usage)),
        extra,
    })
}

/// An ACP turn's token counts in claude's words, which hum's accounting
/// reads.
fn claude_usage(u: &agent_client_protocol::v1::schema::Usage) -> Value {
    serde_json::json!({
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_read_tokens.unwrap_or(0),
        "cache_creation_input_tokens": u.cached_write_tokens.unwrap_or(0),
    })
}

/// The option that carries out a decision: allow → the first "allow"
/// option (once before always), deny → the first "reject" one; `None`
/// when the agent offered none of that kind (the ask is then cancelled).
pub fn chosen_option(options: &[PermissionOption], allow: bool) -> Option<&PermissionOption> {
    let order: [PermissionOptionKind; 2] = if allow {
        [
            PermissionOptionKind::AllowOnce,
            PermissionOptionKind::AllowAlways,
        ]
    } else {
        [
            PermissionOptionKind::RejectOnce,
            PermissionOptionKind::RejectAlways,
        ]
    };
    order
        .iter()
        .find_map(|kind| options.iter().find(|o| &o.kind == kind))
}

/// The other way, for `hum acp`: the update a thrum chunk of any hive's
/// turn is for an editor (text and thinking; an ACP hive's tool calls and
/// plans as they came; a bee tool's call, finished, as a tool call).
pub fn update_of(chunk: &Chunk) -> Option<SessionUpdate> {
    use agent_client_protocol::v1::schema::{ContentChunk, ToolCall, ToolCallStatus};
    let text = || ContentBlock::Text(TextContent::new(chunk.delta.clone().unwrap_or_default()));
    match &chunk.chunk_type {
        ChunkType::TextDelta => Some(SessionUpdate::AgentMessageChunk(ContentChunk::new(text()))),
        ChunkType::ReasoningDelta => {
            Some(SessionUpdate::AgentThoughtChunk(ContentChunk::new(text())))
        }
        ChunkType::ToolCall | ChunkType::ToolCallUpdate | ChunkType::Plan => {
            let mut fields = chunk.extra.clone();
            fields.insert(
                "sessionUpdate".into(),
                Value::String(chunk.chunk_type.to_string()),
            );
            serde_json::from_value(Value::Object(fields)).ok()
        }
        ChunkType::ToolExecuted => {
            let done = thrum::tools::ToolExecuted::of(chunk)?;
            let status = if done.is_error {
                ToolCallStatus::Failed
            } else {
                ToolCallStatus::Completed
            };
            Some(SessionUpdate::ToolCall(
                ToolCall::new(done.call_id, done.tool_name)
                    .status(status)
                    .raw_input(done.arguments)
                    .raw_output(done.output),
            ))
        }
        _ => None,
    }
}

/// The stop reason a `finish` is for an editor.
pub fn stop_reason(finish: &thrum::Finish) -> StopReason {
    match finish.finish_reason {
        Some(FinishReason::MaxTokens) => StopReason::MaxTokens,
        Some(FinishReason::Refusal) => StopReason::Refusal,
        Some(FinishReason::Cancelled) => StopReason::Cancelled,
        Some(ref other) if other.to_string() == "max_turn_requests" => StopReason::MaxTurnRequests,
        _ => StopReason::EndTurn,
    }
}

/// The MCP servers a session starts with: the cell's tool bridge, read
/// from the `--mcp-config` JSON a claude cell would get (stdio servers
/// only: the bridge is one).
pub fn mcp_servers(mcp_config: Option<&str>) -> Vec<McpServer> {
    let Some(cfg) = mcp_config.and_then(|c| serde_json::from_str::<Value>(c).ok()) else {
        return Vec::new();
    };
    let Some(servers) = cfg.get("mcpServers").and_then(Value::as_object) else {
        return Vec::new();
    };
    servers
        .iter()
        .filter_map(|(name, spec)| {
            let command = spec.get("command").and_then(Value::as_str)?;
            let args = spec
                .get("args")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Some(McpServer::Stdio(
                McpServerStdio::new(name.as_str(), command).args(args),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests;
