//! The tool vocabulary every side shares: what a tool's name may be, and
//! the one name reserved for claude's permission prompt. Foragers, askers'
//! prompts and gateway clients offer tools; humd routes their calls by
//! name; the worker lends them to the agent. One rule for all of them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The worker's own tool: claude's `--permission-prompt-tool`
/// (`mcp__hum__permission_prompt`), which turns each permission ask into a
/// `permission-ask` to the turn's asker. No bee may offer it.
pub const PERMIT_TOOL: &str = "permission_prompt";

/// The one rule for a tool's name, whoever offers it (a forager, an
/// asker's prompt, a gateway client's function): 1–64 letters, digits,
/// `_` or `-`, as the model APIs and the CLI's MCP listing accept (a name
/// the CLI refuses would take the bridge's other tools down with it), not
/// the permission tool, not `mcp__…`.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && name != PERMIT_TOOL
        // claude names bridge tools `mcp__hum__<name>`: a name of that
        // shape would pass for another server's tool.
        && !name.starts_with("mcp__")
}

/// A tool spec's name, if it has a valid one (see [`valid_tool_name`]).
pub fn tool_name(spec: &Value) -> Option<&str> {
    spec.get("name")
        .and_then(Value::as_str)
        .filter(|n| valid_tool_name(n))
}

/// A tool as a bee offers it (a forager's hello, a prompt's `tools`):
/// its name, what it does, and the JSON schema of its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The input's schema; an object schema of no properties when the
    /// offer had none.
    pub input_schema: Map<String, Value>,
    /// Fields beside these, as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The names older bees gave the schema (thrum 0.7's `input_schema`, the
/// model APIs' `parameters`), after hum's own `inputSchema`.
const SCHEMA_KEYS: [&str; 3] = ["inputSchema", "input_schema", "parameters"];

