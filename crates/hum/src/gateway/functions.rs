//! The functions a client offers in its request, in either API's
//! declaration, and how its `tool_choice` narrows them: the checks and
//! shapes of function calling, pure.

use serde_json::Value;

/// A function the client offers, in either API's declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    pub description: Option<String>,
    pub schema: Value,
}

/// The results of a previous reply's calls that a conversation ends with:
/// its trailing messages that `answer` reads as results, in order.
pub fn trailing_results<M>(
    messages: &[M],
    answer: impl Fn(&M) -> Option<super::calls::ToolAnswer>,
) -> Vec<super::calls::ToolAnswer> {
    let mut answers: Vec<_> = messages.iter().rev().map_while(&answer).collect();
    answers.reverse();
    answers
}

impl FunctionSpec {
    /// A function as a request offers it; no parameters (or null) means
    /// it takes none.
    pub fn new(name: &str, description: Option<&str>, parameters: Option<&Value>) -> FunctionSpec {
        FunctionSpec {
            name: name.to_owned(),
            description: description.map(str::to_owned),
            schema: parameters
                .filter(|p| !p.is_null())
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        }
    }

    /// As an asker tool of a prompt (`{name, description, inputSchema}`).
    pub fn asker_tool(&self) -> Value {
        let mut t = thrum::tools::ToolSpec::new(self.name.clone(), self.description.clone());
        if let Value::Object(schema) = &self.schema {
            t.input_schema = schema.clone();
        }
        t.to_value()
    }
}

/// What `tool_choice` asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Auto,
    /// The tools are not offered at all.
    None,
    /// Some tool must be called (OpenAI `required`, Anthropic `any`).
    Required,
    /// This tool must be called.
    Named(String),
}

