//! The cell layer when its host dies: a worker (`hum cell-host`, run as a
//! subprocess) SIGKILLed with 8 cells and their grandchildren leaves nothing
//! behind within 5 s; and the next instance's start-up sweep ends what a
//! previous one left, while a ledger pid now used by an unrelated process is
//! left alone. With cgroups, with the Linux fallback forced, and on the
//! portable backend (`HUM_CONTAINMENT=portable`: no cgroups, subreaper,
//! PDEATHSIG or pidfds, the process table through `sysinfo`), which keeps
//! the same 5 s bound through its sentinel alone.

use crate::common::*;
use rustix::process::Signal;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// The promise: nothing outlives a SIGKILLed worker by more than this.
const WORKER_DEATH_BOUND: Duration = Duration::from_secs(5);

struct CellHost {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
}

impl CellHost {
    /// `mode`: `auto` (cgroups when possible), `off` (the Linux fallback) or
    /// `portable`.
    fn start(
        sb: &Sandbox,
        mode: &str,
        count: usize,
        prompt: Option<&str>,
        agent_args: &[&str],
    ) -> CellHost {
        let mut args = vec![
            "cell-host".to_owned(),
            format!("--count={count}"),
            format!("--cgroups={}", if mode == "off" { "off" } else { "auto" }),
            format!("--state-dir={}", sb.dir.path().join("state").display()),
            "--close-grace-ms=500".into(),
            "--term-grace-ms=500".into(),
        ];
        if let Some(p) = prompt {
            args.push(format!("--prompt={p}"));
        }
        args.push("--".into());
        args.push(hum_bin().into());
        args.extend(
            [
                "sim-agent",
                "-p",
                "--verbose",
                "--input-format=stream-json",
                "--output-format=stream-json",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(agent_args.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = sb.hum(&argv);
        // Each test names its mode; the suite's own HUM_CONTAINMENT does
        // not override it.
        if mode == "portable" {
            cmd.env("HUM_CONTAINMENT", "portable");
        } else {
            cmd.env_remove("HUM_CONTAINMENT");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        CellHost {
            child,
            stdin,
            events,
        }
    }

    fn event(&self, name: &str) -> Value {
        loop {
            let v = self
                .events
                .recv_timeout(PROMPTLY)
                .unwrap_or_else(|_| panic!("no {name} event"));
            if v["event"] == name {
                return v;
            }
        }
    }

    fn stop(mut self) -> Vec<Value> {
        drop(self.stdin.take());
        let mut all = Vec::new();
        while let Ok(v) = self.events.recv_timeout(PROMPTLY) {
            all.push(v);
        }
        assert!(self.child.wait().unwrap().success());
        all
    }
}

/// The mechanism a host in `mode` must report.
fn assert_mechanism(mode: &str, started: &Value) {
    let kind = &started["mechanism"]["kind"];
    match mode {
        "portable" => {
            assert_eq!(kind, "portable", "{started}");
            let not_used = started["mechanism"]["not_used"].to_string();
            for m in ["cgroup v2", "child subreaper", "pdeathsig", "pidfd"] {
                assert!(not_used.contains(m), "{m} not named: {started}");
            }
        }
        "auto" if std::env::var_os("HUM_TEST_REQUIRE_CGROUPS").is_some() => {
            assert_eq!(kind, "cgroup", "{started}")
        }
        "off" => assert_eq!(kind, "process_group", "{started}"),
        _ => {}
    }
}

fn worker_sigkilled_with_8_cells_leaves_nothing_within_5s(mode: &str) {
    let sb = Sandbox::new();
    let mut host = CellHost::start(
        &sb,
        mode,
        8,
        Some("hi"),
        &[
            "--sim-mcp-servers=2",
            "--sim-mcp-ignore-eof",
            "--sim-bash-escapee",
            "--sim-ignore-sigterm",
        ],
    );
    let started = host.event("started");
    assert_mechanism(mode, &started);
    let ready = host.event("ready");
    assert_eq!(ready["cells"].as_array().unwrap().len(), 8);
    // 8 agents, 16 MCP servers, 8 escapees, the host and its sentinel.
    assert!(
        wait_until(PROMPTLY, || sb.live().len() == 34),
        "expected 34 processes, saw {}",
        sb.live().len()
    );

    signal(host.child.id() as i32, Signal::KILL);
    let killed_at = Instant::now();
    host.child.wait().unwrap();
    let gone = wait_until(WORKER_DEATH_BOUND, || sb.live().is_empty());
    let left = sb.live();
    assert!(
        gone,
        "{} processes outlived the worker by {:?}: {left:?}",
        left.len(),
        killed_at.elapsed()
    );
    eprintln!(
        "everything gone {:?} after the worker's SIGKILL",
        killed_at.elapsed()
    );
    sb.assert_no_leaks();
}

/// Starts what looks like a previous instance's cell: a sim tagged as cell
/// `cell_id` of `instance`, leading its own group, with an MCP server that
/// ignores EOF and a setsid escapee that ignores SIGTERM.
fn previous_cell(sb: &Sandbox, instance: &str, cell_id: &str) -> Child {
    let mut cmd = sb.sim_command(&[
        "--sim-mcp-servers=1",
        "--sim-mcp-ignore-eof",
        "--sim-bash-escapee",
        "--sim-ignore-sigterm",
    ]);
    cmd.env("HUM_CELL", cell_id)
        .env("HUM_WORKER_INSTANCE", instance)
        .process_group(0);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            format!(
                "{}\n",
                json!({"type": "user", "message": {"content": "hi"}})
            )
            .as_bytes(),
        )
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait for its turn, so its escapee exists.
    while let Some(Ok(line)) = lines.next() {
        if line.contains("\"type\":\"result\"") {
            break;
        }
    }
    // Keep its stdin open (the dead worker's pipes would be gone, but the
    // agent must not leave on its own for this test to mean anything).
    std::mem::forget(stdin);
    std::thread::spawn(move || for _ in lines {});
    child
}

/// A process's start time in the clock of `mode`'s process table (boot
/// ticks from /proc, or the portable table's seconds), as a ledger of that
/// backend records it.
fn start_time_in(mode: &str, pid: i32) -> u64 {
    if mode == "portable" {
        hum::cell::Procs::portable().stat(pid).unwrap().start_time
    } else {
        stat(pid).unwrap().start_time
    }
}

fn restart_sweep_ends_a_dead_instances_cells_and_spares_strangers(mode: &str) {
    let sb = Sandbox::new();
    let clock = if mode == "portable" {
        "unix_seconds"
    } else {
        "boot_ticks"
    };
    // Unique per test: tag scans are machine-wide.
    let instance_id = uuid::Uuid::new_v4().simple().to_string();
    let instance = instance_id.as_str();
    let short = &instance[..8];
    let mut cells: Vec<Child> = (0..2)
        .map(|i| previous_cell(&sb, instance, &format!("{short}-{i}")))
        .collect();
    // A stranger: its pid is in the ledger, but with another start time.
    let mut stranger = Command::new("sleep").arg("600").spawn().unwrap();
    // As /proc sees it (for `alive`), and its start time in the ledger's clock.
    let stranger_id = ProcId {
        pid: stranger.id() as i32,
        start_time: stat(stranger.id() as i32).unwrap().start_time,
    };
    let stranger_recorded = start_time_in(mode, stranger_id.pid);
    // The dead worker: a process that has exited.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id() as i32;
    dead.wait().unwrap();
    assert!(
        wait_until(PROMPTLY, || sb.live().len() == 6),
        "2 agents, 2 MCP servers, 2 escapees"
    );

    let ledger_dir = sb.dir.path().join("state/cells");
    std::fs::create_dir_all(&ledger_dir).unwrap();
    let mut ledger = format!(
        "{}\n",
        json!({"op": "worker", "instance": instance, "pid": dead_pid, "start_time": 1,
               "clock": clock, "cgroup_root": null})
    );
    for (i, c) in cells.iter().enumerate() {
        let pid = c.id() as i32;
        let st = stat(pid).unwrap();
        ledger += &format!(
            "{}\n",
            json!({"op": "live", "cell_id": format!("{short}-{i}"), "pid": pid, "pgid": st.pgid,
                   "start_time": start_time_in(mode, pid), "instance": instance, "cgroup": null})
        );
    }
    ledger += &format!(
        "{}\n",
        json!({"op": "live", "cell_id": format!("{short}-9"), "pid": stranger_id.pid, "pgid": stranger_id.pid,
               "start_time": stranger_recorded + 10, "instance": instance, "cgroup": null})
    );
    ledger += r#"{"op":"live","cell_id":"torn","pid":"#; // torn by the crash
    std::fs::write(ledger_dir.join(format!("{instance}.jsonl")), ledger).unwrap();

    let host = CellHost::start(&sb, mode, 0, None, &[]);
    let started = host.event("started");
    assert_mechanism(mode, &started);
    let sweep = &started["sweep"];
    assert_eq!(sweep.as_array().unwrap().len(), 1, "{started}");
    let report = &sweep[0];
    assert_eq!(report["instance"], instance);
    assert_eq!(report["bad_lines"], 1);
    let left_alone = report["left_alone"].as_array().unwrap();
    assert_eq!(left_alone.len(), 1, "{report}");
    assert_eq!(left_alone[0]["pid"], stranger_id.pid);
    let signalled: Vec<i64> = report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["signalled"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_i64().unwrap())
        })
        .collect();
    for c in &cells {
        assert!(
            signalled.contains(&(c.id() as i64)),
            "agent {} not swept: {report}",
            c.id()
        );
    }
    assert!(
        signalled.len() >= 6,
        "agents, MCP servers and escapees all swept: {signalled:?}"
    );
    assert!(!signalled.contains(&(stranger_id.pid as i64)));

    // The previous instance's processes are gone, the stranger is not.
    for c in &mut cells {
        c.wait().unwrap();
    }
    assert!(wait_until(PROMPTLY, || sb
        .live()
        .iter()
        .all(|p| p.pid == host.child.id() as i32 || is_sentinel(p.pid))));
    assert!(alive(stranger_id), "the sweep killed an unrelated process");
    assert!(
        !ledger_dir.join(format!("{instance}.jsonl")).exists(),
        "swept ledger removed"
    );
    host.stop();
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    sb.assert_no_leaks();
}

fn is_sentinel(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.windows(8).any(|w| w == b"sentinel"))
}

