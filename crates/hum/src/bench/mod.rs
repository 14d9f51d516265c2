//! `hum bench`: whole-system numbers, as JSON on stdout.
//!
//! - `herd`: N bees at once against cap C with a given bootstrap and turn
//!   time; makespan against the ideal ceil(N/C) × (bootstrap + turn).
//! - `routing`: one warm cell, turn after turn, through humd and the worker,
//!   against the same turns written straight to a `hum sim-agent` pipe.
//! - `throughput`: chunks per second through humd to one bee, and to 100
//!   bees at once, from a stand-in worker that streams as fast as it can.
//! - `acp`: the simulator as an ACP cell against the same as a stream-json
//!   cell (spawn to first answer, a warm turn).
//! - `cluster`: nodes on one `nats-server`: a forwarded turn against a
//!   local one, chunk rate across nodes, placement, a herd's makespan.
//!
//! Every run uses a private directory and its own humd (and worker).

mod acp;
mod cluster;
mod gateway;

mod tools;
use crate::client::{Answer, Client, Event};
use crate::stack::{Stack, StackSpec};
use gateway::gateway;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thrum::{Chunk, ChunkType, Connection, Finish, Inbound, Limits, Tone};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Which,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Which {
    /// A herd of bees at once against a capped pool.
    Herd {
        #[arg(long, default_value_t = 30)]
        bees: usize,
        #[arg(long, default_value_t = 8)]
        cap: usize,
        #[arg(long, default_value_t = 1000)]
        bootstrap_ms: u64,
        #[arg(long, default_value_t = 1000)]
        turn_ms: u64,
        /// maxConcurrentSpawns of the worker.
        #[arg(long, default_value_t = 8)]
        spawns: usize,
    },
    /// Per-turn cost of going through humd and the worker.
    Routing {
        #[arg(long, default_value_t = 200)]
        turns: usize,
    },
    /// RSS of humd and the worker with many known sessions and a full pool,
    /// then its growth while the same load keeps going.
    Footprint {
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        #[arg(long, default_value_t = 64)]
        cells: usize,
        /// How long to keep prompting after the first measurement.
        #[arg(long, default_value_t = 600)]
        soak_secs: u64,
    },
    /// Time to first byte and streaming rate through `hum gateway` (OpenAI
    /// SSE) against the same turns over thrum directly.
    Gateway {
        #[arg(long, default_value_t = 100)]
        turns: usize,
        /// Chunks of the long answer used for the streaming rate.
        #[arg(long, default_value_t = 20_000)]
        chunks: usize,
    },
    /// What lending tools costs: cells with and without the MCP bridge
    /// (time to first event, tree size), and a warm turn calling a
    /// forager's tool against a plain one.
    Tools {
        #[arg(long, default_value_t = 16)]
        cells: usize,
        #[arg(long, default_value_t = 100)]
        turns: usize,
    },
    /// What a cluster on NATS costs (nats-server needed): a forwarded warm
    /// turn against a local one, chunks per second across nodes, placement
    /// time, and a herd's makespan, for each cluster size.
    Cluster {
        /// Cluster sizes, in nodes.
        #[arg(long, value_delimiter = ',', default_value = "1,3,6")]
        nodes: Vec<usize>,
        #[arg(long, default_value_t = 100)]
        turns: usize,
        #[arg(long, default_value_t = 30)]
        bees_per_node: usize,
        #[arg(long, default_value_t = 8)]
        cap: usize,
        #[arg(long, default_value_t = 400)]
        turn_ms: u64,
        /// 16-byte chunks of the long answer.
        #[arg(long, default_value_t = 10_000)]
        chunks: usize,
        /// Herds per size, each on a cluster of its own: the makespan
        /// reported is their median (each is listed too).
        #[arg(long, default_value_t = 3)]
        herds: usize,
    },
    /// What speaking ACP costs: the simulator as an ACP cell against the
    /// same as a stream-json cell, interleaved (spawn to first answer, a
    /// warm turn).
    Acp {
        #[arg(long, default_value_t = 20)]
        cells: usize,
        #[arg(long, default_value_t = 200)]
        turns: usize,
    },
    /// Chunks per second through humd.
    Throughput {
        #[arg(long, default_value_t = 200_000)]
        chunks: usize,
        #[arg(long, default_value_t = 100)]
        bees: usize,
    },
}

