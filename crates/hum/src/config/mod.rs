//! The worker's configuration: `~/.config/hum/hum.json` (or `--config`).
//!
//! Every key is read and used; an unknown key or a bad value stops start-up
//! with a message naming it (`nest.maxActiveCells: invalid type: …`).
//!
//! ```json
//! {
//!   "nest": { "maxActiveCells": 8, "cellIdlePruneThresholdMs": 300000,
//!             "maxConcurrentSpawns": 2, "admissionTimeoutMs": 120000,
//!             "maxQueuedPrompts": 256, "firstEventTimeoutMs": 60000,
//!             "cancelGraceMs": 5000, "closeGraceMs": 2000, "termGraceMs": 2000,
//!             "turnIdleTimeoutMs": 600000, "maxTurnMs": null,
//!             "maxPoolRssMb": null, "maxCellRssMb": null },
//!   "claude": { "enabled": true, "path": "claude", "models": ["sonnet"],
//!               "env": { "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1" } },
//!   "sim": { "enabled": true, "models": ["sim"], "env": {} },
//!   "defaultModel": "sonnet",
//!   "cwd": "/path/where/cells/run/when/a/prompt/names/none",
//!   "containment": "auto",
//!   "budgets": { "dailyUsd": 50, "perBeeDailyUsd": 20, "perSidDailyUsd": 5,
//!                "hardStop": false },
//!   "usage": { "retentionDays": 90 },
//!   "cluster": { "nats": "nats://10.0.0.1:4222", "node": "box-1", "name": "hum",
//!                "credentialsFile": "~/.config/hum/nats.creds",
//!                "caFile": "~/.config/hum/nats-ca.pem",
//!                "heartbeatMs": 1000, "nodeTimeoutMs": 5000 }
//! }
//!
//! `budgets`, `usage` and `cluster` are read by humd (`hum daemon --config`), the
//! rest by the worker; both read the whole file, so a typo anywhere stops
//! either.
//! ```

use crate::pool::PoolConfig;

mod cluster;
pub use cluster::{check_name, default_node_name, ClusterConfig, MAX_CLUSTER_NAME, MAX_NODE_NAME};

/// The longest timeout a configuration may set (30 days): long enough for
/// any real use, far enough from `u64::MAX` that deadlines computed from it
/// never wrap.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;

/// The longest grace a teardown or cancel may wait (10 minutes): a stop of
/// hum waits this long per rung at most.
pub const MAX_GRACE_MS: u64 = 10 * 60 * 1000;

/// The largest memory limit a configuration may set (1 PiB in MiB): far
/// beyond any machine, and far enough from `u64::MAX` that limits in bytes,
/// doubled, never wrap.
pub const MAX_RSS_MB: u64 = 1 << 30;

/// The most cells a worker may be asked to keep: each is an agent process
/// of some hundred MiB; past this a config is a typo, not a machine.
pub const MAX_ACTIVE_CELLS: usize = 4096;

/// The most prompts a worker may be asked to queue.
pub const MAX_QUEUED_PROMPTS: usize = 1_000_000;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ClaudeHive {
    pub enabled: bool,
    /// The `claude` binary; looked up on PATH when not a path.
    pub path: PathBuf,
    pub models: Vec<String>,
    /// Added to each cell's environment.
    pub env: BTreeMap<String, String>,
    /// `--permission-mode`: `default`, `acceptEdits`, `bypassPermissions`,
    /// `plan` or `dontAsk`.
    pub permission_mode: String,
    /// What a permission ask gets when its asker cannot answer it.
    pub permission_default: PermitDefault,
    /// claude's own tools its cells may have: `"default"`, `"none"` or a
    /// list (claude's `--tools`); a prompt may ask for fewer.
    pub builtin_tools: crate::hive::builtin::BuiltinTools,
}

/// The answer to a permission ask nobody can give.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum PermitDefault {
    #[default]
    Deny,
    Allow,
}

