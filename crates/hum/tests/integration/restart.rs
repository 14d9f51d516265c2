//! Issue 23: humd SIGKILLed with turns in flight and queued, restarted,
//! and every bee back at once. Each bee gets its own new prompt's answer
//! (never the answer to the prompt it sent before the kill), no agent turn
//! runs after the kill for an asker who is gone (counted at the simulator,
//! which logs every turn it starts and ends), and the abandoned turns are
//! counted. A bee that sends its prompt's rid again within the grace gets
//! that prompt's answer, run once. The real CLI's version is in
//! `real_claude`.

use crate::common::stack::*;
use crate::common::*;
use rustix::process::Signal;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thrum::{Inbox, Tone};
use tokio::net::unix::OwnedReadHalf;

/// The sim's turn log: (event, atMs, prompt) per line.
fn turn_log(path: &Path) -> Vec<(String, u64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a turn log line");
            (
                v["event"].as_str().unwrap().to_owned(),
                v["atMs"].as_u64().unwrap(),
                v["prompt"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn count(log: &[(String, u64, String)], event: &str, prompt_has: &str) -> usize {
    log.iter()
        .filter(|(e, _, p)| e == event && p.contains(prompt_has))
        .count()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub(crate) fn prompt(sid: &str, rid: &str, text: &str) -> Tone {
    Tone::new(thrum::Prompt {
        text: Some(text.into()),
        model_id: Some("sim".into()),
        ..Default::default()
    })
    .with_sid(sid)
    .with_rid(rid)
}

/// One turn of `sid` read to its end: its text, its end (`finish:<reason>`
/// or `error:<code>`), and every rid its tones carried.
pub(crate) async fn read_answer(
    inbox: &mut Inbox<OwnedReadHalf>,
    sid: &str,
) -> (String, String, Vec<String>) {
    let (mut text, mut rids) = (String::new(), Vec::new());
    loop {
        let t = next(inbox).await;
        if t.sid() != Some(sid) || t.chi() == "pulse" {
            continue;
        }
        if let Some(r) = t.rid() {
            if !rids.iter().any(|x| x == r) {
                rids.push(r.to_owned());
            }
        }
        match &t.body {
            thrum::Body::Chunk(c) => text += c.delta.as_deref().unwrap_or(""),
            thrum::Body::Finish(f) => {
                return (
                    text,
                    format!(
                        "finish:{}",
                        f.finish_reason
                            .as_ref()
                            .map_or("", thrum::FinishReason::as_str)
                    ),
                    rids,
                )
            }
            thrum::Body::Error(e) => return (text, format!("error:{}", e.code), rids),
            _ => {}
        }
    }
}

/// The worker's entry in humd's status.
pub(crate) async fn worker_entry(stack: &Stack) -> Value {
    let s = stack.status_answers("reading the worker").await;
    s["workers"][0].clone()
}

/// Polls humd's status until `cond` holds for its first worker's entry.
pub(crate) async fn until_worker(stack: &Stack, what: &str, cond: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + PROMPTLY * 3;
    loop {
        let w = worker_entry(stack).await;
        if cond(&w) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never; last {w}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// humd killed, `hum daemon` started again with `args`, the worker linked
/// to it again.
pub(crate) async fn kill_and_restart_humd(stack: &mut Stack, args: &[&str]) {
    signal(stack.daemon.id() as i32, Signal::KILL);
    stack.daemon.wait().unwrap();
    let mut all = vec!["--no-metrics"];
    all.extend_from_slice(args);
    stack.daemon = stack.respawn_daemon(&all);
    stack.wait_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_humd_restarts_each_bee_gets_its_own_answer_and_no_turn_runs_for_nobody() {
    let mut stack = Stack::start(Value::Null, &[]);
    let log = stack.sb.dir.path().join("turns.jsonl");
    // Cap 2, six bees: two turns running (held mid-way, as if waiting on a
    // slow API) and four queued at the worker when humd dies.
    let config = json!({"claude": {"enabled": false}, "cwd": stack.sb.work(),
        "nest": {"maxActiveCells": 2},
        "sim": {"models": ["sim"], "env": {"HUM_SIM_TURN_LOG": log, "HUM_SIM_STALL_AFTER_CHUNKS": "1",
                                           "HUM_SIM_FAULT_IF": "before the kill"}}});
    stack.worker = Some(stack.worker_with(config, &[]));
    stack.wait_worker().await;
    let n = 6;
    let mut bees = Vec::new();
    for i in 0..n {
        let (inbox, outbox) = stack.connect(&format!("bee-{i}")).await;
        let sid = format!("bee-{i}");
        outbox
            .send(&prompt(
                &sid,
                &format!("w1-{i}"),
                &format!("{sid} before the kill"),
            ))
            .await
            .unwrap();
        bees.push((inbox, outbox));
    }
    until_worker(&stack, "two turns running, four queued", |w| {
        w["status"]["pool"]["queued"] == 4
            && w["status"]["cells"]
                .as_array()
                .is_some_and(|c| c.iter().filter(|c| c["state"] == "busy").count() == 2)
    })
    .await;
    assert!(wait_until(PROMPTLY, || count(
        &turn_log(&log),
        "start",
        "before the kill"
    ) == 2));
    let killed_at = unix_ms();
    kill_and_restart_humd(&mut stack, &[]).await;
    drop(bees);
    // Every bee back at once, on a new connection, with something new.
    let mut back = Vec::new();
    for i in 0..n {
        let (inbox, outbox) = stack.connect(&format!("bee-{i}-again")).await;
        let sid = format!("bee-{i}");
        outbox
            .send(&prompt(
                &sid,
                &format!("w2-{i}"),
                &format!("{sid} after the restart"),
            ))
            .await
            .unwrap();
        back.push((inbox, outbox));
    }
    for (i, (inbox, _)) in back.iter_mut().enumerate() {
        let sid = format!("bee-{i}");
        let (text, end, rids) = read_answer(inbox, &sid).await;
        assert_eq!(end, "finish:end_turn", "{sid}: {text}");
        assert_eq!(
            rids,
            [format!("w2-{i}")],
            "{sid}: only its new turn's tones"
        );
        assert!(
            text.contains(&format!("you said <{sid} after the restart>")),
            "{sid} got another prompt's answer: {text}"
        );
    }
    // At the simulator: no turn of the first wave started after the kill,
    // none ran to its end, and the two running were interrupted.
    let turns = turn_log(&log);
    let late: Vec<_> = turns
        .iter()
        .filter(|(e, at, p)| e == "start" && *at > killed_at && p.contains("before the kill"))
        .collect();
    assert!(
        late.is_empty(),
        "turns run after the kill for gone askers: {late:?}"
    );
    assert_eq!(count(&turns, "start", "before the kill"), 2, "{turns:?}");
    assert_eq!(count(&turns, "done", "before the kill"), 0, "{turns:?}");
    assert_eq!(
        count(&turns, "interrupted", "before the kill"),
        2,
        "{turns:?}"
    );
    assert_eq!(count(&turns, "done", "after the restart"), n, "{turns:?}");
    // Counted: all six abandoned (by the worker, which told the new humd).
    let s = stack.status_answers("after the wave").await;
    let stats = &s["daemon"]["stats"];
    assert_eq!(
        stats["abandoned_humd_gone"].as_u64().unwrap()
            + stats["cancelled_gone_askers"].as_u64().unwrap(),
        n as u64,
        "{stats}"
    );
    assert_eq!(stats["dropped_for_gone_askers"], 0, "{stats}");
    drop(back);
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bee_that_sends_its_rid_again_within_the_grace_gets_its_first_answer() {
    let grace = ["--asker-gone-grace-ms", "120000"];
    let mut stack = Stack::start(Value::Null, &grace);
    let log = stack.sb.dir.path().join("turns.jsonl");
    let gate = stack.sb.dir.path().join("go-on");
    // Turns held after their first delta until the test opens the gate.
    let config = json!({"claude": {"enabled": false}, "cwd": stack.sb.work(),
        "sim": {"models": ["sim"], "env": {"HUM_SIM_TURN_LOG": log, "HUM_SIM_HOLD_UNTIL_FILE": gate,
                                           "HUM_SIM_FAULT_IF": "first"}}});
    stack.worker = Some(stack.worker_with(config, &[]));
    stack.wait_worker().await;
    let (mut a_in, a_out) = stack.connect("a").await;
    let (mut b_in, b_out) = stack.connect("b").await;
    a_out
        .send(&prompt("kept", "k1", "kept first"))
        .await
        .unwrap();
    b_out
        .send(&prompt("moved", "m1", "moved first"))
        .await
        .unwrap();
    for (inbox, sid) in [(&mut a_in, "kept"), (&mut b_in, "moved")] {
        loop {
            let t = next(inbox).await;
            if t.sid() == Some(sid) && t.chi() == "chunk" {
                break;
            }
        }
    }
    kill_and_restart_humd(&mut stack, &grace).await;
    drop((a_in, a_out, b_in, b_out));
    // The new humd heard of both turns from the worker.
    until_worker(&stack, "the worker's turns told", |w| w["inFlight"] == 2).await;
    // `a` comes back for its turn; `b` has moved on.
    let (mut a_in, a_out) = stack.connect("a-again").await;
    a_out
        .send(&prompt("kept", "k1", "kept first"))
        .await
        .unwrap();
    let (mut b_in, b_out) = stack.connect("b-again").await;
    b_out
        .send(&prompt("moved", "m2", "moved second"))
        .await
        .unwrap();
    let (text, end, rids) = read_answer(&mut b_in, "moved").await;
    assert_eq!(
        (end.as_str(), rids),
        ("finish:end_turn", vec!["m2".to_owned()]),
        "{text}"
    );
    assert!(text.contains("you said <moved second>"), "{text}");
    std::fs::write(&gate, b"").unwrap();
    let (text, end, rids) = read_answer(&mut a_in, "kept").await;
    assert_eq!(
        (end.as_str(), rids),
        ("finish:end_turn", vec!["k1".to_owned()]),
        "{text}"
    );
    // The rest of its first answer (what came while humd was away is lost).
    assert!(text.ends_with("you said <kept first>"), "{text}");
    let turns = turn_log(&log);
    assert_eq!(
        count(&turns, "start", "kept first"),
        1,
        "run once: {turns:?}"
    );
    assert_eq!(count(&turns, "done", "kept first"), 1, "{turns:?}");
    assert_eq!(count(&turns, "interrupted", "moved first"), 1, "{turns:?}");
    let s = stack.status_answers("after").await;
    let stats = &s["daemon"]["stats"];
    assert_eq!(stats["turns_adopted"], 1, "{stats}");
    assert_eq!(stats["cancelled_gone_askers"], 1, "{stats}");
    drop((a_in, a_out, b_in, b_out));
    stack.stop();
}
