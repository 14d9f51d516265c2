//! `hum demo`: the herd that broke the system we replace, made watchable.
//!
//! Starts humd and a worker (sim hive) in a private directory, then, per
//! wave, N bees that connect at the same instant and each send a prompt.
//! Wave 2 reuses the same sids; wave 3 first SIGKILLs humd and starts it
//! again, so the bees reconnect at once, as after a daemon restart. A live
//! line shows the pool; a table sums up each wave; after shutdown the
//! processes still carrying the demo's tag are counted — that number must be
//! 0, and the command fails if it is not.

use crate::cell::tag;
use crate::client::{Answer, Client};
use crate::reports::DaemonStatus;
use crate::stack::{Stack, StackSpec};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Marks every process the demo starts, so what is left can be counted.
const DEMO_TAG: &str = "HUM_DEMO_TAG";

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Bees per wave (each its own sid, all connecting at once).
    #[arg(long, default_value_t = 30)]
    pub bees: usize,
    /// maxActiveCells of the worker.
    #[arg(long, default_value_t = 8)]
    pub cap: usize,
    /// Waves; from the third on, humd is SIGKILLed and restarted first.
    #[arg(long, default_value_t = 3)]
    pub waves: usize,
    /// Agent start-up time (claude takes ~600 ms).
    #[arg(long, default_value_t = 500)]
    pub bootstrap_ms: u64,
    /// Agent answer time per turn.
    #[arg(long, default_value_t = 500)]
    pub turn_ms: u64,
    /// Agents that never answer: every turn ends in cell_timeout.
    #[arg(long)]
    pub stall: bool,
    /// MCP-server children per agent (they ignore stdin EOF).
    #[arg(long, default_value_t = 0)]
    pub children: usize,
}

#[derive(Debug, Default, Clone)]
struct Wave {
    ok: usize,
    errors: usize,
    spawns: u64,
    reuses: u64,
    resumes: u64,
    evictions: u64,
    peak_cells: usize,
    peak_processes: usize,
    secs: f64,
}

