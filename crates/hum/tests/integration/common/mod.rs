//! Shared test harness: a sandbox per test (fresh HOME and working dir, a
//! unique tag inherited by every process the test starts), a simulator
//! driver with deadline-bounded reads, and the leak check every test ends
//! with: no process carrying the tag may remain.

pub mod cluster;
pub mod forager;
pub mod mock_api;
pub mod mock_models;
pub mod netns;
pub mod stack;

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The variable that marks every process a test starts.
pub const TAG_VAR: &str = "HUM_TEST_TAG";

/// Upper bound for anything that should happen promptly. Only a broken
/// implementation waits this long; a slow machine does not come close.
pub const PROMPTLY: Duration = Duration::from_secs(20);

pub fn hum_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hum")
}

/// Whether `argv` is the simulator's: `hum sim-agent …`, or `hum-sim …`
/// (its own binary, which the worker's sim cells run), the agent or one
/// of the helpers it starts (`--sim-role`).
pub fn simulator_argv<A: AsRef<[u8]>>(argv: &[A]) -> bool {
    let own = argv
        .first()
        .is_some_and(|a0| a0.as_ref().rsplit(|b| *b == b'/').next() == Some(b"hum-sim"));
    own || argv.get(1).is_some_and(|a| a.as_ref() == b"sim-agent")
}

/// [`simulator_argv`], the agent itself: not one of its helpers.
pub fn sim_agent_argv<A: AsRef<[u8]>>(argv: &[A]) -> bool {
    simulator_argv(argv) && !argv.iter().any(|a| a.as_ref() == b"--sim-role")
}

/// `pid`'s command line, split at its NULs.
pub fn argv_of(pid: i32) -> Vec<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Whether `pid` runs the simulator ([`simulator_argv`]).
pub fn runs_simulator(pid: i32) -> bool {
    simulator_argv(&argv_of(pid))
}

/// Polls `cond` until it holds or `within` passes; returns whether it held.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process seen in /proc: pid plus start time, so a recycled pid is never
/// mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    pub pid: i32,
    pub start_time: u64,
}

/// Fields of /proc/<pid>/stat we use.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// The leader thread's state. A process whose leader exited before its
    /// other threads shows `Z` while it runs on: see [`Stat::exited`].
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub start_time: u64,
    /// Threads, counting an exited leader until the last one is gone.
    pub threads: u64,
}

impl Stat {
    /// Exited (a zombie or dead), not merely its leader thread.
    pub fn exited(&self) -> bool {
        self.state == 'X' || (self.state == 'Z' && self.threads <= 1)
    }
}

pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        sid: f.get(3)?.parse().ok()?,
        // Field 22 overall; fields here start at field 3.
        start_time: f.get(19)?.parse().ok()?,
        // Field 20 overall.
        threads: f.get(17)?.parse().ok()?,
    })
}

/// Whether the process catches or ignores SIGTERM yet (a freshly started
/// helper takes a moment to install its handler).
pub fn sigterm_handled(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigCgt:") | mask("SigIgn:")) & (1 << 14) != 0
}

/// Resident set size in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A process's environment; read through a live thread when its leader
/// has exited (the leader's own file is empty then), so such a process
/// cannot hide from the leak check.
pub fn environ_of(pid: i32) -> Option<Vec<u8>> {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(own) if !own.is_empty() => Some(own),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => None,
        // Empty or ESRCH: perhaps a leader that exited before its threads.
        own if stat(pid).is_some_and(|s| s.state == 'Z' && !s.exited()) => {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .ok()?
                .flatten()
                .take(8)
                .filter_map(|t| std::fs::read(t.path().join("environ")).ok())
                .find(|e| !e.is_empty())
                .or(own.ok())
        }
        own => own.ok(),
    }
}

/// Live (not zombie) processes whose environment carries `TAG_VAR=tag`.
pub fn tagged(tag: &str) -> Vec<ProcId> {
    let needle = format!("{TAG_VAR}={tag}");
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Some(environ) = environ_of(pid) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            continue;
        }
        match stat(pid) {
            Some(s) if !s.exited() => found.push(ProcId {
                pid,
                start_time: s.start_time,
            }),
            _ => {}
        }
    }
    found
}

/// Whether this exact process (pid and start time) is still running.
pub fn alive(p: ProcId) -> bool {
    matches!(stat(p.pid), Some(s) if s.start_time == p.start_time && !s.exited())
}

/// SIGKILLs a process we started, if it is still the same process.
pub fn kill_exact(p: ProcId) {
    if alive(p) {
        let _ = kill_process(Pid::from_raw(p.pid).expect("pid > 0"), Signal::KILL);
    }
}

pub fn signal(pid: i32, sig: Signal) {
    kill_process(Pid::from_raw(pid).expect("pid > 0"), sig).expect("signal delivered");
}

