//! The arguments claude gives the permission prompt tool (`tool_name`,
//! `input`), read leniently: a field of another shape reads as absent.

use serde::Deserialize;
use serde_json::Value;

/// What claude passes its permission prompt tool: the tool it wants to
/// run and that tool's input. A field of another shape reads as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct PermitArgs {
    #[serde(deserialize_with = "any_text")]
    tool_name: String,
    input: Option<Value>,
}

fn any_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Value::deserialize(d)?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

impl PermitArgs {
    /// The tool's name and input (an object of no fields when none came).
    pub(super) fn read(args: Value) -> (String, Value) {
        let a = PermitArgs::deserialize(&args).unwrap_or_default();
        let input = a.input.unwrap_or(Value::Object(Default::default()));
        (a.tool_name, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn odd_arguments_read_as_no_tool_and_an_empty_input() {
        assert_eq!(
            PermitArgs::read(json!({"tool_name": "Bash", "input": {"command": "ls"}})),
            ("Bash".into(), json!({"command": "ls"}))
        );
        assert_eq!(
            PermitArgs::read(json!({"tool_name": 3})),
            (String::new(), json!({}))
        );
        assert_eq!(PermitArgs::read(json!("x")), (String::new(), json!({})));
    }
}