#[test]
fn with_cgroups_worker_sigkilled_with_8_cells_leaves_nothing_within_5s() {
    worker_sigkilled_with_8_cells_leaves_nothing_within_5s("auto");
}

#[test]
fn without_cgroups_worker_sigkilled_with_8_cells_leaves_nothing_within_5s() {
    worker_sigkilled_with_8_cells_leaves_nothing_within_5s("off");
}

#[test]
fn portable_worker_sigkilled_with_8_cells_leaves_nothing_within_5s() {
    worker_sigkilled_with_8_cells_leaves_nothing_within_5s("portable");
}

#[test]
fn portable_restart_sweep_ends_a_dead_instances_cells_and_spares_strangers() {
    restart_sweep_ends_a_dead_instances_cells_and_spares_strangers("portable");
}

#[test]
fn with_cgroups_restart_sweep_ends_a_dead_instances_cells_and_spares_strangers() {
    restart_sweep_ends_a_dead_instances_cells_and_spares_strangers("auto");
}

#[test]
fn without_cgroups_restart_sweep_ends_a_dead_instances_cells_and_spares_strangers() {
    restart_sweep_ends_a_dead_instances_cells_and_spares_strangers("off");
}

#[test]
fn a_clean_stop_tears_every_cell_down_and_removes_the_ledger() {
    let sb = Sandbox::new();
    let host = CellHost::start(&sb, "auto", 3, Some("hi"), &["--sim-mcp-servers=1"]);
    let started = host.event("started");
    let ledger = std::path::PathBuf::from(started["ledger"].as_str().unwrap());
    host.event("ready");
    let events = host.stop();
    let teardowns: Vec<&Value> = events.iter().filter(|e| e["event"] == "teardown").collect();
    assert_eq!(teardowns.len(), 3);
    assert!(teardowns
        .iter()
        .all(|t| t["report"]["rung"] == "stdin" && t["report"]["reason"] == "shutdown"));
    assert!(!ledger.exists());
    sb.assert_no_leaks();
}

