//! ACP cells (issue 29): a hive whose agent speaks the Agent Client
//! Protocol, here the simulator behind it (`hum sim-agent --acp`), served
//! by the real humd and worker like claude's cells: turns streamed as the
//! same chunks, the conversation kept in one warm cell and resumed with
//! `session/load` after an eviction, cancels as `session/cancel`,
//! permission asks to the asker, the bees' tools through the MCP bridge,
//! and nothing left behind.

use crate::common::forager::*;
use crate::common::stack::*;
use crate::common::*;
use crate::tools::{answer_text, turn};
use serde_json::{json, Value};
use thrum::{Body, Tone};

/// The model the ACP hive serves in these tests.
pub(crate) const MODEL: &str = "simacp";

/// humd and a worker serving only the ACP simulator, with `env` for its
/// cells (the simulator's knobs) and `hive` laid over its hum.json entry.
pub(crate) fn acp_stack(env: Value, hive: Value, nest: Value) -> Stack {
    acp_stack_with(env, hive, nest, json!({}))
}

/// [`acp_stack`] with `top` laid over the rest of hum.json.
pub(crate) fn acp_stack_with(env: Value, hive: Value, nest: Value, top: Value) -> Stack {
    let s = Stack::start(Value::Null, &[]);
    let mut entry =
        json!({"command": [hum_bin(), "sim-agent", "--acp"], "models": [MODEL], "env": env});
    if let (Some(e), Some(h)) = (entry.as_object_mut(), hive.as_object()) {
        e.extend(h.clone());
    }
    let mut limits = json!({"maxActiveCells": 8});
    if let (Some(l), Some(n)) = (limits.as_object_mut(), nest.as_object()) {
        l.extend(n.clone());
    }
    let mut config = json!({"claude": {"enabled": false}, "sim": {"enabled": false},
        "acp": {"simacp": entry}, "cwd": s.sb.work(), "nest": limits});
    if let (Some(c), Some(t)) = (config.as_object_mut(), top.as_object()) {
        c.extend(t.clone());
    }
    let worker = s.worker_with(config, &[]);
    Stack {
        worker: Some(worker),
        ..s
    }
}

pub(crate) fn prompt(sid: &str, text: &str) -> Tone {
    Tone::new(thrum::Prompt {
        text: Some(text.into()),
        model_id: Some(MODEL.into()),
        ..Default::default()
    })
    .with_sid(sid)
}

pub(crate) fn finish_of(tones: &[Tone]) -> Value {
    let last = tones.last().expect("a turn has an end").to_value();
    assert_eq!(last["chi"], "finish", "the turn failed: {last}");
    last
}

fn chunk_kinds(tones: &[Tone]) -> Vec<String> {
    tones
        .iter()
        .filter_map(|t| match &t.body {
            Body::Chunk(c) => Some(c.chunk_type.to_string()),
            _ => None,
        })
        .collect()
}

