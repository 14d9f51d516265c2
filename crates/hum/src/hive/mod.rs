//! # Hive adapters: how a kind of agent CLI is started and understood
//!
//! The built-in hives speak claude's stream-json: `claude-cli` runs the real `claude`
//! binary, `sim` runs `hum sim-agent`. The adapter builds the argv (no shell,
//! every value as `--flag=value`), maps a sid to the CLI's session id so a
//! conversation survives its cell, and translates the CLI's stdout into
//! thrum tones.
//!
//! - [`acp`]: agents that speak the Agent Client Protocol instead: the
//!   mapping both ways, and the session ids they give.
//! - [`argv`]: the command line, and the checks on what goes into it.
//! - [`capability`]: what a forager's `provides` turns off of the agent's
//!   own tools (one table).
//! - [`mod@env`]: the environment a cell starts with (an allow-list).
//! - [`session`]: sid → session id, resume or create.
//! - [`stream_json`]: claude's stdout lines, decoded once into types.
//! - [`translate`]: stream-json events → `session-ready`, `chunk`, `finish`,
//!   `error`.
//! - [`meter`]: claude's per-process cost and model usage turned into each
//!   turn's share.
//! - [`launch`]: what a cell starts with (a pure function of the prompt,
//!   the hive and the config), and the stream-json line a prompt becomes.

pub mod acp;
pub mod argv;
pub mod builtin;
pub mod capability;
pub mod env;
pub mod launch;
pub mod meter;
pub mod session;
pub mod stream_json;
pub mod translate;

use std::path::PathBuf;

/// Which agent CLI a hive runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hive {
    /// The hive's name on the wire (`claude-cli`, `sim`).
    pub name: String,
    /// The program to run.
    pub program: PathBuf,
    /// Arguments placed before claude's own (`sim-agent` for the simulator).
    pub prefix_args: Vec<String>,
    /// Model ids this hive advertises.
    pub models: Vec<String>,
    /// The hive's configured `env`, laid over the allow-listed environment
    /// its cells start from ([`env::cell_env`]).
    pub env: Vec<(String, String)>,
    /// `--permission-mode` for its cells, when set.
    pub permission_mode: Option<String>,
    /// A permission ask nobody answers is allowed (else denied).
    pub permit_by_default: bool,
    /// The agent's own tools its cells may have (a prompt may ask for
    /// fewer).
    pub builtin_tools: builtin::BuiltinTools,
    /// How its cells are spoken to.
    pub protocol: Protocol,
}

/// The language a hive's CLI speaks on its stdin and stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// claude's `--input-format/--output-format stream-json` (claude, the
    /// simulator): hum builds the argv, the CLI keeps sessions by the id
    /// hum gives it.
    #[default]
    StreamJson,
    /// The Agent Client Protocol (JSON-RPC on stdio, [`acp`]): the
    /// configured command as it is, sessions by the id the agent gives.
    Acp,
}

/// A captured stdout of claude 2.1.332 (`tests/fixtures`), one JSON value
/// per line, for the hive's tests.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Vec<serde_json::Value> {
    let path = format!(
        "{}/tests/fixtures/claude-2.1.332/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
