//! The process stack most integration tests stand on: humd, sim workers,
//! a gateway, their logs in the sandbox; and the helpers to talk to it.

use super::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use thrum::{Bees, Connection, Hello, Inbound, Inbox, Limits, Outbox, Tone};
use tokio::net::unix::OwnedReadHalf;

/// How long `hum status` may take to answer while humd is under load. A
/// wedged daemon never answers; a loaded one answers in milliseconds.
pub const STATUS_WITHIN: Duration = Duration::from_secs(2);

/// humd (as a process) and its sim workers, their logs in the sandbox;
/// tests that are about processes start the stack this way.
pub struct Stack {
    pub sb: Sandbox,
    pub sock: PathBuf,
    pub daemon: Child,
    pub worker: Option<Child>,
}

impl Stack {
    pub fn start(sim_env: Value, daemon_args: &[&str]) -> Stack {
        Stack::start_limited(sim_env, daemon_args, None)
    }

    /// [`Stack::start`] with humd's open-file limit (soft and hard) set to
    /// `nofile`: a machine whose limit is lower than this one's.
    pub fn start_limited(sim_env: Value, daemon_args: &[&str], nofile: Option<u64>) -> Stack {
        let sb = Sandbox::new();
        let sock = sb.dir.path().join("run/hum/thrum.sock");
        let s = sock.to_str().unwrap().to_owned();
        let mut args = vec!["daemon", "--socket", &s, "--metrics-addr=127.0.0.1:0"];
        args.extend_from_slice(daemon_args);
        let mut cmd = sb.hum(&args);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: runs in the child between fork and exec; setrlimit is
            // async-signal-safe and `n` was copied in.
            unsafe {
                cmd.pre_exec(move || {
                    let l = rustix::process::Rlimit {
                        current: Some(n),
                        maximum: Some(n),
                    };
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, l)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let daemon = cmd
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

    pub fn spawn_worker(&self, sim_env: Value) -> Child {
        let config = json!({"claude": {"enabled": false}, "sim": {"models": ["sim"], "env": sim_env},
                            "cwd": self.sb.work(), "nest": {"maxActiveCells": 8}});
        self.worker_with(config, &[])
    }

    /// A new humd on the same socket (after the last one was killed), once
    /// it listens.
    pub fn respawn_daemon(&self, daemon_args: &[&str]) -> Child {
        let s = self.sock.to_str().unwrap().to_owned();
        let mut args = vec!["daemon", "--socket", &s];
        args.extend_from_slice(daemon_args);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.sb.dir.path().join("daemon.log"))
            .unwrap();
        let daemon = self
            .sb
            .hum(&args)
            .env("HUM_LOG", "info")
            .stderr(log)
            .spawn()
            .unwrap();
        assert!(
            wait_until(PROMPTLY, || std::os::unix::net::UnixStream::connect(
                &self.sock
            )
            .is_ok()),
            "daemon never listened again"
        );
        daemon
    }

    /// A `hum worker` with this `hum.json`, `global` flags before its
    /// subcommand, its log in `worker.log`.
    pub fn worker_with(&self, config: Value, global: &[&str]) -> Child {
        let path = self
            .sb
            .dir
            .path()
            .join(format!("hum-{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, config.to_string()).unwrap();
        let mut args: Vec<&str> = global.to_vec();
        args.extend_from_slice(&[
            "worker",
            "--config",
            path.to_str().unwrap(),
            "--socket",
            self.sock.to_str().unwrap(),
        ]);
        self.sb
            .hum(&args)
            .env("HUM_STATE_DIR", self.sb.dir.path().join("state"))
            .env("HUM_LOG", "info")
            .stderr(std::fs::File::create(self.sb.dir.path().join("worker.log")).unwrap())
            .spawn()
            .unwrap()
    }

    /// `hum status` as a person reads it.
    pub fn status_table(&self) -> String {
        let out = self
            .sb
            .hum(&["status", "--socket", self.sock.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    /// Whether the worker logged `sid`'s cell torn down with `reason`.
    pub fn torn_down(&self, sid: &str, reason: &str) -> bool {
        self.log("worker.log").lines().any(|l| {
            l.contains("event=\"cell.torn_down\"")
                && l.contains(&format!("sid={sid} "))
                && l.contains(&format!("reason={reason} "))
        })
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.sb.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits until humd reports a linked worker.
    pub async fn wait_worker(&self) {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            // Linked, and its first worker-status in (what tests read its
            // containment and cells from).
            if let Ok(s) = hum::client::fetch_status(&self.sock).await {
                if s.daemon.workers == 1 && s.workers.iter().all(|w| w.status.is_some()) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the worker never linked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `hum status`'s request, timed: the answer must come within
    /// [`STATUS_WITHIN`].
    pub async fn status_answers(&self, when: &str) -> Value {
        let started = Instant::now();
        match tokio::time::timeout(STATUS_WITHIN, hum::client::fetch_status_json(&self.sock)).await
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("{when}: status failed after {:?}: {e}", started.elapsed()),
            Err(_) => panic!("{when}: humd did not answer status within {STATUS_WITHIN:?}"),
        }
    }

    /// humd's budget for unfinished lines (bytes held, limit) once it has
    /// stopped changing: the same over three reads 100 ms apart.
    pub async fn settled_line_budget(&self) -> (usize, usize) {
        let deadline = Instant::now() + PROMPTLY;
        let read = |s: &Value| {
            let b = &s["daemon"]["unfinishedLines"];
            (
                b["bytes"].as_u64().unwrap() as usize,
                b["limit"].as_u64().unwrap() as usize,
            )
        };
        let mut last = read(&self.status_answers("reading the line budget").await);
        let mut same = 0;
        while same < 2 {
            assert!(
                Instant::now() < deadline,
                "the line budget never settled: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = read(&self.status_answers("reading the line budget").await);
            same = if now == last { same + 1 } else { 0 };
            last = now;
        }
        last
    }

    /// Connects as `role` (a fake worker when `models` are given) and
    /// proves the handshake: `breath` with the protocol version, then the
    /// hello's `echo`.
    pub async fn connect_as(
        &self,
        role: &str,
        models: Option<Vec<&str>>,
    ) -> (Inbox<OwnedReadHalf>, Outbox) {
        let stream = thrum::connect(&self.sock).await.unwrap();
        let Connection { mut inbox, outbox } =
            Connection::unix(stream, Limits::default(), role.to_owned());
        let hello = Hello {
            bee: Some(Bees::Many(vec![role.into()])),
            proto_version: Some(thrum::PROTO_VERSION.into()),
            hive: models.as_ref().map(|_| "fake".into()),
            models: models.map(|m| m.into_iter().map(String::from).collect()),
            ..Default::default()
        };
        outbox
            .try_send(&Tone::new(hello).with_rid("hello-1"))
            .unwrap();
        let breath = next(&mut inbox).await;
        assert_eq!(breath.chi(), "breath", "{breath:?}");
        assert_eq!(breath.to_value()["protoVersion"], thrum::PROTO_VERSION);
        let echo = next(&mut inbox).await;
        assert_eq!((echo.chi(), echo.rid()), ("echo", Some("hello-1")));
        (inbox, outbox)
    }

    pub async fn connect(&self, name: &str) -> (Inbox<OwnedReadHalf>, Outbox) {
        let stream = thrum::connect(&self.sock).await.unwrap();
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

    /// Stops the worker, then humd (which must exit 0 and remove its
    /// socket, when it was still running), then proves nothing is left.
    pub fn stop(mut self) {
        if let Some(mut w) = self.worker.take() {
            stop_child(&mut w);
        }
        // (A humd that already exited was reaped by `try_wait`: no signal to
        // a pid that may be someone else's now.)
        let was_running = self.daemon.try_wait().unwrap().is_none();
        if was_running {
            stop_child(&mut self.daemon);
            assert_eq!(
                self.daemon.try_wait().unwrap().and_then(|s| s.code()),
                Some(0),
                "humd's exit"
            );
            assert!(!self.sock.exists(), "socket file left behind");
        }
        self.sb.assert_no_leaks();
    }
}

/// SIGTERM to `hum up`, which must stop everything and exit 0.
pub fn stop_up(mut up: Child) {
    signal(up.id() as i32, Signal::TERM);
    assert!(
        wait_until(PROMPTLY, || up.try_wait().unwrap().is_some()),
        "hum up did not stop"
    );
    assert_eq!(up.wait().unwrap().code(), Some(0));
}

/// Whether this run must have cgroups for its cells (`HUM_TEST_REQUIRE_CGROUPS`,
/// and not the portable run).
pub fn cgroups_required() -> bool {
    std::env::var_os("HUM_TEST_REQUIRE_CGROUPS").is_some()
        && std::env::var("HUM_CONTAINMENT").as_deref() != Ok("portable")
}

pub fn stop_child(child: &mut Child) {
    signal(child.id() as i32, Signal::TERM);
    assert!(
        wait_until(PROMPTLY, || child.try_wait().unwrap().is_some()),
        "child did not stop"
    );
}

pub async fn next(inbox: &mut Inbox<OwnedReadHalf>) -> Tone {
    match tokio::time::timeout(PROMPTLY, inbox.recv())
        .await
        .expect("silence")
        .unwrap()
    {
        Some(Inbound::Tone(t)) => t,
        other => panic!("expected a tone, got {other:?}"),
    }
}

impl Stack {
    /// A `hum gateway` on a free loopback port; `args` add to its command
    /// line. Returns it and its address.
    pub fn gateway(&self, args: &[&str]) -> (Child, String) {
        let (child, addr, _) = self.gateway_doors(args);
        (child, addr)
    }

    /// A `hum gateway` and both its doors' addresses: its Ollama door is
    /// off unless `args` say where (`--ollama-listen 127.0.0.1:0`), so
    /// tests never take Ollama's own port.
    pub fn gateway_doors(&self, args: &[&str]) -> (Child, String, Option<String>) {
        let s = self.sock.to_str().unwrap().to_owned();
        let mut all = vec!["gateway", "--socket", &s, "--listen", "127.0.0.1:0"];
        if !args.iter().any(|a| a.starts_with("--ollama-listen")) {
            all.extend_from_slice(&["--ollama-listen", "off"]);
        }
        all.extend_from_slice(args);
        let mut gw = self
            .sb
            .hum(&all)
            .env("HUM_STATE_DIR", self.sb.dir.path().join("state"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(self.sb.dir.path().join("gateway.log")).unwrap())
            .spawn()
            .unwrap();
        let (addr, ollama) = hum::gateway::read_both_addrs(gw.stdout.take().unwrap())
            .expect("the gateway says where it listens");
        (gw, addr, ollama)
    }
}

/// A prompt for the sim model, with rid `rid-<sid>`.
pub fn sim_prompt(sid: &str, text: &str) -> Tone {
    Tone::new(thrum::Prompt {
        text: Some(text.into()),
        model_id: Some("sim".into()),
        ..Default::default()
    })
    .with_sid(sid)
    .with_rid(format!("rid-{sid}"))
}
