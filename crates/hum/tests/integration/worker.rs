//! `hum worker` over a real Unix socket, with a stand-in humd (a few lines
//! speaking thrum) and `hum sim-agent` cells. Every test ends with the
//! worker stopped by SIGTERM (exit 0) and no process carrying its tag.

use crate::common::*;
use rustix::process::Signal;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thrum::{Body, Cancel, Cleanup, Connection, Inbound, Limits, Outbox, Prompt, Tone};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

struct Rig {
    sb: Sandbox,
    sock: PathBuf,
    listener: Option<UnixListener>,
    worker: Child,
    outbox: Option<Outbox>,
    tones: mpsc::UnboundedReceiver<Tone>,
    hello: Tone,
}

/// Whether `pid` is an agent. A child an agent is starting (its MCP
/// server) shows the agent's own command line until it execs: only the
/// agents themselves count.
fn is_agent(pid: i32) -> bool {
    runs_simulator(pid) && !stat(pid).is_some_and(|s| runs_simulator(s.ppid))
}

fn agents(sb: &Sandbox) -> Vec<ProcId> {
    sb.live().into_iter().filter(|p| is_agent(p.pid)).collect()
}

impl Rig {
    async fn start(nest: Value, sim_env: Value) -> Rig {
        let sb = Sandbox::new();
        let sock = sb.dir.path().join("thrum.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let config = json!({
            "nest": nest,
            "claude": {"enabled": false},
            "sim": {"models": ["sim", "sim-large"], "env": sim_env},
            "cwd": sb.work(),
        });
        let config_path = sb.dir.path().join("hum.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let worker = sb
            .hum(&[
                "worker",
                "--config",
                config_path.to_str().unwrap(),
                "--socket",
                sock.to_str().unwrap(),
            ])
            .env("HUM_STATE_DIR", sb.dir.path().join("state"))
            .env("HUM_LOG", "info")
            .stderr(std::fs::File::create(sb.dir.path().join("worker.log")).unwrap())
            .spawn()
            .unwrap();
        let mut rig = Rig {
            sb,
            sock,
            listener: Some(listener),
            worker,
            outbox: None,
            tones: mpsc::unbounded_channel().1,
            hello: Tone::new(Cleanup::default()),
        };
        rig.accept().await;
        rig
    }

    /// Accepts the worker's connection and reads its hello.
    async fn accept(&mut self) {
        let listener = self.listener.as_ref().unwrap();
        let (stream, _) = tokio::time::timeout(PROMPTLY, listener.accept())
            .await
            .expect("worker connects")
            .unwrap();
        let Connection { mut inbox, outbox } =
            Connection::unix(stream, Limits::default(), "worker");
        let hello = match tokio::time::timeout(PROMPTLY, inbox.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Inbound::Tone(t)) => t,
            other => panic!("expected hello, got {other:?}"),
        };
        assert_eq!(hello.chi(), "hello");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(Inbound::Tone(t))) = inbox.recv().await {
                // Status reports come every second; these tests read turns.
                if t.chi() == "worker-status" {
                    continue;
                }
                if tx.send(t).is_err() {
                    break;
                }
            }
        });
        self.hello = hello;
        self.tones = rx;
        self.outbox = Some(outbox);
    }

    fn send(&self, tone: Tone) {
        self.outbox.as_ref().unwrap().try_send(&tone).unwrap();
    }

    fn prompt(&self, sid: &str, text: &str) {
        let p = Prompt {
            text: Some(text.into()),
            model_id: Some("sim".into()),
            ..Default::default()
        };
        self.send(
            Tone::new(p)
                .with_sid(sid)
                .with_rid(format!("r-{sid}-{text}")),
        );
    }

    async fn next(&mut self) -> Tone {
        tokio::time::timeout(Duration::from_secs(60), self.tones.recv())
            .await
            .expect("worker went silent")
            .expect("link closed")
    }

    /// Tones until every sid in `sids` has ended a turn (finish or error);
    /// returns the terminal tone per sid and every pulse seen.
    async fn until_ended(&mut self, sids: &[String]) -> (HashMap<String, Tone>, Vec<Tone>) {
        let mut ended = HashMap::new();
        let mut pulses = Vec::new();
        while ended.len() < sids.len() {
            let t = self.next().await;
            match t.chi() {
                "finish" | "error" => {
                    let sid = t.sid().unwrap().to_owned();
                    assert!(
                        ended.insert(sid.clone(), t).is_none(),
                        "two endings for {sid}"
                    );
                }
                "pulse" => pulses.push(t),
                _ => {}
            }
        }
        (ended, pulses)
    }

    /// SIGTERM, exit 0, nothing left.
    fn stop(mut self) {
        signal(self.worker.id() as i32, Signal::TERM);
        let deadline = std::time::Instant::now() + PROMPTLY;
        let status = loop {
            if let Some(s) = self.worker.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "worker did not stop");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(0), "worker exit");
        self.sb.assert_no_leaks();
    }
}

