//! Which of the agent's own tools (claude's Bash, Read, Write, …) a cell
//! has: the CLI's default set, or exactly some (none at all when the list
//! is empty), passed as claude's `--tools`. Set per hive in hum.json
//! (`builtinTools`: `"default"`, `"none"` or a list); a prompt may ask for
//! fewer (the gateway asks for `gateway.builtinTools`, `"none"` unless
//! hum.json says otherwise: a chat API caller gets a model with *its*
//! tools, not the server's files), never for more.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Tool names in a list at most: far more than any CLI has.
const MAX_NAMES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BuiltinTools {
    /// The CLI's own default set (no `--tools`).
    #[default]
    Default,
    /// Exactly these (sorted, each once); none when empty.
    Only(Vec<String>),
}

impl BuiltinTools {
    pub fn none() -> BuiltinTools {
        BuiltinTools::Only(Vec::new())
    }

    /// Reads `"default"`, `"none"` or a list of tool names.
    pub fn read(v: &Value) -> Result<BuiltinTools, String> {
        match v {
            Value::String(s) if s == "default" => Ok(BuiltinTools::Default),
            Value::String(s) if s == "none" => Ok(BuiltinTools::none()),
            Value::Array(items) if items.len() <= MAX_NAMES => {
                let mut names = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(n) if valid_name(n) => names.push(n.to_owned()),
                        _ => return Err(format!("{item} is not a tool name")),
                    }
                }
                names.sort();
                names.dedup();
                Ok(BuiltinTools::Only(names))
            }
            Value::Array(_) => Err(format!("at most {MAX_NAMES} tool names")),
            other => Err(format!(
                "must be \"default\", \"none\" or a list of tool names, not {other}"
            )),
        }
    }

    /// What a cell of a hive with this set has when its prompt asks for
    /// `asked`: never more than the hive's.
    pub fn narrowed_by(&self, asked: &BuiltinTools) -> BuiltinTools {
        match (self, asked) {
            (BuiltinTools::Default, asked) => asked.clone(),
            (own, BuiltinTools::Default) => own.clone(),
            (BuiltinTools::Only(own), BuiltinTools::Only(asked)) => {
                BuiltinTools::Only(own.iter().filter(|t| asked.contains(t)).cloned().collect())
            }
        }
    }

    /// The value of claude's `--tools`: none for the default set, `""` for
    /// no tools, else the names comma-separated.
    pub fn flag(&self) -> Option<String> {
        match self {
            BuiltinTools::Default => None,
            BuiltinTools::Only(names) => Some(names.join(",")),
        }
    }

    /// Whether the tool `name` is among these (for a set that is not the
    /// CLI's default).
    pub fn has(&self, name: &str) -> bool {
        match self {
            BuiltinTools::Default => true,
            BuiltinTools::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// A built-in tool's name: letters, digits and `_` (`Bash`, `WebFetch`).
fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl<'de> Deserialize<'de> for BuiltinTools {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BuiltinTools::read(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for BuiltinTools {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BuiltinTools::Default => s.serialize_str("default"),
            BuiltinTools::Only(names) if names.is_empty() => s.serialize_str("none"),
            BuiltinTools::Only(names) => names.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_set_reads_from_default_none_or_names_and_refuses_anything_else() {
        assert_eq!(
            BuiltinTools::read(&json!("default")),
            Ok(BuiltinTools::Default)
        );
        assert_eq!(BuiltinTools::read(&json!("none")), Ok(BuiltinTools::none()));
        assert_eq!(
            BuiltinTools::read(&json!(["Read", "Grep", "Read"])),
            Ok(BuiltinTools::Only(vec!["Grep".into(), "Read".into()]))
        );
        for bad in [
            json!("all"),
            json!(3),
            json!(["Bash(rm *)"]),
            json!([""]),
            json!(["a,b"]),
        ] {
            assert!(BuiltinTools::read(&bad).is_err(), "{bad}");
        }
        let round: BuiltinTools = serde_json::from_value(json!("none")).unwrap();
        assert_eq!(serde_json::to_value(&round).unwrap(), json!("none"));
    }

    #[test]
    fn a_prompt_may_ask_for_fewer_tools_than_its_hive_never_more() {
        let hive = BuiltinTools::Only(vec!["Grep".into(), "Read".into()]);
        let asked = BuiltinTools::Only(vec!["Bash".into(), "Read".into()]);
        assert_eq!(
            hive.narrowed_by(&asked),
            BuiltinTools::Only(vec!["Read".into()])
        );
        assert_eq!(hive.narrowed_by(&BuiltinTools::Default), hive);
        assert_eq!(BuiltinTools::Default.narrowed_by(&asked), asked);
        assert_eq!(
            BuiltinTools::none().narrowed_by(&BuiltinTools::Default),
            BuiltinTools::none()
        );
        assert_eq!(BuiltinTools::Default.flag(), None);
        assert_eq!(BuiltinTools::none().flag(), Some(String::new()));
        assert_eq!(hive.flag(), Some("Grep,Read".into()));
    }
}
