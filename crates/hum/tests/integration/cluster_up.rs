//! `hum up --cluster` (issue 28, items 1 and 4): the command users run
//! joins this machine to the cluster, and stopping it leaves the cluster
//! cleanly, so the machine's idle sids move on their next prompts with
//! their conversations.

use crate::common::cluster::{runtime, turn, turn_at, Nats, Node};
use crate::common::*;
use rustix::process::Signal;
use serde_json::json;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

#[test]
fn hum_up_joins_the_cluster_and_its_stop_moves_its_idle_sids_on_their_next_prompts() {
    let sb = Sandbox::new();
    let nats = Nats::start(&sb);
    let b = Node::start(&sb, &nats, "up", "b", 2, json!({}));
    // Node a is `hum up`, as a user runs it.
    let dir = sb.dir.path().join("up-a");
    for d in ["run", "home", "state"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let sock = dir.join("run/thrum.sock");
    let config = dir.join("hum.json");
    std::fs::write(
        &config,
        json!({"claude": {"enabled": false}, "sim": {"models": ["sim"]},
               "cwd": sb.work(), "nest": {"maxActiveCells": 2}})
        .to_string(),
    )
    .unwrap();
    let mut up = sb
        .hum(&[
            "up",
            "--config",
            config.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
            "--no-metrics",
            "--no-gateway",
            "--cluster",
            &nats.url,
            "--node",
            "a",
            "--cluster-name",
            "up",
            "--cluster-credentials",
            nats.credentials.to_str().unwrap(),
        ])
        .env("HUM_STATE_DIR", dir.join("state"))
        .env("HOME", dir.join("home"))
        .env("HUM_LOG", "info,hum::daemon::cluster=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its banner names its logs (read on a thread of its own, so a hum
    // up that never prints one fails the test instead of hanging it).
    // The rest of its stdout goes unread, closed, as under `hum up |
    // head`: hum up must not mind.
    let stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(l) = line.trim_start().strip_prefix("logs") {
                let dir = l
                    .trim()
                    .strip_suffix("/daemon.log, worker.log")
                    .map(PathBuf::from);
                let _ = tx.send(dir);
                return;
            }
        }
    });
    let logs = rx
        .recv_timeout(PROMPTLY)
        .expect("hum up's banner names its logs")
        .expect("the logs line names daemon.log and worker.log");
    let a_log = || std::fs::read_to_string(logs.join("daemon.log")).unwrap_or_default();
    let rt = runtime();
    // Each node knows the other.
    let knows = |sock: &Path, other: &str| {
        rt.block_on(hum::client::fetch_status(sock))
            .ok()
            .and_then(|s| s.daemon.cluster)
            .is_some_and(|c| c.nodes.iter().any(|n| n.node == other && n.linked))
    };
    assert!(
        wait_until(Duration::from_secs(60), || knows(&sock, "b")
            && knows(&b.sock, "a")),
        "hum up's node never joined b:\n{}",
        a_log()
    );
    // A sid lives on a (a tie goes to the asker's node), its transcript
    // kept in the cluster.
    let on_a = |sid: &str| {
        rt.block_on(hum::client::fetch_status(&sock))
            .map(|s| s.cells().filter(|c| c.sid == sid).count())
            .unwrap_or(0)
    };
    let first = rt.block_on(turn_at(&sock, "a", "osprey", "remember the word osprey"));
    assert!(first.contains("<remember the word osprey>"), "{first}");
    assert_eq!(on_a("osprey"), 1, "the sid lives on a");
    assert!(
        wait_until(PROMPTLY, || a_log().contains("cluster.transcript_kept")),
        "a keeps the transcript in the cluster:\n{}",
        a_log()
    );
    // hum up stops: its node says it leaves, and b hears it at once, not
    // after the node timeout.
    signal(up.id() as i32, Signal::TERM);
    assert!(
        wait_until(PROMPTLY, || up.try_wait().unwrap().is_some()),
        "hum up did not stop"
    );
    assert_eq!(up.wait().unwrap().code(), Some(0));
    assert!(
        wait_until(PROMPTLY, || b
            .log("daemon")
            .lines()
            .any(|l| l.contains("cluster.node_left") && l.contains("node=a"))),
        "b never heard a leave:\n{}",
        b.log("daemon")
    );
    assert!(
        !b.log("daemon").contains("cluster.node_gone"),
        "b took a for dead, not gone by its word:\n{}",
        b.log("daemon")
    );
    // The sid's next prompt, through b, resumes there with its history.
    let next = rt.block_on(turn(&b, "osprey", "and now?"));
    assert!(
        next.contains("you said <and now?>; before that <remember the word osprey>"),
        "the moved session remembers a's turn: {next:?}\n{}",
        b.log("daemon")
    );
    assert_eq!(b.cells_of(&rt, "osprey"), 1);
    assert!(!sock.exists(), "hum up left its socket");
    b.stop();
    nats.stop();
    sb.assert_no_leaks();
}

#[test]
fn hum_up_refuses_a_cluster_without_credentials_before_starting_anything() {
    let sb = Sandbox::new();
    let sock = sb.dir.path().join("run/thrum.sock");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "up",
            "--socket",
            sock.to_str().unwrap(),
            "--no-metrics",
            "--no-gateway",
            "--node",
            "x",
        ];
        args.extend_from_slice(extra);
        let out = sb
            .hum(&args)
            .env("HUM_STATE_DIR", sb.dir.path().join("state"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No credentials: refused, whatever the URL.
    let (code, err) = run(&["--cluster", "nats://10.0.0.1:4222"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs credentials"), "{err}");
    // --cluster-insecure is for loopback only.
    let (code, err) = run(&["--cluster", "nats://10.0.0.1:4222", "--cluster-insecure"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(!sock.exists(), "nothing was started");
    sb.assert_no_leaks();
}