/// The pid of `sid`'s cell, once the worker reports one.
pub(crate) async fn cell_pid(s: &Stack, sid: &str) -> i32 {
    let deadline = std::time::Instant::now() + PROMPTLY;
    loop {
        let pid = hum::client::fetch_status(&s.sock)
            .await
            .ok()
            .and_then(|st| st.cells().find(|c| c.sid == sid).and_then(|c| c.pid));
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no cell of {sid} reported"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acp_cell_streams_its_turns_and_keeps_the_conversation_warm() {
    let s = acp_stack(json!({"HUM_SIM_THINKING": "1"}), json!({}), json!({}));
    s.wait_worker().await;
    let (mut inbox, out) = s.connect("bee").await;

    out.send(&prompt("a1", "hello there")).await.unwrap();
    let first = turn(&mut inbox).await;
    let ready = first
        .iter()
        .find_map(|t| match &t.body {
            Body::SessionReady(r) => Some(r.clone()),
            _ => None,
        })
        .expect("a session-ready first");
    let session = ready.nest_id.clone().expect("the agent's session id");
    assert!(!session.is_empty());
    assert_eq!(answer_text(&first), "SIM-REPLY #1: you said <hello there>");
    let kinds = chunk_kinds(&first);
    for k in [
        "reasoning_start",
        "reasoning_delta",
        "text_start",
        "text_delta",
        "content_block_stop",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in {kinds:?}");
    }
    let fin = finish_of(&first);
    assert_eq!(fin["finishReason"], "end_turn");
    assert!(
        fin["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0,
        "{fin}"
    );
    assert!(fin["costUsd"].as_f64().is_some(), "{fin}");
    assert!(fin.get("historyCarried").is_none(), "{fin}");
    let pid = cell_pid(&s, "a1").await;

    out.send(&prompt("a1", "and again")).await.unwrap();
    let second = turn(&mut inbox).await;
    assert_eq!(
        answer_text(&second),
        "SIM-REPLY #2: you said <and again>; before that <hello there>"
    );
    assert_eq!(cell_pid(&s, "a1").await, pid, "the same warm cell");
    let ready_again = second.iter().find_map(|t| match &t.body {
        Body::SessionReady(r) => r.nest_id.clone(),
        _ => None,
    });
    assert_eq!(ready_again.as_deref(), Some(session.as_str()));

    let status = s.status_table();
    assert!(
        status.contains("simacp"),
        "hum status names the hive:\n{status}"
    );
    // Usage: both turns, filed under the ACP hive, at the agent's cost.
    let by_hive = || {
        let out =
            s.sb.hum(&["usage", "--json", "--since", "today", "--by", "hive"])
                .output()
                .unwrap();
        serde_json::from_slice::<hum::usage::report::UsageReport>(&out.stdout).ok()
    };
    assert!(
        wait_until(PROMPTLY, || by_hive().is_some_and(|r| r.rows.iter().any(
            |row| row.key == "simacp" && row.turns == 2 && row.tally.cost_usd > 0.0
        ))),
        "hum usage --by hive: {:?}",
        by_hive().map(|r| r.rows)
    );
    drop((inbox, out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_acp_cell_comes_back_with_session_load_and_without_it_says_so() {
    // Loaded with its history replayed before the answer to session/load,
    // loaded with part of it after (as Gemini CLI does), not loadable.
    for (loads, env) in [
        (true, json!({})),
        (
            true,
            json!({"HUM_SIM_ACP_LATE_REPLAY": "1", "HUM_SIM_TURN_DELAY_MS": "300"}),
        ),
        (false, json!({"HUM_SIM_ACP_NO_LOAD": "1"})),
    ] {
        let s = acp_stack(env, json!({}), json!({"maxActiveCells": 1}));
        s.wait_worker().await;
        let (mut inbox, out) = s.connect("bee").await;
        out.send(&prompt("a", "first words")).await.unwrap();
        turn(&mut inbox).await;
        let a_pid = cell_pid(&s, "a").await;
        // Another sid takes the only cell: a's goes.
        out.send(&prompt("b", "someone else")).await.unwrap();
        turn(&mut inbox).await;
        assert!(
            wait_until(PROMPTLY, || stat(a_pid).is_none()),
            "a's cell was not evicted"
        );
        out.send(&prompt("a", "remember me?")).await.unwrap();
        let back = turn(&mut inbox).await;
        let fin = finish_of(&back);
        if loads {
            assert_eq!(
                answer_text(&back),
                "SIM-REPLY #2: you said <remember me?>; before that <first words>",
                "the session was loaded"
            );
            assert!(fin.get("historyCarried").is_none(), "{fin}");
        } else {
            assert_eq!(answer_text(&back), "SIM-REPLY #1: you said <remember me?>");
            assert_eq!(fin["historyCarried"], false, "the finish says so: {fin}");
            let ready = back
                .iter()
                .find(|t| t.chi() == "session-ready")
                .expect("a session-ready")
                .to_value();
            assert_eq!(
                ready["historyCarried"], false,
                "session-ready says so: {ready}"
            );
            let table = s.status_table();
            assert!(
                table.contains("a*") && table.contains("could not load"),
                "hum status says so:\n{table}"
            );
        }
        drop((inbox, out));
        s.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_agent_as_session_cancel_and_the_cell_stays_warm() {
    let env = json!({"HUM_SIM_STALL_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "STALL"});
    let s = acp_stack(env, json!({}), json!({}));
    s.wait_worker().await;
    let (mut inbox, out) = s.connect("bee").await;
    out.send(&prompt("c", "STALL please")).await.unwrap();
    // The turn is under way once its first text arrives.
    loop {
        let t = next(&mut inbox).await;
        if matches!(&t.body, Body::Chunk(c) if c.chunk_type == thrum::ChunkType::TextDelta) {
            break;
        }
    }
    let pid = cell_pid(&s, "c").await;
    out.send(&Tone::new(thrum::Cancel::default()).with_sid("c"))
        .await
        .unwrap();
    let rest = turn(&mut inbox).await;
    assert_eq!(finish_of(&rest)["finishReason"], "cancelled");
    out.send(&prompt("c", "still there?")).await.unwrap();
    let after = turn(&mut inbox).await;
    assert!(answer_text(&after).contains("you said <still there?>"));
    assert_eq!(
        cell_pid(&s, "c").await,
        pid,
        "stopped by the agent, not torn down"
    );
    drop((inbox, out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acp_agents_permission_ask_reaches_the_asker_with_the_agents_options() {
    let s = acp_stack(json!({}), json!({}), json!({}));
    s.wait_worker().await;
    let (mut inbox, out) = crate::tools::asker_answering_permits(&s).await;
    for (decision, said) in [
        ("allow", "allowed (allow-once)"),
        ("deny", "denied (reject-once)"),
    ] {
        out.send(&prompt("p", "ASK_PERMISSION Bash")).await.unwrap();
        let mut before = Vec::new();
        let ask = loop {
            let t = next(&mut inbox).await;
            if t.chi() == "permission-ask" {
                break t.to_value();
            }
            let end = matches!(t.chi(), "finish" | "error");
            before.push(t);
            assert!(!end, "no ask: {}", answer_text(&before));
        };
        assert_eq!(ask["toolName"], "Bash");
        let kinds: Vec<&str> = ask["options"]
            .as_array()
            .expect("the agent's options")
            .iter()
            .filter_map(|o| o["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["allow_once", "reject_once"]);
        let answer = thrum::ReleasePermit {
            call_id: ask["callId"].as_str().unwrap().to_owned(),
            decision: Some(thrum::Decision::from(decision)),
            message: None,
            updated_input: None,
            option_id: None,
            extra: Default::default(),
        };
        out.send(&Tone::new(answer).with_sid("p")).await.unwrap();
        let rest = turn(&mut inbox).await;
        let text = answer_text(&rest);
        assert!(text.contains(&format!("permission Bash: {said}")), "{text}");
    }
    drop((inbox, out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foragers_tool_serves_an_acp_cell_through_the_bridge() {
    let s = acp_stack(json!({}), json!({}), json!({}));
    s.wait_worker().await;
    let (forager, _) = Forager::connect(&s, &["echo"], Serve::Answer).await;
    wait_foragers(&s, 1).await;
    let (mut inbox, out) = s.connect("bee").await;
    out.send(&prompt("t", r#"CALL_TOOL echo {"text": "over acp"}"#))
        .await
        .unwrap();
    let tones = turn(&mut inbox).await;
    finish_of(&tones);
    let kinds = chunk_kinds(&tones);
    assert!(kinds.iter().any(|k| k == "tool_executed"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "tool_call"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "tool_call_update"), "{kinds:?}");
    let text = answer_text(&tones);
    assert!(text.contains("[mcp__hum__echo said over acp]"), "{text}");
    assert_eq!(forager.calls().len(), 1);
    drop((inbox, out, forager));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acp_cell_that_crashes_or_escapes_leaves_nothing() {
    let env = json!({"HUM_SIM_CRASH_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "CRASH",
                     "HUM_SIM_BASH_ESCAPEE": "1"});
    let s = acp_stack(env, json!({}), json!({}));
    s.wait_worker().await;
    let (mut inbox, out) = s.connect("bee").await;
    out.send(&prompt("x", "CRASH now")).await.unwrap();
    let tones = turn(&mut inbox).await;
    let end = tones.last().unwrap().to_value();
    assert_eq!(end["chi"], "error", "a crashed agent's turn fails: {end}");
    // The sid goes on in a new cell, whose agent starts an escaping
    // command (its own session, SIGTERM ignored) under its simulator.
    out.send(&prompt("x", "again")).await.unwrap();
    finish_of(&turn(&mut inbox).await);
    let escapees = || {
        s.sb.live()
            .iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{}/cmdline", p.pid))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("bash-tool"))
            })
            .count()
    };
    assert!(
        wait_until(PROMPTLY, || escapees() > 0),
        "the agent's escaping command never ran"
    );
    drop((inbox, out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_that_must_not_have_the_agents_own_tools_is_refused_by_an_acp_hive() {
    let s = acp_stack(json!({}), json!({}), json!({}));
    s.wait_worker().await;
    let (mut inbox, out) = s.connect("bee").await;
    let mut p = thrum::Prompt {
        text: Some("read /etc/shadow".into()),
        model_id: Some(MODEL.into()),
        ..Default::default()
    };
    p.builtin_tools = Some(json!("none"));
    out.send(&Tone::new(p).with_sid("g")).await.unwrap();
    let t = next(&mut inbox).await.to_value();
    assert_eq!(t["chi"], "error", "{t}");
    assert_eq!(t["code"], "bad_request", "{t}");
    assert!(
        t["message"].as_str().unwrap().contains("cannot narrow"),
        "{t}"
    );
    drop((inbox, out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_prompt_reaches_an_acp_agent_that_cannot_take_it_with_the_session() {
    let s = acp_stack(json!({}), json!({}), json!({}));
    s.wait_worker().await;
    let (mut inbox, out) = s.connect("bee").await;
    let p = thrum::Prompt {
        text: Some("who are you?".into()),
        model_id: Some(MODEL.into()),
        system_prompt: Some("You are a careful bee.".into()),
        ..Default::default()
    };
    out.send(&Tone::new(p).with_sid("sys")).await.unwrap();
    let text = answer_text(&turn(&mut inbox).await);
    // (The simulator offers no systemPrompt capability: the instructions
    // come before the cell's first prompt, not dropped.)
    assert!(
        text.contains("<system-instructions>\nYou are a careful bee.\n</system-instructions>"),
        "{text}"
    );
    assert!(text.contains("who are you?"), "{text}");
    drop((inbox, out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acp_agent_that_will_not_open_a_session_fails_the_turn_and_not_the_pool() {
    // A program that exits at once, and one that talks but is no ACP agent.
    for command in [json!(["/bin/false"]), json!(["/bin/cat"])] {
        let s = acp_stack(
            json!({}),
            json!({"command": command}),
            json!({"firstEventTimeoutMs": 3000}),
        );
        s.wait_worker().await;
        let (mut inbox, out) = s.connect("bee").await;
        out.send(&prompt("n", "hello?")).await.unwrap();
        let end = turn(&mut inbox).await.last().unwrap().to_value();
        assert_eq!(end["chi"], "error", "{command}: {end}");
        drop((inbox, out));
        s.stop();
    }
}
