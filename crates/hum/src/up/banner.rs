//! What `hum up` tells the user it started.

use super::{GatewayAuth, UpArgs};
use crate::config::Config;
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

async fn claude_version(path: &Path) -> Option<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        Command::new(path).arg("--version").output(),
    )
    .await
    .ok()?
    .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|v| !v.is_empty())
}

/// What `hum up` tells the user it started.
pub(super) struct Banner<'a> {
    pub(super) args: &'a UpArgs,
    pub(super) socket: &'a Path,
    pub(super) state: &'a Path,
    pub(super) logs: &'a Path,
    pub(super) config_path: &'a Path,
    pub(super) config: &'a Config,
    pub(super) auth: &'a GatewayAuth,
    pub(super) metrics: &'a str,
}

pub(super) async fn print_banner(b: &Banner<'_>) {
    let claude_line = if b.config.claude.enabled {
        let version = claude_version(&b.config.claude.path)
            .await
            .unwrap_or_else(|| "version unknown".into());
        format!(
            "claude-cli: {} ({version}), models {}",
            b.config.claude.path.display(),
            b.config.claude.models.join(", ")
        )
    } else {
        "claude-cli: off (no `claude` on PATH; npm i -g @anthropic-ai/claude-code)".to_owned()
    };
    let sim_line = if b.config.sim.enabled {
        format!("sim: models {}", b.config.sim.models.join(", "))
    } else {
        "sim: off".into()
    };
    let gateway_line = if b.args.no_gateway {
        "off".to_owned()
    } else {
        format!(
            "http://{0}/v1 (OpenAI clients), http://{0} (Anthropic clients)",
            b.args.gateway_addr
        )
    };
    let token_line = match (b.auth, b.args.no_gateway) {
        (_, true) => None,
        (GatewayAuth::File(p), _) => Some(format!(
            "{}  (OPENAI_API_KEY=$(cat {0}) or ANTHROPIC_API_KEY=$(cat {0}))",
            p.display()
        )),
        (GatewayAuth::Env(_), _) => Some("from HUM_GATEWAY_TOKEN".to_owned()),
        (GatewayAuth::Off, _) => {
            Some("NONE: --no-auth, every local user can prompt your agents".to_owned())
        }
    };
    // Written whole, and a stdout nobody reads (`hum up | head`) is no
    // reason to stop: the banner is for a person, the stack runs on.
    let mut out = String::new();
    macro_rules! say {
        ($out:ident, $($arg:tt)*) => {{
            use std::fmt::Write as _;
            let _ = writeln!($out, $($arg)*);
        }};
    }
    say!(out, "hum up");
    say!(out, "  socket     {}", b.socket.display());
    say!(out, "  state dir  {}", b.state.display());
    say!(
        out,
        "  logs       {}/daemon.log, worker.log",
        b.logs.display()
    );
    say!(out, "  config     {}", b.config_path.display());
    say!(out, "  hives      {claude_line}");
    say!(out, "             {sim_line}");
    for (name, hive) in &b.config.acp {
        let state = if hive.enabled { "" } else { " (off)" };
        say!(
            out,
            "             {name}: ACP, {}{state}, models {}",
            hive.command.join(" "),
            hive.models.join(", ")
        );
    }
    say!(out, "  metrics    {}", b.metrics);
    say!(out, "  gateway    {gateway_line}");
    if let (false, Some(addr)) = (b.args.no_gateway, b.config.gateway.ollama_addr) {
        say!(out, "             http://{addr} (Ollama clients; your own user needs no token, others OLLAMA_API_KEY; off if that port is taken: see gateway.log)");
    }
    if let Some(t) = &token_line {
        say!(out, "  token      {t}");
    }
    say!(
        out,
        "  try        hum prompt --model sim \"hello\"   ·   hum status"
    );
    super::say(&out);
}
