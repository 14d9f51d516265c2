//! Structured output (OpenAI's `response_format`): the agent is told the
//! shape with the turn's message, its final text is checked (a JSON object;
//! valid against the schema when one was given, with the `jsonschema`
//! crate), one repair turn in the same cell when it is not, and a clear
//! error in the API's shape when it still is not: never a 200 with prose.
//! Pure: reading the request's format, the instruction, the check and the
//! repair message.

use serde_json::Value;

/// The most bytes of a schema a request may give: far past any real one,
/// a bound on what goes into the agent's message.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// What shape the final answer must have.
#[derive(Debug, Clone, PartialEq)]
pub enum Wanted {
    /// Any JSON object (`json_object`).
    JsonObject,
    /// A JSON value valid against `schema` (`json_schema`).
    JsonSchema { name: String, schema: Value },
    /// A call of the client's function `name` with an input valid against
    /// its `schema` (Anthropic's `tool_choice` naming a tool: how its
    /// clients ask for structured output).
    ForcedCall { name: String, schema: Value },
}

/// Anthropic's structured output: a `tool_choice` naming one of the
/// request's tools. A schema that is not a JSON Schema is refused.
pub fn forced_call(
    choice: &super::functions::Choice,
    offered: &[super::functions::FunctionSpec],
) -> Result<Option<Wanted>, String> {
    let super::functions::Choice::Named(name) = choice else {
        return Ok(None);
    };
    let Some(spec) = offered.iter().find(|s| &s.name == name) else {
        return Ok(None);
    };
    jsonschema::validator_for(&spec.schema)
        .map_err(|e| format!("tools: {name}'s input_schema is not a JSON Schema: {e}"))?;
    Ok(Some(Wanted::ForcedCall {
        name: name.clone(),
        schema: spec.schema.clone(),
    }))
}

/// Whether the calls a response ends with have the wanted shape (a forced
/// call of the right tool with a valid input); other shapes ask for none.
pub fn check_calls(w: &Wanted, calls: &[thrum::ToolCall]) -> Result<(), String> {
    let Wanted::ForcedCall { name, schema } = w else {
        return Ok(());
    };
    let Some(call) = calls.iter().find(|c| &c.tool_name == name) else {
        return Err(format!("the agent did not call {name}"));
    };
    let input = if call.args.is_null() {
        serde_json::json!({})
    } else {
        call.args.clone()
    };
    jsonschema::validate(schema, &input)
        .map_err(|e| format!("the input of {name} does not match its schema: {e}"))
}

/// Reads OpenAI's `response_format`: `{"type": "text"}` (or none) asks for
/// nothing; a schema that is not a valid JSON Schema is refused.
pub fn read_openai(v: Option<&Value>) -> Result<Option<Wanted>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Wanted::JsonObject)),
        Some("json_schema") => {
            let spec = v
                .get("json_schema")
                .ok_or("response_format: json_schema needs a json_schema object")?;
            let name = spec
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("answer")
                .to_owned();
            let schema = spec
                .get("schema")
                .cloned()
                .ok_or("response_format: json_schema.schema is required")?;
            if schema.to_string().len() > MAX_SCHEMA_BYTES {
                return Err(format!(
                    "response_format: the schema is over {MAX_SCHEMA_BYTES} bytes"
                ));
            }
            jsonschema::validator_for(&schema)
                .map_err(|e| format!("response_format: not a JSON Schema: {e}"))?;
            Ok(Some(Wanted::JsonSchema { name, schema }))
        }
        other => Err(format!(
            "response_format: type {} is not text, json_object or json_schema",
            other.map_or_else(|| "(none)".to_owned(), |t| format!("{t:?}"))
        )),
    }
}

/// What the agent is told with the turn's message (a forced call is told
/// by its `tool_choice` already).
pub fn instruction(w: &Wanted) -> Option<String> {
    Some(match w {
        Wanted::ForcedCall { .. } => return None,
        Wanted::JsonObject => "Answer with a single JSON object and nothing else: no prose, no code fences.".into(),
        Wanted::JsonSchema { name, schema } => format!(
            "Answer with a single JSON value named {name} and nothing else (no prose, no code fences), valid against this JSON Schema: {schema}"
        ),
    })
}

