//! Benchmarks of the cell layer, printed as Markdown for BENCHMARKS.md.
//!
//! 1. Teardown latency of an idle `hum sim-agent` cell (one turn done, then
//!    `teardown(Idle)`), p50/p99 over N cells, for the Linux backend (cgroups
//!    per the second argument) and the portable backend (what macOS gets)
//!    interleaved in the same run, against a baseline measured alongside:
//!    the same agent spawned plainly, its stdin closed and its exit awaited
//!    with no containment at all.
//! 2. The cost of sampling 64 live cells (pids, RSS, CPU) in one call, and
//!    of one process-table scan, through each backend's table.
//!
//! Run: `cargo run --release -p hum --example cell_bench -- [cells] [cgroups: auto|off]`
//! (the `hum` binary must be built with the same profile first:
//! `cargo build --release -p hum`).

use hum::cell::{
    CellConfig, CellSpec, Cells, CgroupMode, ContainmentMode, Grace, Procs, Reason, Rung,
};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// `hum sim-agent` with the argv every stream-json cell gets.
fn argv() -> Vec<&'static str> {
    let mut a = vec!["sim-agent"];
    a.extend(hum::hive::argv::STREAM_JSON_ARGS);
    a
}
const PROMPT: &str = "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"hi\"}}\n";

fn hum_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/examples/cell_bench -> target/<profile>/hum
    exe.parent().unwrap().parent().unwrap().join("hum")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Plain spawn, one turn, close stdin, wait: the floor any teardown has.
fn baseline_ms(home: &std::path::Path) -> f64 {
    let mut child = Command::new(hum_bin())
        .args(argv())
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(PROMPT.as_bytes()).unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("\"type\":\"result\"") {
            break;
        }
    }
    let t = Instant::now();
    drop(stdin);
    for _ in lines {}
    child.wait().unwrap();
    t.elapsed().as_secs_f64() * 1000.0
}

/// One idle-cell teardown: a turn, then `teardown(Idle)`; milliseconds.
async fn idle_teardown_ms(cells: &Cells, spec: &CellSpec) -> f64 {
    idle_ms(cells, spec, false).await
}

/// An idle cell's teardown until its slot is released
/// (`Cell::release`), in milliseconds; the rest of it is awaited after.
async fn idle_release_ms(cells: &Cells, spec: &CellSpec) -> f64 {
    idle_ms(cells, spec, true).await
}