impl Default for ClaudeHive {
    fn default() -> Self {
        ClaudeHive {
            enabled: true,
            path: PathBuf::from("claude"),
            models: [
                "sonnet",
                "opus",
                "haiku",
                "claude-sonnet-4-5",
                "claude-opus-4-1",
                "claude-haiku-4-5",
            ]
            .map(String::from)
            .to_vec(),
            env: BTreeMap::from([(
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(),
                "1".to_owned(),
            )]),
            permission_mode: "default".to_owned(),
            permission_default: PermitDefault::Deny,
            builtin_tools: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SimHive {
    pub enabled: bool,
    pub models: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// As `claude.permissionDefault`, for the simulator's cells.
    pub permission_default: PermitDefault,
    /// As `claude.builtinTools`, for the simulator's cells.
    pub builtin_tools: crate::hive::builtin::BuiltinTools,
}

impl Default for SimHive {
    fn default() -> Self {
        SimHive {
            enabled: true,
            models: vec!["sim".to_owned()],
            env: BTreeMap::new(),
            permission_default: PermitDefault::Deny,
            builtin_tools: Default::default(),
        }
    }
}

/// `tools`: the bridge that lends bees' tools to the cells.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Tools {
    /// Start each cell with the `hum` MCP server (the bees' tools).
    pub bridge: bool,
    /// A call with no result this long is answered with an error.
    pub call_timeout_ms: u64,
    /// How long a permission ask waits for its asker before the hive's
    /// default applies: shorter than a tool call (an asker that lists
    /// `permission-ask` but never answers would stall every ask).
    pub permission_timeout_ms: u64,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            bridge: true,
            call_timeout_ms: 5 * 60 * 1000,
            permission_timeout_ms: 60 * 1000,
        }
    }
}

/// `gateway`: the HTTP front door (`hum gateway`, which `hum up` starts
/// with this file).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct GatewaySettings {
    /// How long a turn that ended a response with calls of the client's
    /// functions keeps its cell waiting for their results. After it (or at
    /// once when a prompt is queued for a cell) the turn gives the cell
    /// back; results that come later continue its session in a new turn.
    pub parked_turn_ms: u64,
    /// The agent's own tools a cell serving the gateway's requests may
    /// have (within its hive's): none unless set, so an HTTP caller gets a
    /// model with only its own functions, not the server's files.
    pub builtin_tools: crate::hive::builtin::BuiltinTools,
    /// Where the Ollama door listens (`null`: no Ollama door). By default
    /// Ollama's own address, when no other server has it.
    pub ollama_addr: Option<std::net::SocketAddr>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            parked_turn_ms: 30_000,
            builtin_tools: crate::hive::builtin::BuiltinTools::none(),
            ollama_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 11434))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// The pool's knobs (the section is read straight into them).
    pub nest: PoolConfig,
    pub claude: ClaudeHive,
    pub sim: SimHive,
    /// Agents that speak ACP, each a hive of its own, by name.
    pub acp: std::collections::BTreeMap<String, acp::AcpHive>,
    pub tools: Tools,
    pub gateway: GatewaySettings,
    /// The model of prompts that name none; default: the first model of the
    /// first enabled hive.
    pub default_model: Option<String>,
    /// Where cells run when a prompt names no `cwd`; default: the worker's.
    pub cwd: Option<PathBuf>,
    /// `auto` (everything the OS offers) or `portable` (the floor macOS
    /// has; on Linux the same as `HUM_CONTAINMENT=portable`).
    pub containment: crate::cell::ContainmentMode,
    /// Daily spend limits, enforced by humd.
    pub budgets: crate::usage::Budgets,
    /// The usage database (humd's).
    pub usage: crate::usage::UsageConfig,
    /// This machine as a node of a cluster (humd's); none by default.
    pub cluster: ClusterConfig,
    /// The file names the claude hive (its `enabled` or `path`): a claude
    /// that is not there is then an error, not a hive turned off.
    #[serde(skip)]
    pub claude_named: bool,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

impl Config {
    /// `$XDG_CONFIG_HOME/hum/hum.json` when set, else the OS's place:
    /// `~/.config/hum/hum.json`, on macOS
    /// `~/Library/Application Support/hum/hum.json`.
    pub fn default_path() -> PathBuf {
        crate::os::paths::Paths::current().config_file
    }

