//! # `hum worker`: thrum ↔ pool ↔ cells
//!
//! One task owns the [pool policy](crate::pool) and turns its commands into
//! I/O ([`actor`]); one task per cell runs the cell's process: spawn (with the
//! one session retry), stdin writes, stdout translation, teardown
//! ([`runner`]); one task keeps the link to humd, reconnecting with backoff
//! ([`link`]). A cell's output does not pass through the actor: its runner
//! sends it for the turn the cell is [`serving`] through the [`uplink`], the
//! one ordered queue to humd that the actor's own tones use too; the actor
//! hears only a turn's start and end. Cells live in the worker, not in the link: when humd goes
//! away they stay warm, turns in flight run to completion (their output is
//! dropped while unlinked), and after the reconnect the same cells serve the
//! same sids. Its settings are `hum.json`'s ([`crate::config`]).

pub mod acp;
pub mod actor;
pub mod bridge;
pub mod link;
pub mod msg;
pub mod runner;
pub mod serving;
pub mod system_prompt;
pub mod uplink;

use crate::cell::{CellConfig, Cells};
use crate::config::Config;
use crate::hive::{Hive, Protocol};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Configuration file (default: ~/.config/hum/hum.json).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// humd's socket (default: the thrum socket path rules).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// The hives this configuration enables.
pub fn hives(config: &Config) -> std::io::Result<Vec<Hive>> {
    let mut hives = Vec::new();
    if config.claude.enabled {
        hives.push(Hive {
            name: "claude-cli".into(),
            program: config.claude.path.clone(),
            prefix_args: Vec::new(),
            models: config.claude.models.clone(),
            env: config.claude.env.clone().into_iter().collect(),
            permission_mode: Some(config.claude.permission_mode.clone()),
            permit_by_default: config.claude.permission_default
                == crate::config::PermitDefault::Allow,
            builtin_tools: config.claude.builtin_tools.clone(),
            protocol: Protocol::StreamJson,
        });
    }
    if config.sim.enabled {
        let (program, prefix_args) = sim_program(std::env::current_exe()?);
        hives.push(Hive {
            name: "sim".into(),
            program,
            prefix_args,
            models: config.sim.models.clone(),
            env: config.sim.env.clone().into_iter().collect(),
            permission_mode: None,
            permit_by_default: config.sim.permission_default == crate::config::PermitDefault::Allow,
            builtin_tools: config.sim.builtin_tools.clone(),
            protocol: Protocol::StreamJson,
        });
    }
    for (name, acp) in config.acp.iter().filter(|(_, h)| h.enabled) {
        // (The config check made sure the command names a program.)
        let (program, args) = acp.command.split_first().expect("checked");
        hives.push(Hive {
            name: name.clone(),
            program: program.into(),
            prefix_args: args.to_vec(),
            models: acp.models.clone(),
            env: acp.env.clone().into_iter().collect(),
            permission_mode: None,
            permit_by_default: acp.permission_default == crate::config::PermitDefault::Allow,
            builtin_tools: acp.builtin_tools.clone(),
            protocol: Protocol::Acp,
        });
    }
    Ok(hives)
}

/// What a sim cell runs: `hum-sim` beside `exe` when it is installed
/// there and may be trusted, else `exe sim-agent` (the same simulator, at
/// a heavier start per cell).
fn sim_program(exe: std::path::PathBuf) -> (std::path::PathBuf, Vec<String>) {
    match crate::os::installed::beside(&exe, crate::os::installed::SIM) {
        Some(own) => (own, Vec::new()),
        None => (exe, vec!["sim-agent".into()]),
    }
}

pub fn run(args: WorkerArgs) -> ExitCode {
    let config = match Config::load(args.config.as_deref()).and_then(|mut c| {
        let path = args
            .config
            .clone()
            .unwrap_or_else(Config::default_path)
            .display()
            .to_string();
        let note = c.check_for_worker(&path)?;
        if let Some(note) = note {
            eprintln!("hum worker: {note}");
        }
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hum worker: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    rt.block_on(async move {
        let hives = match hives(&config) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("hum worker: {e}");
                return ExitCode::from(1);
            }
        };
        let mut cell_config = match CellConfig::from_env() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("hum worker: {e}");
                return ExitCode::from(1);
            }
        };
        cell_config.grace = config.grace();
        // The kernel's line is hum's mid-turn line: twice the cell limit.
        cell_config.memory_limit = config
            .pool()
            .max_cell_rss_bytes
            .map(|bytes| bytes.saturating_mul(2));
        // Either the config or HUM_CONTAINMENT may ask for the portable floor.
        if config.containment == crate::cell::ContainmentMode::Portable {
            cell_config.containment = config.containment;
        }
        let cells = match Cells::start(cell_config).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                eprintln!("hum worker: cannot start the cell layer: {e}");
                return ExitCode::from(1);
            }
        };
        let socket = args.socket.unwrap_or_else(thrum::socket_path);
        let mut stop = crate::stop::StopSignals::install();
        actor::serve(config, hives, cells, socket, stop.next()).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_sim_cell_runs_hum_sim_when_it_is_beside_hum_else_hum_sim_agent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.path().join("hum");
        std::fs::write(&exe, b"").unwrap();
        assert_eq!(
            sim_program(exe.clone()),
            (exe.clone(), vec!["sim-agent".to_owned()])
        );
        let own = dir.path().join(crate::os::installed::SIM);
        std::fs::write(&own, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(sim_program(exe), (own, Vec::new()));
    }
}
