//! `hum cell-host` (hidden): hosts cells with no pool and no daemon, driven
//! by lines on stdin and reporting JSON lines on stdout. Tests use it as "a
//! worker" they can SIGKILL; the teardown benchmark uses it to measure the
//! cell layer alone.
//!
//! Commands on stdin: `teardown <index>|all [reason]`, `sample`. EOF tears
//! everything down (reason `shutdown`) and exits.

use crate::cell::{CellConfig, CellSpec, Cells, CgroupMode, Reason};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Clone, clap::Args)]
pub struct CellHostArgs {
    /// Cells to start.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Send this prompt (stream-json) to each cell and wait for its result.
    #[arg(long)]
    pub prompt: Option<String>,
    /// State dir (ledgers); default as for the worker.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Use cgroups when possible (auto) or never (off); default from HUM_CGROUPS.
    #[arg(long)]
    pub cgroups: Option<String>,
    #[arg(long, default_value_t = 2000)]
    pub close_grace_ms: u64,
    #[arg(long, default_value_t = 2000)]
    pub term_grace_ms: u64,
    /// The agent command line (no shell).
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

fn emit(value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// The reason a command names; `shutdown` when it names none it knows.
fn reason(word: Option<&str>) -> Reason {
    word.and_then(|w| w.parse().ok())
        .unwrap_or(Reason::Shutdown)
}

pub fn run(args: CellHostArgs) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(host(args))
}

/// The cell layer's settings: the environment's, with the flags' changes.
fn cell_config(args: &CellHostArgs) -> Result<CellConfig, (String, u8)> {
    let mut config = CellConfig::from_env().map_err(|e| (e.to_string(), 1))?;
    if let Some(dir) = args.state_dir.clone() {
        config.state_dir = dir;
    }
    match args.cgroups.as_deref() {
        Some("off") => config.cgroups = CgroupMode::Off,
        Some("auto") => config.cgroups = CgroupMode::Auto,
        Some(other) => {
            return Err((format!("--cgroups must be auto or off, not {other}"), 2));
        }
        None => {}
    }
    config.grace.close = Duration::from_millis(args.close_grace_ms);
    config.grace.term = Duration::from_millis(args.term_grace_ms);
    Ok(config)
}

/// Reads commands on stdin (`teardown <i|all> [reason]`, `sample`) until
/// it closes.
async fn serve_commands(live: &mut [Option<crate::cell::Cell>], cells: &Cells) {
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = commands.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["teardown", which, rest @ ..] => {
                let why = reason(rest.first().copied());
                let chosen: Vec<usize> = if *which == "all" {
                    (0..live.len()).collect()
                } else {
                    which
                        .parse()
                        .ok()
                        .filter(|i| *i < live.len())
                        .into_iter()
                        .collect()
                };
                let mut tasks = Vec::new();
                for i in chosen {
                    if let Some(cell) = live[i].take() {
                        tasks.push(tokio::spawn(
                            async move { (*cell.teardown(why).await).clone() },
                        ));
                    }
                }
                for t in tasks {
                    if let Ok(report) = t.await {
                        emit(json!({"event": "teardown", "report": report}));
                    }
                }
            }
            ["sample"] => {
                let refs: Vec<_> = live.iter().flatten().map(|c| c.handle()).collect();
                emit(json!({"event": "samples", "samples": cells.sample_all(&refs)}));
            }
            _ => eprintln!("hum cell-host: unknown command: {line}"),
        }
    }
}

async fn host(args: CellHostArgs) -> ExitCode {
    let config = match cell_config(&args) {
        Ok(c) => c,
        Err((why, code)) => {
            eprintln!("hum cell-host: {why}");
            return ExitCode::from(code);
        }
    };
    let cells = match Cells::start(config).await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("hum cell-host: cannot start the cell layer: {e}");
            return ExitCode::from(1);
        }
    };
    emit(json!({
        "event": "started", "instance": cells.instance(), "mechanism": cells.mechanism(),
        "sentinel_pid": cells.sentinel_pid(), "ledger": cells.ledger_path(), "sweep": cells.sweep_reports(),
    }));

    let spec = CellSpec {
        program: args.argv[0].clone().into(),
        args: args.argv[1..].iter().map(Into::into).collect(),
        ..CellSpec::default()
    };
    let mut live = Vec::new();
    for _ in 0..args.count {
        match cells.spawn(spec.clone()).await {
            Ok(cell) => live.push(Some(cell)),
            Err(e) => {
                eprintln!("hum cell-host: spawn failed: {e}");
                return ExitCode::from(1);
            }
        }
    }
    // Each cell's stdout is read to its end, so no agent blocks on a full
    // pipe; the first `result` line of each is reported.
    let mut results = Vec::new();
    for cell in live.iter().flatten() {
        let stdout = cell.take_stdout().expect("fresh cell has stdout");
        let (tx, rx) = tokio::sync::oneshot::channel();
        results.push(rx);
        tokio::spawn(async move {
            let mut lines = thrum::LineReader::new(BufReader::new(stdout), thrum::DEFAULT_MAX_LINE);
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let thrum::RawLine::Line(l) = line {
                    if memchr_result(l) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            }
        });
    }
    if let Some(prompt) = &args.prompt {
        let msg = json!({"type": "user", "message": {"role": "user", "content": prompt}});
        let line = format!("{msg}\n");
        for cell in live.iter().flatten() {
            if let Err(e) = cell.write(line.as_bytes()).await {
                eprintln!("hum cell-host: cannot write to cell {}: {e}", cell.id());
            }
        }
        for rx in results {
            let _ = rx.await;
        }
    }
    let listed: Vec<_> = live
        .iter()
        .flatten()
        .map(|c| json!({"id": c.id(), "pid": c.pid(), "cgroup": c.cgroup_dir()}))
        .collect();
    emit(json!({"event": "ready", "cells": listed}));

    serve_commands(&mut live, &cells).await;
    let mut tasks = Vec::new();
    for cell in live.into_iter().flatten() {
        tasks.push(tokio::spawn(async move {
            (*cell.teardown(Reason::Shutdown).await).clone()
        }));
    }
    for t in tasks {
        if let Ok(report) = t.await {
            emit(json!({"event": "teardown", "report": report}));
        }
    }
    cells.shutdown().await;
    emit(json!({"event": "stopped"}));
    ExitCode::SUCCESS
}

/// Whether a stdout line is a stream-json `result` (cheap check first).
fn memchr_result(line: &[u8]) -> bool {
    line.windows(8).any(|w| w == b"\"result\"")
        && serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| {
            matches!(
                crate::hive::stream_json::Line::read(&v),
                crate::hive::stream_json::Line::Result(_)
            )
        })
}
