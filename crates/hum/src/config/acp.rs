//! `acp`: agents that speak the Agent Client Protocol, each a hive of its
//! own (`"acp": {"gemini": {"command": ["gemini", "--experimental-acp"],
//! "models": ["gemini-2.5-flash"]}}`).

use super::PermitDefault;
use serde::Deserialize;
use std::collections::BTreeMap;

/// ACP hives one file may name: far more than one machine runs.
pub const MAX_ACP_HIVES: usize = 32;

/// Arguments of an ACP agent's command: enough for any launcher, bounded
/// so a file cannot make a worker build an argv of millions.
const MAX_COMMAND_ARGS: usize = 64;

/// Names the built-in hives use on the wire, which an ACP hive may not take.
const RESERVED: [&str; 3] = ["claude", "claude-cli", "sim"];

/// One ACP agent, as hum.json names it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AcpHive {
    /// The agent's program and its arguments (no shell); the program is
    /// looked up on PATH when not a path.
    pub command: Vec<String>,
    /// The model ids prompts name to reach this agent.
    pub models: Vec<String>,
    /// Added to each cell's environment (the agent's API key, …).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What a permission ask nobody answers gets.
    #[serde(default)]
    pub permission_default: PermitDefault,
    /// The agent's own tools its cells may have. ACP has no way to narrow
    /// them, so only `"default"` is accepted (see the README).
    #[serde(default)]
    pub builtin_tools: crate::hive::builtin::BuiltinTools,
    /// Off without removing it.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// The first thing wrong with the `acp` section, as (key, why).
pub(super) fn check(hives: &BTreeMap<String, AcpHive>) -> Result<(), (String, String)> {
    if hives.len() > MAX_ACP_HIVES {
        return Err((
            "acp".into(),
            format!("at most {MAX_ACP_HIVES} hives, not {}", hives.len()),
        ));
    }
    for (name, hive) in hives {
        let key = |k: &str| format!("acp.{}{k}", crate::logsafe::escape(name));
        if !valid_name(name) || RESERVED.contains(&name.as_str()) {
            return Err((
                key(""),
                format!(
                    "a hive's name is 1-64 of A-Z a-z 0-9 _ - and not one of {}",
                    RESERVED.join(", ")
                ),
            ));
        }
        match hive.command.first() {
            None => return Err((key(".command"), "names no program".into())),
            Some(p) if p.is_empty() => {
                return Err((key(".command"), "its program is empty".into()))
            }
            _ => {}
        }
        if hive.command.len() > MAX_COMMAND_ARGS {
            return Err((key(".command"), format!("at most {MAX_COMMAND_ARGS} words")));
        }
        if hive.command.iter().any(|a| a.contains('\0')) {
            return Err((key(".command"), "must not hold a NUL".into()));
        }
        if hive.models.is_empty() {
            return Err((key(".models"), "is empty: the hive serves no model".into()));
        }
        if let Some(m) = hive
            .models
            .iter()
            .find(|m| !crate::hive::argv::valid_model_id(m))
        {
            return Err((key(".models"), format!("{m:?} is not a model id")));
        }
        for (k, v) in &hive.env {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                return Err((
                    key(&format!(".env.{}", crate::logsafe::escape(k))),
                    "names and values must not hold a NUL (nor a name an '=' or nothing)".into(),
                ));
            }
        }
        if hive.builtin_tools != crate::hive::builtin::BuiltinTools::Default {
            return Err((
                key(".builtinTools"),
                "an ACP agent's own tools cannot be narrowed (ACP has no way to): only \"default\""
                    .into(),
            ));
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