#[test]
fn doctor_reports_the_mechanisms_and_why_not_the_others() {
    let sb = Sandbox::new();
    let out = sb
        .hum(&["doctor", "--json"])
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .env_remove("HUM_CONTAINMENT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    for name in [
        "process group",
        "environment tag",
        "child subreaper",
        "pdeathsig",
        "pidfd",
        "cgroup v2",
        "state dir",
        "config",
        "claude",
        "socket",
    ] {
        assert!(
            !check(name)["detail"].as_str().unwrap().is_empty(),
            "{name} unexplained"
        );
    }
    assert_eq!(check("state dir")["available"], true);
    assert_eq!(
        check("config")["available"],
        true,
        "no config file means defaults"
    );
    // A bad config is named with its key.
    let bad = sb.dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"nest": {"maxActiveCells": 0}}"#).unwrap();
    let out = sb
        .hum(&["doctor", "--json", "--config", bad.to_str().unwrap()])
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .env_remove("HUM_CONTAINMENT")
        .output()
        .unwrap();
    let bad_report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cfg = bad_report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "config")
        .unwrap()
        .clone();
    assert_eq!(cfg["available"], false);
    assert!(
        cfg["detail"]
            .as_str()
            .unwrap()
            .contains("nest.maxActiveCells"),
        "{cfg}"
    );
    if std::env::var_os("HUM_TEST_REQUIRE_CGROUPS").is_some() {
        assert_eq!(check("cgroup v2")["available"], true, "{report}");
        // This kind of machine gives cells a kernel memory limit (v1 or v2).
        let memory = check("memory limit");
        assert_eq!(memory["available"], true, "{report}");
        assert!(
            memory["detail"].as_str().unwrap().contains("memory"),
            "{memory}"
        );
    }
    // Its probe cgroup is not left behind.
    let own = hum::cell::own_cgroup_dir();
    if let Ok(dir) = own {
        let probes = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("hum-doctor-"))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(probes, 0, "doctor left its probe cgroup");
    }

    let off = sb
        .hum(&["doctor", "--json"])
        .env("HUM_CGROUPS", "off")
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .env_remove("HUM_CONTAINMENT")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&off.stdout).unwrap();
    let cg = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cgroup v2")
        .unwrap();
    assert_eq!(cg["available"], false);
    assert!(cg["detail"].as_str().unwrap().contains("HUM_CGROUPS=off"));

    let text = sb
        .hum(&["doctor"])
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("active containment:") && text.contains("state dir:"),
        "{text}"
    );
    sb.assert_no_leaks();
}