/// A fresh HOME and working directory, and a tag for every process started
/// from here.
pub struct Sandbox {
    pub tag: String,
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Sandbox {
            tag: uuid::Uuid::new_v4().to_string(),
            dir,
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// `hum <args>` with a clean environment: PATH, HOME, the tag, nothing
    /// else (no stray HUM_SIM_* knob from the developer's shell), except
    /// `HUM_CONTAINMENT`: the suite runs again with it set to `portable`.
    pub fn hum(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(hum_bin());
        cmd.args(args);
        self.hum_env(cmd)
    }

    /// [`Sandbox::hum`] in the network namespace `ns` (`ip netns`'s): only
    /// the network changes (nsenter execs hum itself, same pid), so its
    /// unix sockets, cgroups and the leak check see it as any other.
    pub fn hum_in_netns(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(hum_bin())
            .args(args);
        self.hum_env(cmd)
    }

    fn hum_env(&self, mut cmd: Command) -> Command {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env(TAG_VAR, &self.tag)
            .current_dir(self.work());
        if let Some(mode) = std::env::var_os("HUM_CONTAINMENT") {
            cmd.env("HUM_CONTAINMENT", mode);
        }
        cmd
    }

    /// The simulator with the argv hum gives claude, plus `extra`.
    pub fn sim_command(&self, extra: &[&str]) -> Command {
        let mut args = vec!["sim-agent"];
        args.extend_from_slice(&Self::claude_argv(extra));
        self.hum(&args)
    }

    /// [`Sandbox::sim_command`] with `hum-sim`, the simulator's own binary.
    pub fn own_sim_command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hum-sim"));
        cmd.args(Self::claude_argv(extra));
        self.hum_env(cmd)
    }

    /// The argv hum gives claude, plus `extra`.
    fn claude_argv<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "-p",
            "--verbose",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--include-partial-messages",
        ];
        args.extend_from_slice(extra);
        args
    }

    pub fn spawn_sim(&self, extra: &[&str]) -> Sim {
        Sim::spawn(self.sim_command(extra))
    }

    /// Transcript path for a session started in the work dir.
    pub fn transcript(&self, session_id: &str) -> PathBuf {
        let cwd = hum::hive::session::project_name(&self.work().to_string_lossy());
        self.home()
            .join(".claude")
            .join("projects")
            .join(cwd)
            .join(format!("{session_id}.jsonl"))
    }

    /// Processes of this test still running.
    pub fn live(&self) -> Vec<ProcId> {
        tagged(&self.tag)
    }

    /// Ends processes this test left on purpose (knobs that ignore EOF or
    /// SIGTERM), by pid, after checking each still carries the tag.
    pub fn kill_leftovers(&self) {
        for p in self.live() {
            kill_exact(p);
        }
    }

    /// The check every test ends with: every tagged process is gone.
    pub fn assert_no_leaks(&self) {
        if wait_until(PROMPTLY, || self.live().is_empty()) {
            return;
        }
        let left = self.live();
        let described: Vec<String> = left
            .iter()
            .map(|p| {
                let cmd = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
                format!(
                    "pid {} ({})",
                    p.pid,
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                )
            })
            .collect();
        self.kill_leftovers();
        panic!("processes left behind: {}", described.join(", "));
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // On a failing test, still end what it started.
        self.kill_leftovers();
    }
}

/// A running simulator, its stdout parsed line by line on a thread so reads
/// can wait with a deadline.
pub struct Sim {
    pub child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<(Instant, Result<Value, String>)>,
    stderr: Arc<Mutex<String>>,
    pub started: Instant,
}

impl Sim {
    pub fn spawn(mut cmd: Command) -> Sim {
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hum sim-agent");
        let stdout = child.stdout.take().unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = serde_json::from_str(&line).map_err(|_| line.clone());
                if tx.send((Instant::now(), parsed)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Sim {
            stdin: child.stdin.take(),
            child,
            events,
            stderr,
            started,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Writes one stream-json user message.
    pub fn say(&mut self, text: &str) {
        let msg = serde_json::json!({"type": "user", "message": {"role": "user", "content": text}});
        self.send_raw(format!("{msg}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).expect("write to sim");
        stdin.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// The next stdout line as JSON, waiting at most `within`.
    pub fn next_within(&self, within: Duration) -> Option<(Instant, Value)> {
        match self.events.recv_timeout(within) {
            Ok((at, Ok(v))) => Some((at, v)),
            Ok((_, Err(raw))) => panic!("sim printed a line that is not JSON: {raw}"),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    pub fn next(&self) -> Value {
        self.next_within(PROMPTLY)
            .expect("sim printed nothing in time")
            .1
    }

    /// Events up to and including the turn's `result`.
    pub fn turn(&self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let ev = self.next();
            let done = ev["type"] == "result";
            out.push(ev);
            if done {
                return out;
            }
        }
    }

    /// Whether stdout ended (the process closed it or exited).
    pub fn stdout_closed_within(&self, within: Duration) -> bool {
        matches!(
            self.events.recv_timeout(within),
            Err(RecvTimeoutError::Disconnected)
        )
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "sim did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// The text of a turn's text deltas, concatenated.
pub fn streamed_text(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "stream_event" && e["event"]["delta"]["type"] == "text_delta")
        .map(|e| e["event"]["delta"]["text"].as_str().unwrap().to_owned())
        .collect()
}

/// (type, subtype or inner event type) of each event: the shape of a turn.
pub fn shape(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let t = e["type"].as_str().unwrap_or_default().to_owned();
            let sub = e["subtype"]
                .as_str()
                .or_else(|| e["event"]["type"].as_str())
                .unwrap_or_default()
                .to_owned();
            (t, sub)
        })
        .collect()
}

pub fn fixture(name: &str) -> PathBuf {
    // A copy of ../shared/fixtures, so the tests need nothing outside the repo.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude-2.1.332")
        .join(name)
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `/metrics` of the humd listening at `addr`, parsed.
pub fn scrape_metrics(addr: &str) -> prometheus_parse::Scrape {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr.trim()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text")
}

/// The sum of the samples of `name` whose labels include `labels`.
pub fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}
