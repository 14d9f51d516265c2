//! A forager's `provides` (issue 26, item 4): while a forager serving the
//! filesystem is connected, cells start without the agent's own file and
//! shell tools, so the agent works through the forager's tools; a cell
//! started otherwise is replaced at its next turn and the conversation
//! goes on (resumed). Real humd, worker and sim cells; each test ends with
//! the leak check.

use crate::common::forager::*;
use crate::common::stack::*;
use crate::common::*;
use crate::tools::{answer_text, turn};
use serde_json::json;
use thrum::{Body, Tone};

/// The agent's own tools the sim lists by default that `fs` turns off.
const FS_BUILTINS: [&str; 6] = ["Bash", "Edit", "Glob", "Grep", "Read", "Write"];

/// The tools the turn's `session-ready` listed (claude's init line).
fn init_tools(tones: &[Tone]) -> Vec<String> {
    tones
        .iter()
        .find_map(|t| match &t.body {
            Body::SessionReady(r) => r.tools.clone(),
            _ => None,
        })
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// The pid and argv of `sid`'s cell, as the worker reports it.
async fn cell_argv(s: &Stack, sid: &str) -> (i32, String) {
    let deadline = std::time::Instant::now() + PROMPTLY;
    let pid = loop {
        let status = hum::client::fetch_status(&s.sock).await.ok();
        let pid = status
            .as_ref()
            .and_then(|st| st.cells().find(|c| c.sid == sid).and_then(|c| c.pid));
        if let Some(pid) = pid {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no cell of {sid} reported"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    (pid, String::from_utf8_lossy(&argv).replace('\0', " "))
}

/// Waits until humd's status says whether `fs` is served, and the worker
/// says its new cells start accordingly.
pub(crate) async fn wait_fs_served(s: &Stack, served: bool) {
    assert!(
        wait_until_async(PROMPTLY, || async {
            hum::client::fetch_status(&s.sock).await.is_ok_and(|st| {
                st.daemon
                    .tools
                    .capabilities
                    .iter()
                    .any(|c| c.name == "fs" && c.served == served)
                    && st.workers.iter().all(|w| {
                        w.status
                            .as_ref()
                            .is_some_and(|ws| ws.builtins_off.iter().any(|b| b == "Read") == served)
                    })
            })
        })
        .await,
        "humd and its worker never said fs served={served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forager_providing_fs_turns_the_agents_own_file_tools_off_while_it_is_here() {
    let s = Stack::start(json!({}), &[]);
    s.wait_worker().await;
    let (mut a_in, a_out) = s.connect("asker").await;

    // Before: the agent has its own file tools.
    a_out.try_send(&sim_prompt("fs-1", "first")).unwrap();
    let tones = turn(&mut a_in).await;
    assert_eq!(tones.last().unwrap().chi(), "finish", "{tones:?}");
    let before = init_tools(&tones);
    assert!(before.iter().any(|t| t == "Read"), "{before:?}");
    let (pid1, argv1) = cell_argv(&s, "fs-1").await;
    assert!(!argv1.contains("--disallowed-tools"), "{argv1}");
    assert!(
        s.status_table().contains("  fs: not served: Bash, Edit"),
        "{}",
        s.status_table()
    );

    // A forager serving the filesystem comes.
    let forager = Forager::connect_providing(&s, &["echo"], &["fs"]).await;
    wait_fs_served(&s, true).await;
    let table = s.status_table();
    assert!(
        table.contains("  fs: served by forager-echo: off now: Bash, Edit, Glob, Grep, MultiEdit, NotebookEdit, Read, Write"),
        "{table}"
    );

    // The next turn of fs-1: a new cell without them, resuming the
    // conversation, and the agent calls the forager's tool.
    a_out
        .try_send(&sim_prompt(
            "fs-1",
            r#"second: CALL_TOOL echo {"text": "via the forager"}"#,
        ))
        .unwrap();
    let tones = turn(&mut a_in).await;
    assert_eq!(tones.last().unwrap().chi(), "finish", "{tones:?}");
    let during = init_tools(&tones);
    for t in FS_BUILTINS {
        assert!(!during.iter().any(|x| x == t), "{t} offered: {during:?}");
    }
    assert!(
        during.iter().any(|x| x == "mcp__hum__echo"),
        "the forager's tool is not offered: {during:?}"
    );
    let text = answer_text(&tones);
    assert!(
        text.contains("[mcp__hum__echo said via the forager]"),
        "{text}"
    );
    assert!(
        text.contains("before that <first>"),
        "the conversation did not go on: {text}"
    );
    assert_eq!(forager.calls().len(), 1);
    let (pid2, argv2) = cell_argv(&s, "fs-1").await;
    assert_ne!(pid1, pid2, "the cell started with its own tools was kept");
    assert!(
        argv2.contains("--disallowed-tools=Bash,Edit,Glob,Grep,MultiEdit,NotebookEdit,Read,Write"),
        "{argv2}"
    );
    assert!(argv2.contains("--resume="), "not resumed: {argv2}");
    assert!(
        s.torn_down("fs-1", "reconfigured"),
        "{}",
        s.log("worker.log")
    );
    let status = hum::client::fetch_status(&s.sock).await.unwrap();
    let cell = status.cells().find(|c| c.sid == "fs-1").unwrap();
    assert!(cell.builtins_off.contains(&"Read".to_owned()), "{cell:?}");

    // A new sid starts without them as well.
    a_out.try_send(&sim_prompt("fs-2", "hello")).unwrap();
    let tones = turn(&mut a_in).await;
    let fresh = init_tools(&tones);
    assert!(!fresh.iter().any(|t| t == "Bash"), "{fresh:?}");

    // The forager leaves: the next turn has the agent's own tools again,
    // and still the same conversation.
    forager.leave();
    wait_fs_served(&s, false).await;
    a_out.try_send(&sim_prompt("fs-1", "third")).unwrap();
    let tones = turn(&mut a_in).await;
    assert_eq!(tones.last().unwrap().chi(), "finish", "{tones:?}");
    let after = init_tools(&tones);
    assert!(after.iter().any(|t| t == "Read"), "{after:?}");
    assert!(
        answer_text(&tones).contains("before that <second"),
        "{tones:?}"
    );
    let (pid3, argv3) = cell_argv(&s, "fs-1").await;
    assert_ne!(pid2, pid3);
    assert!(!argv3.contains("--disallowed-tools"), "{argv3}");
    drop((a_in, a_out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_past_the_limit_or_not_printable_are_refused_and_the_rest_kept() {
    let s = Stack::start(json!({}), &[]);
    s.wait_worker().await;
    let stream = thrum::connect(&s.sock).await.unwrap();
    let thrum::Connection { mut inbox, outbox } =
        thrum::Connection::unix(stream, thrum::Limits::default(), "forager".to_owned());
    let mut tags: Vec<String> = (0..20).map(|i| format!("cap{i}")).collect();
    tags.insert(0, "bad\ntag".into());
    tags.insert(1, "fs".into());
    let hello = thrum::Hello {
        bee: Some(thrum::Bees::Many(vec!["forager".into()])),
        proto_version: Some(thrum::PROTO_VERSION.into()),
        hid: Some("many-caps".into()),
        tools: Some(vec![spec("echo")]),
        provides: Some(tags),
        ..Default::default()
    };
    outbox.try_send(&Tone::new(hello).with_rid("h")).unwrap();
    let mut refused = None;
    for _ in 0..4 {
        let t = next(&mut inbox).await;
        if t.chi() == "error" {
            refused = Some(t.to_value());
            break;
        }
    }
    let refused = refused.expect("no error for the refused tags");
    let msg = refused["message"].as_str().unwrap();
    assert!(msg.contains("bad\\ntag") && msg.contains("cap15"), "{msg}");
    wait_fs_served(&s, true).await;
    let status = hum::client::fetch_status(&s.sock).await.unwrap();
    let f = &status.daemon.tools.foragers[0];
    assert_eq!(f.provides.len(), 16, "{:?}", f.provides);
    assert_eq!(f.provides[0], "fs");
    drop((inbox, outbox));
    s.stop();
}