#[test]
fn doctor_in_portable_mode_says_so_and_names_what_it_does_not_use() {
    let sb = Sandbox::new();
    let state = sb.dir.path().join("state");
    let run = |extra_env: &[(&str, &str)], args: &[&str]| -> Value {
        let mut cmd = sb.hum(args);
        cmd.env("HUM_STATE_DIR", &state)
            .env_remove("HUM_CONTAINMENT");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let by_env = run(&[("HUM_CONTAINMENT", "portable")], &["doctor", "--json"]);
    // The same from the config key.
    let config = sb.dir.path().join("hum.json");
    std::fs::write(&config, r#"{"containment": "portable"}"#).unwrap();
    let by_config = run(
        &[],
        &["doctor", "--json", "--config", config.to_str().unwrap()],
    );
    for report in [&by_env, &by_config] {
        assert_eq!(report["containment"], "portable", "{report}");
        let not_used: Vec<&str> = report["not_used"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for m in ["cgroup v2", "child subreaper", "pdeathsig", "pidfd"] {
            assert!(not_used.contains(&m), "{m} not named: {report}");
            let check = report["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == m)
                .unwrap();
            assert_eq!(check["available"], false, "{check}");
            assert!(
                check["detail"].as_str().unwrap().starts_with("not used"),
                "{check}"
            );
        }
        assert!(
            report["limits"].to_string().contains("setsid"),
            "the escapee limit is stated: {report}"
        );
        assert!(report["active"].as_str().unwrap().starts_with("portable"));
        let memory = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "memory limit")
            .unwrap();
        assert_eq!(memory["available"], false, "{memory}");
        assert!(
            memory["detail"].as_str().unwrap().contains("sampling"),
            "{memory}"
        );
    }
    // Without either, Linux's mechanisms are in use and nothing is left out.
    let auto = run(&[], &["doctor", "--json"]);
    assert_eq!(auto["containment"], "auto");
    assert_eq!(auto["not_used"], json!([]));
    // The text form says it too.
    let text = sb
        .hum(&["doctor"])
        .env("HUM_STATE_DIR", &state)
        .env("HUM_CONTAINMENT", "portable")
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("containment:        portable") && text.contains("not used:"),
        "{text}"
    );
    sb.assert_no_leaks();
}

/// A ledger written by the Linux backend (boot-tick start times; a ledger
/// from before the clock was recorded reads the same) swept by a portable
/// worker: the pids cannot be checked in its clock, so they are left alone
/// and reported, and the cells' processes are still found and ended by tag.
#[test]
fn a_portable_sweep_of_a_linux_ledger_ends_cells_by_tag_and_trusts_no_pid() {
    let sb = Sandbox::new();
    let instance_id = uuid::Uuid::new_v4().simple().to_string();
    let instance = instance_id.as_str();
    let cell_id = format!("{}-0", &instance[..8]);
    let mut cell = previous_cell(&sb, instance, &cell_id);
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id() as i32;
    dead.wait().unwrap();
    assert!(wait_until(PROMPTLY, || sb.live().len() == 3));
    let pid = cell.id() as i32;
    let st = stat(pid).unwrap();
    let ledger_dir = sb.dir.path().join("state/cells");
    std::fs::create_dir_all(&ledger_dir).unwrap();
    let ledger = format!(
        "{}\n{}\n",
        json!({"op": "worker", "instance": instance, "pid": dead_pid, "start_time": 1, "cgroup_root": null}),
        json!({"op": "live", "cell_id": cell_id, "pid": pid, "pgid": st.pgid,
               "start_time": st.start_time, "instance": instance, "cgroup": null})
    );
    std::fs::write(ledger_dir.join(format!("{instance}.jsonl")), ledger).unwrap();

    let host = CellHost::start(&sb, "portable", 0, None, &[]);
    let started = host.event("started");
    assert_mechanism("portable", &started);
    let report = &started["sweep"][0];
    assert_eq!(report["instance"], instance, "{started}");
    let left_alone = report["left_alone"].as_array().unwrap();
    assert_eq!(left_alone.len(), 1, "{report}");
    assert_eq!(left_alone[0]["pid"], pid);
    assert!(
        left_alone[0]["why"]
            .as_str()
            .unwrap()
            .contains("other containment backend"),
        "{report}"
    );
    // Found by tag anyway: the agent, its MCP server and its escapee.
    let signalled = report["cells"].to_string();
    assert!(signalled.contains(&pid.to_string()), "{report}");
    cell.wait().unwrap();
    assert!(wait_until(PROMPTLY, || sb
        .live()
        .iter()
        .all(|p| p.pid == host.child.id() as i32 || is_sentinel(p.pid))));
    host.stop();
    sb.assert_no_leaks();
}