/// A stack of the bench's own in a directory that goes with it.
/// Set, each system's directory (its humd's and worker's logs among it)
/// is kept and named on stderr: a profile is cut to the herd's window by
/// the workers' log lines (BENCHMARKS.md).
const KEEP_DIRS_VAR: &str = "HUM_BENCH_KEEP";

struct System {
    dir: PathBuf,
    socket: PathBuf,
    stack: Stack,
}

impl System {
    async fn start(worker_config: Option<Value>) -> std::io::Result<System> {
        System::start_with(worker_config, Vec::new()).await
    }

    /// [`System::start`] with more of humd's arguments.
    async fn start_with(
        worker_config: Option<Value>,
        daemon_args: Vec<String>,
    ) -> std::io::Result<System> {
        let dir = std::env::temp_dir().join(format!("hum-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("home"))?;
        std::fs::create_dir_all(dir.join("work"))?;
        let worker_config = match worker_config {
            Some(mut config) => {
                config["cwd"] = json!(dir.join("work"));
                let path = dir.join("hum.json");
                std::fs::write(&path, config.to_string())?;
                Some(path)
            }
            None => None,
        };
        let spec = StackSpec {
            dir: dir.clone(),
            env: vec![
                ("HOME".into(), dir.join("home").display().to_string()),
                (
                    "HUM_STATE_DIR".into(),
                    dir.join("state").display().to_string(),
                ),
            ],
            worker_config,
            daemon_args,
        };
        let stack = Stack::start(spec).await?;
        Ok(System {
            socket: stack.socket.clone(),
            dir,
            stack,
        })
    }

    /// Resident memory of humd and the worker, in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let rss = |pid: Option<u32>| {
            pid.and_then(|p| {
                crate::cell::ContainmentMode::from_env()
                    .procs()
                    .stat(p as i32)
            })
            .map(|s| s.rss_bytes / 1024)
            .unwrap_or(0)
        };
        let (daemon, worker) = self.stack.pids();
        (rss(daemon), rss(worker))
    }

    async fn stop(self) {
        self.stack.stop().await;
        if std::env::var_os(KEEP_DIRS_VAR).is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("hum bench: kept {}", self.dir.display());
        }
    }
}

/// A bee of the bench.
async fn asker(socket: &Path) -> Client {
    Client::asker(socket, "hum bench")
        .await
        .expect("humd is up")
}

/// A stand-in worker's connection (it reads prompts, not turns).
async fn stand_in_worker(socket: &Path) -> Connection<tokio::net::unix::OwnedReadHalf> {
    let stream = thrum::connect(socket).await.expect("humd is up");
    let conn = Connection::unix(stream, Limits::default(), "worker");
    let hello = Client::worker_hello("hum bench", "bench", vec!["bench".into()]);
    conn.outbox.send(&Tone::new(hello)).await.expect("hello");
    conn
}

