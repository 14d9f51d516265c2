//! The request bodies the gateway reads, typed: what each field may be is
//! said once, here, and a body that does not fit gets the API's own
//! bad-request error naming the field (`messages[2].role: …`).

use serde::Deserialize;
use serde_json::Value;

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    /// The client's functions the model may call.
    #[serde(default)]
    pub tools: Option<Vec<OpenAiTool>>,
    /// `"none"`, `"auto"`, `"required"` or `{"type": "function", "function":
    /// {"name": …}}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// `{"type": "text" | "json_object" | "json_schema", …}`.
    #[serde(default)]
    pub response_format: Option<Value>,
}

/// `{"type": "function", "function": {name, description, parameters}}`.
#[derive(Debug, Deserialize)]
pub struct OpenAiTool {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: OpenAiFunction,
}

#[derive(Debug, Deserialize)]
pub struct OpenAiFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// A string, a list of parts, or null (an assistant turn that only
    /// called tools).
    #[serde(default)]
    pub content: Content,
    /// An assistant message's calls, as the gateway returned them.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// A `tool` message: the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// `POST /v1/messages`.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<AnthropicMessage>,
    /// A string or a list of text blocks.
    #[serde(default)]
    pub system: Content,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub metadata: Metadata,
    /// The client's tools: `{name, description, input_schema}` each.
    #[serde(default)]
    pub tools: Option<Vec<AnthropicTool>>,
    /// `{"type": "auto" | "any" | "none" | "tool", "name"?}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct AnthropicTool {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct AnthropicMessage {
    pub role: String,
    #[serde(default)]
    pub content: Content,
}

#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// A message's content in either API: a string, or blocks/parts of which
/// only the text is read; anything else (null, a shape hum does not read)
/// has no text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Block>),
    Other(Value),
}

impl Default for Content {
    fn default() -> Self {
        Content::Other(Value::Null)
    }
}

#[derive(Debug, Deserialize)]
pub struct Block {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub text: Option<Value>,
    /// A `tool_result` block: the `tool_use` it answers.
    #[serde(default)]
    pub tool_use_id: Option<String>,
    /// A `tool_result` block's content: a string or text blocks.
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub is_error: Option<bool>,
}

impl Block {
    /// A `tool_result` block as (call id, output, is_error).
    pub fn tool_result(&self) -> Option<(String, String, bool)> {
        if self.kind.as_deref() != Some("tool_result") {
            return None;
        }
        let id = self.tool_use_id.clone()?;
        let output = match &self.content {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
            Some(other) if !other.is_null() => other.to_string(),
            _ => String::new(),
        };
        Some((id, output, self.is_error.unwrap_or(false)))
    }
}

impl Content {
    /// The text: the string, or the blocks' texts joined; with
    /// `text_blocks_only`, only blocks of `type: "text"` count (Anthropic),
    /// else every part with a string `text` (OpenAI).
    pub fn text(&self, text_blocks_only: bool) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Blocks(blocks) => blocks
                .iter()
                .filter(|b| !text_blocks_only || b.kind.as_deref() == Some("text"))
                .filter_map(|b| b.text.as_ref().and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            Content::Other(_) => String::new(),
        }
    }
}

/// Reads a request body as `T`, or says which field is wrong and how.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            format!("the body is not JSON: {inner}")
        } else if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_of_either_shape_reads_as_text() {
        let r: ChatRequest = parse(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"},{"text":"b"}]},{"role":"assistant","content":null}]}"#,
        )
        .unwrap();
        assert_eq!(r.messages[0].content.text(false), "ab");
        assert_eq!(r.messages[1].content.text(false), "");
        assert_eq!(r.stream, None);
        let a: MessagesRequest = parse(
            br#"{"model":"m","system":[{"type":"text","text":"be brief"}],"metadata":{"user_id":"u1"},"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"tool_result","text":"no"}]}]}"#,
        )
        .unwrap();
        assert_eq!(a.messages[0].content.text(true), "x");
        assert_eq!(a.system.text(true), "be brief");
        assert_eq!(a.metadata.user_id.as_deref(), Some("u1"));
    }

    #[test]
    fn a_wrong_body_names_the_field() {
        let e = parse::<ChatRequest>(br#"{"model":"m","messages":[{"role":5}]}"#).unwrap_err();
        assert!(e.starts_with("messages[0].role:"), "{e}");
        let e = parse::<ChatRequest>(br#"{"messages":[]}"#).unwrap_err();
        assert!(e.contains("model"), "{e}");
        let e = parse::<MessagesRequest>(b"{nope").unwrap_err();
        assert!(e.starts_with("the body is not JSON"), "{e}");
    }
}
