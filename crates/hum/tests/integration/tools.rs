//! Bees lend tools to the agents (issue 13): a forager's tools reach a
//! cell's agent through the worker's MCP bridge, calls come back to the
//! bee that serves them, and every way a call can end without a result
//! still answers the agent. Real humd, worker, sim cells (which speak MCP
//! to the bridge as claude does); each test ends with the leak check.

use crate::common::forager::*;
use crate::common::stack::*;
use crate::common::*;
use serde_json::{json, Value};
use thrum::{Body, Inbox, Outbox, Tone, ToolResult};
use tokio::net::unix::OwnedReadHalf;

/// The tones of one turn, up to its `finish` or `error`.
pub(crate) async fn turn(inbox: &mut Inbox<OwnedReadHalf>) -> Vec<Tone> {
    let mut out = Vec::new();
    loop {
        let t = next(inbox).await;
        let done = matches!(t.chi(), "finish" | "error");
        out.push(t);
        if done {
            return out;
        }
    }
}

pub(crate) fn answer_text(tones: &[Tone]) -> String {
    tones
        .iter()
        .filter_map(|t| match &t.body {
            Body::Chunk(c) if c.chunk_type == thrum::ChunkType::TextDelta => c.delta.clone(),
            _ => None,
        })
        .collect()
}

fn executed(tones: &[Tone]) -> Vec<Value> {
    tones
        .iter()
        .filter(|t| t.chi() == "chunk" && t.to_value()["chunkType"] == "tool_executed")
        .map(Tone::to_value)
        .collect()
}

/// humd, a sim worker, a forager serving `tools` (registered), and an
/// asker, connected.
async fn with_forager(
    tools: &[&str],
    serve: Serve,
) -> (Stack, Forager, Inbox<OwnedReadHalf>, Outbox) {
    let s = Stack::start(json!({}), &[]);
    s.wait_worker().await;
    let (forager, _) = Forager::connect(&s, tools, serve).await;
    wait_foragers(&s, 1).await;
    let (a_in, a_out) = s.connect("asker").await;
    (s, forager, a_in, a_out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foragers_echo_and_add_are_called_by_the_agent_and_their_results_reach_the_answer() {
    let (s, forager, mut a_in, a_out) = with_forager(&["echo", "add"], Serve::Answer).await;
    a_out
        .try_send(&sim_prompt(
            "tools-1",
            r#"use CALL_TOOL echo {"text": "hello bees"} and CALL_TOOL add {"a": 2, "b": 3}"#,
        ))
        .unwrap();
    let tones = turn(&mut a_in).await;
    assert_eq!(tones.last().unwrap().chi(), "finish", "{tones:?}");
    let text = answer_text(&tones);
    assert!(text.contains("[mcp__hum__echo said hello bees]"), "{text}");
    assert!(text.contains("[mcp__hum__add said 5]"), "{text}");
    // The forager saw exactly the two calls, with the agent's arguments.
    let calls = forager.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        (calls[0].tool_name.as_str(), &calls[0].args),
        ("echo", &json!({"text": "hello bees"}))
    );
    assert_eq!(
        (calls[1].tool_name.as_str(), &calls[1].args),
        ("add", &json!({"a": 2, "b": 3}))
    );
    // The asker saw each finished call.
    let done = executed(&tones);
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(done[0]["toolName"], "echo");
    assert_eq!(done[0]["output"], "hello bees");
    assert_eq!(done[0]["arguments"], json!({"text": "hello bees"}));
    assert_eq!(done[1]["toolName"], "add");
    assert_eq!(done[1]["output"], 5);
    assert_eq!(done[1]["isError"], false);
    assert_eq!(done[0]["callId"], calls[0].call_id.as_str());
    forager.leave();
    drop((a_in, a_out));
    s.stop();
}

/// A sim cell's simulator and its MCP server are their own small binaries
/// (built beside `hum`), not starts of the whole `hum`, and they carry the
/// calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cells_mcp_server_and_simulator_are_their_own_binaries_beside_hum() {
    let (s, forager, mut a_in, a_out) = with_forager(&["echo"], Serve::Answer).await;
    a_out
        .try_send(&sim_prompt(
            "shim-1",
            r#"use CALL_TOOL echo {"text": "small"}"#,
        ))
        .unwrap();
    let tones = turn(&mut a_in).await;
    let text = answer_text(&tones);
    assert!(text.contains("[mcp__hum__echo said small]"), "{text}");
    // The cell is idle, not gone: what its processes run.
    let shim = std::path::Path::new(env!("CARGO_BIN_EXE_hum-mcp-bridge"));
    let programs: Vec<(std::path::PathBuf, String)> =
        s.sb.live()
            .iter()
            .filter_map(|p| {
                let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid)).ok()?;
                let cmd = std::fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
                Some((exe, String::from_utf8_lossy(&cmd).replace('\0', " ")))
            })
            .collect();
    let sim = std::path::Path::new(env!("CARGO_BIN_EXE_hum-sim"));
    // Each its own binary, and neither started as a subcommand of `hum`.
    for (own, subcommand) in [(shim, " mcp-bridge "), (sim, " sim-agent ")] {
        assert!(
            programs.iter().any(|(exe, _)| exe == own),
            "no process runs {}: {programs:?}",
            own.display()
        );
        assert!(
            !programs.iter().any(|(_, cmd)| cmd.contains(subcommand)),
            "a cell started{subcommand}through the whole hum: {programs:?}"
        );
    }
    forager.leave();
    drop((a_in, a_out));
    s.stop();
}

