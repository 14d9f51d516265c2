//! humd over its real socket: asker → humd → worker → back, with a
//! stand-in worker (test code speaking thrum) where the test needs to see
//! what the daemon forwards, and the real `hum worker` + `hum sim-agent` end
//! to end. Every test stops the daemon with SIGTERM (exit 0) and ends with
//! no process carrying its tag.

use crate::common::stack::*;
use crate::common::*;
use rustix::process::Signal;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;
use thrum::{Body, Chunk, ChunkType, Finish, Inbound, Inbox, Prompt, SessionReady, Tone};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

/// Tones up to and including the turn's finish or error, echoes skipped.
async fn turn(inbox: &mut Inbox<OwnedReadHalf>) -> Vec<Tone> {
    let mut out = Vec::new();
    loop {
        let t = next(inbox).await;
        if t.chi() == "echo" {
            continue;
        }
        let done = matches!(t.chi(), "finish" | "error");
        out.push(t);
        if done {
            return out;
        }
    }
}

fn prompt(sid: &str, text: &str, model: Option<&str>) -> Tone {
    Tone::new(Prompt {
        text: Some(text.into()),
        model_id: model.map(str::to_owned),
        ..Default::default()
    })
    .with_sid(sid)
    .with_rid(format!("rid-{sid}"))
}

