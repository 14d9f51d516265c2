//! ACP cells under the faults claude cells are tested with (issue 29): a
//! herd past the cap, a permission ask nobody answers, a cancel the agent
//! ignores, the worker SIGKILLed mid-turn. Real humd, worker and
//! `hum sim-agent --acp` cells; each test ends with the leak check.

use crate::acp::{acp_stack, acp_stack_with, cell_pid, finish_of, prompt};
use crate::common::stack::*;
use crate::common::*;
use crate::tools::{answer_text, turn};
use rustix::process::Signal;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn has_acp_flag(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"--acp"))
}

/// The ACP agents of this sandbox alive now: processes run with `--acp`
/// whose parent was not (a child between its fork and its exec still
/// shows its parent's command line).
fn acp_agents(tag: &str) -> usize {
    tagged(tag)
        .iter()
        .filter(|p| has_acp_flag(p.pid) && stat(p.pid).is_some_and(|s| !has_acp_flag(s.ppid)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_acp_sids_is_served_within_the_cap() {
    let s = acp_stack(
        json!({"HUM_SIM_TURN_DELAY_MS": "150"}),
        json!({}),
        json!({"maxActiveCells": 2}),
    );
    s.wait_worker().await;
    let (peak, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        let tag = s.sb.tag.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(acp_agents(&tag), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (mut inbox, out) = s.connect("herd").await;
    for i in 0..6 {
        out.send(&prompt(&format!("h{i}"), &format!("bee {i}")))
            .await
            .unwrap();
    }
    let mut answered = std::collections::BTreeMap::new();
    while answered.len() < 6 {
        let t = next(&mut inbox).await;
        if matches!(t.chi(), "finish" | "error") {
            let sid = t.envelope.sid.clone().unwrap();
            answered.insert(sid, t.to_value());
        }
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    for (sid, end) in &answered {
        assert_eq!(end["chi"], "finish", "{sid}: {end}");
    }
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        (1..=2).contains(&peak),
        "{peak} ACP agents at once on a cap of 2"
    );
    drop((inbox, out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acp_permission_ask_nobody_answers_is_rejected_after_the_timeout() {
    let s = acp_stack_with(
        json!({}),
        json!({}),
        json!({}),
        json!({"tools": {"permissionTimeoutMs": 400}}),
    );
    s.wait_worker().await;
    let (mut inbox, out) = crate::tools::asker_answering_permits(&s).await;
    out.send(&prompt("quiet", "ASK_PERMISSION Write"))
        .await
        .unwrap();
    let tones = turn(&mut inbox).await;
    assert!(
        tones.iter().any(|t| t.chi() == "permission-ask"),
        "the asker was asked"
    );
    let text = answer_text(&tones);
    assert!(
        text.contains("permission Write: denied (reject-once)"),
        "{text}"
    );
    drop((inbox, out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_the_acp_agent_ignores_ends_with_the_ladder_and_the_sid_resumes() {
    let env = json!({"HUM_SIM_STALL_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "STALL",
                     "HUM_SIM_IGNORE_INTERRUPT": "1"});
    let s = acp_stack(env, json!({}), json!({"cancelGraceMs": 300}));
    s.wait_worker().await;
    let (mut inbox, out) = s.connect("bee").await;
    out.send(&prompt("deaf", "STALL forever")).await.unwrap();
    loop {
        let t = next(&mut inbox).await;
        if matches!(&t.body, thrum::Body::Chunk(c) if c.chunk_type == thrum::ChunkType::TextDelta) {
            break;
        }
    }
    let pid = cell_pid(&s, "deaf").await;
    out.send(&thrum::Tone::new(thrum::Cancel::default()).with_sid("deaf"))
        .await
        .unwrap();
    assert_eq!(
        finish_of(&turn(&mut inbox).await)["finishReason"],
        "cancelled"
    );
    assert!(
        wait_until(PROMPTLY, || stat(pid).is_none()),
        "the agent that ignored session/cancel was not torn down"
    );
    out.send(&prompt("deaf", "hello again")).await.unwrap();
    let back = turn(&mut inbox).await;
    assert_eq!(
        answer_text(&back),
        "SIM-REPLY #2: you said <hello again>; before that <STALL forever>",
        "a new cell, the session loaded"
    );
    drop((inbox, out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_leaves_no_acp_process_behind() {
    let env = json!({"HUM_SIM_STALL_AFTER_CHUNKS": "1", "HUM_SIM_MCP_SERVERS": "1",
                     "HUM_SIM_MCP_IGNORE_EOF": "1", "HUM_SIM_BASH_ESCAPEE": "1"});
    let mut s = acp_stack(env, json!({}), json!({}));
    s.wait_worker().await;
    let (mut inbox, out) = s.connect("bee").await;
    for i in 0..3 {
        out.send(&prompt(&format!("k{i}"), "stall")).await.unwrap();
    }
    let mut started = 0;
    while started < 3 {
        let t = next(&mut inbox).await;
        if matches!(&t.body, thrum::Body::Chunk(c) if c.chunk_type == thrum::ChunkType::TextDelta) {
            started += 1;
        }
    }
    let mut worker = s.worker.take().unwrap();
    signal(worker.id() as i32, Signal::KILL);
    worker.wait().unwrap();
    let mut lost = 0;
    while lost < 3 {
        let t = next(&mut inbox).await.to_value();
        if t["chi"] == "error" {
            assert_eq!(t["code"], "worker_lost", "{t}");
            lost += 1;
        }
    }
    let daemon = s.daemon.id() as i32;
    assert!(
        wait_until(Duration::from_secs(5), || s
            .sb
            .live()
            .iter()
            .all(|p| p.pid == daemon)),
        "processes outlived the SIGKILLed worker by 5 s: {:?}",
        s.sb.live()
    );
    drop((inbox, out));
    s.stop();
}
