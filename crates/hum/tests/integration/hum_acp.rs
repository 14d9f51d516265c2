//! `hum acp` (issue 29, item 6): hum as an ACP agent, driven by the ACP
//! SDK's own client as an editor drives it: a session, prompts on one warm
//! cell, cancel, a permission ask answered by the editor, and the editor
//! gone mid-turn (its turn cancelled, the cell warm for the next window,
//! which loads the session). Real humd, worker and sim cells; leak-checked.

use crate::common::forager::wait_until_async;
use crate::common::stack::*;
use crate::common::*;
use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema::{
    CancelNotification, ContentBlock, InitializeRequest, LoadSessionRequest, NewSessionRequest,
    PermissionOptionKind, PromptRequest, PromptResponse, RequestPermissionOutcome,
    RequestPermissionRequest, RequestPermissionResponse, SelectedPermissionOutcome, SessionId,
    SessionNotification, SessionUpdate, StopReason, TextContent,
};
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{Agent, Client, Lines};
use futures::StreamExt;
use serde_json::json;
use std::process::Stdio;
use thrum::RawLine;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// What reaches the editor.
enum Seen {
    Update(SessionNotification),
    Ask(
        RequestPermissionRequest,
        Responder<RequestPermissionResponse>,
    ),
    Done(Result<PromptResponse, agent_client_protocol::Error>),
}

/// An editor: `hum acp` as its child, the SDK's client on its pipes.
struct Editor {
    child: tokio::process::Child,
    cx: ConnectionTo<Agent>,
    seen: mpsc::UnboundedReceiver<Seen>,
    seen_tx: mpsc::UnboundedSender<Seen>,
    stop: oneshot::Sender<()>,
}

impl Editor {
    async fn launch(s: &Stack) -> Editor {
        let mut child = tokio::process::Command::new(hum_bin())
            .args([
                "acp",
                "--socket",
                s.sock.to_str().unwrap(),
                "--model",
                "sim",
            ])
            .env(TAG_VAR, &s.sb.tag)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(s.sb.dir.path().join("hum-acp.log")).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = thrum::LineReader::new(
            BufReader::new(child.stdout.take().unwrap()),
            thrum::DEFAULT_MAX_LINE,
        );
        let incoming = futures::stream::unfold(stdout, |mut r| async move {
            match r.next_line().await {
                Ok(Some(RawLine::Line(b))) => {
                    Some((Ok(String::from_utf8_lossy(b).into_owned()), r))
                }
                Ok(Some(RawLine::TooLong { .. })) => panic!("hum acp printed an over-long line"),
                Ok(None) => None,
                Err(e) => Some((Err(e), r)),
            }
        });
        let outgoing = futures::sink::unfold(stdin, |mut w, mut line: String| async move {
            line.push('\n');
            w.write_all(line.as_bytes()).await?;
            Ok::<_, std::io::Error>(w)
        });
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (updates, asks) = (seen_tx.clone(), seen_tx.clone());
        let (cx_tx, cx_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let client = Client
            .v1()
            .name("test-editor")
            .on_receive_notification(
                async move |n: SessionNotification, _cx: ConnectionTo<Agent>| {
                    let _ = updates.send(Seen::Update(n));
                    Ok(())
                },
                agent_client_protocol::on_receive_notification!(),
            )
            .on_receive_request(
                async move |r: RequestPermissionRequest,
                            responder: Responder<RequestPermissionResponse>,
                            _cx: ConnectionTo<Agent>| {
                    let _ = asks.send(Seen::Ask(r, responder));
                    Ok(())
                },
                agent_client_protocol::on_receive_request!(),
            );
        let transport = Lines::new(Box::pin(outgoing), incoming.boxed());
        tokio::spawn(
            client.connect_with(transport, async move |cx: ConnectionTo<Agent>| {
                let _ = cx_tx.send(cx.clone());
                tokio::select! {
                    _ = stop_rx => {}
                    _ = cx.incoming_closed() => {}
                }
                Ok(())
            }),
        );
        let cx = cx_rx.await.unwrap();
        let init = cx
            .send_request(InitializeRequest::new(ProtocolVersion::V1))
            .block_task()
            .await
            .unwrap();
        assert!(init.agent_capabilities.load_session, "hum keeps sessions");
        Editor {
            child,
            cx,
            seen,
            seen_tx,
            stop: stop_tx,
        }
    }

    /// The window closes: the connection ends (its stdin's EOF); how
    /// `hum acp` exited.
    async fn close(mut self) -> std::process::ExitStatus {
        let _ = self.stop.send(());
        tokio::time::timeout(PROMPTLY, self.child.wait())
            .await
            .expect("hum acp did not exit at its stdin's end")
            .unwrap()
    }

    async fn new_session(&self, s: &Stack) -> SessionId {
        self.cx
            .send_request(NewSessionRequest::new(s.sb.work()))
            .block_task()
            .await
            .unwrap()
            .session_id
    }

    /// Sends a prompt; its answer arrives among what is seen.
    fn prompt(&self, session: &SessionId, text: &str) {
        let (cx, tx) = (self.cx.clone(), self.seen_tx.clone());
        let req = PromptRequest::new(
            session.clone(),
            vec![ContentBlock::Text(TextContent::new(text))],
        );
        tokio::spawn(async move {
            let _ = tx.send(Seen::Done(cx.send_request(req).block_task().await));
        });
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(PROMPTLY, self.seen.recv())
            .await
            .expect("the editor heard nothing")
            .expect("the editor's channel closed")
    }

    /// The rest of a prompt: its text, and how it ended. Permission asks
    /// get `allow`.
    async fn rest(&mut self, allow: bool) -> (String, Result<PromptResponse, String>) {
        let mut text = String::new();
        loop {
            match self.next().await {
                Seen::Update(n) => {
                    if let SessionUpdate::AgentMessageChunk(c) = n.update {
                        if let ContentBlock::Text(t) = c.content {
                            text.push_str(&t.text);
                        }
                    }
                }
                Seen::Ask(r, responder) => {
                    let kind = if allow {
                        PermissionOptionKind::AllowOnce
                    } else {
                        PermissionOptionKind::RejectOnce
                    };
                    let o = r.options.iter().find(|o| o.kind == kind).unwrap();
                    responder
                        .respond(RequestPermissionResponse::new(
                            RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(
                                o.option_id.clone(),
                            )),
                        ))
                        .unwrap();
                }
                Seen::Done(r) => return (text, r.map_err(|e| format!("{e:?}"))),
            }
        }
    }