impl ToolSpec {
    /// A tool of `name` taking objects of any shape.
    pub fn new(name: impl Into<String>, description: Option<String>) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description,
            input_schema: any_object(),
            extra: Map::new(),
        }
    }

    /// Reads an offered spec: `None` without a valid name (see
    /// [`valid_tool_name`]; `allow` names one more that may pass, the permit
    /// tool for the bridge's own listing). The schema is the first object of
    /// `inputSchema`, `input_schema` or `parameters`.
    pub fn read(spec: &Value, allow: Option<&str>) -> Option<ToolSpec> {
        let obj = spec.as_object()?;
        let name = obj.get("name")?.as_str()?;
        if !valid_tool_name(name) && Some(name) != allow {
            return None;
        }
        let input_schema = SCHEMA_KEYS
            .iter()
            .find_map(|k| obj.get(*k)?.as_object().cloned())
            .unwrap_or_else(any_object);
        let extra = obj
            .iter()
            .filter(|(k, _)| {
                !matches!(k.as_str(), "name" | "description") && !SCHEMA_KEYS.contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(ToolSpec {
            name: name.to_owned(),
            description: obj
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            input_schema,
            extra,
        })
    }

    /// As JSON, in hum's spelling (`inputSchema`).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// What to call an offered spec in an error, whatever its name is: its
/// name (cut to 80 characters), its name's JSON when that is not a
/// string, or `(no name)`.
pub fn shown_name(spec: &Value) -> String {
    match spec.get("name") {
        Some(Value::String(n)) => n.chars().take(80).collect(),
        Some(other) => other.to_string().chars().take(80).collect(),
        None => "(no name)".to_owned(),
    }
}

/// A `chunk` of type `tool_executed`: humd shows a sid's asker a call its
/// agent made and what it got back (as the system hum replaces did).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ToolExecuted {
    pub call_id: String,
    pub tool_name: String,
    pub arguments: Value,
    pub output: Value,
    pub is_error: bool,
}

impl ToolExecuted {
    /// As the chunk it travels in.
    pub fn to_chunk(&self) -> crate::Chunk {
        let extra = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        crate::Chunk {
            chunk_type: crate::ChunkType::ToolExecuted,
            block_idx: None,
            delta: None,
            partial_json: None,
            usage: None,
            extra,
        }
    }

    /// Reads a `tool_executed` chunk; a field of another shape reads as
    /// absent, another chunk as none.
    pub fn of(chunk: &crate::Chunk) -> Option<ToolExecuted> {
        if chunk.chunk_type != crate::ChunkType::ToolExecuted {
            return None;
        }
        let field = |k: &str| chunk.extra.get(k).cloned().unwrap_or(Value::Null);
        Some(ToolExecuted {
            call_id: field("callId").as_str().unwrap_or_default().to_owned(),
            tool_name: field("toolName").as_str().unwrap_or_default().to_owned(),
            arguments: field("arguments"),
            output: field("output"),
            is_error: field("isError") == Value::Bool(true),
        })
    }
}

fn any_object() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), Value::String("object".into()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tool_executed_chunk_reads_back_as_it_was_written() {
        let done = ToolExecuted {
            call_id: "call-1".into(),
            tool_name: "weather".into(),
            arguments: json!({"city": "Oslo"}),
            output: json!("rain"),
            is_error: true,
        };
        let chunk = done.to_chunk();
        // The wire's spelling, as the old system sent it.
        let wire = serde_json::to_value(&chunk).unwrap();
        assert_eq!(
            wire,
            json!({"chunkType": "tool_executed", "callId": "call-1", "toolName": "weather",
                   "arguments": {"city": "Oslo"}, "output": "rain", "isError": true})
        );
        let back: crate::Chunk = serde_json::from_value(wire).unwrap();
        assert_eq!(ToolExecuted::of(&back), Some(done));
        // Odd fields read as absent; another chunk as none.
        let odd: crate::Chunk = serde_json::from_value(
            json!({"chunkType": "tool_executed", "toolName": 7, "isError": "yes"}),
        )
        .unwrap();
        assert_eq!(ToolExecuted::of(&odd), Some(ToolExecuted::default()));
        let text: crate::Chunk =
            serde_json::from_value(json!({"chunkType": "text_delta", "delta": "x"})).unwrap();
        assert_eq!(ToolExecuted::of(&text), None);
        assert_eq!(shown_name(&json!({"name": 5})), "5");
        assert_eq!(shown_name(&json!({})), "(no name)");
    }

    #[test]
    fn a_tool_name_is_short_plain_and_not_reserved() {
        assert!(valid_tool_name("read_file") && valid_tool_name("a-b-1"));
        for bad in [
            "",
            "a b",
            "x.y",
            PERMIT_TOOL,
            "mcp__hum__x",
            &"n".repeat(65),
        ] {
            assert!(!valid_tool_name(bad), "{bad:?}");
        }
        assert_eq!(tool_name(&json!({"name": "echo"})), Some("echo"));
        assert_eq!(tool_name(&json!({"name": 3})), None);
        assert_eq!(tool_name(&json!({})), None);
    }

    #[test]
    fn a_spec_reads_its_schema_in_any_of_its_three_spellings() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "number"}}});
        for key in SCHEMA_KEYS {
            let spec =
                json!({"name": "add", "description": "a + b", key: schema.clone(), "x-kept": 1});
            let t = ToolSpec::read(&spec, None).unwrap();
            assert_eq!(Value::Object(t.input_schema.clone()), schema, "{key}");
            assert_eq!(t.description.as_deref(), Some("a + b"));
            assert_eq!(t.extra.get("x-kept"), Some(&json!(1)));
            assert_eq!(t.to_value()["inputSchema"], schema);
        }
        // hum's own spelling wins; a non-object is no schema.
        let both = json!({"name": "a", "parameters": {"type": "object", "p": 1}, "inputSchema": {"type": "object", "i": 1}});
        assert_eq!(ToolSpec::read(&both, None).unwrap().input_schema["i"], 1);
        let none = json!({"name": "a", "inputSchema": "x"});
        assert_eq!(
            Value::Object(ToolSpec::read(&none, None).unwrap().input_schema),
            json!({"type": "object"})
        );
        assert!(ToolSpec::read(&json!({"name": PERMIT_TOOL}), None).is_none());
        assert!(ToolSpec::read(&json!({"name": PERMIT_TOOL}), Some(PERMIT_TOOL)).is_some());
        assert!(ToolSpec::read(&json!("echo"), None).is_none());
    }
}