/// One bee: connect, hello, prompt, wait for the end. `true` when it finished.
async fn bee(socket: PathBuf, sid: String, text: String, start: Arc<tokio::sync::Barrier>) -> bool {
    start.wait().await;
    for _ in 0..100 {
        let Ok(mut client) = Client::asker(&socket, "hum demo").await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if client
            .prompt(&sid, Client::text_prompt(&text, Some("sim")))
            .await
            .is_err()
        {
            continue;
        }
        match client.answer(&sid).await {
            Ok(Answer { end: Ok(_), .. }) => return true,
            // Not yet connected: try again shortly.
            Ok(Answer { end: Err(e), .. }) if e.code == thrum::ErrorCode::NoWorker => {}
            _ => return false,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn spawns(status: &DaemonStatus) -> u64 {
    status.metrics().map(|m| m.spawns).sum()
}

fn reuses(status: &DaemonStatus) -> u64 {
    status.metrics().map(|m| m.reuses).sum()
}

fn evictions(status: &DaemonStatus) -> u64 {
    let evicted = format!("{}/", crate::cell::Reason::Evicted);
    status
        .metrics()
        .flat_map(|m| &m.teardowns)
        .filter(|(k, _)| k.starts_with(&evicted))
        .map(|(_, n)| n)
        .sum()
}

fn cells_by_state(status: &DaemonStatus) -> (usize, String) {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in status.cells() {
        *counts.entry(c.state.as_str()).or_default() += 1;
    }
    let total = counts.values().sum();
    let text = counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(" · ");
    (total, text)
}

/// Processes of cells (they carry a worker instance tag) among the demo's.
fn cell_processes(tag_entry: &[u8]) -> usize {
    let procs = crate::cell::ContainmentMode::from_env().procs();
    procs
        .scan_by_tag(tag::INSTANCE_VAR)
        .values()
        .flatten()
        .filter(|s| procs.environ_has(s.pid, tag_entry))
        .count()
}

pub fn run(args: DemoArgs) -> ExitCode {
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    rt.block_on(demo(args))
}

/// Where one demo runs: its directory and config, and the tag its cells
/// carry.
struct Setup {
    dir: PathBuf,
    config_path: PathBuf,
    home: PathBuf,
    demo_tag: String,
    tag_entry: Vec<u8>,
}

fn setup(args: &DemoArgs) -> Result<Setup, String> {
    let dir = std::env::temp_dir().join(format!("hum-demo-{}", uuid::Uuid::new_v4().simple()));
    let home = dir.join("home");
    let work = dir.join("work");
    for d in [&home, &work] {
        if let Err(e) = std::fs::create_dir_all(d) {
            return Err(format!("cannot create {}: {e}", d.display()));
        }
    }
    let demo_tag = uuid::Uuid::new_v4().simple().to_string();
    let tag_entry = tag::entry(DEMO_TAG, &demo_tag);
    // The tag goes into the hive's env: a cell's environment is an
    // allow-list, and without it the demo's process counts (and its final
    // "processes left") could not see the cells at all.
    let mut sim_env = json!({
        "HUM_SIM_BOOTSTRAP_DELAY_MS": args.bootstrap_ms.to_string(),
        "HUM_SIM_TURN_DELAY_MS": args.turn_ms.to_string(),
        DEMO_TAG: demo_tag.clone(),
    });
    if args.stall {
        sim_env["HUM_SIM_NEVER_ANSWER"] = json!("1");
    }
    if args.children > 0 {
        sim_env["HUM_SIM_MCP_SERVERS"] = json!(args.children.to_string());
        sim_env["HUM_SIM_MCP_IGNORE_EOF"] = json!("1");
    }
    let first_event = if args.stall { 2000 } else { 60_000 };
    let config = json!({
        "nest": {"maxActiveCells": args.cap, "firstEventTimeoutMs": first_event, "closeGraceMs": 500, "termGraceMs": 500},
        "claude": {"enabled": false}, "sim": {"env": sim_env}, "cwd": work,
    });
    let config_path = dir.join("hum.json");
    std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
    Ok(Setup {
        dir,
        home,
        config_path,
        demo_tag,
        tag_entry,
    })
}

/// One wave: every bee prompts at once; the pool watched until all are
/// done. Returns the wave and humd's status after it.
async fn run_wave(
    w: usize,
    args: &DemoArgs,
    socket: &Path,
    tag_entry: &[u8],
    before: &DaemonStatus,
    last: &DaemonStatus,
) -> (Wave, DaemonStatus) {
    let mut last_status = last.clone();
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let barrier = Arc::new(tokio::sync::Barrier::new(args.bees));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for b in 0..args.bees {
        let (socket, barrier, done) = (socket.to_path_buf(), barrier.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let ok = bee(socket, format!("bee-{b:02}"), format!("wave {w}"), barrier).await;
            done.fetch_add(1, Ordering::Relaxed);
            ok
        }));
    }
    let mut wave = Wave::default();
    while done.load(Ordering::Relaxed) < args.bees {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let processes = cell_processes(tag_entry);
        wave.peak_processes = wave.peak_processes.max(processes);
        if let Ok(s) = crate::client::fetch_status(socket).await {
            let (live, states) = cells_by_state(&s);
            wave.peak_cells = wave.peak_cells.max(live);
            let queued: usize = s
                .workers
                .iter()
                .filter_map(|w| w.status.as_ref())
                .map(|st| st.pool.queued)
                .sum();
            let line = format!(
                "wave {w}: {}/{} turns done · cells {live} ({states}) · queued {queued} · spawns {} · evictions {} · processes {processes}",
                done.load(Ordering::Relaxed),
                args.bees,
                spawns(&s).saturating_sub(spawns(before)),
                evictions(&s).saturating_sub(evictions(before)),
            );
            if tty {
                print!("\r\x1b[2K{line}");
            } else {
                println!("{line}");
            }
            let _ = std::io::stdout().flush();
            last_status = s;
        }
    }
    for t in tasks {
        if t.await.unwrap_or(false) {
            wave.ok += 1;
        } else {
            wave.errors += 1;
        }
    }
    if tty {
        println!();
    }
    wave.secs = started.elapsed().as_secs_f64();
    // Counters settle with the next worker-status (sent every second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = crate::client::fetch_status(socket)
        .await
        .unwrap_or(last_status.clone());
    wave.spawns = spawns(&after).saturating_sub(spawns(before));
    wave.reuses = reuses(&after).saturating_sub(reuses(before));
    wave.resumes = if w == 1 { 0 } else { wave.spawns };
    wave.evictions = evictions(&after).saturating_sub(evictions(before));
    (wave, after)
}

/// The table of waves, after the shutdown.
fn print_table(waves: &[Wave]) {
    println!("wave  turns ok  errors  spawns  reuses  resumes  evictions  peak cells  peak procs  seconds");
    for (i, w) in waves.iter().enumerate() {
        println!(
            "{:>4}  {:>8}  {:>6}  {:>6}  {:>6}  {:>7}  {:>9}  {:>10}  {:>10}  {:>7.1}",
            i + 1,
            w.ok,
            w.errors,
            w.spawns,
            w.reuses,
            w.resumes,
            w.evictions,
            w.peak_cells,
            w.peak_processes,
            w.secs
        );
    }
}

async fn demo(args: DemoArgs) -> ExitCode {
    let Setup {
        dir,
        home,
        config_path,
        demo_tag,
        tag_entry,
    } = match setup(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hum demo: {e}");
            return ExitCode::from(1);
        }
    };
    let spec = StackSpec {
        dir: dir.clone(),
        env: vec![
            (DEMO_TAG.into(), demo_tag.clone()),
            ("HOME".into(), home.display().to_string()),
            (
                "HUM_STATE_DIR".into(),
                dir.join("state").display().to_string(),
            ),
        ],
        worker_config: Some(config_path.clone()),
        daemon_args: Vec::new(),
    };
    let mut stack = match Stack::start(spec).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hum demo: cannot start humd and the worker: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "hum demo: {} bees × {} waves, cap {}, bootstrap {} ms, turn {} ms{}  (in {})",
        args.bees,
        args.waves,
        args.cap,
        args.bootstrap_ms,
        args.turn_ms,
        if args.stall { ", agents stall" } else { "" },
        dir.display()
    );
    let mut waves = Vec::new();
    let mut last_status = DaemonStatus::default();
    // Worker counters are cumulative and the worker outlives humd's restart:
    // each wave is measured from where the last one ended.
    let mut before = DaemonStatus::default();
    for w in 1..=args.waves {
        if w >= 3 {
            println!("wave {w}: SIGKILL humd and start it again; the bees reconnect at once");
            if let Err(e) = stack.kill_and_restart_daemon().await {
                eprintln!("hum demo: cannot restart humd: {e}");
                break;
            }
        }
        let (wave, after) =
            run_wave(w, &args, &stack.socket, &tag_entry, &before, &last_status).await;
        last_status = after.clone();
        waves.push(wave);
        before = after;
    }
    println!("shutting down: the worker tears down every cell, then humd stops");
    stack.stop().await;
    // Give exiting processes a moment to be gone, then count what is left.
    let deadline = Instant::now() + Duration::from_secs(5);
    let procs = crate::cell::ContainmentMode::from_env().procs();
    let mut left = procs.scan_members(&tag_entry, None).len();
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = procs.scan_members(&tag_entry, None).len();
    }
    println!();
    print_table(&waves);
    println!("processes left after shutdown: {left}");
    let _ = std::fs::remove_dir_all(&dir);
    if left > 0 {
        eprintln!("hum demo: {left} processes outlived the shutdown — that is a leak");
        return ExitCode::from(1);
    }
    if !args.stall && waves.iter().any(|w| w.errors > 0) {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