impl Choice {
    /// OpenAI's `tool_choice`.
    pub fn openai(v: Option<&Value>) -> Result<Choice, String> {
        match v {
            None | Some(Value::Null) => Ok(Choice::Auto),
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Ok(Choice::Auto),
                "none" => Ok(Choice::None),
                "required" => Ok(Choice::Required),
                other => Err(format!("tool_choice: unknown value {other:?}")),
            },
            Some(v) => v["function"]["name"]
                .as_str()
                .map(|n| Choice::Named(n.to_owned()))
                .ok_or_else(|| "tool_choice: expected a string or {\"type\": \"function\", \"function\": {\"name\": …}}".to_owned()),
        }
    }

    /// Anthropic's `tool_choice`.
    pub fn anthropic(v: Option<&Value>) -> Result<Choice, String> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(Choice::Auto);
        };
        match v["type"].as_str() {
            Some("auto") => Ok(Choice::Auto),
            Some("none") => Ok(Choice::None),
            Some("any") => Ok(Choice::Required),
            Some("tool") => v["name"]
                .as_str()
                .map(|n| Choice::Named(n.to_owned()))
                .ok_or_else(|| "tool_choice: type tool needs a name".to_owned()),
            _ => Err("tool_choice.type: expected auto, any, tool or none".to_owned()),
        }
    }

    /// What the agent is told, since the CLI cannot be forced to call a
    /// tool: an instruction added to the turn's message (a system prompt
    /// reaches a cell only when it starts; a warm cell would miss it).
    pub fn instruction(&self, specs: &[FunctionSpec]) -> Option<String> {
        match self {
            Choice::Auto | Choice::None => None,
            Choice::Required => Some(format!(
                "You must answer this message by calling at least one of these tools: {}.",
                specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Choice::Named(n) => Some(format!(
                "You must answer this message by calling the tool {n}."
            )),
        }
    }
}

/// The turn's text with `instruction` after it, set apart.
pub fn with_instruction(prompt: &str, instruction: Option<String>) -> String {
    match instruction {
        Some(rule) => format!("{prompt}\n\n({rule})"),
        None => prompt.to_owned(),
    }
}

/// The most functions one request may offer: far past what any agent
/// framework sends, and a bound on what humd and the cell must list.
pub const MAX_FUNCTIONS: usize = 256;

/// A name both APIs accept and the CLI lists as an MCP tool: the one rule
/// of every tool name (the bridge's own permission tool apart, refused
/// below with its own message).
fn valid_name(name: &str) -> bool {
    name == thrum::tools::PERMIT_TOOL || thrum::tools::valid_tool_name(name)
}

/// The tools a request offers its turn: none with `tool_choice: none`, a
/// named choice that names no offered tool is an error, and so is a name
/// that is malformed, repeated, or the bridge's own permission tool.
pub fn offered(specs: Vec<FunctionSpec>, choice: &Choice) -> Result<Vec<FunctionSpec>, String> {
    if specs.len() > MAX_FUNCTIONS {
        return Err(format!(
            "tools: {} functions; at most {MAX_FUNCTIONS}",
            specs.len()
        ));
    }
    if let Some(bad) = specs.iter().find(|s| !valid_name(&s.name)) {
        return Err(format!(
            "tools: {:?} is not a valid function name (1-64 letters, digits, _ or -)",
            bad.name
        ));
    }
    if let Some(own) = specs.iter().find(|s| s.name == thrum::tools::PERMIT_TOOL) {
        return Err(format!("tools: {:?} is reserved by hum", own.name));
    }
    if let Choice::Named(n) = choice {
        if !specs.iter().any(|s| &s.name == n) {
            return Err(format!("tool_choice names {n:?}, which is not in tools"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for s in &specs {
        if !seen.insert(&s.name) {
            return Err(format!("tools: {:?} is declared twice", s.name));
        }
    }
    Ok(if *choice == Choice::None {
        Vec::new()
    } else {
        specs
    })
}

/// The usage the CLI reported for the model call that made `calls` (the
/// worker puts it on each `tool-call`); null when none came.
pub fn usage_of(calls: &[thrum::ToolCall]) -> thrum::Usage {
    calls
        .iter()
        .rev()
        .find_map(|c| c.usage.as_ref().filter(|u| u.is_object()))
        .map(thrum::Usage::read)
        .unwrap_or_default()
}

/// A call's arguments in two pieces, as a streamed response sends them
/// (clients must join the pieces; a test of ours proves the official ones
/// do). Cut at a character boundary.
pub fn halves(s: &str) -> (&str, &str) {
    let cut = (s.len().div_ceil(2)..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s.split_at(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &str) -> FunctionSpec {
        FunctionSpec {
            name: name.into(),
            description: None,
            schema: json!({"type": "object"}),
        }
    }

    #[test]
    fn tool_choice_in_both_apis() {
        assert_eq!(Choice::openai(None), Ok(Choice::Auto));
        assert_eq!(Choice::openai(Some(&json!("none"))), Ok(Choice::None));
        assert_eq!(
            Choice::openai(Some(&json!("required"))),
            Ok(Choice::Required)
        );
        assert_eq!(
            Choice::openai(Some(
                &json!({"type": "function", "function": {"name": "f"}})
            )),
            Ok(Choice::Named("f".into()))
        );
        assert!(Choice::openai(Some(&json!("sometimes"))).is_err());
        assert_eq!(
            Choice::anthropic(Some(&json!({"type": "any"}))),
            Ok(Choice::Required)
        );
        assert_eq!(
            Choice::anthropic(Some(&json!({"type": "tool", "name": "g"}))),
            Ok(Choice::Named("g".into()))
        );
        assert!(Choice::anthropic(Some(&json!({"type": "tool"}))).is_err());
    }

    #[test]
    fn none_offers_nothing_and_a_named_choice_must_be_offered() {
        let specs = vec![spec("a"), spec("b")];
        assert!(offered(specs.clone(), &Choice::None).unwrap().is_empty());
        assert_eq!(offered(specs.clone(), &Choice::Auto).unwrap().len(), 2);
        assert!(offered(specs.clone(), &Choice::Named("c".into())).is_err());
        assert!(offered(vec![spec("a"), spec("a")], &Choice::Auto).is_err());
        for bad in [
            "",
            "has space",
            "x".repeat(65).as_str(),
            "é",
            "permission_prompt",
        ] {
            assert!(offered(vec![spec(bad)], &Choice::Auto).is_err(), "{bad:?}");
        }
        assert!(offered(vec![spec(&"x".repeat(64)), spec("a-b_9")], &Choice::Auto).is_ok());
        let many: Vec<FunctionSpec> = (0..=MAX_FUNCTIONS)
            .map(|i| spec(&format!("f{i}")))
            .collect();
        assert!(offered(many, &Choice::Auto).is_err());
        assert!(Choice::Named("b".into())
            .instruction(&specs)
            .unwrap()
            .contains("the tool b"));
        assert!(Choice::Required
            .instruction(&specs)
            .unwrap()
            .contains("a, b"));
        assert_eq!(Choice::Auto.instruction(&specs), None);
        assert_eq!(
            spec("a").asker_tool(),
            json!({"name": "a", "inputSchema": {"type": "object"}})
        );
    }
}