/// A worker whose calls time out after `ms`.
fn worker_with_call_timeout(s: &Stack, ms: u64) -> std::process::Child {
    s.worker_with(
        json!({"claude": {"enabled": false}, "sim": {"models": ["sim"]},
               "cwd": s.sb.work(), "nest": {"maxActiveCells": 8},
               "tools": {"callTimeoutMs": ms}}),
        &[],
    )
}

/// A prompt of `sid` lending the asker's tool `tool`.
fn prompt_lending(sid: &str, text: &str, tool: &str) -> Tone {
    let mut p = sim_prompt(sid, text);
    if let Body::Prompt(ref mut body) = p.body {
        body.tools = Some(json!([spec(tool)]));
    }
    p
}

/// Reads the turn's tones up to the call of one of the asker's tools.
async fn next_call(inbox: &mut Inbox<OwnedReadHalf>, sid: &str) -> thrum::ToolCall {
    loop {
        let t = next(inbox).await;
        assert!(
            !matches!(t.chi(), "finish" | "error"),
            "ended before the call: {t:?}"
        );
        if let Body::ToolCall(c) = &t.body {
            assert_eq!(t.sid(), Some(sid));
            return c.clone();
        }
    }
}

/// The asker answers its tool's call with `output`.
fn answer_call(a_out: &Outbox, sid: &str, call: &thrum::ToolCall, output: Value) {
    let mut r = ToolResult::error(&call.call_id, Some(&call.tool_name), "");
    r.output = Some(output);
    r.is_error = None;
    a_out.try_send(&Tone::new(r).with_sid(sid)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asker_tool_is_called_back_on_its_asker_not_on_a_forager() {
    let s = Stack::start(json!({}), &[]);
    s.wait_worker().await;
    // A forager offers the same name: the asker's own tool wins for its sid.
    let (forager, _) = Forager::connect(&s, &["lookup"], Serve::Answer).await;
    wait_foragers(&s, 1).await;
    let (mut a_in, a_out) = s.connect("asker").await;
    let sid = "asker-tools";
    a_out
        .try_send(&prompt_lending(
            sid,
            r#"CALL_TOOL lookup {"key": "k1"}"#,
            "lookup",
        ))
        .unwrap();
    let call = next_call(&mut a_in, sid).await;
    assert_eq!(
        (call.tool_name.as_str(), &call.args),
        ("lookup", &json!({"key": "k1"}))
    );
    answer_call(&a_out, sid, &call, json!("value-of-k1"));
    let tones = turn(&mut a_in).await;
    assert_eq!(tones.last().unwrap().chi(), "finish", "{tones:?}");
    assert!(answer_text(&tones).contains("[mcp__hum__lookup said value-of-k1]"));
    assert!(
        forager.calls().is_empty(),
        "the forager got the asker's call"
    );
    // The next turn lends another tool: the warm cell lists it before the
    // message reaches the agent (the simulator re-lists on the bridge's
    // notice, as claude does), and calls it.
    a_out
        .try_send(&prompt_lending(
            sid,
            r#"CALL_TOOL fetch {"url": "u"}"#,
            "fetch",
        ))
        .unwrap();
    let fetch = next_call(&mut a_in, sid).await;
    assert_eq!(fetch.tool_name, "fetch");
    answer_call(&a_out, sid, &fetch, json!("fetched"));
    let tones = turn(&mut a_in).await;
    assert!(answer_text(&tones).contains("[mcp__hum__fetch said fetched]"));
    assert!(
        !s.log("worker.log").contains("bridge.not_relisted"),
        "the simulator did not list the new tools"
    );
    // A result for a call nobody waits for is refused.
    let mut stale = ToolResult::error(&call.call_id, Some("lookup"), "again");
    stale.is_error = Some(false);
    a_out
        .try_send(&Tone::new(stale).with_sid("asker-tools").with_rid("stale"))
        .unwrap();
    let refused = loop {
        let t = next(&mut a_in).await;
        if t.chi() == "error" {
            break t;
        }
    };
    assert_eq!(refused.rid(), Some("stale"));
    forager.leave();
    drop((a_in, a_out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forager_that_leaves_mid_call_gives_the_agent_an_error_and_a_new_one_takes_over() {
    let (s, holder, mut a_in, a_out) = with_forager(&["echo"], Serve::Hold).await;
    a_out
        .try_send(&sim_prompt("leaving", r#"CALL_TOOL echo {"text": "x"}"#))
        .unwrap();
    assert!(
        wait_until_async(PROMPTLY, || async { holder.calls().len() == 1 }).await,
        "the call never reached the forager"
    );
    holder.leave();
    let tones = turn(&mut a_in).await;
    assert_eq!(
        tones.last().unwrap().chi(),
        "finish",
        "the turn goes on: {tones:?}"
    );
    let text = answer_text(&tones);
    assert!(
        text.contains("[mcp__hum__echo failed: the bee serving echo left"),
        "{text}"
    );
    let done = executed(&tones);
    assert_eq!(
        (done.len(), &done[0]["isError"]),
        (1, &json!(true)),
        "{done:?}"
    );
    wait_foragers(&s, 0).await;
    // A forager coming back registers again and serves the next call.
    let (back, _) = Forager::connect(&s, &["echo"], Serve::Answer).await;
    wait_foragers(&s, 1).await;
    a_out
        .try_send(&sim_prompt(
            "leaving",
            r#"CALL_TOOL echo {"text": "again"}"#,
        ))
        .unwrap();
    let tones = turn(&mut a_in).await;
    assert!(answer_text(&tones).contains("[mcp__hum__echo said again]"));
    assert_eq!(back.calls().len(), 1);
    back.leave();
    drop((a_in, a_out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_timeout_is_an_error_and_its_forager_is_told_to_cancel() {
    let mut s = Stack::start(Value::Null, &[]);
    s.worker = Some(worker_with_call_timeout(&s, 500));
    s.wait_worker().await;
    let (holder, _) = Forager::connect(&s, &["echo"], Serve::Hold).await;
    wait_foragers(&s, 1).await;
    let (mut a_in, a_out) = s.connect("asker").await;
    a_out
        .try_send(&sim_prompt("slow", r#"CALL_TOOL echo {"text": "x"}"#))
        .unwrap();
    let tones = turn(&mut a_in).await;
    assert_eq!(tones.last().unwrap().chi(), "finish", "{tones:?}");
    let text = answer_text(&tones);
    assert!(
        text.contains("[mcp__hum__echo failed: tool echo gave no result within 500 ms]"),
        "{text}"
    );
    let calls = holder.calls();
    assert_eq!(calls.len(), 1);
    assert!(
        wait_until_async(PROMPTLY, || async {
            holder.cancels() == vec![calls[0].call_id.clone()]
        })
        .await,
        "the forager was not told to cancel: {:?}",
        holder.cancels()
    );
    holder.leave();
    drop((a_in, a_out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_turn_with_a_pending_call_cancels_the_call_and_ends_the_turn_cancelled() {
    let (s, holder, mut a_in, a_out) = with_forager(&["echo"], Serve::Hold).await;
    a_out
        .try_send(&sim_prompt("cancel-me", r#"CALL_TOOL echo {"text": "x"}"#))
        .unwrap();
    assert!(
        wait_until_async(PROMPTLY, || async { holder.calls().len() == 1 }).await,
        "the call never reached the forager"
    );
    a_out
        .try_send(
            &Tone::new(thrum::Cancel::default())
                .with_sid("cancel-me")
                .with_rid("c"),
        )
        .unwrap();
    let tones = turn(&mut a_in).await;
    let last = tones.last().unwrap();
    assert_eq!(last.chi(), "finish", "{tones:?}");
    assert_eq!(last.to_value()["finishReason"], "cancelled");
    let call = holder.calls()[0].call_id.clone();
    assert!(
        wait_until_async(PROMPTLY, || async { holder.cancels().contains(&call) }).await,
        "the forager was not told to cancel"
    );
    holder.leave();
    drop((a_in, a_out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_two_foragers_offer_goes_to_the_first_and_the_conflict_is_shown() {
    let s = Stack::start(json!({}), &[]);
    s.wait_worker().await;
    let (first, _) = Forager::connect(&s, &["echo"], Serve::Answer).await;
    wait_foragers(&s, 1).await;
    let (second, warning) =
        Forager::connect_warned(&s, &["echo", "add"], Serve::Answer, true).await;
    assert_eq!(warning.chi(), "pulse", "the second forager is warned");
    assert_eq!(warning.to_value()["kind"], "tool-conflict");
    assert_eq!(warning.to_value()["tools"], json!(["echo"]));
    let status = hum::client::fetch_status(&s.sock).await.unwrap();
    let conflicts = &status.daemon.tools.conflicts;
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].tool, "echo");
    let (mut a_in, a_out) = s.connect("asker").await;
    a_out
        .try_send(&sim_prompt(
            "conflict",
            r#"CALL_TOOL echo {"text": "who"} CALL_TOOL add {"a": 1, "b": 1}"#,
        ))
        .unwrap();
    let tones = turn(&mut a_in).await;
    assert!(answer_text(&tones).contains("[mcp__hum__echo said who]"));
    assert_eq!(first.calls().len(), 1, "echo goes to the first");
    assert_eq!(
        second
            .calls()
            .iter()
            .map(|c| c.tool_name.clone())
            .collect::<Vec<_>>(),
        ["add"]
    );
    // The owner leaves: the other offer takes the name over.
    first.leave();
    wait_foragers(&s, 1).await;
    a_out
        .try_send(&sim_prompt("conflict", r#"CALL_TOOL echo {"text": "now"}"#))
        .unwrap();
    let tones = turn(&mut a_in).await;
    assert!(answer_text(&tones).contains("[mcp__hum__echo said now]"));
    assert_eq!(second.calls().len(), 2);
    second.leave();
    drop((a_in, a_out));
    s.stop();
}

/// The bridge sockets of the stack's worker.
fn bridge_sockets(s: &Stack) -> Vec<std::path::PathBuf> {
    let run = s.sock.parent().unwrap();
    std::fs::read_dir(run)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("bridge-"))
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect()
}

/// MCP's first two requests, as a client sends them.
const MCP_HELLO: &str = concat!(
    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"intruder","version":"1"}}}"#,
    "\n",
    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    "\n",
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    "\n",
);

/// `hum mcp-bridge <socket>` run by the test's own user: what it printed.
fn bridge_as_owner(s: &Stack, socket: &std::path::Path) -> String {
    use std::io::Write;
    let mut child =
        s.sb.hum(&["mcp-bridge", socket.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(MCP_HELLO.as_bytes()).unwrap();
    // Held open until both answers are in: EOF first would end the session.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = String::new();
    for _ in 0..2 {
        std::io::BufRead::read_line(&mut out, &mut lines).unwrap();
    }
    drop(stdin);
    child.wait().unwrap();
    lines
}

/// `hum mcp-bridge <socket>` run by `nobody`, with the MCP requests on its
/// stdin: what it printed and its exit status.
fn bridge_as_nobody(s: &Stack, socket: &std::path::Path) -> (String, String, Option<i32>) {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let exe = s.sb.dir.path().join("hum-for-nobody");
    if !exe.exists() {
        std::fs::copy(hum_bin(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut child = std::process::Command::new(&exe)
        .args(["mcp-bridge", socket.to_str().unwrap()])
        .env_clear()
        .env(TAG_VAR, &s.sb.tag)
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(MCP_HELLO.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_neither_list_nor_call_the_bridges_tools() {
    use std::os::unix::fs::PermissionsExt;
    let (s, forager, mut a_in, a_out) = with_forager(&["echo"], Serve::Answer).await;
    a_out.try_send(&sim_prompt("mine", "hello")).unwrap();
    turn(&mut a_in).await;
    let sockets = bridge_sockets(&s);
    assert_eq!(
        sockets.len(),
        1,
        "one live cell, one bridge socket: {sockets:?}"
    );
    let socket = &sockets[0];
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    // Its own user lists the catalogue through the shim, as the CLI does.
    let listed = bridge_as_owner(&s, socket);
    assert!(
        listed.contains("\"echo\"") && listed.contains("\"permission_prompt\""),
        "the owner's tools/list: {listed}"
    );
    // As it is: nobody cannot even reach the socket.
    let (out, err, code) = bridge_as_nobody(&s, socket);
    assert_ne!(code, Some(0), "nobody reached the bridge: {out} {err}");
    assert!(!out.contains("\"result\""), "nobody got an answer: {out}");
    // Misconfigured to be reachable: the worker still refuses the peer.
    for dir in socket
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(s.sb.dir.path()))
    {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (out, err, _) = bridge_as_nobody(&s, socket);
    assert!(
        !out.contains("\"result\""),
        "nobody got an answer: {out} {err}"
    );
    assert!(!out.contains("echo"), "nobody read the catalogue: {out}");
    assert!(
        wait_until(PROMPTLY, || s.log("worker.log").contains("bridge.refused")),
        "the refusal was not logged"
    );
    assert!(forager.calls().is_empty());
    forager.leave();
    drop((a_in, a_out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_30_bees_whose_turns_all_call_a_forager_is_served_on_cap_8() {
    let s = Stack::start(json!({}), &[]);
    s.wait_worker().await;
    let (forager, _) = Forager::connect(&s, &["add"], Serve::Answer).await;
    wait_foragers(&s, 1).await;
    let mut bees = Vec::new();
    for i in 0..30 {
        let (a_in, a_out) = s.connect(&format!("bee-{i}")).await;
        bees.push((i, a_in, a_out));
    }
    for (i, _, a_out) in &bees {
        a_out
            .try_send(&sim_prompt(
                &format!("herd-{i}"),
                &format!(r#"CALL_TOOL add {{"a": {i}, "b": 1000}}"#),
            ))
            .unwrap();
    }
    let mut peak = 0;
    for (i, a_in, _) in &mut bees {
        let tones = turn(a_in).await;
        assert_eq!(tones.last().unwrap().chi(), "finish", "bee {i}: {tones:?}");
        let want = format!("[mcp__hum__add said {}]", *i + 1000);
        assert!(
            answer_text(&tones).contains(&want),
            "bee {i}: {}",
            answer_text(&tones)
        );
        if let Ok(st) = hum::client::fetch_status(&s.sock).await {
            peak = peak.max(st.cells().count());
        }
    }
    assert!(peak <= 8, "the cap was exceeded: {peak} cells");
    assert_eq!(forager.calls().len(), 30);
    forager.leave();
    drop(bees);
    s.stop();
}

/// An asker whose hello says it answers permission asks.
pub(crate) async fn asker_answering_permits(s: &Stack) -> (Inbox<OwnedReadHalf>, Outbox) {
    let stream = tokio::net::UnixStream::connect(&s.sock).await.unwrap();
    let thrum::Connection { mut inbox, outbox } =
        thrum::Connection::unix(stream, thrum::Limits::default(), "permits".to_owned());
    let hello = thrum::Hello {
        bee: Some(thrum::Bees::Many(vec!["asker".into()])),
        chis: Some(
            ["hello", "prompt", "permission-ask", "release-permit"]
                .map(String::from)
                .to_vec(),
        ),
        ..Default::default()
    };
    outbox.try_send(&Tone::new(hello)).unwrap();
    assert_eq!(next(&mut inbox).await.chi(), "breath");
    (inbox, outbox)
}

/// Reads tones until a `permission-ask` comes (failing on the turn's end).
async fn next_ask(inbox: &mut Inbox<OwnedReadHalf>) -> thrum::PermissionAsk {
    loop {
        let t = next(inbox).await;
        assert!(!matches!(t.chi(), "finish" | "error"), "no ask came: {t:?}");
        if let Body::PermissionAsk(a) = t.body {
            return a;
        }
    }
}

fn permit(ask: &thrum::PermissionAsk, sid: &str, decision: &str, message: Option<&str>) -> Tone {
    Tone::new(thrum::ReleasePermit {
        call_id: ask.call_id.clone(),
        decision: Some(decision.into()),
        message: message.map(str::to_owned),
        updated_input: None,
        option_id: None,
        extra: Default::default(),
    })
    .with_sid(sid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_asks_reach_the_asker_allowed_denied_and_unanswered_means_deny() {
    let mut s = Stack::start(Value::Null, &[]);
    s.worker = Some(worker_with_call_timeout(&s, 500));
    s.wait_worker().await;
    let (mut a_in, a_out) = asker_answering_permits(&s).await;
    a_out
        .try_send(&sim_prompt(
            "permits",
            "ASK_PERMISSION Bash ASK_PERMISSION Write ASK_PERMISSION Edit",
        ))
        .unwrap();
    let bash = next_ask(&mut a_in).await;
    assert_eq!(bash.tool_name, "Bash");
    a_out
        .try_send(&permit(&bash, "permits", "allow", None))
        .unwrap();
    let write = next_ask(&mut a_in).await;
    assert_eq!(write.tool_name, "Write");
    a_out
        .try_send(&permit(&write, "permits", "deny", Some("not today")))
        .unwrap();
    let edit = next_ask(&mut a_in).await;
    assert_eq!(edit.tool_name, "Edit");
    // No answer: after the timeout the agent is denied, and the ask is
    // withdrawn from the asker.
    let mut tones = Vec::new();
    let mut withdrawn = false;
    loop {
        let t = next(&mut a_in).await;
        if let Body::Cancel(c) = &t.body {
            withdrawn |= c.call_id.as_deref() == Some(edit.call_id.as_str());
        }
        let done = matches!(t.chi(), "finish" | "error");
        tones.push(t);
        if done {
            break;
        }
    }
    let text = answer_text(&tones);
    assert!(text.contains("[permission for Bash: allow]"), "{text}");
    assert!(
        text.contains("[permission for Write: deny: not today]"),
        "{text}"
    );
    assert!(
        text.contains(
            "[permission for Edit: deny: nobody answered the permission ask within 500 ms]"
        ),
        "{text}"
    );
    // (The worker's cancel passes humd before the turn's end does.)
    assert!(withdrawn, "the unanswered ask was not withdrawn");
    // An answer to an ask that is gone is refused.
    a_out
        .try_send(&permit(&edit, "permits", "allow", None).with_rid("late"))
        .unwrap();
    let refused = loop {
        let t = next(&mut a_in).await;
        if t.chi() == "error" {
            break t;
        }
    };
    assert_eq!(refused.rid(), Some("late"));
    // humd names who let the ask lapse (issue 26, item 3).
    let status = s.status_answers("after the lapse").await;
    let lapsed = &status["daemon"]["tools"]["unansweredPermits"];
    assert_eq!(lapsed.as_object().map(|m| m.len()), Some(1), "{lapsed}");
    assert_eq!(lapsed.as_object().unwrap().values().next().unwrap(), 1);
    assert!(s.log("daemon.log").contains("permission.unanswered"));
    assert!(s.status_table().contains("permission asks left unanswered"));
    drop((a_in, a_out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asker_that_does_not_answer_permission_asks_gets_the_configured_default() {
    let mut s = Stack::start(Value::Null, &[]);
    s.worker = Some(s.worker_with(
        json!({"claude": {"enabled": false}, "sim": {"models": ["sim"], "permissionDefault": "allow"},
               "cwd": s.sb.work()}),
        &[],
    ));
    s.wait_worker().await;
    let (mut a_in, a_out) = s.connect("plain").await;
    a_out
        .try_send(&sim_prompt("plain", "ASK_PERMISSION Bash"))
        .unwrap();
    let tones = turn(&mut a_in).await;
    assert!(
        !tones.iter().any(|t| t.chi() == "permission-ask"),
        "an asker that did not announce permission-ask was asked"
    );
    assert!(answer_text(&tones).contains("[permission for Bash: allow]"));
    drop((a_in, a_out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hum_prompt_lends_a_local_command_as_a_tool_and_shows_the_calls() {
    let s = Stack::start(json!({}), &[]);
    s.wait_worker().await;
    let sock = s.sock.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking({
        let cmd = s.sb.hum(&[
            "prompt",
            "--socket",
            &sock,
            "--model",
            "sim",
            "--sid",
            "by-hand",
            "--tool",
            "upper=tr a-z A-Z",
            "--tool",
            "broken=echo nope >&2; exit 3",
            r#"CALL_TOOL upper {"text": "abc"} CALL_TOOL broken"#,
        ]);
        move || {
            let mut cmd = cmd;
            cmd.output().unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The command got the call's arguments on stdin; its output is the result.
    assert!(
        stdout.contains(r#"[mcp__hum__upper said {"TEXT":"ABC"}]"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("[mcp__hum__broken failed: \"echo nope >&2; exit 3\" failed: nope]"),
        "{stdout}"
    );
    assert!(
        stderr.contains(r#"[tool upper {"text":"abc"}]"#),
        "{stderr}"
    );
    assert!(stderr.contains("[tool broken failed]"), "{stderr}");
    // A bad --tool is refused before anything is sent.
    let bad =
        s.sb.hum(&["prompt", "--socket", &sock, "--tool", "no-command", "hi"])
            .output()
            .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NAME=COMMAND"));
    s.stop();
}

/// The README's forager (the first Python block after its "Bees lend tools"
/// heading), run as it is printed there.
fn readme_forager() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme
        .find("### Bees lend tools")
        .expect("the README's tools section")..];
    let start = section.find("```python\n").expect("a python block") + "```python\n".len();
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_python_forager_serves_its_add_tool() {
    let s = Stack::start(json!({}), &[]);
    s.wait_worker().await;
    let script = s.sb.dir.path().join("forager.py");
    std::fs::write(&script, readme_forager()).unwrap();
    let mut py = std::process::Command::new("python3");
    py.arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HUM_THRUM_SOCK", &s.sock)
        .env(TAG_VAR, &s.sb.tag)
        .stderr(std::process::Stdio::piped());
    let mut forager = py
        .spawn()
        .expect("python3 is needed for this test (.ci/run checks for it)");
    wait_foragers(&s, 1).await;
    let (mut a_in, a_out) = s.connect("asker").await;
    a_out
        .try_send(&sim_prompt("py", r#"CALL_TOOL add {"a": 20, "b": 22}"#))
        .unwrap();
    let tones = turn(&mut a_in).await;
    assert!(
        answer_text(&tones).contains("[mcp__hum__add said 42]"),
        "{}",
        answer_text(&tones)
    );
    stop_child(&mut forager);
    drop((a_in, a_out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forager_may_also_ask_and_its_informational_tones_are_not_refused() {
    let s = Stack::start(json!({}), &[]);
    s.wait_worker().await;
    let stream = tokio::net::UnixStream::connect(&s.sock).await.unwrap();
    let thrum::Connection { mut inbox, outbox } =
        thrum::Connection::unix(stream, thrum::Limits::default(), "both".to_owned());
    let hello = thrum::Hello {
        bee: Some(thrum::Bees::Many(vec!["forager".into(), "asker".into()])),
        tools: Some(vec![spec("echo")]),
        ..Default::default()
    };
    outbox.try_send(&Tone::new(hello)).unwrap();
    assert_eq!(next(&mut inbox).await.chi(), "breath");
    wait_foragers(&s, 1).await;
    // What the old system's foragers also send: informational tool tones.
    for chi in ["tool-info", "tool-meta"] {
        let line = format!(r#"{{"chi":"{chi}","rid":"{chi}","tools":[]}}"#);
        let t = Tone::decode(line.as_bytes()).unwrap();
        outbox.try_send(&t).unwrap();
        let echo = next(&mut inbox).await;
        assert_eq!((echo.chi(), echo.rid()), ("echo", Some(chi)), "{echo:?}");
        assert_eq!(echo.to_value()["ok"], true);
    }
    // It prompts, and its own agent calls its own tool.
    outbox
        .try_send(&sim_prompt("both", r#"CALL_TOOL echo {"text": "self"}"#))
        .unwrap();
    let mut tones = Vec::new();
    loop {
        let t = next(&mut inbox).await;
        if let Body::ToolCall(c) = &t.body {
            let mut r = ToolResult::error(&c.call_id, Some("echo"), "");
            r.output = Some(c.args["text"].clone());
            r.is_error = Some(false);
            outbox.try_send(&Tone::new(r).with_sid("both")).unwrap();
            continue;
        }
        let done = matches!(t.chi(), "finish" | "error");
        tones.push(t);
        if done {
            break;
        }
    }
    assert_eq!(tones.last().unwrap().chi(), "finish", "{tones:?}");
    assert!(answer_text(&tones).contains("[mcp__hum__echo said self]"));
    drop((inbox, outbox));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forager_offering_too_many_tools_is_told_and_registers_none() {
    let s = Stack::start(Value::Null, &[]);
    let stream = tokio::net::UnixStream::connect(&s.sock).await.unwrap();
    let thrum::Connection { mut inbox, outbox } =
        thrum::Connection::unix(stream, thrum::Limits::default(), "greedy".to_owned());
    let names: Vec<String> = (0..600).map(|i| format!("t{i}")).collect();
    let hello = thrum::Hello {
        bee: Some(thrum::Bees::Many(vec!["forager".into()])),
        tools: Some(names.iter().map(|n| spec(n)).collect()),
        ..Default::default()
    };
    outbox.try_send(&Tone::new(hello)).unwrap();
    assert_eq!(next(&mut inbox).await.chi(), "breath");
    let e = next(&mut inbox).await;
    let Body::Error(err) = &e.body else {
        panic!("{e:?}")
    };
    assert_eq!(err.code, thrum::ErrorCode::BadRequest);
    assert!(
        err.message
            .as_deref()
            .unwrap_or("")
            .contains("too many tools"),
        "{err:?}"
    );
    wait_foragers(&s, 1).await;
    let status = hum::client::fetch_status(&s.sock).await.unwrap();
    assert!(status.daemon.tools.foragers[0].tools.is_empty());
    drop((inbox, outbox));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_foragers_makes_a_few_catalogue_announcements_not_one_each() {
    let s = Stack::start(Value::Null, &[]);
    let (mut w_in, _w_out) = s.connect_as("worker", Some(vec!["fake"])).await;
    let n = 200;
    let mut foragers = Vec::new();
    for i in 0..n {
        let stream = tokio::net::UnixStream::connect(&s.sock).await.unwrap();
        let c = thrum::Connection::unix(stream, thrum::Limits::default(), format!("f{i}"));
        let hello = thrum::Hello {
            bee: Some(thrum::Bees::Many(vec!["forager".into()])),
            tools: Some(vec![spec(&format!("tool{i}"))]),
            ..Default::default()
        };
        c.outbox.try_send(&Tone::new(hello)).unwrap();
        foragers.push(c);
    }
    // The worker hears the catalogue until it holds every tool.
    let mut announcements = 0;
    loop {
        let t = next(&mut w_in).await;
        let Body::ToolInfo(info) = &t.body else {
            continue;
        };
        announcements += 1;
        if info.tools.as_ref().is_some_and(|t| t.len() == n) {
            break;
        }
    }
    assert!(
        announcements < n / 2,
        "{announcements} announcements for {n} foragers"
    );
    drop(foragers);
    s.stop();
}
