//! Issue 24: another local user (`nobody`) gets in nowhere, part two. The
//! attacks are made for real, as uid 65534, in a sticky world-writable
//! directory like `/tmp`: a fake humd bound on the socket path first, a
//! symlink planted where humd writes. Each ends with the leak check.

use crate::common::*;
use rustix::process::Signal;
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const NOBODY: u32 = 65534;

/// A sticky, world-writable directory in `/tmp` (as `/tmp` itself is),
/// removed at the end.
struct StickyDir(PathBuf);

impl StickyDir {
    fn new() -> StickyDir {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("hum-sticky-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        StickyDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StickyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cmd` run as `nobody`, from `/`.
fn as_nobody(cmd: &mut Command) -> &mut Command {
    cmd.uid(NOBODY)
        .gid(NOBODY)
        .current_dir("/")
        .env("HOME", "/nonexistent")
}

/// `nobody`'s humd on `socket`, once it answers.
fn nobodys_humd(sb: &Sandbox, socket: &Path) -> std::process::Child {
    let log = sb.dir.path().join("nobody-daemon.log");
    let child = as_nobody(&mut sb.hum(&[
        "daemon",
        "--socket",
        socket.to_str().unwrap(),
        "--no-metrics",
    ]))
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    assert!(
        wait_until(PROMPTLY, || std::os::unix::net::UnixStream::connect(socket)
            .is_ok()),
        "nobody's humd never listened: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    child
}

/// Waits until the log at `path` says `what`.
fn until_logged(path: &Path, what: &str) {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    assert!(wait_until(PROMPTLY, || read().contains(what)), "{}", read());
}

fn stop(mut child: std::process::Child) {
    signal(child.id() as i32, Signal::TERM);
    assert!(wait_until(PROMPTLY, || child.try_wait().unwrap().is_some()));
}

#[test]
fn no_hum_client_talks_to_a_socket_another_user_bound_first() {
    let sb = Sandbox::new();
    let sticky = StickyDir::new();
    let socket = sticky.path().join("thrum.sock");
    let fake = nobodys_humd(&sb, &socket);
    let s = socket.to_str().unwrap();
    // hum prompt: refused before a word of the prompt is sent, naming who.
    let out = sb
        .hum(&["prompt", "--socket", s, "my secret plan"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("65534 (nobody)"), "{err}");
    // hum status likewise.
    let out = sb.hum(&["status", "--socket", s]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("65534 (nobody)"),
        "{out:?}"
    );
    // A worker never links to it (it says why, and keeps looking).
    let config = sb.dir.path().join("hum.json");
    std::fs::write(
        &config,
        json!({"claude": {"enabled": false}, "sim": {"models": ["sim"]}, "cwd": sb.work()})
            .to_string(),
    )
    .unwrap();
    let worker_log = sb.dir.path().join("worker.log");
    let worker = sb
        .hum(&[
            "worker",
            "--config",
            config.to_str().unwrap(),
            "--socket",
            s,
        ])
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .env("HUM_LOG", "info")
        .stderr(std::fs::File::create(&worker_log).unwrap())
        .spawn()
        .unwrap();
    until_logged(&worker_log, "worker.foreign_socket");
    stop(worker);
    let fake_log = std::fs::read_to_string(sb.dir.path().join("nobody-daemon.log")).unwrap();
    assert!(
        !fake_log.contains("Worker"),
        "the worker said hello to nobody's humd:\n{fake_log}"
    );
    // humd will not take the path over, and hum up will not remove it.
    let out = sb
        .hum(&["daemon", "--socket", s, "--no-metrics"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("65534 (nobody)"),
        "{out:?}"
    );
    let out = sb
        .hum(&["up", "--socket", s, "--no-metrics"])
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("65534 (nobody)"),
        "{out:?}"
    );
    assert!(socket.exists(), "nobody's socket is still where it was");
    stop(fake);
    sb.assert_no_leaks();
}

#[test]
fn a_symlink_planted_where_humd_writes_is_not_followed() {
    let sb = Sandbox::new();
    let sticky = StickyDir::new();
    let precious = sticky.path().join("precious");
    std::fs::write(&precious, "root's own").unwrap();
    // nobody plants metrics.addr → root's file, beside the socket path.
    let planted = as_nobody(&mut Command::new("ln"))
        .arg("-s")
        .arg(&precious)
        .arg(sticky.path().join("metrics.addr"))
        .status()
        .unwrap();
    assert!(planted.success());
    let socket = sticky.path().join("thrum.sock");
    let log = sb.dir.path().join("daemon.log");
    let humd = sb
        .hum(&[
            "daemon",
            "--socket",
            socket.to_str().unwrap(),
            "--metrics-addr=127.0.0.1:0",
        ])
        .env("HUM_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    until_logged(&log, "daemon.metrics_addr_unwritten");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "root's own");
    stop(humd);
    // The planted link is nobody's: humd left it where it was.
    assert!(std::fs::symlink_metadata(sticky.path().join("metrics.addr")).is_ok());
    sb.assert_no_leaks();
}

#[test]
fn a_token_file_in_a_shared_directory_leaves_the_directory_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let sticky = StickyDir::new();
    let token = sticky.path().join("gateway.token");
    hum::gateway::load_or_create_token(&token).unwrap();
    let mode = std::fs::metadata(sticky.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(
        mode, 0o1777,
        "the shared directory keeps its mode and sticky bit"
    );
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A token file nobody made first is not taken.
    let theirs = sticky.path().join("theirs.token");
    let made = as_nobody(&mut Command::new("sh"))
        .arg("-c")
        .arg(format!(
            "umask 077; echo hum-planted > {}",
            theirs.display()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    let e = hum::gateway::load_or_create_token(&theirs).unwrap_err();
    assert!(e.contains("65534 (nobody)"), "{e}");
}

#[test]
fn doctor_warns_of_a_shared_socket_directory_and_says_what_hum_does() {
    let sb = Sandbox::new();
    let sticky = StickyDir::new();
    let socket = sticky.path().join("thrum.sock");
    let out = sb
        .hum(&["doctor", "--json"])
        .env("HUM_THRUM_SOCK", &socket)
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let dir = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "socket directory")
        .expect("a socket directory check");
    assert_eq!(dir["available"], false, "{dir}");
    // It also says which permission mode cells run in (issue 26, item 8).
    let perms = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "permissions")
        .expect("a permissions check");
    assert!(
        perms["detail"]
            .as_str()
            .unwrap()
            .contains("bypassPermissions"),
        "{perms}"
    );
    let said = dir["detail"].as_str().unwrap();
    assert!(
        said.contains("shared") && said.contains("refuses"),
        "{said}"
    );
    // Nobody's socket there is named as theirs.
    let fake = nobodys_humd(&sb, &socket);
    let out = sb
        .hum(&["doctor", "--json"])
        .env("HUM_THRUM_SOCK", &socket)
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sock = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "socket")
        .unwrap();
    assert!(
        sock["detail"].as_str().unwrap().contains("65534 (nobody)"),
        "{sock}"
    );
    stop(fake);
    sb.assert_no_leaks();
}

/// Holds `n` TCP connections to `addr` open, as `nobody`, until killed;
/// says `open` once it has tried them all.
fn flood_as_nobody(addr: &str, n: usize) -> std::process::Child {
    let (host, port) = addr.rsplit_once(':').unwrap();
    // In batches of 100, each given a second to be taken: whatever the
    // server accepts is held (SYNs the kernel drops would otherwise only
    // come back after its retry back-off).
    let script = r#"
import select, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held, connected = [], 0
while len(held) < n:
    poller, pending = select.poll(), {}
    for _ in range(min(100, n - len(held))):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        held.append(s)
        poller.register(s, select.POLLOUT)
        pending[s.fileno()] = s
    deadline = time.time() + 1
    while pending and time.time() < deadline:
        for fd, _ in poller.poll(max(0, deadline - time.time()) * 1000):
            s = pending.pop(fd, None)
            if s is not None:
                poller.unregister(fd)
                connected += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
print("open", len(held), connected, flush=True)
time.sleep(3600)
"#;
    as_nobody(&mut Command::new("/usr/bin/python3"))
        .arg("-c")
        .arg(script)
        .arg(host)
        .arg(port)
        .arg(n.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3, as nobody (a pyenv shim in root's home is not theirs to run)")
}

/// Waits until a flood says its connections are held (or fails with what
/// it said).
fn flood_held(flood: &mut std::process::Child) {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(flood.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("open"),
        "the flood did not start: {line:?}"
    );
}

/// The open-file limit of process `pid`.
fn nofile_of(pid: u32) -> usize {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_to_metrics_leaves_turns_and_status_answering() {
    // humd with 2,048 descriptors (machines differ; this one's is 20,000,
    // where 21,000 connections were what it took).
    let stack = crate::common::stack::Stack::start_limited(json!({}), &[], Some(2048));
    stack.wait_worker().await;
    let metrics = std::fs::read_to_string(stack.sock.with_file_name("metrics.addr")).unwrap();
    // More connections than humd has descriptors for, from processes of
    // nobody's that each stay under their own limit.
    let n = nofile_of(stack.daemon.id()) + 1000;
    let per = nofile_of(std::process::id()).saturating_sub(500).max(1);
    let mut floods: Vec<_> = (0..n.div_ceil(per))
        .map(|i| flood_as_nobody(&metrics, per.min(n - i * per)))
        .collect();
    floods.iter_mut().for_each(flood_held);
    // The owner's status and a turn still answer promptly.
    let s = stack.status_answers("under the flood").await;
    assert_eq!(s["daemon"]["workers"], 1, "{s}");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::task::spawn_blocking({
            let cmd = stack.sb.hum(&[
                "prompt",
                "--socket",
                stack.sock.to_str().unwrap(),
                "--model",
                "sim",
                "--sid",
                "owner",
                "still here?",
            ]);
            move || {
                let mut cmd = cmd;
                cmd.output().unwrap()
            }
        }),
    )
    .await
    .expect("the owner's turn answered under the flood")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("still here?"));
    for mut flood in floods {
        let _ = flood.kill();
        let _ = flood.wait();
    }
    // humd never ran out of descriptors.
    assert!(
        !stack.log("daemon.log").contains("Too many open files"),
        "{}",
        stack.log("daemon.log")
    );
    stack.stop();
}

/// Every argument of every process of the sandbox, one string each.
fn argvs(sb: &Sandbox) -> Vec<(i32, Vec<String>)> {
    sb.live()
        .into_iter()
        .filter_map(|p| {
            let raw = std::fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
            let args = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((p.pid, args))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_user_wrote_is_in_a_cells_command_line() {
    let stack = crate::common::stack::Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let (system, text, sid) = (
        format!("SYSTEM-{secret}"),
        format!("TEXT-{secret}"),
        format!("sid-{secret}"),
    );
    let (mut inbox, outbox) = stack.connect("bee").await;
    let prompt = thrum::Tone::new(thrum::Prompt {
        text: Some(text.clone()),
        model_id: Some("sim".into()),
        system_prompt: Some(system.clone()),
        ..Default::default()
    })
    .with_sid(&sid)
    .with_rid("r1");
    outbox.send(&prompt).await.unwrap();
    loop {
        let t = crate::common::stack::next(&mut inbox).await;
        if t.sid() == Some(sid.as_str()) && matches!(t.chi(), "finish" | "error") {
            assert_eq!(t.chi(), "finish", "{t:?}");
            break;
        }
    }
    // The cell is warm: read every command line of the sandbox.
    let all = argvs(&stack.sb);
    let agent = all
        .iter()
        .find(|(_, a)| sim_agent_argv(a))
        .expect("the cell runs");
    for (pid, args) in &all {
        for a in args {
            assert!(
                !a.contains(&secret),
                "pid {pid}'s argv holds what the user wrote: {a}"
            );
        }
    }
    // The system prompt went in a private file the agent was pointed to.
    let file = agent
        .1
        .iter()
        .find_map(|a| a.strip_prefix("--system-prompt-file="))
        .expect("--system-prompt-file");
    assert_eq!(std::fs::read_to_string(file).unwrap(), system);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let read = as_nobody(&mut Command::new("cat"))
        .arg(file)
        .output()
        .unwrap();
    assert!(!read.status.success(), "nobody read the system prompt");
    let file = PathBuf::from(file);
    drop((inbox, outbox));
    stack.stop();
    assert!(!file.exists(), "the system prompt outlived its worker");
}

#[test]
fn a_weak_gateway_token_is_refused_off_loopback_and_a_blank_one_anywhere() {
    let sb = Sandbox::new();
    let sock = sb.dir.path().join("thrum.sock");
    let s = sock.to_str().unwrap();
    for (listen, token, says) in [
        ("0.0.0.0:0", "short-token", "at least 16"),
        ("127.0.0.1:0", "    ", "blank"),
    ] {
        let out = sb
            .hum(&[
                "gateway", "--socket", s, "--listen", listen, "--token", token,
            ])
            .env("HUM_STATE_DIR", sb.dir.path().join("state"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{listen} {token:?}: {err}");
        assert!(err.contains(says), "{err}");
    }
    sb.assert_no_leaks();
}
