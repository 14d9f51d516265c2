//! The tool vocabulary every side shares: what a tool's name may be, and
//! the one name reserved for claude's permission prompt. Foragers, askers'
//! prompts and gateway clients offer tools; humd routes their calls by
//! name; the worker lends them to the agent. One rule for all of them.

use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