/// One turn; returns whether it finished.
async fn turn(client: &mut Client, sid: &str, model: &str, text: &str) -> bool {
    if client
        .prompt(sid, Client::text_prompt(text, Some(model)))
        .await
        .is_err()
    {
        return false;
    }
    matches!(client.answer(sid).await, Ok(Answer { end: Ok(_), .. }))
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn herd(bees: usize, cap: usize, bootstrap_ms: u64, turn_ms: u64, spawns: usize) -> Value {
    let config = json!({
        "nest": {"maxActiveCells": cap, "maxConcurrentSpawns": spawns},
        "claude": {"enabled": false},
        "sim": {"env": {"HUM_SIM_BOOTSTRAP_DELAY_MS": bootstrap_ms.to_string(), "HUM_SIM_TURN_DELAY_MS": turn_ms.to_string()}},
    });
    let system = System::start(Some(config)).await.expect("system starts");
    let barrier = Arc::new(tokio::sync::Barrier::new(bees + 1));
    let mut tasks = Vec::new();
    for b in 0..bees {
        let (socket, barrier) = (system.socket.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = asker(&socket).await;
            barrier.wait().await;
            turn(&mut conn, &format!("herd-{b}"), "sim", "go").await
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap_or(false));
    }
    let makespan = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status = crate::client::fetch_status(&system.socket)
        .await
        .unwrap_or_default();
    let spawned: u64 = status.metrics().map(|m| m.spawns).sum();
    let (daemon_kib, worker_kib) = system.rss_kib();
    system.stop().await;
    let ideal = bees.div_ceil(cap) as f64 * (bootstrap_ms + turn_ms) as f64 / 1000.0;
    json!({"bench": "herd", "bees": bees, "cap": cap, "maxConcurrentSpawns": spawns, "bootstrap_ms": bootstrap_ms, "turn_ms": turn_ms,
           "turns_ok": ok, "spawns": spawned, "makespan_s": makespan, "ideal_s": ideal, "ratio_to_ideal": makespan / ideal,
           "rss_kib": {"humd": daemon_kib, "worker": worker_kib}})
}

async fn routing(turns: usize) -> Value {
    let config = json!({"claude": {"enabled": false}, "sim": {}});
    let system = System::start(Some(config)).await.expect("system starts");
    let mut conn = asker(&system.socket).await;
    assert!(
        turn(&mut conn, "warm", "sim", "warm up").await,
        "warm-up turn failed"
    );
    let mut through = Vec::with_capacity(turns);
    for i in 0..turns {
        let t = Instant::now();
        assert!(turn(&mut conn, "warm", "sim", &format!("turn {i}")).await);
        through.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    system.stop().await;

    // The same turns straight into a sim-agent's stdin.
    let home = std::env::temp_dir().join(format!(
        "hum-bench-direct-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&home).expect("temp dir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("sim-agent")
        .args(crate::hive::argv::STREAM_JSON_ARGS)
        .env("HOME", &home)
        .current_dir(&home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sim-agent");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut direct = Vec::with_capacity(turns);
    for i in 0..=turns {
        let t = Instant::now();
        writeln!(
            stdin,
            "{}",
            json!({"type": "user", "message": {"role": "user", "content": format!("turn {i}")}})
        )
        .unwrap();
        for line in lines.by_ref() {
            if line.unwrap().contains("\"type\":\"result\"") {
                break;
            }
        }
        if i > 0 {
            direct.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    drop(stdin);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&home);
    let (t50, d50) = (
        percentile(through.clone(), 0.5),
        percentile(direct.clone(), 0.5),
    );
    let (t99, d99) = (percentile(through, 0.99), percentile(direct, 0.99));
    json!({"bench": "routing", "turns": turns,
           "through_hum_ms": {"p50": t50, "p99": t99},
           "direct_pipe_ms": {"p50": d50, "p99": d99},
           "overhead_p50_ms": t50 - d50,
           "overhead_p99_ms": t99 - d99})
}

/// A stand-in worker that answers every prompt with `chunks` text chunks.
async fn blaster(socket: PathBuf, chunks: usize) {
    let mut conn = stand_in_worker(&socket).await;
    let outbox = conn.outbox.clone();
    while let Ok(Some(msg)) = conn.inbox.recv().await {
        let Inbound::Tone(t) = msg else { continue };
        if t.chi() != "prompt" {
            continue;
        }
        let sid = t.sid().unwrap_or_default().to_owned();
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let chunk = Tone::new(Chunk {
                chunk_type: ChunkType::TextDelta,
                block_idx: Some(0),
                delta: Some("tok".into()),
                partial_json: None,
                usage: None,
                extra: Default::default(),
            })
            .with_sid(&sid);
            for _ in 0..chunks {
                if outbox.send(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = outbox
                .send(&Tone::new(Finish::default()).with_sid(&sid))
                .await;
        });
    }
}

/// Chunks of `sid`'s turn until it ends.
async fn receive(client: &mut Client, sid: &str) -> usize {
    let mut n = 0;
    loop {
        match client.event_of(sid).await {
            Ok(Event::Text { .. } | Event::Chunk { .. }) => n += 1,
            Ok(e) if e.ends_turn() => return n,
            Ok(_) => {}
            Err(_) => return n,
        }
    }
}

async fn throughput(chunks: usize, bees: usize) -> Value {
    let system = System::start(None).await.expect("humd starts");
    let socket = system.socket.clone();
    tokio::spawn(blaster(socket.clone(), chunks));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One bee.
    let mut conn = asker(&socket).await;
    let t = Instant::now();
    conn.prompt("one", Client::text_prompt("go", Some("bench")))
        .await
        .unwrap();
    let got = receive(&mut conn, "one").await;
    let one_rate = got as f64 / t.elapsed().as_secs_f64();
    drop(conn);
    system.stop().await;
    // Many bees at once, each its own stream, against a fresh humd.
    let system = System::start(None).await.expect("humd starts");
    let socket = system.socket.clone();
    let per_bee = (chunks / bees).max(1);
    tokio::spawn(blaster(socket.clone(), per_bee));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conns = Vec::new();
    for _ in 0..bees {
        conns.push(asker(&socket).await);
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let sid = format!("many-{i}");
            c.prompt(&sid, Client::text_prompt("go", Some("bench")))
                .await
                .unwrap();
            receive(&mut c, &sid).await
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or(0);
    }
    let many_rate = total as f64 / t.elapsed().as_secs_f64();
    system.stop().await;
    json!({"bench": "throughput", "one_bee": {"chunks": got, "chunks_per_s": one_rate},
           "many_bees": {"bees": bees, "chunks": total, "chunks_per_s": many_rate}})
}

async fn footprint(sessions: usize, cells: usize, soak_secs: u64) -> Value {
    let config = json!({
        "nest": {"maxActiveCells": cells, "maxConcurrentSpawns": 8, "maxQueuedPrompts": 4096},
        "claude": {"enabled": false}, "sim": {},
    });
    let system = System::start(Some(config)).await.expect("system starts");
    let socket = system.socket.clone();
    // Every session served once, 32 bees at a time.
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let run_all = |round: usize| {
        let (socket, sem) = (socket.clone(), sem.clone());
        async move {
            let mut tasks = Vec::new();
            for i in 0..sessions {
                let (socket, sem) = (socket.clone(), sem.clone());
                tasks.push(tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await.expect("semaphore");
                    let mut conn = asker(&socket).await;
                    turn(
                        &mut conn,
                        &format!("s{i}"),
                        "sim",
                        &format!("round {round}"),
                    )
                    .await
                }));
            }
            let mut ok = 0;
            for t in tasks {
                ok += usize::from(t.await.unwrap_or(false));
            }
            ok
        }
    };
    let first_ok = run_all(0).await;
    let (d0, w0) = system.rss_kib();
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(soak_secs) {
        rounds += 1;
        run_all(rounds).await;
    }
    let (d1, w1) = system.rss_kib();
    system.stop().await;
    json!({"bench": "footprint", "sessions": sessions, "cells": cells, "first_round_ok": first_ok,
           "rss_kib_after_first_round": {"humd": d0, "worker": w0, "total": d0 + w0},
           "soak": {"secs": started.elapsed().as_secs_f64(), "rounds": rounds,
                    "rss_kib_after": {"humd": d1, "worker": w1, "total": d1 + w1},
                    "growth_kib": (d1 + w1) as i64 - (d0 + w0) as i64}})
}

pub fn run(args: BenchArgs) -> ExitCode {
    let rt = crate::stop::runtime(crate::stop::Threads::PerCore);
    let result = rt.block_on(async move {
        match args.which {
            Which::Herd {
                bees,
                cap,
                bootstrap_ms,
                turn_ms,
                spawns,
            } => herd(bees, cap, bootstrap_ms, turn_ms, spawns).await,
            Which::Routing { turns } => routing(turns).await,
            Which::Tools { cells, turns } => tools::tools(cells, turns).await,
            Which::Acp { cells, turns } => acp::acp(cells.max(1), turns.max(1)).await,
            Which::Throughput { chunks, bees } => throughput(chunks, bees).await,
            Which::Cluster {
                nodes,
                turns,
                bees_per_node,
                cap,
                turn_ms,
                chunks,
                herds,
            } => {
                cluster::cluster(cluster::Args {
                    sizes: nodes,
                    turns,
                    bees_per_node,
                    cap,
                    turn_ms,
                    chunks,
                    herds,
                })
                .await
            }
            Which::Gateway { turns, chunks } => gateway(turns, chunks).await,
            Which::Footprint {
                sessions,
                cells,
                soak_secs,
            } => footprint(sessions, cells, soak_secs).await,
        }
    });
    println!("{}", serde_json::to_string_pretty(&result).expect("JSON"));
    ExitCode::SUCCESS
}