fn code(t: &Tone) -> String {
    match &t.body {
        Body::Error(e) => e.code.to_string(),
        other => format!("not an error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_goes_to_the_worker_with_sigil_and_fills_and_its_answer_comes_back_in_order() {
    let d = Stack::start(Value::Null, &[]);
    let (mut w_in, w_out) = d.connect_as("worker", Some(vec!["fake-model"])).await;
    let (mut a_in, a_out) = d.connect_as("asker", None).await;
    let mut p = prompt("sid-1", "hello", Some("fake-model"));
    if let Body::Prompt(ref mut body) = p.body {
        body.extra
            .insert("futureField".into(), json!({"kept": true}));
    }
    a_out.try_send(&p).unwrap();

    let fwd = next(&mut w_in).await;
    let v = fwd.to_value();
    assert_eq!(v["chi"], "prompt");
    assert_eq!(v["sigil"], thrum::sigil("fake", "sid-1"));
    assert_eq!(v["from"], "daemon");
    assert_eq!(v["content"], "hello", "content filled from text");
    assert!(v["cwd"].is_string(), "cwd filled");
    assert_eq!(
        v["futureField"],
        json!({"kept": true}),
        "unknown fields survive forwarding"
    );
    assert_eq!(v["rid"], "rid-sid-1");

    let echo = next(&mut a_in).await;
    assert_eq!((echo.chi(), echo.rid()), ("echo", Some("rid-sid-1")));

    let ready = Tone::new(SessionReady {
        nest_id: Some("n".into()),
        ..Default::default()
    })
    .with_sid("sid-1");
    let chunk = |t: &str| {
        Tone::new(Chunk {
            chunk_type: ChunkType::TextDelta,
            block_idx: Some(0),
            delta: Some(t.into()),
            partial_json: None,
            usage: None,
            extra: Default::default(),
        })
        .with_sid("sid-1")
    };
    for t in [
        ready,
        chunk("a"),
        chunk("b"),
        Tone::new(Finish::default()).with_sid("sid-1"),
    ] {
        w_out.try_send(&t).unwrap();
    }
    let got = turn(&mut a_in).await;
    let chis: Vec<&str> = got.iter().map(Tone::chi).collect();
    assert_eq!(chis, ["session-ready", "chunk", "chunk", "finish"]);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_through_hum_worker_and_sim_agent() {
    let d = Stack::start(Value::Null, &[]);
    let mut worker = d.spawn_worker(json!({}));
    let (mut a_in, a_out) = d.connect_as("asker", None).await;
    // The worker connects on its own schedule; prompt once it has.
    let mut got = Vec::new();
    for _ in 0..100 {
        a_out.try_send(&prompt("e2e", "ping", Some("sim"))).unwrap();
        got = turn(&mut a_in).await;
        if code(got.last().unwrap()) != "no_worker" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let chis: Vec<&str> = got
        .iter()
        .filter(|t| t.chi() != "pulse")
        .map(Tone::chi)
        .collect();
    assert_eq!(chis.first(), Some(&"session-ready"), "{chis:?}");
    assert_eq!(chis.last(), Some(&"finish"));
    assert!(chis[1..chis.len() - 1].iter().all(|c| *c == "chunk"));
    let text: String = got
        .iter()
        .filter_map(|t| match &t.body {
            Body::Chunk(c) => c.delta.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(text, "SIM-REPLY #1: you said <ping>");

    // hum prompt from the shell: exit 0 with the answer, 1 with an error.
    let out =
        d.sb.hum(&[
            "prompt",
            "--socket",
            d.sock.to_str().unwrap(),
            "--model",
            "sim",
            "--sid",
            "e2e",
            "pong",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "SIM-REPLY #2: you said <pong>; before that <ping>\n"
    );
    let out =
        d.sb.hum(&[
            "prompt",
            "--socket",
            d.sock.to_str().unwrap(),
            "--model",
            "gpt-9",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("no_worker") && err.contains("gpt-9") && err.contains("sim"),
        "{err}"
    );
    // hum status shows the cell, with its tree and its pool.
    let mut status = Value::Null;
    let found = wait_until(PROMPTLY, || {
        let out =
            d.sb.hum(&["status", "--json", "--socket", d.sock.to_str().unwrap()])
                .output()
                .unwrap();
        status = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        status["workers"][0]["status"]["cells"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["sid"] == "e2e" && c["turnsServed"] == 2))
    });
    assert!(found, "hum status never showed the cell: {status}");
    let cell = status["workers"][0]["status"]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["sid"] == "e2e")
        .unwrap()
        .clone();
    assert_eq!(cell["state"], "idle");
    assert_eq!(cell["hive"], "sim");
    let pid = cell["pid"].as_i64().unwrap() as i32;
    assert!(
        stat(pid).is_some(),
        "the reported pid is not a live process"
    );
    assert_eq!(cell["pids"][0], pid);
    assert!(cell["rssBytes"].as_u64().unwrap() > 0);
    assert_eq!(status["workers"][0]["status"]["pool"]["cap"], 8);
    // /metrics parses as Prometheus text and its counters move with prompts.
    let addr = std::fs::read_to_string(d.sock.with_file_name("metrics.addr"))
        .expect("metrics address written");
    let scrape = |addr: &str| scrape_metrics(addr);
    let value = |scrape: &prometheus_parse::Scrape, name: &str| metric(scrape, name, &[]);
    let before = scrape(&addr);
    assert!(value(&before, "hum_prompts_routed_total") >= 2.0);
    assert!(value(&before, "hum_cell_spawns_total") >= 1.0);
    let out =
        d.sb.hum(&[
            "prompt",
            "--socket",
            d.sock.to_str().unwrap(),
            "--model",
            "sim",
            "--sid",
            "e2e",
            "again",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        wait_until(PROMPTLY, || {
            let now = scrape(&addr);
            value(&now, "hum_prompts_routed_total") > value(&before, "hum_prompts_routed_total")
                && value(&now, "hum_cell_reuses_total") > value(&before, "hum_cell_reuses_total")
        }),
        "counters did not move"
    );
    let table = d.status_table();
    assert!(
        table.contains("e2e") && table.contains("idle") && table.contains("containment"),
        "{table}"
    );
    stop_child(&mut worker);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sids_stick_to_their_worker_new_ones_go_to_the_least_loaded_and_cancel_follows_the_sid() {
    let d = Stack::start(Value::Null, &[]);
    let (mut w1_in, w1_out) = d.connect_as("worker", Some(vec!["m"])).await;
    let (mut w2_in, _w2_out) = d.connect_as("worker", Some(vec!["m"])).await;
    let (mut a_in, a_out) = d.connect_as("asker", None).await;
    // Two new sids: one to each worker (the first is busy when the second comes).
    a_out.try_send(&prompt("one", "x", Some("m"))).unwrap();
    a_out.try_send(&prompt("two", "x", Some("m"))).unwrap();
    let (first, second) = (next(&mut w1_in).await, next(&mut w2_in).await);
    let mut got = [
        first.sid().unwrap().to_owned(),
        second.sid().unwrap().to_owned(),
    ];
    got.sort();
    assert_eq!(got, ["one", "two"], "least loaded: one sid per worker");
    let w1_sid = first.sid().unwrap().to_owned();
    // w1 finishes its turn; the same sid comes back to w1 even though both
    // are now equally loaded or w1 less so.
    w1_out
        .try_send(&Tone::new(Finish::default()).with_sid(&w1_sid))
        .unwrap();
    loop {
        if turn(&mut a_in).await.last().unwrap().sid() == Some(w1_sid.as_str()) {
            break;
        }
    }
    a_out
        .try_send(&prompt(&w1_sid, "again", Some("m")))
        .unwrap();
    assert_eq!(
        next(&mut w1_in).await.sid(),
        Some(w1_sid.as_str()),
        "sticky sid"
    );
    // A cancel goes to the worker that holds the sid, with the sigil.
    a_out
        .try_send(
            &Tone::new(thrum::Cancel::default())
                .with_sid(&w1_sid)
                .with_rid("c1"),
        )
        .unwrap();
    let c = next(&mut w1_in).await;
    assert_eq!((c.chi(), c.sid()), ("cancel", Some(w1_sid.as_str())));
    assert_eq!(c.to_value()["sigil"], thrum::sigil("fake", &w1_sid));
    // An asker that goes away: its turn keeps running, its tones are dropped
    // and counted once humd has seen it go.
    drop(a_in);
    a_out.abort();
    let status = |d: &Stack| -> Value {
        let out =
            d.sb.hum(&["status", "--json", "--socket", d.sock.to_str().unwrap()])
                .output()
                .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    // The status asker itself is the one left.
    assert!(
        wait_until(PROMPTLY, || status(&d)["daemon"]["askers"] == 1),
        "humd never saw the asker go"
    );
    w1_out
        .try_send(&Tone::new(Finish::default()).with_sid(&w1_sid))
        .unwrap();
    assert!(
        wait_until(PROMPTLY, || status(&d)["daemon"]["stats"]
            ["dropped_for_gone_askers"]
            .as_u64()
            .unwrap_or(0)
            >= 1),
        "tones for a gone asker not counted"
    );
    drop(w2_in);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hum_prompt_without_a_daemon_exits_3() {
    let sb = Sandbox::new();
    let out = sb
        .hum(&[
            "prompt",
            "--socket",
            sb.dir.path().join("none.sock").to_str().unwrap(),
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach humd"));
    sb.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_names_the_model_and_the_models_on_offer() {
    let d = Stack::start(Value::Null, &[]);
    let (_w_in, _w_out) = d.connect_as("worker", Some(vec!["m1", "m2"])).await;
    let (mut a_in, a_out) = d.connect_as("asker", None).await;
    a_out.try_send(&prompt("s", "x", Some("m3"))).unwrap();
    let t = turn(&mut a_in).await.pop().unwrap();
    let Body::Error(e) = &t.body else {
        panic!("{t:?}")
    };
    assert_eq!(e.code, thrum::ErrorCode::NoWorker);
    let msg = e.message.as_deref().unwrap();
    assert!(msg.contains("m3") && msg.contains("m1, m2"), "{msg}");
    assert_eq!(t.rid(), Some("rid-s"));
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_goes_away_mid_turn_ends_its_turns_with_worker_lost() {
    let d = Stack::start(Value::Null, &[]);
    let mut worker =
        d.spawn_worker(json!({"HUM_SIM_CHUNKS": "100", "HUM_SIM_CHUNK_DELAY_MS": "50"}));
    let (mut a_in, a_out) = d.connect_as("asker", None).await;
    loop {
        a_out
            .try_send(&prompt("lost", "long", Some("sim")))
            .unwrap();
        let t = next(&mut a_in).await;
        let t = if t.chi() == "echo" {
            next(&mut a_in).await
        } else {
            t
        };
        if t.chi() == "error" && code(&t) == "no_worker" {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        break;
    }
    // Mid-turn: kill the worker outright.
    signal(worker.id() as i32, Signal::KILL);
    worker.wait().unwrap();
    loop {
        let t = next(&mut a_in).await;
        if t.chi() == "error" {
            assert_eq!(code(&t), "worker_lost");
            assert_eq!(t.sid(), Some("lost"));
            break;
        }
        assert_ne!(
            t.chi(),
            "finish",
            "the turn cannot finish without its worker"
        );
    }
    // The worker's sentinel ends its cells.
    assert!(
        wait_until(Duration::from_secs(5), || d
            .sb
            .live()
            .iter()
            .all(|p| p.pid == d.daemon.id() as i32)),
        "cells outlived their worker"
    );
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused_even_when_the_socket_is_open_to_it() {
    let d = Stack::start(Value::Null, &[]);
    // Misconfigured permissions: anyone may reach the socket file.
    std::fs::set_permissions(
        d.sock.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&d.sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    for dir in [d.sb.dir.path().join("run"), d.sb.dir.path().to_path_buf()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A copy of hum that nobody can execute wherever the checkout lives.
    let exe = d.sb.dir.path().join("hum-for-nobody");
    std::fs::copy(hum_bin(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&exe)
        .args([
            "prompt",
            "--socket",
            d.sock.to_str().unwrap(),
            "--model",
            "sim",
            "sneaky",
        ])
        .env_clear()
        .env(TAG_VAR, &d.sb.tag)
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "nobody must be disconnected: {err}"
    );
    assert!(err.contains("went away") || err.contains("closed"), "{err}");
    let log = std::fs::read_to_string(d.sb.dir.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("daemon.peer_refused") && log.contains("uid=65534"),
        "refusal not logged:\n{log}"
    );
    // The daemon's own user is still served.
    let (_a_in, _a_out) = d.connect_as("asker", None).await;
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_over_long_lines_and_tones_before_hello_leave_the_daemon_serving_others() {
    let d = Stack::start(Value::Null, &[]);
    let (_w_in, _w_out) = d.connect_as("worker", Some(vec!["fake-model"])).await;
    // A raw peer: a prompt before hello, garbage, a 9 MiB line, bad prompts.
    let mut stream = UnixStream::connect(&d.sock).await.unwrap();
    stream
        .write_all(b"{\"chi\":\"prompt\",\"sid\":\"x\",\"rid\":\"early\",\"text\":\"hi\"}\n")
        .await
        .unwrap();
    stream
        .write_all(b"\xff\xfe garbage \x00\n[1,2,3]\nnot json at all\n")
        .await
        .unwrap();
    stream
        .write_all(&vec![b'{'; 9 * 1024 * 1024])
        .await
        .unwrap();
    stream.write_all(b"\n{\"chi\":\"hello\",\"bee\":[\"asker\"]}\n{\"chi\":\"prompt\",\"rid\":\"nosid\",\"text\":\"x\"}\n{\"chi\":\"prompt\",\"sid\":\"s\",\"rid\":\"nocontent\"}\n").await.unwrap();
    let (read, _write) = stream.into_split();
    let mut reader = thrum::ToneReader::new(
        tokio::io::BufReader::new(read),
        thrum::DEFAULT_MAX_LINE,
        Default::default(),
    );
    let mut codes = Vec::new();
    while codes.len() < 3 {
        match tokio::time::timeout(PROMPTLY, reader.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Inbound::Tone(t)) if t.chi() == "error" => {
                codes.push((code(&t), t.rid().map(str::to_owned)))
            }
            Some(_) => {}
            None => panic!("the daemon closed on bad input"),
        }
    }
    assert_eq!(
        codes,
        vec![
            ("bad_request".to_string(), None),
            ("bad_request".to_string(), Some("nosid".to_string())),
            ("bad_request".to_string(), Some("nocontent".to_string())),
        ]
    );
    // The prompt before any hello was taken as an asker's, as the old
    // humd did (issue 26, item 7): it reached the worker.
    let mut w_in = _w_in;
    let early = loop {
        let t = next(&mut w_in).await;
        if t.chi() == "prompt" {
            break t;
        }
    };
    assert_eq!(early.rid(), Some("early"));
    // Someone else is still served.
    let (mut a_in, a_out) = d.connect_as("asker", None).await;
    a_out.try_send(&prompt("ok", "x", Some("nope"))).unwrap();
    assert_eq!(code(&turn(&mut a_in).await.pop().unwrap()), "no_worker");
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_are_held_and_the_daemon_still_answers() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let d = Stack::start(Value::Null, &[]);
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = UnixStream::connect(&d.sock)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        // Half of them say hello and then never read again.
        if i % 2 == 0 {
            s.write_all(b"{\"chi\":\"hello\",\"bee\":[\"asker\"]}\n")
                .await
                .unwrap();
        }
        held.push(s);
    }
    let (mut a_in, a_out) = d.connect_as("asker", None).await;
    a_out.try_send(&prompt("still", "x", Some("nope"))).unwrap();
    assert_eq!(code(&turn(&mut a_in).await.pop().unwrap()), "no_worker");
    assert!(stat(d.daemon.id() as i32).is_some_and(|s| !s.exited()));
    drop(held);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bee_that_stops_reading_is_cut_off_and_others_are_still_served() {
    let d = Stack::start(Value::Null, &[]);
    let (mut w_in, w_out) = d.connect_as("worker", Some(vec!["fake-model"])).await;
    // The slow bee prompts, then never reads again.
    let (_slow_in, slow_out) = d.connect_as("asker", None).await;
    slow_out
        .try_send(&prompt("slow", "x", Some("fake-model")))
        .unwrap();
    assert_eq!(next(&mut w_in).await.sid(), Some("slow"));
    // The worker streams far more than the slow bee's outbox holds.
    let big = "y".repeat(64 * 1024);
    let chunk = Tone::new(Chunk {
        chunk_type: ChunkType::TextDelta,
        block_idx: Some(0),
        delta: Some(big),
        partial_json: None,
        usage: None,
        extra: Default::default(),
    })
    .with_sid("slow");
    for _ in 0..400 {
        w_out.send(&chunk).await.unwrap();
    }
    // Meanwhile a fast bee's turn goes through.
    let (mut fast_in, fast_out) = d.connect_as("asker", None).await;
    fast_out
        .try_send(&prompt("fast", "x", Some("fake-model")))
        .unwrap();
    loop {
        let t = next(&mut w_in).await;
        if t.sid() == Some("fast") {
            break;
        }
    }
    w_out
        .try_send(&Tone::new(Finish::default()).with_sid("fast"))
        .unwrap();
    let got = turn(&mut fast_in).await;
    assert_eq!(got.last().unwrap().chi(), "finish");
    let log = std::fs::read_to_string(d.sb.dir.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("thrum.outbox.overflow"),
        "the slow bee was never cut off:\n{log}"
    );
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_per_socket_and_a_stale_socket_is_replaced() {
    let d = Stack::start(Value::Null, &[]);
    let second =
        d.sb.hum(&[
            "daemon",
            "--socket",
            d.sock.to_str().unwrap(),
            "--no-metrics",
        ])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already serving"));
    let sock = d.sock.clone();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::metadata(sock.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // Kill it hard: the socket file stays behind, stale.
    let mut d = d;
    signal(d.daemon.id() as i32, Signal::KILL);
    d.daemon.wait().unwrap();
    assert!(sock.exists());
    // A new humd replaces the stale socket and listens on it.
    d.daemon = d.respawn_daemon(&["--no-metrics"]);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_connected_bees_and_exits_zero() {
    let d = Stack::start(Value::Null, &[]);
    let (mut a_in, _a_out) = d.connect_as("asker", None).await;
    signal(d.daemon.id() as i32, Signal::TERM);
    let t = next(&mut a_in).await;
    assert_eq!(code(&t), "shutting_down");
    assert!(
        matches!(
            tokio::time::timeout(PROMPTLY, a_in.recv()).await.unwrap(),
            Ok(None)
        ),
        "connection not closed"
    );
    let mut d = d;
    assert!(wait_until(PROMPTLY, || d
        .daemon
        .try_wait()
        .unwrap()
        .is_some()));
    assert_eq!(d.daemon.try_wait().unwrap().and_then(|s| s.code()), Some(0));
    assert!(!d.sock.exists(), "socket file left behind");
    d.stop();
}

/// humd's `serve` runs in the test's own process (no binary, no signals):
/// it answers a typed client, and stops when its shutdown future resolves,
/// telling the peer and removing its socket.
#[tokio::test(flavor = "current_thread")]
async fn humd_served_in_process_answers_and_stops_when_told() {
    use clap::Parser;
    use hum::client::{Client, Event};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("thrum.sock");
    let hum::cli::Command::Daemon(args) = hum::cli::Cli::parse_from([
        "hum",
        "daemon",
        "--no-metrics",
        "--socket",
        sock.to_str().unwrap(),
    ])
    .command
    else {
        panic!("not the daemon's arguments")
    };
    let listener = hum::daemon::listen::bind(&sock).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let path = sock.clone();
    let humd = tokio::spawn(async move {
        let settings = hum::daemon::Settings::from_args(&args, path);
        hum::daemon::serve(listener, settings, None, async {
            let _ = stopped.await;
        })
        .await
        .expect("humd served")
    });
    let mut client = Client::asker(&sock, "in-process test").await.unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(
        status.daemon.pid,
        std::process::id(),
        "served in this process"
    );
    assert_eq!((status.daemon.askers, status.daemon.workers), (1, 0));
    stop.send(()).unwrap();
    let told = loop {
        match client.event().await {
            Ok(Event::Error { error, .. }) => break error.code,
            Ok(_) => continue,
            Err(e) => panic!("closed without a word: {e}"),
        }
    };
    assert_eq!(told, thrum::ErrorCode::ShuttingDown);
    humd.await.unwrap();
    assert!(!sock.exists(), "the socket is removed on the way out");
}

/// `"containment": "portable"` in hum.json puts the worker on the portable
/// backend (whatever the environment says), and `hum status` shows it with
/// what it leaves out; a prompt is served and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_key_puts_a_worker_on_the_portable_backend_and_status_says_so() {
    let mut d = Stack::start(Value::Null, &[]);
    let config = json!({"claude": {"enabled": false}, "sim": {"models": ["sim"]},
                        "cwd": d.sb.work(), "containment": "portable"});
    d.worker = Some(d.worker_with(config, &[]));
    d.wait_worker().await;
    let out =
        d.sb.hum(&[
            "prompt",
            "--socket",
            d.sock.to_str().unwrap(),
            "--model",
            "sim",
            "hello",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = d.status_answers("after a prompt").await;
    let containment = status["workers"][0]["status"]["containment"].clone();
    assert_eq!(containment["kind"], "portable", "{status}");
    assert!(
        containment["not_used"].to_string().contains("cgroup v2"),
        "{containment}"
    );
    let table = d.status_table();
    assert!(
        table.contains("containment: portable") && table.contains("not used: cgroup v2"),
        "{table}"
    );
    d.stop();
}
