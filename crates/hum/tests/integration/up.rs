//! `hum up`: one command starts the daemon and a worker; a worker that dies
//! is restarted; SIGTERM leaves zero tagged processes and exit code 0.

use crate::common::*;
use rustix::process::Signal;
use std::io::Read;
use std::process::Stdio;

fn with_arg(p: &ProcId, needle: &[u8]) -> bool {
    std::fs::read(format!("/proc/{}/cmdline", p.pid))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == needle))
}

fn prompt(sb: &Sandbox, sock: &str, text: &str) -> std::process::Output {
    sb.hum(&[
        "prompt", "--socket", sock, "--model", "sim", "--sid", "up-test", text,
    ])
    .output()
    .unwrap()
}

#[test]
fn hum_up_serves_restarts_a_dead_worker_and_stops_clean() {
    let sb = Sandbox::new();
    let sock = sb.dir.path().join("run/thrum.sock");
    // A free port for the gateway (released just before hum up binds it).
    let gateway = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sock_s = sock.to_str().unwrap().to_owned();
    let mut up = sb
        .hum(&[
            "up",
            "--socket",
            &sock_s,
            "--metrics-addr=127.0.0.1:0",
            &format!("--gateway-addr={gateway}"),
        ])
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        // No claude on PATH: the sim hive alone.
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Prompts succeed once the worker has connected.
    assert!(
        wait_until(PROMPTLY, || prompt(&sb, &sock_s, "one").status.success()),
        "hum up never served a prompt"
    );
    // hum up made the gateway's token, private, and its gateway requires it.
    let token_file = sb.dir.path().join("state/gateway.token");
    let token = std::fs::read_to_string(&token_file).expect("hum up writes a token");
    let token = token.trim();
    assert!(token.len() >= 32, "a token of {} chars", token.len());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let models = |auth: &str| -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(gateway) else {
            return String::new();
        };
        let _ = s.write_all(
            format!("GET /v1/models HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n").as_bytes(),
        );
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    };
    let bearer = format!("Authorization: Bearer {token}\r\n");
    assert!(
        wait_until(PROMPTLY, || models(&bearer).contains("\"id\":\"sim\"")),
        "the gateway hum up started does not answer"
    );
    assert!(
        models("").starts_with("HTTP/1.0 401"),
        "no token, no answer: {}",
        models("")
    );
    let workers = || {
        sb.live()
            .into_iter()
            .filter(|p| with_arg(p, b"worker"))
            .collect::<Vec<_>>()
    };
    let first = workers();
    assert_eq!(first.len(), 1, "one worker");

    // The worker dies: hum up starts another; its cells were ended by the
    // dead worker's sentinel, and the next turn still continues the session.
    signal(first[0].pid, Signal::KILL);
    assert!(
        wait_until(PROMPTLY, || workers().iter().any(|w| w.pid != first[0].pid)),
        "worker not restarted"
    );
    let mut out = None;
    assert!(wait_until(PROMPTLY, || {
        let o = prompt(&sb, &sock_s, "two");
        let ok = o.status.success();
        out = Some(o);
        ok
    }));
    let out = out.unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text, "SIM-REPLY #2: you said <two>; before that <one>\n",
        "the session did not survive the worker's death"
    );

    signal(up.id() as i32, Signal::TERM);
    assert!(
        wait_until(PROMPTLY, || up.try_wait().unwrap().is_some()),
        "hum up did not stop"
    );
    assert_eq!(up.wait().unwrap().code(), Some(0));
    let mut banner = String::new();
    up.stdout
        .take()
        .unwrap()
        .read_to_string(&mut banner)
        .unwrap();
    for what in [
        "socket",
        "state dir",
        "logs",
        "hives",
        "sim: models sim",
        "claude-cli: off",
        "http://127.0.0.1:",
        "gateway.token",
    ] {
        assert!(banner.contains(what), "banner lacks {what}: {banner}");
    }
    // Where /metrics is served, with the port humd bound (given port 0).
    let metrics = banner
        .lines()
        .find(|l| l.trim_start().starts_with("metrics"))
        .unwrap_or_default();
    assert!(
        metrics.contains("http://127.0.0.1:")
            && !metrics.contains("127.0.0.1:0/")
            && !metrics.contains("not served"),
        "{banner}"
    );
    // An orderly stop: nobody took its parent for dead.
    let logs = banner
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("logs"))
        .and_then(|p| p.trim().strip_suffix("/daemon.log, worker.log"))
        .map(std::path::PathBuf::from)
        .expect("the banner names the logs");
    for log in ["daemon.log", "worker.log", "gateway.log"] {
        let text = std::fs::read_to_string(logs.join(log)).unwrap();
        assert!(!text.is_empty(), "{log} is empty");
        assert!(
            !text
                .lines()
                .any(|l| l.contains("lifeline.cut") && l.contains("WARN")),
            "{log}: {text}"
        );
    }
    assert!(!sock.exists(), "socket left behind");
    sb.assert_no_leaks();
}

/// `hum up` itself SIGKILLed (nothing of it runs to stop anyone): its
/// daemon, worker and the worker's cells still go, within 5 s. On the
/// portable backend there is no PR_SET_PDEATHSIG: each child's lifeline (a
/// pipe only `hum up` held) reads EOF and the child stops itself; on Linux
/// PR_SET_PDEATHSIG does it too.
fn hum_up_sigkilled_leaves_nothing(mode: &str) {
    let sb = Sandbox::new();
    let sock = sb.dir.path().join("run/thrum.sock");
    let sock_s = sock.to_str().unwrap().to_owned();
    let mut cmd = sb.hum(&["up", "--socket", &sock_s, "--no-metrics", "--no-gateway"]);
    cmd.env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .env("PATH", "/usr/bin:/bin")
        .env("HUM_CONTAINMENT", mode)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut up = cmd.spawn().unwrap();
    assert!(
        wait_until(PROMPTLY, || prompt(&sb, &sock_s, "one").status.success()),
        "hum up never served a prompt"
    );
    // A warm cell stays after the turn: something for the worker to end.
    let cells = || {
        sb.live()
            .into_iter()
            .filter(|p| runs_simulator(p.pid))
            .count()
    };
    assert!(cells() >= 1, "no warm cell");
    let up_pid = up.id() as i32;
    signal(up_pid, Signal::KILL);
    up.wait().unwrap();
    let killed_at = std::time::Instant::now();
    let gone = wait_until(std::time::Duration::from_secs(5), || sb.live().is_empty());
    let left: Vec<_> = sb
        .live()
        .iter()
        .map(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        gone,
        "{mode}: {} processes outlived hum up by {:?}: {left:?}",
        left.len(),
        killed_at.elapsed()
    );
    sb.assert_no_leaks();
}

#[test]
fn hum_up_sigkilled_leaves_nothing_within_5s() {
    hum_up_sigkilled_leaves_nothing("auto");
}

#[test]
fn portable_hum_up_sigkilled_leaves_nothing_within_5s_through_lifelines_alone() {
    hum_up_sigkilled_leaves_nothing("portable");
}