/// The answer's JSON, as text, when `text` has the wanted shape; else why
/// not. A fence around the JSON (```json … ```) is taken off.
pub fn check(w: &Wanted, text: &str) -> Result<String, String> {
    if let Wanted::ForcedCall { name, .. } = w {
        return Err(format!(
            "the agent answered with text instead of calling {name}"
        ));
    }
    let body = unfenced(text.trim());
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    match w {
        Wanted::JsonObject if !value.is_object() => {
            Err("the answer is JSON but not an object".into())
        }
        Wanted::JsonObject => Ok(body.to_owned()),
        Wanted::JsonSchema { schema, .. } => match jsonschema::validate(schema, &value) {
            Ok(()) => Ok(body.to_owned()),
            Err(e) => Err(format!("the answer does not match the schema: {e}")),
        },
        Wanted::ForcedCall { .. } => Err("a forced call is not a text".into()),
    }
}

fn unfenced(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// The repair turn's message.
pub fn repair(w: &Wanted, why: &str) -> String {
    let rule = match w {
        Wanted::ForcedCall { name, .. } => format!(
            "You must answer this message by calling the tool {name}, with an input valid against its schema."
        ),
        other => instruction(other).unwrap_or_default(),
    };
    format!("Your last answer cannot be used: {why}. {rule}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Wanted {
        read_openai(Some(&json!({"type": "json_schema", "json_schema": {"name": "w",
            "schema": {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
                       "required": ["city", "temp"]}}})))
        .unwrap()
        .unwrap()
    }

    #[test]
    fn a_format_reads_from_openais_three_types_and_a_bad_schema_is_refused() {
        assert_eq!(read_openai(None), Ok(None));
        assert_eq!(read_openai(Some(&json!({"type": "text"}))), Ok(None));
        assert_eq!(
            read_openai(Some(&json!({"type": "json_object"}))),
            Ok(Some(Wanted::JsonObject))
        );
        assert!(matches!(schema(), Wanted::JsonSchema { .. }));
        for bad in [
            json!({"type": "xml"}),
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            json!({"type": "json_schema", "json_schema": {"schema": {"type": 5}}}),
        ] {
            assert!(read_openai(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_named_tool_choice_is_a_forced_call_whose_input_is_checked() {
        use super::super::functions::{Choice, FunctionSpec};
        let spec = FunctionSpec {
            name: "record".into(),
            description: None,
            schema: json!({"type": "object", "required": ["temp"], "properties": {"temp": {"type": "integer"}}}),
        };
        let named = Choice::Named("record".into());
        let w = forced_call(&named, std::slice::from_ref(&spec))
            .unwrap()
            .unwrap();
        assert_eq!(
            forced_call(&Choice::Auto, std::slice::from_ref(&spec)),
            Ok(None)
        );
        let call = |name: &str, args: Value| thrum::ToolCall {
            call_id: "c".into(),
            tool_name: name.into(),
            args,
            usage: None,
            extra: Default::default(),
        };
        assert_eq!(
            check_calls(&w, &[call("record", json!({"temp": 3}))]),
            Ok(())
        );
        assert!(check_calls(&w, &[call("record", json!({"temp": "hot"}))])
            .unwrap_err()
            .contains("schema"));
        assert!(check_calls(&w, &[call("other", json!({}))])
            .unwrap_err()
            .contains("did not call record"));
        assert!(check(&w, "prose")
            .unwrap_err()
            .contains("instead of calling"));
        assert_eq!(instruction(&w), None);
        // Other shapes ask nothing of calls.
        assert_eq!(
            check_calls(&Wanted::JsonObject, &[call("x", json!(1))]),
            Ok(())
        );
        let bad = FunctionSpec {
            schema: json!({"type": 7}),
            ..spec
        };
        assert!(forced_call(&named, &[bad]).is_err());
    }

    #[test]
    fn an_answer_is_checked_against_the_shape_and_a_fence_is_taken_off() {
        let w = schema();
        assert_eq!(
            check(&w, r#"{"city": "Oslo", "temp": 3}"#).as_deref(),
            Ok(r#"{"city": "Oslo", "temp": 3}"#)
        );
        assert_eq!(
            check(&w, "```json\n{\"city\": \"Oslo\", \"temp\": 3}\n```").as_deref(),
            Ok(r#"{"city": "Oslo", "temp": 3}"#)
        );
        assert!(check(&w, "It is 3 degrees in Oslo.")
            .unwrap_err()
            .contains("not JSON"));
        assert!(check(&w, r#"{"city": "Oslo"}"#)
            .unwrap_err()
            .contains("schema"));
        assert!(check(&Wanted::JsonObject, "[1]").is_err());
        assert!(check(&Wanted::JsonObject, r#"{"a": 1}"#).is_ok());
        let fix = repair(&w, "the answer is not JSON");
        assert!(
            fix.contains("not JSON") && fix.contains("\"city\""),
            "{fix}"
        );
    }
}
