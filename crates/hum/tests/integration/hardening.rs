//! Issue 10: what an attacker, a heavy user and another local user tried,
//! each reproduced against the real daemon, worker and sim cells, each
//! ending with the /proc leak check.

use crate::common::stack::*;
use crate::common::*;
use rustix::process::Signal;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use thrum::{Connection, Inbound, Inbox, Limits, Tone};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

/// Reads one turn to its end; returns (text deltas seen, ending chi).
async fn read_turn(inbox: &mut Inbox<OwnedReadHalf>, sid: &str) -> (usize, String) {
    let mut chunks = 0;
    loop {
        // A wedged humd stops every stream for good (and stops answering
        // status, which the tests poll); a machine busy with the rest of
        // the suite (ten real CLIs starting at once) has been seen to
        // pause one for over 20 s. Only the first is a failure.
        let t = match tokio::time::timeout(PROMPTLY * 6, inbox.recv()).await {
            Ok(Ok(Some(thrum::Inbound::Tone(t)))) => t,
            other => panic!("no tone of {sid} for {:?}: {other:?}", PROMPTLY * 6),
        };
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

/// Reads until `sid` streams a chunk (its turn is under way).
async fn until_chunk(inbox: &mut Inbox<OwnedReadHalf>, sid: &str) {
    loop {
        let t = next(inbox).await;
        if t.sid() == Some(sid) && t.chi() == "chunk" {
            return;
        }
        assert_ne!(t.chi(), "error", "{t:?}");
    }
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
    outbox.send(&sim_prompt("s-1", "hello")).await.unwrap();
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
            outbox.send(&sim_prompt(&sid, "go")).await.unwrap();
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
            .send(&sim_prompt(&format!("slow-{i}"), &words))
            .await
            .unwrap();
    }
    // The slow bee never reads `slow_in` again.
    let (mut inbox, outbox) = stack.connect("fast").await;
    for i in 0..10 {
        let sid = format!("fast-{i}");
        outbox.send(&sim_prompt(&sid, "hello there")).await.unwrap();
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

/// One raw HTTP/1.0 exchange; `head` is the request line and headers
/// (without the final blank line). Returns the whole response.
fn http(addr: &str, head: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let req = format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp
}

/// The same exchange made by user `nobody`, through bash's /dev/tcp (no
/// client library needed, and no file of ours readable).
fn http_as_nobody(addr: &str, head: &str, body: &str) -> String {
    use std::os::unix::process::CommandExt;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let req = format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/{host}/{port} && printf '%s' \"$REQ\" >&3 && cat <&3"
        ))
        .env_clear()
        .env("REQ", req)
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("bash as nobody");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_code(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_gets_401_and_cannot_continue_or_read_a_session() {
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    // No token given: the gateway makes one, private, in the state dir.
    let (mut gw, addr) = stack.gateway(&[]);
    let token_file = stack.sb.dir.path().join("state/gateway.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let chat = |text: &str| {
        json!({"model": "sim", "messages": [{"role": "user", "content": text}]}).to_string()
    };
    let head = |auth: &str| {
        format!("POST /v1/chat/completions HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nx-hum-session: a{auth}")
    };
    let mine = http(
        &addr,
        &head(&format!("\r\nAuthorization: Bearer {token}")),
        &chat("my secret plan"),
    );
    assert_eq!(status_code(&mine), 200, "{mine}");
    // Another user, with and without guessing, and with the session id.
    let theirs = http_as_nobody(&addr, &head(""), &chat("what did they say?"));
    assert_eq!(status_code(&theirs), 401, "{theirs}");
    assert!(!theirs.contains("secret plan"), "{theirs}");
    let guess = http_as_nobody(
        &addr,
        &head("\r\nAuthorization: Bearer hum-guess"),
        &chat("again"),
    );
    assert_eq!(status_code(&guess), 401, "{guess}");
    let models = http_as_nobody(
        &addr,
        &format!("GET /v1/models HTTP/1.0\r\nHost: {addr}"),
        "",
    );
    assert_eq!(status_code(&models), 401, "{models}");
    // Nor can they read the token.
    let cat = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("cat")
            .arg(&token_file)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    assert!(!cat.status.success(), "nobody read the token");
    // The owner's session goes on, untouched by the attempts.
    let again = http(
        &addr,
        &head(&format!("\r\nAuthorization: Bearer {token}")),
        &chat("next"),
    );
    assert!(again.contains("before that <my secret plan>"), "{again}");
    stop_child(&mut gw);
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_origins_are_refused_by_the_gateway_and_metrics() {
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    let (mut gw, addr) = stack.gateway(&["--token", "tok-123"]);
    let port = addr.rsplit_once(':').unwrap().1.to_owned();
    let body = json!({"model": "sim", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let post = |extra: &str| {
        http(
            &addr,
            &format!("POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer tok-123\r\nContent-Type: application/json{extra}"),
            &body,
        )
    };
    assert_eq!(
        status_code(&post(&format!("\r\nHost: localhost:{port}"))),
        200
    );
    // DNS rebinding: a name that resolves here but is not ours.
    let r = post(&format!("\r\nHost: attacker.example:{port}"));
    assert_eq!(status_code(&r), 403, "{r}");
    // A web page's cross-origin "simple" request (text/plain, no preflight).
    let r = http(
        &addr,
        &format!("POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nOrigin: https://attacker.example\r\nContent-Type: text/plain"),
        &body,
    );
    assert_eq!(status_code(&r), 403, "{r}");
    let r = post(&format!(
        "\r\nHost: 127.0.0.1:{port}\r\nSec-Fetch-Site: cross-site"
    ));
    assert_eq!(status_code(&r), 403, "{r}");
    // humd's /metrics and /status do the same Host check.
    let metrics = std::fs::read_to_string(stack.sock.with_file_name("metrics.addr")).unwrap();
    let mport = metrics.rsplit_once(':').unwrap().1.to_owned();
    for path in ["/metrics", "/status"] {
        let ok = http(
            &metrics,
            &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{mport}"),
            "",
        );
        assert_eq!(status_code(&ok), 200, "{ok}");
        let bad = http(
            &metrics,
            &format!("GET {path} HTTP/1.0\r\nHost: rebind.example:{mport}"),
            "",
        );
        assert_eq!(status_code(&bad), 403, "{bad}");
        let bad = http(
            &metrics,
            &format!(
                "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{mport}\r\nOrigin: http://evil.example"
            ),
            "",
        );
        assert_eq!(status_code(&bad), 403, "{bad}");
    }
    stop_child(&mut gw);
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_request_to_an_overloaded_pool_gets_429_before_any_stream() {
    // The busy turns never answer, so the pool stays full however slow
    // the machine is.
    let sb_env = json!({"HUM_SIM_NEVER_ANSWER": "1", "HUM_SIM_FAULT_IF": "slow"});
    let stack = Stack::start(serde_json::Value::Null, &[]);
    // One cell, one queue slot: a third turn is refused at once.
    let config = json!({"claude": {"enabled": false}, "sim": {"env": sb_env}, "cwd": stack.sb.work(),
                        "nest": {"maxActiveCells": 1, "maxQueuedPrompts": 1,
                                 "firstEventTimeoutMs": 600000, "admissionTimeoutMs": 600000}});
    let mut worker = stack.worker_with(config, &[]);
    stack.wait_worker().await;
    let (mut gw, addr) = stack.gateway(&["--token", "t"]);
    // "one" takes the only cell, then "two" takes the only queue slot (in
    // that order: arriving together, the second would be refused at once).
    let log = stack.sb.dir.path().join("worker.log");
    let logged = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(what)
    };
    let mut busy = Vec::new();
    for (sid, mark) in [
        ("one", "turn.admitted\" sid=one"),
        ("two", "turn.queued\" sid=two"),
    ] {
        let (mut inbox, outbox) = stack.connect(sid).await;
        busy.push(tokio::spawn(async move {
            outbox.send(&sim_prompt(sid, "slow")).await.unwrap();
            read_turn(&mut inbox, sid).await
        }));
        assert!(wait_until(PROMPTLY, || logged(mark)), "never saw {mark}");
    }
    assert!(!logged("turn.rejected"), "a busy turn was refused");
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "sim", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "sim", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]}),
        ),
    ] {
        let started = Instant::now();
        let r = http(
            &addr,
            &format!("POST {path} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer t\r\nx-api-key: t\r\nx-hum-session: three\r\nContent-Type: application/json"),
            &body.to_string(),
        );
        assert_eq!(
            status_code(&r),
            429,
            "{path}: {r}\nworker log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(r.to_lowercase().contains("retry-after: "), "{r}");
        assert!(!r.contains("text/event-stream"), "{r}");
        assert!(started.elapsed() < PROMPTLY);
    }
    stop_child(&mut gw);
    stop_child(&mut worker);
    for b in busy {
        assert_eq!(b.await.unwrap().1, "error", "ended by the worker's stop");
    }
    stack.stop();
}
/// Every file and directory under `dir`, with its mode.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = e.path().symlink_metadata().unwrap();
            out.push((e.path(), meta.permissions().mode() & 0o777));
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Environment of a live process, as `KEY=value` strings.
fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// `hum up` on a private socket with the sim hive, its output in files.
fn hum_up(sb: &Sandbox, sock: &Path, extra: &[&str], token_env: Option<&str>) -> Child {
    let gateway = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = sock.to_str().unwrap().to_owned();
    let gw = format!("--gateway-addr={gateway}");
    let mut args = vec!["up", "--socket", &s, "--metrics-addr=127.0.0.1:0", &gw];
    args.extend_from_slice(extra);
    let mut cmd = sb.hum(&args);
    cmd.env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .env("PATH", "/usr/bin:/bin")
        .stdout(std::fs::File::create(sb.dir.path().join("up.out")).unwrap())
        .stderr(std::fs::File::create(sb.dir.path().join("up.err")).unwrap());
    if let Some(t) = token_env {
        cmd.env("HUM_GATEWAY_TOKEN", t);
    }
    cmd.spawn().unwrap()
}

fn hum_prompt(sb: &Sandbox, sock: &Path, sid: &str, text: &str) -> std::process::Output {
    sb.hum(&[
        "prompt",
        "--socket",
        sock.to_str().unwrap(),
        "--model",
        "sim",
        "--sid",
        sid,
        text,
    ])
    .output()
    .unwrap()
}

#[test]
fn the_gateway_token_reaches_the_gateway_alone_and_every_file_is_private() {
    let sb = Sandbox::new();
    let sock = sb.dir.path().join("run/thrum.sock");
    let secret = "hum-gateway-secret-7f3a";
    let up = hum_up(&sb, &sock, &[], Some(secret));
    assert!(
        wait_until(PROMPTLY, || hum_prompt(&sb, &sock, "s1", "hello")
            .status
            .success()),
        "hum up never served a prompt"
    );
    // Cells of two sids, so there are agent processes to look into.
    assert!(hum_prompt(&sb, &sock, "s2", "again").status.success());
    let live = sb.live();
    let holders: Vec<String> = live
        .iter()
        .filter(|p| environ(p.pid).iter().any(|kv| kv.contains(secret)))
        .map(|p| cmdline(p.pid))
        .collect();
    // `hum up` was given it by its caller; of what it starts, only the
    // gateway gets it (the daemon, worker, sentinel and cells never).
    assert!(
        holders
            .iter()
            .all(|c| c.contains(" gateway ") || c.contains(" up ")),
        "the token is in the environment of: {holders:?}"
    );
    assert!(
        holders.iter().any(|c| c.contains(" gateway ")),
        "the gateway has no token: {holders:?}"
    );
    let agents: Vec<_> = live.iter().filter(|p| runs_simulator(p.pid)).collect();
    assert!(agents.len() >= 2, "no cells to check");
    // hum's own processes write privately; the agents keep the user's umask
    // (files an agent writes into a project are the user's business).
    let umask = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let user_umask = umask(std::process::id() as i32);
    for p in &live {
        let c = cmdline(p.pid);
        let want = if runs_simulator(p.pid) {
            user_umask.as_str()
        } else {
            "0077"
        };
        assert_eq!(umask(p.pid), want, "{c}");
    }
    for p in &agents {
        assert!(
            !environ(p.pid)
                .iter()
                .any(|kv| kv.starts_with("HUM_GATEWAY_TOKEN")),
            "a cell sees HUM_GATEWAY_TOKEN"
        );
    }
    // Everything under the state dir and the sim's transcripts is private.
    for dir in [sb.dir.path().join("state"), sb.home().join(".claude")] {
        let found = modes(&dir);
        assert!(!found.is_empty(), "nothing under {}", dir.display());
        for (path, mode) in found {
            let want = if path.is_dir() { 0o700 } else { 0o600 };
            let want = if path.is_symlink() { mode } else { want };
            // Sockets are checked by humd's own 0600.
            assert!(
                mode == want || (mode & 0o077 == 0),
                "{} is {mode:o}",
                path.display()
            );
        }
    }
    stop_up(up);
    sb.assert_no_leaks();
}

#[test]
fn hum_up_refuses_an_open_gateway_and_a_second_instance_with_exit_2() {
    let sb = Sandbox::new();
    let sock = sb.dir.path().join("run/thrum.sock");
    let s = sock.to_str().unwrap().to_owned();
    let refused = |args: &[&str], token: Option<&str>| {
        let mut all = vec!["up", "--socket", &s, "--no-metrics"];
        all.extend_from_slice(args);
        let mut cmd = sb.hum(&all);
        cmd.env("HUM_STATE_DIR", sb.dir.path().join("state"))
            .env("PATH", "/usr/bin:/bin");
        if let Some(t) = token {
            cmd.env("HUM_GATEWAY_TOKEN", t);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(sb.dir.path().join("refused.err")).unwrap())
            .spawn()
            .unwrap();
        let exited = wait_until(PROMPTLY, || child.try_wait().unwrap().is_some());
        if !exited {
            stop_up(child);
            panic!("hum up {args:?} started instead of refusing");
        }
        let code = child.wait().unwrap().code();
        (
            code,
            std::fs::read_to_string(sb.dir.path().join("refused.err")).unwrap(),
        )
    };
    let (code, err) = refused(&["--gateway-addr=0.0.0.0:0"], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not loopback"), "{err}");
    let (code, err) = refused(&["--gateway-addr=0.0.0.0:0", "--no-auth"], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--no-auth"), "{err}");
    // A live daemon on the socket: a second hum up would attach a second
    // worker to it.
    let up = hum_up(&sb, &sock, &[], None);
    assert!(wait_until(PROMPTLY, || hum_prompt(&sb, &sock, "s", "hi")
        .status
        .success()));
    let (code, err) = refused(&[], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("already serves"), "{err}");
    stop_up(up);
    sb.assert_no_leaks();
}

#[test]
fn hum_up_restarts_a_humd_that_stops_answering() {
    let sb = Sandbox::new();
    let sock = sb.dir.path().join("run/thrum.sock");
    let up = hum_up(&sb, &sock, &["--no-gateway", "--watchdog-ms=1000"], None);
    assert!(wait_until(PROMPTLY, || hum_prompt(&sb, &sock, "s", "one")
        .status
        .success()));
    let daemons = || -> Vec<ProcId> {
        sb.live()
            .into_iter()
            .filter(|p| cmdline(p.pid).contains(" daemon "))
            .collect()
    };
    let first = daemons();
    assert_eq!(first.len(), 1);
    // A wedged humd: alive, silent.
    signal(first[0].pid, Signal::STOP);
    assert!(
        wait_until(PROMPTLY, || daemons().iter().any(|d| *d != first[0])),
        "the silent humd was not replaced"
    );
    assert!(!alive(first[0]), "the wedged humd still runs");
    assert!(wait_until(PROMPTLY, || hum_prompt(&sb, &sock, "s", "two")
        .status
        .success()));
    let err = std::fs::read_to_string(sb.dir.path().join("up.err")).unwrap();
    assert!(err.contains("up.daemon_unresponsive"), "{err}");
    stop_up(up);
    sb.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sid_with_a_newline_logs_as_one_escaped_line() {
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    let (mut inbox, outbox) = stack.connect("bee").await;
    let sid = "evil\nINFO daemon.forged: pwned=1\u{0}";
    outbox.send(&sim_prompt(sid, "hello")).await.unwrap();
    assert_eq!(read_turn(&mut inbox, sid).await.1, "finish");
    for name in ["daemon.log", "worker.log"] {
        let log = stack.log(name);
        assert!(
            !log.lines().any(|l| l.starts_with("INFO daemon.forged")),
            "{name} has a forged line:\n{log}"
        );
        assert!(!log.contains('\0'), "{name} holds a NUL");
    }
    let worker = stack.log("worker.log");
    assert!(
        worker.contains("evil\\nINFO daemon.forged: pwned=1\\u{0}"),
        "{worker}"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_that_cannot_start_an_agent_says_why() {
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    let (mut inbox, outbox) = stack.connect("bee").await;
    let mut bad_cwd = sim_prompt("c", "x");
    if let thrum::Body::Prompt(p) = &mut bad_cwd.body {
        p.cwd = Some("/nonexistent/dir".into());
    }
    let mut nul = sim_prompt("n", "x");
    if let thrum::Body::Prompt(p) = &mut nul.body {
        p.system_prompt = Some("be\0evil".into());
    }
    for (tone, sid, why) in [
        (bad_cwd, "c", "/nonexistent/dir"),
        (nul, "n", "systemPrompt contains a NUL byte"),
    ] {
        outbox.send(&tone).await.unwrap();
        let err = loop {
            let t = next(&mut inbox).await;
            if t.sid() == Some(sid) && t.chi() == "error" {
                break t.to_value();
            }
        };
        assert_eq!(err["code"], "bad_request", "{err}");
        assert!(err["message"].as_str().unwrap().contains(why), "{err}");
    }
    stack.stop();
}

/// humd's peak and current resident size, in MiB.
fn rss_mib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The bound the README documents: humd's default budget for unfinished
/// lines (128 MiB) plus 96 MiB for everything else it holds.
const HUMD_PEAK_BOUND_MIB: u64 = 128 + 96;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_8mib_partial_lines_and_a_700k_field_line_keep_humd_bounded() {
    use tokio::io::AsyncWriteExt;
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    let pid = stack.daemon.id() as i32;
    let (base_peak, _) = rss_mib(pid);
    let mut writers = Vec::new();
    for _ in 0..200 {
        // Hello at once (a peer silent for 10 s is closed, and 200 writers
        // pushing 8 MiB each keep a loaded machine busy that long).
        let mut s = UnixStream::connect(&stack.sock).await.unwrap();
        s.write_all(b"{\"chi\":\"hello\",\"bee\":[\"asker\"]}\n")
            .await
            .unwrap();
        writers.push(tokio::spawn(async move {
            let mut line = b"{\"chi\":\"prompt\",\"sid\":\"m\",\"text\":\"".to_vec();
            line.resize(8 * 1024 * 1024 - 64, b'a');
            // Written, never finished: the line stays partial.
            let _ = s.write_all(&line).await;
            s
        }));
    }
    let mut held = Vec::new();
    for w in writers {
        held.push(w.await.unwrap());
    }
    let (peak, now) = rss_mib(pid);
    stack.status_answers("with 200 partial lines").await;
    // Once the budget is spent (some line was already dropped for it)...
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let s = stack.status_answers("while lines are held").await;
        if s["daemon"]["stats"]["lines_dropped_busy"].as_u64() >= Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the budget never filled: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and has settled (what was dropped gave its bytes back; what is
    // held is whole), a line bigger than what is left is refused, clearly.
    // What is left can be up to a line's worth (the budget need not be a
    // multiple of the lines held), so it is topped up first with partial
    // lines small enough to fit.
    let mut fillers = Vec::new();
    let room = loop {
        let (used, limit) = stack.settled_line_budget().await;
        let room = limit - used;
        if room < 6 * 1024 * 1024 {
            break room;
        }
        let mut s = UnixStream::connect(&stack.sock).await.unwrap();
        s.write_all(b"{\"chi\":\"hello\",\"bee\":[\"asker\"]}\n")
            .await
            .unwrap();
        let mut line = b"{\"chi\":\"prompt\",\"sid\":\"f\",\"text\":\"".to_vec();
        line.resize(1024 * 1024 - 64, b'a');
        s.write_all(&line).await.unwrap();
        fillers.push(s);
    };
    let (mut busy_in, busy_out) = stack.connect("busy").await;
    let mut big = sim_prompt("b", &"x".repeat(room + 1024 * 1024));
    big.envelope.rid = Some("r-busy".into());
    busy_out.send(&big).await.unwrap();
    let busy = loop {
        let t = next(&mut busy_in).await;
        if t.chi() == "error" {
            break t.to_value();
        }
    };
    assert_eq!(busy["code"], "overloaded", "{busy}");
    drop(fillers);
    drop(held);
    stack.status_answers("after they closed").await;
    // What they held goes back to the system, not only to humd's heap.
    let released = wait_until(PROMPTLY, || rss_mib(pid).1 <= base_peak + 64);
    let (_, after) = rss_mib(pid);
    assert!(
        released,
        "humd still holds {after} MiB after every peer left"
    );
    // One line of 700k tiny fields: refused with a clear error, unparsed.
    let fields: String = (0..700_000).map(|i| format!(",\"f{i}\":0")).collect();
    let (mut inbox, outbox) = stack.connect("fields").await;
    let line = format!("{{\"chi\":\"status\",\"rid\":\"r-700k\"{fields}}}");
    assert!(line.len() > 6_000_000);
    let stream_line = serde_json::from_str::<Value>(&line).unwrap();
    let tone = Tone::decode(stream_line.to_string().as_bytes());
    assert!(tone.is_err(), "thrum itself refuses it");
    // Sent raw, as a peer would.
    let raw_err = {
        let mut raw = UnixStream::connect(&stack.sock).await.unwrap();
        raw.write_all(b"{\"chi\":\"hello\",\"bee\":[\"asker\"]}\n")
            .await
            .unwrap();
        raw.write_all(line.as_bytes()).await.unwrap();
        raw.write_all(b"\n").await.unwrap();
        let Connection {
            inbox: mut r,
            outbox: _o,
        } = Connection::unix(raw, Limits::default(), "raw");
        loop {
            let t = next(&mut r).await;
            if t.chi() == "error" {
                break t.to_value();
            }
        }
    };
    assert_eq!(raw_err["code"], "bad_request", "{raw_err}");
    assert_eq!(raw_err["rid"], "r-700k", "{raw_err}");
    assert!(
        raw_err["message"].as_str().unwrap().contains("members"),
        "{raw_err}"
    );
    drop((inbox.recv(), outbox));
    let (peak_after_fields, _) = rss_mib(pid);
    eprintln!(
        "humd RSS MiB: base peak {base_peak}, with 200 partial lines peak {peak} now {now}, after a 700k-field line peak {peak_after_fields}, after closing {after}"
    );
    assert!(
        peak_after_fields <= HUMD_PEAK_BOUND_MIB,
        "humd peaked at {peak_after_fields} MiB (bound {HUMD_PEAK_BOUND_MIB})"
    );
    stack.stop();
}

// Issue 11: every abandoned turn ends at once.

/// The worker's counters and pool from humd's status answer.
fn worker_status(s: &Value) -> &Value {
    &s["workers"][0]["status"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_hum_prompt_cancels_its_turn_and_kills_its_bash_tool_child() {
    let stack = Stack::start(
        json!({"HUM_SIM_CHUNKS": "2000", "HUM_SIM_CHUNK_DELAY_MS": "20", "HUM_SIM_BASH_ESCAPEE": "1",
               "HUM_SIM_FAULT_IF": "never-matches"}),
        &[],
    );
    stack.wait_worker().await;
    let out = stack.sb.dir.path().join("prompt.out");
    let mut cli = stack
        .sb
        .hum(&[
            "prompt",
            "--socket",
            stack.sock.to_str().unwrap(),
            "--model",
            "sim",
            "--sid",
            "interrupted",
            "a long answer please",
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(stack.sb.dir.path().join("prompt.err")).unwrap())
        .spawn()
        .unwrap();
    // Streaming, with its Bash tool command running.
    let escapee = || {
        stack
            .sb
            .live()
            .into_iter()
            .filter(|p| cmdline(p.pid).contains("bash-tool"))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(PROMPTLY, || std::fs::metadata(&out)
            .is_ok_and(|m| m.len() > 0)
            && !escapee().is_empty()),
        "the turn never streamed"
    );
    let child = escapee();
    let interrupted_at = Instant::now();
    signal(cli.id() as i32, Signal::INT);
    assert!(
        wait_until(PROMPTLY, || cli.try_wait().unwrap().is_some()),
        "hum prompt did not exit"
    );
    let exit_after = interrupted_at.elapsed();
    assert_eq!(cli.wait().unwrap().code(), Some(130));
    let err = std::fs::read_to_string(stack.sb.dir.path().join("prompt.err")).unwrap();
    assert!(err.contains("interrupted"), "{err}");
    // The turn ended cancelled, its Bash tool command with it, the cell
    // kept warm.
    let s = stack.status_answers("after the interrupt").await;
    let w = worker_status(&s);
    assert_eq!(w["metrics"]["turns"]["cancelled"], 1, "{s}");
    for p in &child {
        assert!(
            wait_until(PROMPTLY, || !alive(*p)),
            "the Bash tool child survived"
        );
    }
    assert_eq!(w["cells"][0]["state"], "idle", "{s}");
    // The next prompt of the sid starts at once (no waiting for the old
    // answer to run out): its first chunk, then cancel it too.
    let (mut inbox, outbox) = stack.connect("next").await;
    let started = Instant::now();
    outbox
        .send(&sim_prompt("interrupted", "again"))
        .await
        .unwrap();
    until_chunk(&mut inbox, "interrupted").await;
    let first_chunk = started.elapsed();
    outbox
        .send(&Tone::new(thrum::Cancel::default()).with_sid("interrupted"))
        .await
        .unwrap();
    assert_eq!(read_turn(&mut inbox, "interrupted").await.1, "finish");
    eprintln!(
        "hum prompt exited {exit_after:?} after SIGINT; the next turn of the sid streamed after {first_chunk:?}"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bee_that_disconnects_has_its_running_and_queued_turns_cancelled() {
    let sb_env = json!({"HUM_SIM_CHUNKS": "3000", "HUM_SIM_CHUNK_DELAY_MS": "10"});
    let stack = Stack::start(serde_json::Value::Null, &[]);
    let config = json!({"claude": {"enabled": false}, "sim": {"env": sb_env}, "cwd": stack.sb.work(),
                        "nest": {"maxActiveCells": 2}});
    let mut worker = stack.worker_with(config, &[]);
    stack.wait_worker().await;
    // Another bee's turn, running throughout.
    let (mut other_in, other_out) = stack.connect("other").await;
    other_out
        .send(&sim_prompt("other-1", "mine"))
        .await
        .unwrap();
    // The leaving bee: one turn in flight, three queued behind the cap.
    let (mut gone_in, gone_out) = stack.connect("leaving").await;
    for i in 1..=4 {
        gone_out
            .send(&sim_prompt(&format!("gone-{i}"), "x"))
            .await
            .unwrap();
    }
    until_chunk(&mut gone_in, "gone-1").await;
    let s = stack.status_answers("before leaving").await;
    assert_eq!(worker_status(&s)["pool"]["queued"], 3, "{s}");
    drop((gone_in, gone_out));
    let left_at = Instant::now();
    // All four end: the queue empties and gone-1's cell stops streaming.
    let deadline = left_at + PROMPTLY;
    let ended = loop {
        let s = stack.status_answers("after leaving").await;
        let w = worker_status(&s);
        let cancelled = w["metrics"]["turns"]["cancelled"].as_u64().unwrap_or(0);
        if w["pool"]["queued"] == 0 && cancelled == 4 {
            break s;
        }
        assert!(Instant::now() < deadline, "not cancelled: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = left_at.elapsed();
    assert_eq!(
        ended["daemon"]["stats"]["cancelled_gone_askers"], 4,
        "{ended}"
    );
    // The other bee's turn is untouched and finishes.
    assert_eq!(read_turn(&mut other_in, "other-1").await.1, "finish");
    // /metrics counts them.
    let metrics = std::fs::read_to_string(stack.sock.with_file_name("metrics.addr")).unwrap();
    let text = http(&metrics, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1", "");
    assert!(
        text.contains("hum_turns_abandoned_total{reason=\"asker_gone\"} 4"),
        "{text}"
    );
    eprintln!("four turns of a gone bee ended {took:?} after it left");
    drop(other_out);
    stop_child(&mut worker);
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_goes_silent_mid_turn_times_out_and_leaves_nothing() {
    let stack = Stack::start(serde_json::Value::Null, &[]);
    let config = json!({"claude": {"enabled": false}, "cwd": stack.sb.work(),
        "sim": {"env": {"HUM_SIM_STALL_AFTER_CHUNKS": "2", "HUM_SIM_FAULT_IF": "hang",
                        "HUM_SIM_IGNORE_INTERRUPT": "1", "HUM_SIM_MCP_SERVERS": "1",
                        "HUM_SIM_BASH_ESCAPEE": "1"}},
        "nest": {"turnIdleTimeoutMs": 500, "closeGraceMs": 200, "termGraceMs": 200}});
    let mut worker = stack.worker_with(config, &[]);
    stack.wait_worker().await;
    let (mut inbox, outbox) = stack.connect("bee").await;
    outbox
        .send(&sim_prompt("quiet", "please hang"))
        .await
        .unwrap();
    let started = Instant::now();
    let agents = || {
        stack
            .sb
            .live()
            .into_iter()
            .filter(|p| runs_simulator(p.pid))
            .count()
    };
    let mut seen = 0;
    let err = loop {
        let t = next(&mut inbox).await;
        if t.sid() == Some("quiet") && t.chi() == "chunk" && seen == 0 {
            seen = agents();
        }
        if t.sid() == Some("quiet") && t.chi() == "error" {
            break t.to_value();
        }
        assert_ne!(t.chi(), "finish", "{t:?}");
    };
    assert!(seen >= 3, "agent, MCP server and Bash tool command: {seen}");
    assert_eq!(err["code"], "cell_timeout", "{err}");
    assert!(err["message"].as_str().unwrap().contains("silent"), "{err}");
    eprintln!("a silent turn ended after {:?}", started.elapsed());
    // Its whole tree is gone: agent, MCP server, escaped Bash tool command.
    assert!(
        wait_until(PROMPTLY, || agents() == 0),
        "the silent cell's tree survived"
    );
    // The sid is served again.
    outbox
        .send(&sim_prompt("quiet", "now answer"))
        .await
        .unwrap();
    assert_eq!(read_turn(&mut inbox, "quiet").await.1, "finish");
    stop_child(&mut worker);
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_client_that_leaves_while_the_agent_is_silent_cancels_its_turn() {
    use std::io::{Read, Write};
    let stack = Stack::start(json!({"HUM_SIM_TURN_DELAY_MS": "20000"}), &[]);
    stack.wait_worker().await;
    let (mut gw, addr, door) =
        stack.gateway_doors(&["--token", "t", "--ollama-listen", "127.0.0.1:0"]);
    let door = door.expect("the Ollama door");
    for (n, (to, path, body)) in [
        (&addr, "/v1/chat/completions", json!({"model": "sim", "stream": true, "messages": [{"role": "user", "content": "x"}]})),
        (&addr, "/v1/messages", json!({"model": "sim", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]})),
        (&addr, "/v1/responses", json!({"model": "sim", "stream": true, "input": "x"})),
        // NDJSON has no keep-alive: the close itself is what is noticed.
        (&door, "/api/chat", json!({"model": "sim", "messages": [{"role": "user", "content": "x"}]})),
    ]
    .into_iter()
    .enumerate()
    {
        let body = body.to_string();
        let mut s = std::net::TcpStream::connect(to).unwrap();
        s.write_all(format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\nx-api-key: t\r\nx-hum-session: silent-{n}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).unwrap();
        // The stream has begun (the agent took the turn, then went quiet).
        let mut buf = [0u8; 4096];
        let n_read = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n_read]).starts_with("HTTP/1.1 200"));
        drop(s);
        let left_at = Instant::now();
        let deadline = left_at + PROMPTLY;
        loop {
            let st = stack.status_answers("after the client left").await;
            if worker_status(&st)["metrics"]["turns"]["cancelled"].as_u64() == Some(n as u64 + 1) {
                break;
            }
            assert!(Instant::now() < deadline, "{path}: turn not cancelled: {st}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = left_at.elapsed();
        eprintln!("{path}: the turn was cancelled {took:?} after the client left");
        assert!(took < Duration::from_secs(3), "{path}: {took:?}");
    }
    stop_child(&mut gw);
    stack.stop();
}

#[test]
fn a_cell_task_that_panics_is_torn_down_and_its_slot_reused() {
    let sb = Sandbox::new();
    let sock = sb.dir.path().join("run/thrum.sock");
    let config = sb.dir.path().join("one-cell.json");
    std::fs::write(
        &config,
        json!({"claude": {"enabled": false}, "cwd": sb.work(),
               "sim": {"env": {"HUM_SIM_MCP_SERVERS": "1", "HUM_SIM_BASH_ESCAPEE": "1"}},
               "nest": {"maxActiveCells": 1}})
        .to_string(),
    )
    .unwrap();
    let s = sock.to_str().unwrap().to_owned();
    let c = format!("--config={}", config.display());
    let mut up = sb
        .hum(&["up", "--socket", &s, "--no-metrics", "--no-gateway", &c])
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .env("HUM_TEST_PANIC_IN_RUNNER", "PANIC-NOW")
        .env("PATH", "/usr/bin:/bin")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(sb.dir.path().join("up.err")).unwrap())
        .spawn()
        .unwrap();
    assert!(wait_until(PROMPTLY, || hum_prompt(
        &sb, &sock, "warm", "hi"
    )
    .status
    .success()));
    let out = hum_prompt(&sb, &sock, "doomed", "PANIC-NOW please");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cell_died"), "{err}");
    // The one slot is free again: another sid gets a cell.
    let again = hum_prompt(&sb, &sock, "after", "hello");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let log = std::fs::read_to_string(sb.state_logs().join("worker.log")).unwrap_or_default();
    assert!(log.contains("cell.task_panicked"), "{log}");
    signal(up.id() as i32, Signal::TERM);
    assert!(wait_until(PROMPTLY, || up.try_wait().unwrap().is_some()));
    assert_eq!(up.wait().unwrap().code(), Some(0));
    sb.assert_no_leaks();
}

trait StateLogs {
    fn state_logs(&self) -> PathBuf;
}

impl StateLogs for Sandbox {
    fn state_logs(&self) -> PathBuf {
        self.dir.path().join("state/logs")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hum_status_right_after_a_finish_shows_the_cell_idle() {
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    let (mut inbox, outbox) = stack.connect("bee").await;
    for turn in 0..3 {
        outbox.send(&sim_prompt("fresh", "hello")).await.unwrap();
        assert_eq!(read_turn(&mut inbox, "fresh").await.1, "finish");
        // No waiting: the answer must already reflect the finish.
        let out = stack
            .sb
            .hum(&["status", "--json", "--socket", stack.sock.to_str().unwrap()])
            .output()
            .unwrap();
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        let cell = &worker_status(&s)["cells"][0];
        assert_eq!(cell["state"], "idle", "turn {turn}: {s}");
        assert_eq!(cell["turnsServed"], turn + 1, "turn {turn}: {s}");
        assert!(cell["pids"][0].is_number(), "turn {turn}: {s}");
    }
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_exits_at_once_when_the_agent_ignores_the_first() {
    let stack = Stack::start(
        json!({"HUM_SIM_CHUNKS": "2000", "HUM_SIM_CHUNK_DELAY_MS": "20", "HUM_SIM_IGNORE_INTERRUPT": "1"}),
        &[],
    );
    stack.wait_worker().await;
    let out = stack.sb.dir.path().join("p.out");
    let err = stack.sb.dir.path().join("p.err");
    let mut cli = stack
        .sb
        .hum(&[
            "prompt",
            "--socket",
            stack.sock.to_str().unwrap(),
            "--model",
            "sim",
            "--sid",
            "deaf",
            "long",
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    assert!(wait_until(PROMPTLY, || std::fs::metadata(&out)
        .is_ok_and(|m| m.len() > 0)));
    signal(cli.id() as i32, Signal::INT);
    // The first Ctrl-C was taken (its notice printed), and the command is
    // still waiting for the turn the agent does not stop.
    assert!(
        wait_until(PROMPTLY, || std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("cancelling the turn")),
        "the first Ctrl-C was not handled"
    );
    assert!(
        cli.try_wait().unwrap().is_none(),
        "exited before the cancel's wait"
    );
    let second = Instant::now();
    signal(cli.id() as i32, Signal::INT);
    assert!(wait_until(PROMPTLY, || cli.try_wait().unwrap().is_some()));
    assert_eq!(cli.wait().unwrap().code(), Some(130));
    assert!(
        second.elapsed() < hum::prompt::CANCEL_WAIT,
        "the second Ctrl-C waited {:?}",
        second.elapsed()
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_logs_in_the_workers_format() {
    let stack = Stack::start(serde_json::Value::Null, &[]);
    let config = json!({"claude": {"enabled": false}, "cwd": stack.sb.work(),
                        "sim": {"env": {"HUM_SIM_MCP_SERVERS": "1", "HUM_SIM_MCP_IGNORE_EOF": "1",
                                                 "HUM_SIM_STALL_AFTER_CHUNKS": "1"}}});
    let log = stack.sb.dir.path().join("worker.log");
    let mut worker = stack.worker_with(config, &["--log-format", "json"]);
    stack.wait_worker().await;
    let (mut inbox, outbox) = stack.connect("bee").await;
    // A turn stalled mid-way: the agent does not react to its stdin
    // closing, so what it started is left for the sentinel.
    outbox.send(&sim_prompt("s", "hi")).await.unwrap();
    until_chunk(&mut inbox, "s").await;
    signal(worker.id() as i32, Signal::KILL);
    worker.wait().unwrap();
    assert!(
        wait_until(PROMPTLY, || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("sentinel.swept")),
        "the sentinel said nothing:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if v["fields"]["event"] == "sentinel.swept" {
            assert!(v["fields"]["count"].as_u64().unwrap() >= 1, "{v}");
        }
    }
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bee_back_within_the_grace_keeps_its_turn_and_one_that_moved_on_does_not() {
    // The first turn stalls after two chunks (waiting on its "API"), so it
    // is still running however long the bee takes to come back.
    let stack = Stack::start(
        json!({"HUM_SIM_STALL_AFTER_CHUNKS": "2", "HUM_SIM_FAULT_IF": "long"}),
        &["--asker-gone-grace-ms", "60000"],
    );
    stack.wait_worker().await;
    let (mut first_in, first_out) = stack.connect("before").await;
    first_out.send(&sim_prompt("kept", "long")).await.unwrap();
    until_chunk(&mut first_in, "kept").await;
    drop((first_in, first_out));
    // Back, on a new connection, with the same sid and rid: it adopts the
    // running turn (so its cancel reaches it and its end comes here).
    let (mut inbox, outbox) = stack.connect("after").await;
    outbox.send(&sim_prompt("kept", "long")).await.unwrap();
    outbox
        .send(&Tone::new(thrum::Cancel::default()).with_sid("kept"))
        .await
        .unwrap();
    let t = loop {
        let t = next(&mut inbox).await;
        if t.sid() == Some("kept") && matches!(t.chi(), "finish" | "error") {
            break t;
        }
    };
    assert_eq!(t.rid(), Some("rid-kept"), "{t:?}");
    assert_eq!(t.to_value()["finishReason"], "cancelled", "{t:?}");
    // Gone again, and back with a new prompt: its old turn is cancelled
    // (the bee moved on) and the new one answers, with its own rid.
    let (long_in, long_out) = stack.connect("again").await;
    long_out.send(&sim_prompt("moved", "long")).await.unwrap();
    let mut long_in = long_in;
    until_chunk(&mut long_in, "moved").await;
    drop((long_in, long_out));
    outbox
        .send(&sim_prompt("moved", "short").with_rid("new-rid"))
        .await
        .unwrap();
    let t = loop {
        let t = next(&mut inbox).await;
        if t.sid() == Some("moved") && matches!(t.chi(), "finish" | "error") {
            break t;
        }
        assert_ne!(t.rid(), Some("rid-moved"), "the old turn's output: {t:?}");
    };
    assert_eq!((t.chi(), t.rid()), ("finish", Some("new-rid")), "{t:?}");
    let s = stack.status_answers("after").await;
    assert_eq!(s["daemon"]["stats"]["cancelled_gone_askers"], 1, "{s}");
    assert_eq!(s["daemon"]["stats"]["turns_adopted"], 1, "{s}");
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_read_status_over_http() {
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    let (mut inbox, outbox) = stack.connect("bee").await;
    outbox
        .send(&sim_prompt("private-sid-name", "hello"))
        .await
        .unwrap();
    assert_eq!(read_turn(&mut inbox, "private-sid-name").await.1, "finish");
    let metrics = std::fs::read_to_string(stack.sock.with_file_name("metrics.addr")).unwrap();
    let head = format!("GET /status HTTP/1.0\r\nHost: {metrics}");
    // The daemon's own user reads it, sids and all.
    let mine = http(&metrics, &head, "");
    assert_eq!(status_code(&mine), 200, "{mine}");
    assert!(mine.contains("private-sid-name"), "{mine}");
    // Another user does not, whatever headers it sends.
    let theirs = http_as_nobody(&metrics, &head, "");
    assert_eq!(status_code(&theirs), 403, "{theirs}");
    assert!(!theirs.contains("private-sid-name"), "{theirs}");
    // /metrics holds counts only, for a scraper of any user.
    let scrape = http_as_nobody(
        &metrics,
        &format!("GET /metrics HTTP/1.0\r\nHost: {metrics}"),
        "",
    );
    assert_eq!(status_code(&scrape), 200, "{scrape}");
    assert!(!scrape.contains("private-sid-name"), "{scrape}");
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5mib_prompt_is_forwarded_once_not_doubled_past_the_line_limit() {
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    let (mut inbox, outbox) = stack.connect("bee").await;
    let big = "y".repeat(5 * 1024 * 1024);
    outbox.send(&sim_prompt("big", &big)).await.unwrap();
    // humd acks a prompt once the worker's link took it (a debug build
    // takes long to echo 5 MiB back, so the ack is what is awaited).
    let ack = tokio::time::timeout(PROMPTLY, async {
        loop {
            match inbox.recv().await {
                Ok(Some(Inbound::Tone(t)))
                    if t.rid() == Some("rid-big") && matches!(t.chi(), "echo" | "error") =>
                {
                    break t.to_value()
                }
                Ok(Some(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no answer to the 5 MiB prompt\ndaemon:\n{}\nworker:\n{}",
            stack.log("daemon.log"),
            stack.log("worker.log")
        )
    });
    assert_eq!(
        ack["ok"],
        true,
        "a 5 MiB prompt must be forwarded: {}\n{}",
        ack["message"],
        stack.log("daemon.log")
    );
    outbox
        .send(&Tone::new(thrum::Cancel::default()).with_sid("big"))
        .await
        .unwrap();
    // One past the limit once forwarded is the asker's error, clearly.
    // A line 40 bytes under the limit as sent; humd's fills (cwd, sigil,
    // from) take it over.
    let base = sim_prompt("huge", "")
        .encode_line(usize::MAX)
        .unwrap()
        .len();
    let huge = "z".repeat(thrum::DEFAULT_MAX_LINE - 40 - base);
    outbox.send(&sim_prompt("huge", &huge)).await.unwrap();
    let err = loop {
        let t = next(&mut inbox).await;
        if t.rid() == Some("rid-huge") && t.chi() == "error" {
            break t.to_value();
        }
    };
    assert_eq!(err["code"], "bad_request", "{}", err["message"]);
    stack.stop();
}