    /// Waits for the first piece of the answer's text.
    async fn first_text(&mut self) {
        loop {
            if let Seen::Update(n) = self.next().await {
                if matches!(n.update, SessionUpdate::AgentMessageChunk(_)) {
                    return;
                }
            }
        }
    }
}

async fn sid_pid(s: &Stack, sid: &str) -> Option<i32> {
    hum::client::fetch_status(&s.sock)
        .await
        .ok()?
        .cells()
        .find(|c| c.sid == sid)
        .and_then(|c| c.pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_gets_warm_turns_cancel_and_permission_asks_from_hum_acp() {
    let s = Stack::start(
        json!({"HUM_SIM_STALL_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "STALL"}),
        &[],
    );
    s.wait_worker().await;
    let mut ed = Editor::launch(&s).await;
    let session = ed.new_session(&s).await;

    ed.prompt(&session, "hello");
    let (text, end) = ed.rest(true).await;
    assert_eq!(text, "SIM-REPLY #1: you said <hello>");
    let end = end.unwrap();
    assert_eq!(end.stop_reason, StopReason::EndTurn);
    let usage = end.meta.as_ref().and_then(|m| m.get("usage")).cloned();
    assert!(
        usage.is_some_and(|u| u["output_tokens"].as_u64() > Some(0)),
        "{end:?}"
    );
    let pid = sid_pid(&s, &session.to_string()).await.expect("a cell");

    ed.prompt(&session, "and again");
    let (text, _) = ed.rest(true).await;
    assert_eq!(
        text,
        "SIM-REPLY #2: you said <and again>; before that <hello>"
    );
    assert_eq!(
        sid_pid(&s, &session.to_string()).await,
        Some(pid),
        "one warm cell"
    );

    for (allow, said) in [(true, "allow"), (false, "deny")] {
        ed.prompt(&session, "ASK_PERMISSION Bash");
        let (text, _) = ed.rest(allow).await;
        assert!(
            text.contains(&format!("[permission for Bash: {said}")),
            "{text}"
        );
    }

    ed.prompt(&session, "STALL here");
    ed.first_text().await;
    ed.cx
        .send_notification(CancelNotification::new(session.clone()))
        .unwrap();
    let (_, end) = ed.rest(true).await;
    assert_eq!(end.unwrap().stop_reason, StopReason::Cancelled);
    assert_eq!(
        sid_pid(&s, &session.to_string()).await,
        Some(pid),
        "still warm"
    );

    let exit = ed.close().await;
    let log = std::fs::read_to_string(s.sb.dir.path().join("hum-acp.log")).unwrap_or_default();
    assert!(
        exit.success(),
        "hum acp exits 0 at EOF, not {exit:?}:\n{log}"
    );
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_killed_mid_turn_cancels_it_and_the_next_window_loads_the_warm_cell() {
    let s = Stack::start(
        json!({"HUM_SIM_STALL_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "STALL"}),
        &[],
    );
    s.wait_worker().await;
    let mut ed = Editor::launch(&s).await;
    let session = ed.new_session(&s).await;
    let sid = session.to_string();
    ed.prompt(&session, "first");
    ed.rest(true).await.1.unwrap();
    let pid = sid_pid(&s, &sid).await.expect("a cell");
    ed.prompt(&session, "STALL until the window closes");
    ed.first_text().await;
    signal(ed.child.id().unwrap() as i32, rustix::process::Signal::KILL);
    ed.child.wait().await.unwrap();
    // humd cancels the turn of the asker that went; the cell stays.
    assert!(
        wait_until_async(PROMPTLY, || async {
            hum::client::fetch_status(&s.sock).await.is_ok_and(|st| {
                st.cells().any(|c| {
                    c.sid == sid && c.pid == Some(pid) && c.state == hum::pool::CellState::Idle
                })
            })
        })
        .await,
        "the turn was not cancelled, or the cell went"
    );
    let mut next = Editor::launch(&s).await;
    next.cx
        .send_request(LoadSessionRequest::new(session.clone(), s.sb.work()))
        .block_task()
        .await
        .unwrap();
    next.prompt(&session, "back again");
    let (text, end) = next.rest(true).await;
    assert_eq!(end.unwrap().stop_reason, StopReason::EndTurn);
    assert!(
        text.contains("you said <back again>; before that <"),
        "{text}"
    );
    assert_eq!(sid_pid(&s, &sid).await, Some(pid), "the same warm cell");
    assert!(next.close().await.success());
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_keeps_its_agent_and_sessions_across_a_humd_restart() {
    let mut s = Stack::start(
        json!({"HUM_SIM_STALL_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "STALL"}),
        &[],
    );
    s.wait_worker().await;
    let mut ed = Editor::launch(&s).await;
    let session = ed.new_session(&s).await;
    ed.prompt(&session, "first");
    ed.rest(true).await.1.unwrap();
    // A permission ask the editor has not answered when humd goes: the
    // turn ends with an error at once, not after the user answers.
    ed.prompt(&session, "ASK_PERMISSION Bash");
    let _unanswered = loop {
        if let Seen::Ask(_, responder) = ed.next().await {
            break responder;
        }
    };
    stop_child(&mut s.daemon);
    let end = loop {
        if let Seen::Done(r) = ed.next().await {
            break r;
        }
    };
    assert!(end.is_err(), "the turn humd took with it: {end:?}");
    s.daemon = s.respawn_daemon(&["--no-metrics"]);
    s.wait_worker().await;
    let text = answered_once_linked(&mut ed, &session, "after a restart").await;
    assert!(text.contains("you said <after a restart>"), "{text}");
    // A turn streaming when humd goes ends with an error too; and hum acp
    // links again after a second restart.
    ed.prompt(&session, "STALL while humd restarts");
    ed.first_text().await;
    stop_child(&mut s.daemon);
    let (_, end) = ed.rest(true).await;
    assert!(end.is_err(), "the turn humd took with it: {end:?}");
    s.daemon = s.respawn_daemon(&["--no-metrics"]);
    s.wait_worker().await;
    let text = answered_once_linked(&mut ed, &session, "and again").await;
    assert!(text.contains("you said <and again>"), "{text}");
    let exit = ed.close().await;
    let log = std::fs::read_to_string(s.sb.dir.path().join("hum-acp.log")).unwrap_or_default();
    assert!(
        exit.success(),
        "hum acp exits 0 at EOF, not {exit:?}:\n{log}"
    );
    assert_eq!(log.matches("acp.humd_back").count(), 2, "{log}");
    s.stop();
}

/// Prompts `text` until hum acp, linking to humd again, has it answered
/// (refused "humd is away" meanwhile); the answer's text.
async fn answered_once_linked(ed: &mut Editor, session: &SessionId, text: &str) -> String {
    let deadline = std::time::Instant::now() + PROMPTLY;
    loop {
        ed.prompt(session, text);
        match ed.rest(true).await {
            (answer, Ok(end)) => {
                assert_eq!(end.stop_reason, StopReason::EndTurn);
                return answer;
            }
            (_, Err(e)) => {
                assert!(e.contains("humd is away"), "{e}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "hum acp never reached humd again: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// `acpx`, the headless ACP client, for these tests: `$HUM_TEST_ACPX`. In
/// CI its absence is a failure; elsewhere the test says it did not run.
fn acpx() -> Option<std::path::PathBuf> {
    match std::env::var_os("HUM_TEST_ACPX").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = std::path::PathBuf::from(p);
            assert!(p.exists(), "HUM_TEST_ACPX={} does not exist", p.display());
            Some(p)
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("HUM_TEST_ACPX is not set: .ci/run must install acpx and point it at the binary")
        }
        None => {
            use std::io::Write;
            let _ = std::io::stderr().write_all(
                b"\n*** NOT RUN: the acpx test needs HUM_TEST_ACPX=/path/to/acpx (see .ci/run) ***\n",
            );
            None
        }
    }
}

/// One `acpx` run with `hum acp` as its agent: its JSON-RPC lines.
fn acpx_run(s: &Stack, acpx: &std::path::Path, args: &[&str]) -> std::process::Command {
    let agent = format!(
        "{} acp --socket {} --model sim",
        hum_bin(),
        s.sock.to_str().unwrap()
    );
    let mut cmd = std::process::Command::new(acpx);
    cmd.arg("--agent")
        .arg(agent)
        .args(args)
        .current_dir(s.sb.work())
        .env("HOME", s.sb.home())
        .env(TAG_VAR, &s.sb.tag)
        .stdin(Stdio::null());
    cmd
}

/// The answer's text and stop reason in acpx's `--format json` output.
fn acpx_answer(out: &[u8]) -> (String, Option<String>) {
    let (mut text, mut stop) = (String::new(), None);
    for line in String::from_utf8_lossy(out).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let update = &v["params"]["update"];
        if update["sessionUpdate"] == "agent_message_chunk" {
            text.push_str(update["content"]["text"].as_str().unwrap_or_default());
        }
        if let Some(r) = v["result"]["stopReason"].as_str() {
            stop = Some(r.to_owned());
        }
    }
    (text, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acpx_drives_hum_acp_through_warm_turns_permissions_and_cancel() {
    let Some(acpx) = acpx() else { return };
    let s = Stack::start(
        json!({"HUM_SIM_STALL_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "STALL"}),
        &[],
    );
    s.wait_worker().await;
    let made = acpx_run(&s, &acpx, &["sessions", "new"]).output().unwrap();
    assert!(made.status.success(), "{made:?}");
    let sid = String::from_utf8_lossy(&made.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    assert!(sid.starts_with("acp-"), "hum's session id: {sid:?}");
    let say = |policy: &str, text: &str| {
        let out = acpx_run(&s, &acpx, &[policy, "--format", "json", text])
            .output()
            .unwrap();
        acpx_answer(&out.stdout)
    };
    assert_eq!(
        say("--approve-all", "hello"),
        (
            "SIM-REPLY #1: you said <hello>".into(),
            Some("end_turn".into())
        )
    );
    let pid = sid_pid(&s, &sid).await.expect("a cell");
    let (text, _) = say("--approve-all", "again");
    assert_eq!(text, "SIM-REPLY #2: you said <again>; before that <hello>");
    assert_eq!(sid_pid(&s, &sid).await, Some(pid), "one warm cell");
    let (allowed, _) = say("--approve-all", "ASK_PERMISSION Bash");
    assert!(allowed.contains("[permission for Bash: allow"), "{allowed}");
    let (denied, _) = say("--deny-all", "ASK_PERMISSION Bash");
    assert!(denied.contains("[permission for Bash: deny"), "{denied}");

    // Cancel from another acpx while a prompt runs.
    let stalled = acpx_run(
        &s,
        &acpx,
        &["--approve-all", "--format", "json", "STALL now"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let busy = || async {
        hum::client::fetch_status(&s.sock).await.is_ok_and(|st| {
            st.cells()
                .any(|c| c.sid == sid && c.state == hum::pool::CellState::Busy)
        })
    };
    assert!(wait_until_async(PROMPTLY, busy).await, "the turn never ran");
    let cancel = acpx_run(&s, &acpx, &["cancel"]).output().unwrap();
    assert!(cancel.status.success(), "{cancel:?}");
    let out = stalled.wait_with_output().unwrap();
    assert_eq!(acpx_answer(&out.stdout).1.as_deref(), Some("cancelled"));
    assert_eq!(sid_pid(&s, &sid).await, Some(pid), "still warm");

    let closed = acpx_run(&s, &acpx, &["sessions", "close"])
        .output()
        .unwrap();
    assert!(closed.status.success(), "{closed:?}");
    s.stop();
}