fn text_of(t: &Tone) -> String {
    match &t.body {
        Body::Finish(_) => "finish".into(),
        Body::Error(e) => format!("error:{}", e.code),
        _ => String::new(),
    }
}

fn pulse_kind(t: &Tone) -> Option<(&str, &Value)> {
    match &t.body {
        Body::Pulse(p) => Some((p.kind.as_str(), p.extra.get("pid").unwrap_or(&Value::Null))),
        _ => None,
    }
}

/// Samples the number of agents every few ms until stopped; returns the max.
fn sampler(
    sb: &Sandbox,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicUsize::new(0));
    let tag = sb.tag.clone();
    let (s, m) = (stop.clone(), max.clone());
    let handle = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let n = tagged(&tag).into_iter().filter(|p| is_agent(p.pid)).count();
            m.fetch_max(n, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (stop, max, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_30_with_cap_8_is_served_in_order_then_a_second_wave_resumes_every_conversation()
{
    let mut rig = Rig::start(
        json!({"maxActiveCells": 8, "maxConcurrentSpawns": 4}),
        json!({"HUM_SIM_BOOTSTRAP_DELAY_MS": "2000"}),
    )
    .await;
    let (stop, max, sampling) = sampler(&rig.sb);
    let sids: Vec<String> = (0..30).map(|i| format!("bee-{i:02}")).collect();
    for sid in &sids {
        rig.prompt(sid, "first");
    }
    let (ended, pulses) = rig.until_ended(&sids).await;
    for sid in &sids {
        let t = &ended[sid];
        let Body::Finish(_) = &t.body else {
            panic!("{sid}: {t:?}")
        };
        assert_eq!(
            t.rid(),
            Some(format!("r-{sid}-first").as_str()),
            "the prompt's rid comes back"
        );
    }
    // Processes start concurrently; the order of admission is the pool's.
    let mut spawned: Vec<(u64, String)> = pulses
        .iter()
        .filter(|p| pulse_kind(p).is_some_and(|(k, _)| k == "cell-spawned"))
        .map(|p| {
            (
                p.to_value()["admission"].as_u64().unwrap(),
                p.sid().unwrap().to_owned(),
            )
        })
        .collect();
    spawned.sort();
    let order: Vec<String> = spawned.into_iter().map(|(_, sid)| sid).collect();
    assert_eq!(order, sids, "cells admitted in arrival order, one per sid");

    // Second wave: 8 warm cells are reused, 22 sessions resumed from disk.
    for sid in &sids {
        rig.prompt(sid, "second");
    }
    let mut answers: HashMap<String, String> = HashMap::new();
    let mut respawned = 0;
    while answers.len() < sids.len() {
        let t = rig.next().await;
        match &t.body {
            Body::Chunk(c) if c.delta.is_some() => {
                answers.entry(t.sid().unwrap().to_owned()).or_default();
                *answers.get_mut(t.sid().unwrap()).unwrap() += c.delta.as_deref().unwrap();
            }
            Body::Finish(_) => {
                let sid = t.sid().unwrap().to_owned();
                let text = answers.get(&sid).cloned().unwrap_or_default();
                assert_eq!(
                    text, "SIM-REPLY #2: you said <second>; before that <first>",
                    "{sid} did not continue its conversation"
                );
                answers.insert(sid.clone(), text + "|done");
            }
            Body::Error(e) => panic!("{}: {e:?}", t.sid().unwrap()),
            Body::Pulse(p) if p.kind == thrum::PulseKind::CellSpawned => respawned += 1,
            _ => {}
        }
        answers.retain(|_, v| !v.is_empty());
        if answers.values().filter(|v| v.ends_with("|done")).count() == sids.len() {
            break;
        }
    }
    assert_eq!(
        respawned, 22,
        "8 warm cells reused, 22 resumed in new cells"
    );
    stop.store(true, Ordering::Relaxed);
    sampling.join().unwrap();
    let peak = max.load(Ordering::Relaxed);
    assert!(peak <= 8, "{peak} agents alive at once with a cap of 8");
    assert!(peak >= 4, "the sampler saw {peak}: the pool never filled");
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_cells_time_out_and_later_prompts_are_served() {
    let mut rig = Rig::start(
        json!({"maxActiveCells": 8, "maxConcurrentSpawns": 8, "firstEventTimeoutMs": 1500, "closeGraceMs": 300, "termGraceMs": 300}),
        json!({"HUM_SIM_NEVER_ANSWER": "1", "HUM_SIM_FAULT_IF": "STALL"}),
    )
    .await;
    let stalled: Vec<String> = (0..8).map(|i| format!("stuck-{i}")).collect();
    let fine: Vec<String> = (0..6).map(|i| format!("fine-{i}")).collect();
    for sid in &stalled {
        rig.prompt(sid, "STALL please");
    }
    for sid in &fine {
        rig.prompt(sid, "hello");
    }
    let all: Vec<String> = stalled.iter().chain(&fine).cloned().collect();
    let (ended, _) = rig.until_ended(&all).await;
    for sid in &stalled {
        assert_eq!(text_of(&ended[sid]), "error:cell_timeout", "{sid}");
    }
    for sid in &fine {
        assert_eq!(text_of(&ended[sid]), "finish", "{sid}");
    }
    assert!(
        wait_until(PROMPTLY, || agents(&rig.sb).len() == fine.len()),
        "stalled agents were not torn down"
    );
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_cleanup_and_a_crash_each_end_the_turn_once_and_leave_nothing() {
    let mut rig = Rig::start(
        json!({"cancelGraceMs": 500, "closeGraceMs": 500, "termGraceMs": 500}),
        json!({"HUM_SIM_CHUNKS": "100", "HUM_SIM_CHUNK_DELAY_MS": "50", "HUM_SIM_CRASH_AFTER_CHUNKS": "2", "HUM_SIM_FAULT_IF": "CRASH"}),
    )
    .await;
    // Cancel of a busy cell.
    rig.prompt("busy", "long one");
    loop {
        if let Body::Chunk(_) = rig.next().await.body {
            break;
        }
    }
    rig.send(Tone::new(Cancel::default()).with_sid("busy"));
    let (ended, _) = rig.until_ended(&["busy".into()]).await;
    let Body::Finish(f) = &ended["busy"].body else {
        panic!("{:?}", ended["busy"])
    };
    assert_eq!(f.finish_reason, Some(thrum::FinishReason::Cancelled));

    // A crash mid-turn.
    rig.prompt("crashy", "CRASH now");
    let (ended, _) = rig.until_ended(&["crashy".into()]).await;
    assert_eq!(text_of(&ended["crashy"]), "error:cell_died");

    // Cleanup of an idle cell.
    rig.send(
        Tone::new(Prompt {
            text: Some("short".into()),
            model_id: Some("sim".into()),
            extra: [("x".to_string(), json!(1))].into_iter().collect(),
            ..Default::default()
        })
        .with_sid("idle"),
    );
    let mut cleaned_pid = None;
    let (ended, pulses) = rig.until_ended(&["idle".into()]).await;
    assert_eq!(text_of(&ended["idle"]), "finish");
    for p in &pulses {
        if let Some(("cell-spawned", pid)) = pulse_kind(p) {
            if p.sid() == Some("idle") {
                cleaned_pid = pid.as_i64();
            }
        }
    }
    let pid = cleaned_pid.expect("idle cell spawned") as i32;
    rig.send(Tone::new(Cleanup::default()).with_sid("idle"));
    // The cancelled cell obeyed the interrupt and stayed warm; clean it up
    // too, so nothing of this test should be left.
    rig.send(Tone::new(Cleanup::default()).with_sid("busy"));
    assert!(
        wait_until(PROMPTLY, || stat(pid).is_none_or(|s| s.exited())),
        "cleanup left the cell running"
    );
    assert!(
        wait_until(PROMPTLY, || agents(&rig.sb).is_empty()),
        "processes left: {:?}",
        agents(&rig.sb)
    );
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_survive_a_daemon_restart_and_serve_the_same_sids() {
    let mut rig = Rig::start(
        json!({}),
        json!({"HUM_SIM_CHUNKS": "10", "HUM_SIM_CHUNK_DELAY_MS": "60"}),
    )
    .await;
    let sids: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
    for sid in &sids {
        rig.prompt(sid, "before");
    }
    rig.until_ended(&sids).await;
    let before: Vec<i32> = {
        let mut v: Vec<i32> = agents(&rig.sb).iter().map(|p| p.pid).collect();
        v.sort();
        v
    };
    assert_eq!(before.len(), 3);

    // A turn is in flight when humd goes away: socket closed, connection
    // dropped. Its asker's connection died with humd, and this humd gave
    // no grace (its breath said none): the worker interrupts the turn at
    // once; the cell stays warm.
    rig.prompt("s0", "during");
    loop {
        if let Body::Chunk(_) = rig.next().await.body {
            break;
        }
    }
    rig.outbox.take().unwrap().abort();
    drop(rig.listener.take());
    std::fs::remove_file(&rig.sock).unwrap();
    let log = rig.sb.dir.path().join("worker.log");
    assert!(
        wait_until(PROMPTLY, || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("turn.cancelled") && l.contains("sid=s0"))),
        "the in-flight turn was not stopped while humd was away"
    );
    // ... and comes back at the same path.
    rig.listener = Some(UnixListener::bind(&rig.sock).unwrap());
    rig.accept().await;
    assert_eq!(rig.hello.chi(), "hello", "the worker said hello again");
    // It tells the new humd what it gave up while there was none.
    let told = loop {
        let t = rig.next().await;
        if t.chi() == hum::reports::WORKER_TURNS {
            break t.to_value();
        }
    };
    assert_eq!(told["abandoned"], 1, "{told}");
    assert_eq!(told["turns"], json!([]), "{told}");

    for sid in &sids {
        rig.prompt(sid, "after");
    }
    let mut text = String::new();
    let mut ended = HashMap::new();
    let mut pulses = Vec::new();
    while ended.len() < sids.len() {
        let t = rig.next().await;
        match &t.body {
            Body::Chunk(c) if t.sid() == Some("s0") => {
                text += c.delta.as_deref().unwrap_or_default()
            }
            Body::Finish(_) | Body::Error(_) => {
                ended.insert(t.sid().unwrap().to_owned(), t);
            }
            Body::Pulse(_) => pulses.push(t),
            _ => {}
        }
    }
    assert!(ended.values().all(|t| text_of(t) == "finish"));
    assert!(
        text.starts_with("SIM-REPLY #3: you said <after>; before that <during>"),
        "the warm cell did not serve the sid: {text}"
    );
    assert!(
        !pulses
            .iter()
            .any(|p| pulse_kind(p).is_some_and(|(k, _)| k == "cell-spawned")),
        "a second process was started for a sid"
    );
    let mut after: Vec<i32> = agents(&rig.sb).iter().map(|p| p.pid).collect();
    after.sort();
    assert_eq!(after, before, "same cells, same pids");
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_cli_refuses_at_start_is_retried_once_in_the_other_form() {
    let mut rig = Rig::start(json!({}), json!({"HUM_SIM_FORGET_SESSIONS": "1"})).await;
    // A transcript on disk makes the worker choose --resume; the CLI knows
    // no such session, so the worker starts it again with --session-id.
    let session = hum::hive::session::session_id("returning");
    let transcript = rig.sb.transcript(&session);
    std::fs::create_dir_all(transcript.parent().unwrap()).unwrap();
    std::fs::write(&transcript, "").unwrap();
    rig.prompt("returning", "hello again");
    let (ended, pulses) = rig.until_ended(&["returning".into()]).await;
    assert_eq!(
        text_of(&ended["returning"]),
        "finish",
        "{:?}",
        ended["returning"]
    );
    let spawns = pulses
        .iter()
        .filter(|p| pulse_kind(p).is_some_and(|(k, _)| k == "cell-spawned"))
        .count();
    assert_eq!(spawns, 2, "one refused start, one retry");
    assert_eq!(agents(&rig.sb).len(), 1, "the refused process is gone");
    // A new sid costs one spawn.
    rig.prompt("newcomer", "hi");
    let (_, pulses) = rig.until_ended(&["newcomer".into()]).await;
    assert_eq!(
        pulses
            .iter()
            .filter(|p| pulse_kind(p).is_some_and(|(k, _)| k == "cell-spawned"))
            .count(),
        1
    );
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cells_are_pruned_after_the_threshold() {
    let mut rig = Rig::start(json!({"cellIdlePruneThresholdMs": 400}), json!({})).await;
    rig.prompt("sleepy", "hi");
    rig.until_ended(&["sleepy".into()]).await;
    loop {
        let t = rig.next().await;
        if let Body::Pulse(p) = &t.body {
            if p.kind == thrum::PulseKind::CellDied {
                assert_eq!(p.extra["reason"], "idle");
                assert_eq!(p.extra["rung"], "stdin");
                break;
            }
        }
    }
    assert!(agents(&rig.sb).is_empty());
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prompts_get_bad_request_and_start_nothing() {
    let mut rig = Rig::start(json!({}), json!({})).await;
    let cases: Vec<(Tone, &str)> = vec![
        (
            Tone::new(Prompt {
                text: Some("hi".into()),
                ..Default::default()
            })
            .with_rid("no-sid"),
            "bad_request",
        ),
        (
            Tone::new(Prompt::default())
                .with_sid("a")
                .with_rid("no-content"),
            "bad_request",
        ),
        (
            Tone::new(Prompt {
                text: Some("hi".into()),
                model_id: Some("--dangerously-skip-permissions".into()),
                ..Default::default()
            })
            .with_sid("b")
            .with_rid("flag"),
            "bad_request",
        ),
        (
            Tone::new(Prompt {
                text: Some("hi".into()),
                model_id: Some("a b".into()),
                ..Default::default()
            })
            .with_sid("c")
            .with_rid("space"),
            "bad_request",
        ),
        (
            Tone::new(Prompt {
                text: Some("hi".into()),
                model_id: Some("gpt-9".into()),
                ..Default::default()
            })
            .with_sid("d")
            .with_rid("unknown"),
            "no_worker",
        ),
    ];
    for (tone, code) in cases {
        let rid = tone.rid().unwrap().to_owned();
        rig.send(tone);
        let t = rig.next().await;
        let Body::Error(e) = &t.body else {
            panic!("{rid}: {t:?}")
        };
        assert_eq!(
            (e.code.as_str(), t.rid()),
            (code, Some(rid.as_str())),
            "{e:?}"
        );
    }
    // A tool result for a call nobody waits for.
    rig.send(
        Tone::new(thrum::ToolResult {
            call_id: "c1".into(),
            tool_name: None,
            output: None,
            result: Some(json!("ok")),
            is_error: None,
            extra: Default::default(),
        })
        .with_sid("nobody")
        .with_rid("tool"),
    );
    let t = rig.next().await;
    let Body::Error(e) = &t.body else {
        panic!("{t:?}")
    };
    assert_eq!((e.code.as_str(), t.rid()), ("bad_request", Some("tool")));
    assert!(agents(&rig.sb).is_empty(), "a bad prompt started a process");
    assert_eq!(rig.hello.to_value()["bee"], json!(["worker"]));
    assert_eq!(
        rig.hello.to_value()["propensity"]["statefulness"],
        "stateful_session"
    );
    rig.stop();
}