    /// Loads `path`; a missing file at the default path means defaults, a
    /// missing file named explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (Config::default_path(), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a configuration text.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| invalid(".", e.to_string()))?;
        // serde reads a struct from an array too (by position): `[]` would
        // be "all defaults". Every section must be an object.
        if !value.is_object() {
            return Err(invalid(
                ".",
                "the configuration must be a JSON object".into(),
            ));
        }
        for section in [
            "nest", "claude", "sim", "tools", "gateway", "budgets", "usage", "cluster",
        ] {
            if value.get(section).is_some_and(|v| !v.is_object()) {
                return Err(invalid(section, "must be a JSON object".into()));
            }
        }
        let claude_named = value
            .get("claude")
            .and_then(serde_json::Value::as_object)
            .is_some_and(|c| c.contains_key("enabled") || c.contains_key("path"));
        let mut config: Config =
            serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Invalid {
                path: path.to_owned(),
                key: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        config.claude_named = claude_named;
        config
            .check()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message,
            })?;
        Ok(config)
    }

    /// What only a worker needs of the machine: the claude it starts and
    /// the directory its cells run in exist. (humd reads the same file for
    /// budgets and needs neither.)
    ///
    /// A claude the file does not name (the defaults) that is not on this
    /// machine is turned off instead, and the note returned says so.
    pub fn check_for_worker(&mut self, path: &str) -> Result<Option<String>, ConfigError> {
        self.check_for_worker_with(path, |p| {
            if p.components().count() > 1 || p.is_absolute() {
                p.is_file()
            } else {
                crate::os::paths::find_on_path(&p.to_string_lossy()).is_some()
            }
        })
    }

    /// [`Config::check_for_worker`], `found` saying whether a program is
    /// there.
    pub fn check_for_worker_with(
        &mut self,
        path: &str,
        found: impl Fn(&Path) -> bool,
    ) -> Result<Option<String>, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let mut note = None;
        if self.claude.enabled && !found(&self.claude.path) && !self.claude_named {
            note = Some(format!(
                "claude hive off: {} is not on PATH (install claude, or name it in hum.json's claude.path)",
                self.claude.path.display()
            ));
            self.claude.enabled = false;
        }
        if self.claude.enabled {
            let p = &self.claude.path;
            if !found(p) {
                return Err(invalid(
                    "claude.path",
                    format!(
                        "{} is not there (nor on PATH); install claude, set claude.path, or set claude.enabled to false",
                        p.display()
                    ),
                ));
            }
        }
        for (name, hive) in self.acp.iter().filter(|(_, h)| h.enabled) {
            let program = Path::new(&hive.command[0]);
            if !found(program) {
                return Err(invalid(
                    &format!("acp.{}.command", crate::logsafe::escape(name)),
                    format!(
                        "{} is not there (nor on PATH); install it, or set the hive's enabled to false",
                        program.display()
                    ),
                ));
            }
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.is_dir() {
                return Err(invalid(
                    "cwd",
                    format!("{} is not a directory", cwd.display()),
                ));
            }
        }
        Ok(note)
    }

    /// Every model served, claude's first.
    pub fn models(&self) -> Vec<String> {
        let mut all = Vec::new();
        if self.claude.enabled {
            all.extend(self.claude.models.iter().cloned());
        }
        if self.sim.enabled {
            all.extend(self.sim.models.iter().cloned());
        }
        for hive in self.acp.values().filter(|h| h.enabled) {
            all.extend(hive.models.iter().cloned());
        }
        all
    }

    pub fn pool(&self) -> PoolConfig {
        self.nest
    }

    pub fn grace(&self) -> crate::cell::Grace {
        crate::cell::Grace {
            close: Duration::from_millis(self.nest.close_grace_ms),
            term: Duration::from_millis(self.nest.term_grace_ms),
            ..crate::cell::Grace::default()
        }
    }
}

pub mod acp;
mod checks;
#[cfg(test)]
mod tests;
