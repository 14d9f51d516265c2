//! The fault matrix: every failure hum promises to survive, one test per
//! row, each through the real daemon, worker and `hum sim-agent` cells.
//! Every row asserts (a) no process carries the test's tag at the end,
//! (b) no session ever had two live agent processes (sampled every 20 ms),
//! (c) every prompt ended in exactly one finish or error, with the code the
//! row expects.

use crate::common::*;
use rustix::process::Signal;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thrum::{Bees, Body, Connection, Hello, Inbound, Inbox, Limits, Outbox, Prompt, Tone};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

/// Watches agent processes: the most alive at once, and any session that
/// ever had two live agents.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    duplicates: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The session an agent serves, from its argv (`--session-id=` or `--resume=`).
fn session_of(cmdline: &[u8]) -> Option<String> {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if !sim_agent_argv(&args) {
        return None;
    }
    args.iter().find_map(|a| {
        a.strip_prefix("--session-id=")
            .or_else(|| a.strip_prefix("--resume="))
            .map(str::to_owned)
    })
}

impl Sampler {
    fn start(tag: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let duplicates = Arc::new(Mutex::new(Vec::new()));
        let (s, p, d) = (stop.clone(), peak.clone(), duplicates.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // (pid, ppid, session) of every agent-looking process. A
                // child forked by an agent has its cmdline until it execs:
                // only processes whose parent is not such an agent count.
                let agents: Vec<(i32, i32, String)> = tagged(&tag)
                    .into_iter()
                    .filter_map(|p| {
                        let session = std::fs::read(format!("/proc/{}/cmdline", p.pid))
                            .ok()
                            .and_then(|c| session_of(&c))?;
                        Some((p.pid, stat(p.pid)?.ppid, session))
                    })
                    .collect();
                let pids: Vec<i32> = agents.iter().map(|a| a.0).collect();
                let mut per_session: HashMap<String, usize> = HashMap::new();
                for (_, ppid, session) in agents {
                    if !pids.contains(&ppid) {
                        *per_session.entry(session).or_default() += 1;
                    }
                }
                p.fetch_max(per_session.values().sum(), Ordering::Relaxed);
                for (session, n) in per_session {
                    if n > 1 {
                        d.lock().unwrap().push(session);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler {
            stop,
            peak,
            duplicates,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let dups = self.duplicates.lock().unwrap().clone();
        assert!(dups.is_empty(), "sessions with two live agents: {dups:?}");
        self.peak.load(Ordering::Relaxed)
    }
}

/// The shared process stack, the worker's config (the same across its
/// restarts) and the sampler.
struct Rig {
    procs: crate::common::stack::Stack,
    config: PathBuf,
    sampler: Sampler,
}

impl std::ops::Deref for Rig {
    type Target = crate::common::stack::Stack;
    fn deref(&self) -> &crate::common::stack::Stack {
        &self.procs
    }
}

impl std::ops::DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut crate::common::stack::Stack {
        &mut self.procs
    }
}

impl Rig {
    fn start(nest: Value, sim_env: Value) -> Rig {
        let procs = crate::common::stack::Stack::start(Value::Null, &["--no-metrics"]);
        let config = procs.sb.dir.path().join("hum.json");
        std::fs::write(&config, json!({"nest": nest, "claude": {"enabled": false}, "sim": {"env": sim_env}, "cwd": procs.sb.work()}).to_string()).unwrap();
        let sampler = Sampler::start(procs.sb.tag.clone());
        let mut rig = Rig {
            procs,
            config,
            sampler,
        };
        rig.start_worker();
        rig
    }

    fn worker_log(&self) -> PathBuf {
        self.sb.dir.path().join("worker.log")
    }

    /// A worker on the rig's config; its log goes on after a restart's.
    fn start_worker(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.worker_log())
            .unwrap();
        let child = self
            .sb
            .hum(&[
                "worker",
                "--config",
                self.config.to_str().unwrap(),
                "--socket",
                self.sock.to_str().unwrap(),
            ])
            .env("HUM_STATE_DIR", self.sb.dir.path().join("state"))
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.worker = Some(child);
    }

    fn stop_child(child: &mut Child) {
        crate::common::stack::stop_child(child);
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }

    /// A bee: hello done; prompts once a worker serves `sim`.
    async fn bee(&self) -> Bee {
        let stream = UnixStream::connect(&self.sock).await.unwrap();
        let Connection { inbox, outbox } = Connection::unix(stream, Limits::default(), "bee");
        let hello = Hello {
            bee: Some(Bees::Many(vec!["asker".into()])),
            ..Default::default()
        };
        outbox.try_send(&Tone::new(hello)).unwrap();
        Bee {
            inbox,
            outbox,
            ends: HashMap::new(),
            taken: HashMap::new(),
        }
    }

    /// Waits until a worker has said hello to humd (without starting a cell).
    async fn wait_for_worker(&self) {
        self.procs.wait_worker().await;
    }

    /// Stops everything; (a) nothing left, (b) no duplicate sessions.
    fn finish(mut self) -> usize {
        if let Some(mut w) = self.procs.worker.take() {
            Rig::stop_child(&mut w);
        }
        let Rig { procs, sampler, .. } = self;
        procs.stop();
        sampler.finish()
    }
}

struct Bee {
    inbox: Inbox<OwnedReadHalf>,
    outbox: Outbox,
    /// Terminal tones seen per sid, in order: "finish", "finish:cancelled",
    /// or "error:<code>".
    ends: HashMap<String, Vec<String>>,
    /// How many of each sid's ends `end` has returned.
    taken: HashMap<String, usize>,
}

fn terminal(t: &Tone) -> Option<String> {
    match &t.body {
        Body::Finish(f) if f.finish_reason == Some(thrum::FinishReason::Cancelled) => {
            Some("finish:cancelled".into())
        }
        Body::Finish(_) => Some("finish".into()),
        Body::Error(e) => Some(format!("error:{}", e.code)),
        _ => None,
    }
}

impl Bee {
    fn prompt(&self, sid: &str, text: &str) {
        let p = Prompt {
            text: Some(text.into()),
            model_id: Some("sim".into()),
            ..Default::default()
        };
        self.outbox.try_send(&Tone::new(p).with_sid(sid)).unwrap();
    }

    fn send(&self, tone: Tone) {
        self.outbox.try_send(&tone).unwrap();
    }

    /// Reads until `sid`'s next turn ends; returns how ("finish", "error:…").
    async fn end(&mut self, sid: &str) -> String {
        let next = self.taken.get(sid).copied().unwrap_or(0);
        loop {
            if let Some(e) = self.ends.get(sid).and_then(|v| v.get(next)).cloned() {
                self.taken.insert(sid.to_owned(), next + 1);
                return e;
            }
            if self.read_one(Duration::from_secs(60)).await.is_none() {
                panic!(
                    "the turn of {sid} never ended; ends so far: {:?}",
                    self.ends
                );
            }
        }
    }

    async fn read_one(&mut self, within: Duration) -> Option<()> {
        match tokio::time::timeout(within, self.inbox.recv()).await {
            Ok(Ok(Some(Inbound::Tone(t)))) => {
                if let (Some(end), Some(sid)) = (terminal(&t), t.sid()) {
                    self.ends.entry(sid.to_owned()).or_default().push(end);
                }
                Some(())
            }
            _ => None,
        }
    }

    /// Until `sid` has a first tone of any kind (the turn is under way).
    /// Waits until each of `sids` has streamed a chunk.
    async fn all_started(&mut self, sids: &[&str]) {
        let mut waiting: std::collections::HashSet<&str> = sids.iter().copied().collect();
        while !waiting.is_empty() {
            match tokio::time::timeout(Duration::from_secs(60), self.inbox.recv())
                .await
                .expect("silence")
                .unwrap()
            {
                Some(Inbound::Tone(t)) => {
                    if matches!(t.body, Body::Chunk(_)) {
                        if let Some(s) = t.sid() {
                            waiting.remove(s);
                        }
                    }
                    if let (Some(end), Some(s)) = (terminal(&t), t.sid()) {
                        self.ends.entry(s.to_owned()).or_default().push(end);
                    }
                }
                other => panic!("{other:?}"),
            }
        }
    }

    async fn started(&mut self, sid: &str) {
        loop {
            match tokio::time::timeout(Duration::from_secs(60), self.inbox.recv())
                .await
                .expect("silence")
                .unwrap()
            {
                Some(Inbound::Tone(t))
                    if t.sid() == Some(sid) && matches!(t.body, Body::Chunk(_)) =>
                {
                    return
                }
                Some(Inbound::Tone(t)) => {
                    if let (Some(end), Some(s)) = (terminal(&t), t.sid()) {
                        self.ends.entry(s.to_owned()).or_default().push(end);
                    }
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// (c): after a quiet moment, every listed sid ended exactly as expected.
    async fn assert_ends(&mut self, expected: &[(&str, &[&str])]) {
        while self.read_one(Duration::from_millis(300)).await.is_some() {}
        for (sid, ends) in expected {
            let got = self.ends.get(*sid).cloned().unwrap_or_default();
            assert_eq!(
                got,
                ends.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                "{sid}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_eviction_of_an_idle_cell() {
    let rig = Rig::start(json!({"maxActiveCells": 1}), json!({}));
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    bee.prompt("older", "one");
    assert_eq!(bee.end("older").await, "finish");
    bee.prompt("newer", "two");
    assert_eq!(bee.end("newer").await, "finish");
    bee.prompt("older", "three");
    assert_eq!(bee.end("older").await, "finish");
    bee.assert_ends(&[("older", &["finish", "finish"]), ("newer", &["finish"])])
        .await;
    let log = std::fs::read_to_string(rig.worker_log()).unwrap();
    assert!(
        log.matches("event=\"cell.evicted\"").count() >= 2,
        "no LRU eviction:\n{log}"
    );
    assert!(rig.finish() <= 1, "cap 1 exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reap() {
    let rig = Rig::start(json!({"cellIdlePruneThresholdMs": 300}), json!({}));
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    bee.prompt("napper", "hi");
    assert_eq!(bee.end("napper").await, "finish");
    assert!(
        wait_until(PROMPTLY, || !tagged(&rig.sb.tag)
            .iter()
            .any(|p| std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .is_ok_and(|c| session_of(&c).is_some()))),
        "idle cells were not reaped"
    );
    bee.assert_ends(&[("napper", &["finish"])]).await;
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_busy_cell() {
    let rig = Rig::start(
        json!({"cancelGraceMs": 300}),
        json!({"HUM_SIM_CHUNKS": "200", "HUM_SIM_CHUNK_DELAY_MS": "50"}),
    );
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    bee.prompt("busy", "long");
    bee.started("busy").await;
    bee.send(Tone::new(thrum::Cancel::default()).with_sid("busy"));
    assert_eq!(bee.end("busy").await, "finish:cancelled");
    bee.assert_ends(&[("busy", &["finish:cancelled"])]).await;
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup() {
    let rig = Rig::start(json!({}), json!({"HUM_SIM_MCP_SERVERS": "1"}));
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    bee.prompt("tidy", "hi");
    assert_eq!(bee.end("tidy").await, "finish");
    bee.send(Tone::new(thrum::Cleanup::default()).with_sid("tidy"));
    bee.prompt("tidy", "after cleanup");
    assert_eq!(bee.end("tidy").await, "finish");
    bee.assert_ends(&[("tidy", &["finish", "finish"])]).await;
    let log = std::fs::read_to_string(rig.worker_log()).unwrap();
    assert!(
        log.contains(&format!("reason={}", hum::cell::Reason::Cleanup)),
        "no cleanup teardown:\n{log}"
    );
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_crash_mid_turn() {
    let rig = Rig::start(
        json!({}),
        json!({"HUM_SIM_CRASH_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "CRASH", "HUM_SIM_MCP_SERVERS": "1", "HUM_SIM_MCP_IGNORE_EOF": "1"}),
    );
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    bee.prompt("fragile", "CRASH now");
    assert_eq!(bee.end("fragile").await, "error:cell_died");
    bee.prompt("fragile", "again, calmly");
    assert_eq!(bee.end("fragile").await, "finish");
    bee.assert_ends(&[("fragile", &["error:cell_died", "finish"])])
        .await;
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_ignoring_sigterm() {
    let rig = Rig::start(
        json!({"cancelGraceMs": 200, "closeGraceMs": 300, "termGraceMs": 300}),
        json!({"HUM_SIM_IGNORE_SIGTERM": "1", "HUM_SIM_IGNORE_INTERRUPT": "1", "HUM_SIM_STALL_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "STALL"}),
    );
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    bee.prompt("stubborn", "STALL");
    bee.started("stubborn").await;
    bee.send(Tone::new(thrum::Cancel::default()).with_sid("stubborn"));
    assert_eq!(bee.end("stubborn").await, "finish:cancelled");
    bee.assert_ends(&[("stubborn", &["finish:cancelled"])])
        .await;
    assert!(
        wait_until(PROMPTLY, || std::fs::read_to_string(rig.worker_log())
            .unwrap()
            .contains(&format!("rung={}", hum::cell::Rung::Kill))),
        "not killed at the last rung"
    );
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_mcp_children() {
    let rig = Rig::start(
        json!({"maxActiveCells": 1}),
        json!({"HUM_SIM_MCP_SERVERS": "3", "HUM_SIM_MCP_IGNORE_EOF": "1"}),
    );
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    bee.prompt("toolish", "hi");
    assert_eq!(bee.end("toolish").await, "finish");
    // Eviction ends the servers too.
    bee.prompt("other", "hi");
    assert_eq!(bee.end("other").await, "finish");
    bee.assert_ends(&[("toolish", &["finish"]), ("other", &["finish"])])
        .await;
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_a_setsid_grandchild() {
    let rig = Rig::start(
        json!({"maxActiveCells": 1}),
        json!({"HUM_SIM_BASH_ESCAPEE": "1", "HUM_SIM_IGNORE_SIGTERM": "1"}),
    );
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    bee.prompt("shell", "run");
    assert_eq!(bee.end("shell").await, "finish");
    bee.prompt("other", "hi");
    assert_eq!(bee.end("other").await, "finish");
    bee.assert_ends(&[("shell", &["finish"]), ("other", &["finish"])])
        .await;
    rig.finish();
}

async fn eight_busy(rig: &Rig) -> Bee {
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    for i in 0..8 {
        bee.prompt(&format!("busy-{i}"), "long");
    }
    for i in 0..8 {
        bee.started(&format!("busy-{i}")).await;
    }
    bee
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sigterm_with_8_busy_cells() {
    let mut rig = Rig::start(
        json!({"maxActiveCells": 8, "maxConcurrentSpawns": 8, "closeGraceMs": 300, "termGraceMs": 300}),
        json!({"HUM_SIM_CHUNKS": "400", "HUM_SIM_CHUNK_DELAY_MS": "50", "HUM_SIM_MCP_SERVERS": "1", "HUM_SIM_BASH_ESCAPEE": "1"}),
    );
    let mut bee = eight_busy(&rig).await;
    let mut worker = rig.worker.take().unwrap();
    Rig::stop_child(&mut worker);
    // The worker ends each turn itself (shutting_down) before it goes; a
    // turn whose end was still in flight when the link closed is ended by
    // humd (worker_lost). Either way: exactly one end each.
    for i in 0..8 {
        let sid = format!("busy-{i}");
        let end = bee.end(&sid).await;
        assert!(
            end == "error:shutting_down" || end == "error:worker_lost",
            "{sid}: {end}"
        );
    }
    while bee.read_one(Duration::from_millis(300)).await.is_some() {}
    for i in 0..8 {
        assert_eq!(
            bee.ends[&format!("busy-{i}")].len(),
            1,
            "busy-{i} ended more than once"
        );
    }
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sigkill_with_8_busy_cells() {
    let mut rig = Rig::start(
        json!({"maxActiveCells": 8, "maxConcurrentSpawns": 8}),
        json!({"HUM_SIM_CHUNKS": "400", "HUM_SIM_CHUNK_DELAY_MS": "50", "HUM_SIM_MCP_SERVERS": "1", "HUM_SIM_MCP_IGNORE_EOF": "1", "HUM_SIM_BASH_ESCAPEE": "1"}),
    );
    let mut bee = eight_busy(&rig).await;
    let mut worker = rig.worker.take().unwrap();
    signal(worker.id() as i32, Signal::KILL);
    worker.wait().unwrap();
    for i in 0..8 {
        assert_eq!(bee.end(&format!("busy-{i}")).await, "error:worker_lost");
    }
    let daemon_pid = rig.daemon.id() as i32;
    assert!(
        wait_until(Duration::from_secs(5), || rig
            .sb
            .live()
            .iter()
            .all(|p| p.pid == daemon_pid)),
        "processes outlived the SIGKILLed worker by 5 s: {:?}",
        rig.sb.live()
    );
    // The restarted worker finds nothing left to sweep.
    rig.start_worker();
    rig.wait_for_worker().await;
    let log = std::fs::read_to_string(rig.worker_log()).unwrap();
    assert!(
        !log.contains("cell.sweep.killed"),
        "the sentinel left work for the sweep:\n{log}"
    );
    while bee.read_one(Duration::from_millis(300)).await.is_some() {}
    for i in 0..8 {
        assert_eq!(
            bee.ends[&format!("busy-{i}")],
            vec!["error:worker_lost".to_string()]
        );
    }
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn humd_sigkill_and_restart_with_30_bees_reconnecting_at_once() {
    let mut rig = Rig::start(
        json!({"maxActiveCells": 8, "maxConcurrentSpawns": 4}),
        json!({}),
    );
    rig.wait_for_worker().await;
    let mut bees = Vec::new();
    for i in 0..30 {
        let bee = rig.bee().await;
        bee.prompt(&format!("bee-{i}"), "before");
        bees.push(bee);
    }
    for (i, bee) in bees.iter_mut().enumerate() {
        assert_eq!(bee.end(&format!("bee-{i}")).await, "finish");
    }
    let cells_before: Vec<ProcId> = tagged(&rig.sb.tag)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .is_ok_and(|c| session_of(&c).is_some())
        })
        .collect();
    assert_eq!(cells_before.len(), 8);
    // humd dies hard and comes back; the 30 bees reconnect at once.
    signal(rig.daemon.id() as i32, Signal::KILL);
    rig.daemon.wait().unwrap();
    drop(bees);
    rig.procs.daemon = rig.procs.respawn_daemon(&["--no-metrics"]);
    rig.wait_for_worker().await;
    // The worker saw its link go and come back, under these event names
    // (another test proves the first one absent when it must be).
    let log = std::fs::read_to_string(rig.worker_log()).unwrap();
    assert!(
        log.contains("worker.unlinked") && log.contains("worker.linked"),
        "{log}"
    );
    assert!(
        cells_before.iter().all(|c| alive(*c)),
        "cells did not survive the daemon's death"
    );
    let mut bees = Vec::new();
    for _ in 0..30 {
        bees.push(rig.bee().await);
    }
    for (i, bee) in bees.iter().enumerate() {
        bee.prompt(&format!("bee-{i}"), "after");
    }
    for (i, bee) in bees.iter_mut().enumerate() {
        assert_eq!(
            bee.end(&format!("bee-{i}")).await,
            "finish",
            "bee-{i} after the restart"
        );
    }
    for (i, bee) in bees.iter_mut().enumerate() {
        let sid = format!("bee-{i}");
        bee.assert_ends(&[(sid.as_str(), &["finish"])]).await;
    }
    assert!(rig.finish() <= 8, "cap exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_30_stuck_in_bootstrap() {
    let rig = Rig::start(
        json!({"maxActiveCells": 8, "maxConcurrentSpawns": 8, "firstEventTimeoutMs": 800, "closeGraceMs": 200, "termGraceMs": 200}),
        json!({"HUM_SIM_NEVER_ANSWER": "1", "HUM_SIM_FAULT_IF": "STUCK"}),
    );
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    for i in 0..30 {
        bee.prompt(&format!("stuck-{i}"), "STUCK");
    }
    for i in 0..30 {
        assert_eq!(
            bee.end(&format!("stuck-{i}")).await,
            "error:cell_timeout",
            "stuck-{i}"
        );
    }
    let expected: Vec<String> = (0..30).map(|i| format!("stuck-{i}")).collect();
    let rows: Vec<(&str, &[&str])> = expected
        .iter()
        .map(|s| (s.as_str(), &["error:cell_timeout"][..]))
        .collect();
    bee.assert_ends(&rows).await;
    assert!(rig.finish() <= 8, "cap exceeded while cells were stuck");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_after_a_simulated_crash() {
    let mut rig = Rig::start(
        json!({"maxActiveCells": 4, "maxConcurrentSpawns": 4}),
        // Turns stalled mid-way when the crash comes: a stalled agent does
        // not react to its stdin closing, so nothing but the sweep may end
        // what the cells started (an idle agent would clean up on EOF and
        // race the crash).
        json!({"HUM_SIM_MCP_SERVERS": "1", "HUM_SIM_MCP_IGNORE_EOF": "1", "HUM_SIM_BASH_ESCAPEE": "1", "HUM_SIM_IGNORE_SIGTERM": "1",
               "HUM_SIM_STALL_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "STALL"}),
    );
    rig.wait_for_worker().await;
    let mut bee = rig.bee().await;
    for i in 0..3 {
        bee.prompt(&format!("crashy-{i}"), "STALL");
    }
    bee.all_started(&["crashy-0", "crashy-1", "crashy-2"]).await;
    // A crash that takes the sentinel down too: SIGKILL the sentinel first,
    // then the worker. Its cells are left running, as after a power cut of
    // hum alone.
    let worker = rig.worker.take().unwrap();
    let sentinel = rig
        .sb
        .live()
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .is_ok_and(|c| c.windows(8).any(|w| w == b"sentinel"))
        })
        .expect("sentinel");
    signal(sentinel.pid, Signal::KILL);
    // Dead before the worker dies, or it would wake and sweep.
    assert!(wait_until(PROMPTLY, || !alive(sentinel)));
    let mut worker = worker;
    signal(worker.id() as i32, Signal::KILL);
    worker.wait().unwrap();
    let left: Vec<ProcId> = rig
        .sb
        .live()
        .into_iter()
        .filter(|p| p.pid != rig.daemon.id() as i32)
        .collect();
    assert!(
        left.len() >= 6,
        "the crash should leave the cells' helpers running: {left:?}"
    );
    // The next worker sweeps them.
    rig.start_worker();
    rig.wait_for_worker().await;
    for p in &left {
        assert!(
            wait_until(PROMPTLY, || !alive(*p)),
            "pid {} survived the sweep",
            p.pid
        );
    }
    let log = std::fs::read_to_string(rig.worker_log()).unwrap();
    assert!(log.contains("cell.sweep.killed"), "no sweep logged:\n{log}");
    rig.finish();
}
