//! `hum top` in a real terminal (tmux): it shows the cells, `d` then `y`
//! tears the selected one down through the normal cleanup path, `q` exits
//! 0 and gives the terminal back (the alternate screen is left); without a
//! terminal it prints one plain line per refresh.

use crate::common::forager::wait_until_async;
use crate::common::stack::{sim_prompt, Stack};
use crate::common::*;
use hum::client::Client;
use std::path::Path;
use std::process::Command;

/// tmux on its own server socket in the sandbox, with the test's tag (so
/// the leak check sees anything it leaves).
fn tmux(sb: &Sandbox, sock: &Path, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(sock)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", sb.home())
        .env("TERM", "xterm-256color")
        .env(TAG_VAR, &sb.tag)
        .output()
        .unwrap_or_else(|e| panic!("tmux is missing ({e}): apt-get install tmux"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn answered(client: &mut Client, sid: &str) {
    client.send(&sim_prompt(sid, "hello")).await.unwrap();
    let a = tokio::time::timeout(PROMPTLY, client.answer(sid))
        .await
        .unwrap()
        .unwrap();
    assert!(a.end.is_ok(), "{:?}", a.end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hum_top_in_a_terminal_shows_cells_tears_one_down_and_quits_clean() {
    let stack = Stack::start(serde_json::json!({}), &[]);
    stack.wait_worker().await;
    let mut bee = Client::asker(&stack.sock, "top-test").await.unwrap();
    answered(&mut bee, "top-alpha").await;
    answered(&mut bee, "top-beta").await;

    let sb = &stack.sb;
    let tsock = sb.dir.path().join("tmux.sock");
    let exit_file = sb.dir.path().join("top.exit");
    let cmd = format!(
        "{} top --socket {} --interval-ms 200; echo EXIT=$? > {}; sleep 60",
        hum_bin(),
        stack.sock.display(),
        exit_file.display()
    );
    tmux(
        sb,
        &tsock,
        &[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "130",
            "-y",
            "20",
            &cmd,
        ],
    );
    let screen = || tmux(sb, &tsock, &["capture-pane", "-p", "-t", "top"]);
    let alternate_on = || {
        tmux(
            sb,
            &tsock,
            &["display", "-p", "-t", "top", "#{alternate_on}"],
        )
        .trim()
        .to_owned()
    };
    assert!(
        wait_until(PROMPTLY, || {
            let s = screen();
            s.contains("top-alpha") && s.contains("top-beta") && s.contains("cells 2/8")
        }),
        "hum top never showed both cells:\n{}",
        screen()
    );
    let s = screen();
    let row = s.lines().find(|l| l.starts_with("top-alpha")).unwrap();
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&words[1..3], ["sim", "idle"], "{row}");
    assert!(
        s.lines()
            .any(|l| l.starts_with("SID") && l.contains("COST TODAY")),
        "{s}"
    );
    assert_eq!(alternate_on(), "1");

    // Resized smaller: drawn again at the new size, the rows still there.
    tmux(
        sb,
        &tsock,
        &["resize-window", "-t", "top", "-x", "90", "-y", "12"],
    );
    assert!(
        wait_until(PROMPTLY, || {
            let s = screen();
            s.lines().count() <= 12
                && s.lines().all(|l| l.chars().count() <= 90)
                && s.lines().any(|l| l.starts_with("top-alpha"))
                && s.lines().last().is_some_and(|l| l.starts_with("q quit"))
        }),
        "not redrawn at 90x12:\n{}",
        screen()
    );
    // Sort by sid (s cycles rss → … → sid), select the first row, tear it
    // down: it asks first.
    let sorted = |s: &str| s.contains("sort (sid)");
    for _ in 0..6 {
        tmux(sb, &tsock, &["send-keys", "-t", "top", "s"]);
        if wait_until(std::time::Duration::from_millis(500), || sorted(&screen())) {
            break;
        }
    }
    assert!(sorted(&screen()), "{}", screen());
    tmux(sb, &tsock, &["send-keys", "-t", "top", "Up", "d"]);
    assert!(
        wait_until(PROMPTLY, || screen()
            .contains("tear down the cell of top-alpha?")),
        "{}",
        screen()
    );
    tmux(sb, &tsock, &["send-keys", "-t", "top", "y"]);
    assert!(
        wait_until_async(PROMPTLY, || async {
            hum::client::fetch_status(&stack.sock).await.is_ok_and(|s| {
                s.cells().map(|c| c.sid.as_str()).collect::<Vec<_>>() == ["top-beta"]
            })
        })
        .await,
        "top-alpha's cell is still there"
    );
    assert!(
        stack.torn_down("top-alpha", "cleanup"),
        "not through the cleanup path: {}",
        stack.log("worker.log")
    );
    assert!(
        wait_until(PROMPTLY, || !screen()
            .lines()
            .any(|l| l.starts_with("top-alpha"))),
        "{}",
        screen()
    );

    // q: exit 0, the alternate screen left, the table gone from view.
    tmux(sb, &tsock, &["send-keys", "-t", "top", "q"]);
    assert!(
        wait_until(PROMPTLY, || std::fs::read_to_string(&exit_file)
            .is_ok_and(|s| s.trim() == "EXIT=0")),
        "hum top did not exit 0: {:?}\n{}",
        std::fs::read_to_string(&exit_file),
        screen()
    );
    assert_eq!(alternate_on(), "0");
    assert!(
        !screen().contains("SID"),
        "the terminal was not restored:\n{}",
        screen()
    );
    tmux(sb, &tsock, &["kill-server"]);
    assert!(
        wait_until(PROMPTLY, || !tsock.exists()
            || sb.live().iter().all(|p| !std::fs::read(format!(
                "/proc/{}/cmdline",
                p.pid
            ))
            .is_ok_and(|c| c.starts_with(b"tmux")))),
        "the tmux server did not stop"
    );
    bee.close();
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hum_top_without_a_terminal_prints_a_line_per_refresh() {
    let stack = Stack::start(serde_json::json!({}), &[]);
    stack.wait_worker().await;
    let mut bee = Client::asker(&stack.sock, "top-test").await.unwrap();
    answered(&mut bee, "plain-one").await;
    let out = stack
        .sb
        .hum(&[
            "top",
            "--socket",
            stack.sock.to_str().unwrap(),
            "--iterations",
            "3",
            "--interval-ms",
            "100",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in &lines {
        assert!(l.contains("cells 1/8"), "{l}");
        assert!(l.contains("| plain-one idle pid="), "{l}");
        assert!(!l.contains('\x1b'), "no terminal codes: {l:?}");
    }
    // The second refresh has a CPU rate.
    assert!(!lines[2].contains("cpu=-"), "{}", lines[2]);
    bee.close();
    stack.stop();
}
