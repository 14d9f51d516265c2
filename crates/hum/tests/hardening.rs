//! Issue 10: what an attacker, a heavy user and another local user tried,
//! each reproduced against the real daemon, worker and sim cells, each
//! ending with the /proc leak check.

mod common;

use common::*;
use rustix::process::Signal;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use thrum::{Bees, Connection, Hello, Inbound, Inbox, Limits, Outbox, Prompt, Tone};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

/// How long `hum status` may take to answer while humd is under load. A
/// wedged daemon never answers; a loaded one answers in milliseconds.
const STATUS_WITHIN: Duration = Duration::from_secs(2);

/// humd and one sim worker, their logs in the sandbox.
struct Stack {
    sb: Sandbox,
    sock: PathBuf,
    daemon: Child,
    worker: Option<Child>,
}

impl Stack {
    fn start(sim_env: Value, daemon_args: &[&str]) -> Stack {
        let sb = Sandbox::new();
        let sock = sb.dir.path().join("run/hum/thrum.sock");
        let s = sock.to_str().unwrap().to_owned();
        let mut args = vec!["daemon", "--socket", &s, "--metrics-addr=127.0.0.1:0"];
        args.extend_from_slice(daemon_args);
        let daemon = sb
            .hum(&args)
            .env("HUM_LOG", "info")
            .stderr(std::fs::File::create(sb.dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        assert!(
            wait_until(PROMPTLY, || std::os::unix::net::UnixStream::connect(&sock)
                .is_ok()),
            "daemon never listened"
        );
        let mut stack = Stack {
            sb,
            sock,
            daemon,
            worker: None,
        };
        if !sim_env.is_null() {
            stack.worker = Some(stack.spawn_worker(sim_env));
        }
        stack
    }

    fn spawn_worker(&self, sim_env: Value) -> Child {
        let config = json!({"claude": {"enabled": false}, "sim": {"models": ["sim"], "env": sim_env},
                            "cwd": self.sb.work(), "nest": {"maxActiveCells": 8}});
        let path = self.sb.dir.path().join("hum.json");
        std::fs::write(&path, config.to_string()).unwrap();
        self.sb
            .hum(&[
                "worker",
                "--config",
                path.to_str().unwrap(),
                "--socket",
                self.sock.to_str().unwrap(),
            ])
            .env("HUM_STATE_DIR", self.sb.dir.path().join("state"))
            .env("HUM_LOG", "info")
            .stderr(std::fs::File::create(self.sb.dir.path().join("worker.log")).unwrap())
            .spawn()
            .unwrap()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.sb.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits until humd reports a linked worker.
    async fn wait_worker(&self) {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            if let Ok(s) = hum::status::fetch(&self.sock).await {
                if s["daemon"]["workers"] == 1 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the worker never linked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `hum status`'s request, timed: the answer must come within
    /// [`STATUS_WITHIN`].
    async fn status_answers(&self, when: &str) -> Value {
        let started = Instant::now();
        match tokio::time::timeout(STATUS_WITHIN, hum::status::fetch(&self.sock)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("{when}: status failed after {:?}: {e}", started.elapsed()),
            Err(_) => panic!("{when}: humd did not answer status within {STATUS_WITHIN:?}"),
        }
    }

    async fn connect(&self, name: &str) -> (Inbox<OwnedReadHalf>, Outbox) {
        let stream = UnixStream::connect(&self.sock).await.unwrap();
        let Connection { mut inbox, outbox } =
            Connection::unix(stream, Limits::default(), name.to_owned());
        let hello = Hello {
            bee: Some(Bees::Many(vec!["asker".into()])),
            proto_version: Some(thrum::PROTO_VERSION.into()),
            ..Default::default()
        };
        outbox.send(&Tone::new(hello)).await.unwrap();
        let breath = next(&mut inbox).await;
        assert_eq!(breath.chi(), "breath");
        (inbox, outbox)
    }

    fn stop(mut self) {
        if let Some(mut w) = self.worker.take() {
            stop_child(&mut w);
        }
        stop_child(&mut self.daemon);
        self.sb.assert_no_leaks();
    }
}

fn stop_child(child: &mut Child) {
    signal(child.id() as i32, Signal::TERM);
    assert!(
        wait_until(PROMPTLY, || child.try_wait().unwrap().is_some()),
        "child did not stop"
    );
}

async fn next(inbox: &mut Inbox<OwnedReadHalf>) -> Tone {
    match tokio::time::timeout(PROMPTLY, inbox.recv())
        .await
        .expect("silence")
        .unwrap()
    {
        Some(Inbound::Tone(t)) => t,
        other => panic!("expected a tone, got {other:?}"),
    }
}

/// Reads one turn to its end; returns (text deltas seen, ending chi).
async fn read_turn(inbox: &mut Inbox<OwnedReadHalf>, sid: &str) -> (usize, String) {
    let mut chunks = 0;
    loop {
        let t = next(inbox).await;
        if t.sid() != Some(sid) {
            continue;
        }
        match t.chi() {
            "chunk" => chunks += 1,
            "finish" | "error" => return (chunks, t.chi().to_owned()),
            _ => {}
        }
    }
}

fn prompt(sid: &str, text: &str) -> Tone {
    Tone::new(Prompt {
        text: Some(text.into()),
        model_id: Some("sim".into()),
        ..Default::default()
    })
    .with_sid(sid)
    .with_rid(format!("rid-{sid}"))
}

/// Lets this test process hold thousands of sockets.
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_thousand_connections_at_once_leave_status_answering() {
    raise_nofile();
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    let sock = stack.sock.clone();
    // 8,000 silent connections, opened as fast as humd lets them in.
    let opener = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..8000 {
            match std::os::unix::net::UnixStream::connect(&sock) {
                Ok(s) => held.push(s),
                Err(e) => panic!("connect {} failed: {e}", held.len()),
            }
        }
        held
    });
    let mut during = 0;
    while !opener.is_finished() {
        stack.status_answers("while 8,000 connect").await;
        during += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = opener.join().unwrap();
    assert_eq!(held.len(), 8000);
    let with_all = stack.status_answers("with 8,000 held").await;
    assert_eq!(with_all["daemon"]["workers"], 1, "{with_all}");
    // A bee can still get a turn through.
    let (mut inbox, outbox) = stack.connect("bee").await;
    outbox.send(&prompt("s-1", "hello")).await.unwrap();
    assert_eq!(read_turn(&mut inbox, "s-1").await.1, "finish");
    drop(held);
    stack.status_answers("after they left").await;
    eprintln!("status answered {during} times while the connections opened");
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_streams_and_status_polling_every_20ms_never_wedge_humd() {
    let stack = Stack::start(
        json!({"HUM_SIM_CHUNKS": "50000", "HUM_SIM_CHUNK_SIZE": "4"}),
        &[],
    );
    stack.wait_worker().await;
    let mut bees = Vec::new();
    for i in 0..8 {
        let (mut inbox, outbox) = stack.connect(&format!("bee-{i}")).await;
        bees.push(tokio::spawn(async move {
            let sid = format!("stream-{i}");
            outbox.send(&prompt(&sid, "go")).await.unwrap();
            read_turn(&mut inbox, &sid).await
        }));
    }
    let mut polls = 0;
    let mut slowest = Duration::ZERO;
    while !bees.iter().all(|b| b.is_finished()) {
        let t = Instant::now();
        stack.status_answers("while 8 bees stream").await;
        slowest = slowest.max(t.elapsed());
        polls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for b in bees {
        let (chunks, end) = b.await.unwrap();
        assert_eq!(end, "finish");
        assert!(chunks >= 50000, "only {chunks} chunks arrived");
    }
    stack.status_answers("after the streams").await;
    eprintln!("{polls} status polls, slowest {slowest:?}");
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bee_that_stops_reading_loses_only_its_own_turns() {
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    // The sim echoes the prompt word by word: 100k words, 100k chunks.
    let words = "w ".repeat(100_000);
    let (slow_in, slow_out) = stack.connect("slow").await;
    for i in 0..3 {
        slow_out
            .send(&prompt(&format!("slow-{i}"), &words))
            .await
            .unwrap();
    }
    // The slow bee never reads `slow_in` again.
    let (mut inbox, outbox) = stack.connect("fast").await;
    for i in 0..10 {
        let sid = format!("fast-{i}");
        outbox.send(&prompt(&sid, "hello there")).await.unwrap();
        let (_, end) = read_turn(&mut inbox, &sid).await;
        assert_eq!(end, "finish", "turn {i} of the bee that reads failed");
    }
    // humd cut the slow bee off and cancelled its turns.
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let s = stack.status_answers("after the slow bee").await;
        if s["daemon"]["stats"]["cancelled_slow_askers"].as_u64() >= Some(1) {
            assert_eq!(s["daemon"]["stats"]["worker_lost"], 0, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "slow bee never cut off: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(slow_in);
    let worker_log = stack.log("worker.log");
    assert!(
        !worker_log.contains("worker.unlinked"),
        "the worker's link was dropped:\n{worker_log}"
    );
    let daemon_log = stack.log("daemon.log");
    assert!(
        !daemon_log
            .lines()
            .any(|l| l.contains("daemon.left") && l.contains("Worker")),
        "humd lost the worker's connection:\n{daemon_log}"
    );
    stack.stop();
}

#[test]
fn a_regular_file_given_as_the_socket_survives() {
    let sb = Sandbox::new();
    let path = sb.dir.path().join("precious.txt");
    std::fs::write(&path, "keep me").unwrap();
    let log = sb.dir.path().join("daemon.log");
    let mut daemon = sb
        .hum(&["daemon", "--socket", path.to_str().unwrap(), "--no-metrics"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let exited = wait_until(PROMPTLY, || daemon.try_wait().unwrap().is_some());
    if !exited {
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
    assert!(exited, "humd started on top of a regular file");
    assert_ne!(daemon.wait().unwrap().code(), Some(0));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    sb.assert_no_leaks();
}