async fn idle_ms(cells: &Cells, spec: &CellSpec, release: bool) -> f64 {
    let cell = cells.spawn(spec.clone()).await.unwrap();
    let mut out = tokio::io::BufReader::new(cell.take_stdout().unwrap()).lines();
    cell.write(PROMPT.as_bytes()).await.unwrap();
    while let Ok(Some(line)) = out.next_line().await {
        if line.contains("\"type\":\"result\"") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let t = Instant::now();
    let report = if release {
        cell.release(Reason::Idle).await
    } else {
        cell.teardown(Reason::Idle).await
    };
    let elapsed = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(report.rung, Rung::Stdin);
    // A release's scan runs on: done before the next cell, as in a pool
    // that is not busy.
    cell.teardown(Reason::Idle).await;
    elapsed
}

fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let mode = match args.get(2).map(String::as_str) {
        Some("off") => CgroupMode::Off,
        _ => CgroupMode::Auto,
    };
    let dir = tempfile::tempdir().unwrap();
    let config = |containment| CellConfig {
        grace: Grace::default(),
        containment,
        cgroups: mode,
        state_dir: dir.path().join("state"),
        hum_bin: hum_bin(),
        memory_limit: None,
        end_unclaimed_children: false,
    };
    let linux = Cells::start(config(ContainmentMode::Auto)).await.unwrap();
    let portable = Cells::start(config(ContainmentMode::Portable))
        .await
        .unwrap();
    let spec = CellSpec {
        program: hum_bin().into(),
        args: argv().iter().map(Into::into).collect(),
        env: vec![("HOME".into(), dir.path().into())],
        clean_env: false,
        cwd: Some(dir.path().into()),
    };

    // A cell with a child as a worker's cells have (their MCP shim): the
    // simulator's stand-in MCP server, which leaves after the agent.
    let mut with_server = spec.clone();
    with_server.args.push("--sim-mcp-servers=1".into());

    let (mut linux_ms, mut portable_ms, mut base_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut released_ms, mut server_ms, mut server_released_ms) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        base_ms.push(baseline_ms(dir.path()));
        linux_ms.push(idle_teardown_ms(&linux, &spec).await);
        released_ms.push(idle_release_ms(&linux, &spec).await);
        server_ms.push(idle_teardown_ms(&linux, &with_server).await);
        server_released_ms.push(idle_release_ms(&linux, &with_server).await);
        portable_ms.push(idle_teardown_ms(&portable, &spec).await);
    }
    let (r50, r99) = p50_p99(released_ms);
    let (s50, s99) = p50_p99(server_ms);
    let (sr50, sr99) = p50_p99(server_released_ms);
    let (l50, l99) = p50_p99(linux_ms);
    let (p50, p99) = p50_p99(portable_ms);
    let (b50, b99) = p50_p99(base_ms);
    println!("linux mechanism: {:?}", linux.mechanism());
    println!("portable mechanism: {:?}", portable.mechanism());
    println!(
        "| idle-cell teardown, {n} cells each, interleaved | p50 ms | p99 ms | p50 / baseline |"
    );
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| Linux backend `teardown(Idle)` (whole ladder, reap, ledger) | {l50:.2} | {l99:.2} | {:.2} |",
        l50 / b50
    );
    println!(
        "| Linux backend `release(Idle)` (until the slot is free) | {r50:.2} | {r99:.2} | {:.2} |",
        r50 / b50
    );
    println!(
        "| Linux backend, with one MCP server, `teardown(Idle)` | {s50:.2} | {s99:.2} | {:.2} |",
        s50 / b50
    );
    println!(
        "| Linux backend, with one MCP server, `release(Idle)` | {sr50:.2} | {sr99:.2} | {:.2} |",
        sr50 / b50
    );
    println!(
        "| portable backend `teardown(Idle)` (sysinfo table, SIGCHLD-woken leader) | {p50:.2} | {p99:.2} | {:.2} |",
        p50 / b50
    );
    println!("| baseline: close stdin + waitpid, no containment | {b50:.2} | {b99:.2} | 1.00 |");

    // 64 live cells (on the Linux backend; both tables see the same processes).
    let mut live = Vec::new();
    for _ in 0..64 {
        live.push(linux.spawn(spec.clone()).await.unwrap());
    }
    let refs: Vec<_> = live.iter().map(|c| c.handle()).collect();
    let rounds = 50;
    let t = Instant::now();
    for _ in 0..rounds {
        let samples = linux.sample_all(&refs);
        assert_eq!(samples.len(), 64);
        assert!(samples.iter().all(|s| !s.pids.is_empty()));
    }
    let per_round = t.elapsed() / rounds;
    let t = Instant::now();
    for _ in 0..rounds {
        let samples = portable.sample_all(&refs);
        assert_eq!(samples.len(), 64);
        assert!(samples.iter().all(|s| !s.pids.is_empty()));
    }
    let per_round_portable = t.elapsed() / rounds;
    let scan = |procs: Procs| {
        let t = Instant::now();
        for _ in 0..rounds {
            let found = procs.scan_by_tag("HUM_CELL");
            assert!(found.len() >= 64);
        }
        t.elapsed() / rounds
    };
    let (scan_native, scan_portable) = (scan(Procs::native()), scan(Procs::portable()));
    println!();
    println!("| 64 live cells | per round |");
    println!("| --- | ---: |");
    println!(
        "| `Cells::sample_all`, Linux backend (/proc) | {:.2} ms ({:.2}% of a core at 1 Hz) |",
        ms(per_round),
        ms(per_round) / 10.0
    );
    println!(
        "| `Cells::sample_all`, portable backend (sysinfo) | {:.2} ms ({:.2}% of a core at 1 Hz) |",
        ms(per_round_portable),
        ms(per_round_portable) / 10.0
    );
    println!(
        "| one process-table scan with environments, /proc table | {:.2} ms |",
        ms(scan_native)
    );
    println!(
        "| one process-table scan with environments, portable table | {:.2} ms |",
        ms(scan_portable)
    );
    for cell in live {
        cell.teardown(Reason::Shutdown).await;
    }
    linux.shutdown().await;
    portable.shutdown().await;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
