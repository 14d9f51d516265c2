//! The cell layer with real processes (`hum sim-agent` and its helpers):
//! every way a cell ends, each test proving afterwards by /proc scan that no
//! process carrying its tag is left. Each test runs three times: with
//! cgroups (on this kind of machine they are available; CI sets
//! HUM_TEST_REQUIRE_CGROUPS so their absence fails loudly), with the Linux
//! fallback forced (no cgroups), and on the portable backend (what macOS
//! has: no cgroups, subreaper, PDEATHSIG or pidfds; the process table
//! through `sysinfo`). CI runs the portable ones once more on their own, in
//! a process no other test has made a child subreaper.

// Its own binary: the cell layer runs in this process, makes it a child
// subreaper and reaps every zombie child it is not protecting, which would
// take other tests' children from under them.
#[allow(dead_code)] // the rig serves the integration binary too
#[path = "integration/common/mod.rs"]
mod common;

use common::*;
use hum::cell::{
    CellConfig, CellSpec, Cells, CgroupMode, ContainmentMode, Exit, Grace, Mechanism, Reason, Rung,
    StartClock,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::BufReader;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Cgroups,
    Fallback,
    Portable,
}

struct Host {
    sb: Sandbox,
    cells: Cells,
}

impl Host {
    async fn start(mode: Mode, grace: Grace) -> Host {
        Host::start_with(mode, grace, false).await
    }

    /// [`Host::start`], the layer told (as the worker's is) that this
    /// process starts no children but cells: its unclaimed children go
    /// with its teardowns.
    async fn start_with(mode: Mode, grace: Grace, end_unclaimed_children: bool) -> Host {
        let sb = Sandbox::new();
        let config = CellConfig {
            grace,
            containment: if mode == Mode::Portable {
                ContainmentMode::Portable
            } else {
                ContainmentMode::Auto
            },
            cgroups: if mode == Mode::Cgroups {
                CgroupMode::Auto
            } else {
                CgroupMode::Off
            },
            state_dir: sb.dir.path().join("state"),
            hum_bin: hum_bin().into(),
            memory_limit: None,
            end_unclaimed_children,
        };
        let cells = Cells::start(config).await.expect("cell layer starts");
        match (mode, cells.mechanism()) {
            (Mode::Portable, m) => {
                assert!(matches!(m, Mechanism::Portable { .. }), "{m:?}");
                let c = cells.containment();
                assert!(!c.subreaper && !c.pdeathsig && c.cgroup.is_none());
                assert!(!cells.procs().uses_pidfd());
                assert_eq!(cells.procs().clock(), StartClock::UnixSeconds);
            }
            (Mode::Fallback, m) => assert!(matches!(m, Mechanism::ProcessGroup { .. }), "{m:?}"),
            (Mode::Cgroups, Mechanism::Cgroup { .. }) => {}
            (Mode::Cgroups, m) => {
                assert!(
                    std::env::var_os("HUM_TEST_REQUIRE_CGROUPS").is_none(),
                    "cgroups are required here but unavailable: {m:?}"
                );
                eprintln!(
                    "note: cgroups unavailable on this machine, running on the fallback: {m:?}"
                );
            }
        }
        Host { sb, cells }
    }

    /// The simulator with claude's argv, tagged for this test.
    fn sim(&self, extra: &[&str]) -> CellSpec {
        let mut args: Vec<std::ffi::OsString> = vec!["sim-agent".into()];
        args.extend(hum::hive::argv::STREAM_JSON_ARGS.iter().map(Into::into));
        args.extend(extra.iter().map(Into::into));
        CellSpec {
            program: hum_bin().into(),
            args,
            env: vec![
                (TAG_VAR.into(), self.sb.tag.clone().into()),
                ("HOME".into(), self.sb.home().into()),
            ],
            clean_env: false,
            cwd: Some(self.sb.work()),
        }
    }

    /// A cell whose agent is `python3 -c script`, with `env` added.
    async fn python_cell(&self, script: &str, env: &[(&str, &std::path::Path)]) -> hum::cell::Cell {
        let mut spec = self.sim(&[]);
        spec.program = "python3".into();
        spec.args = vec!["-c".into(), script.into()];
        spec.env
            .extend(env.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        self.cells
            .spawn(spec)
            .await
            .unwrap_or_else(|e| panic!("python3 runs the agent (the test needs it): {e}"))
    }

    async fn finish(self) {
        let sentinel = self.cells.sentinel_pid().expect("sentinel running") as i32;
        self.cells.shutdown().await;
        assert!(
            stat(sentinel).is_none_or(|s| s.exited()),
            "sentinel still running"
        );
        if let Mechanism::Cgroup { root } = self.cells.mechanism() {
            assert!(
                !std::path::Path::new(root).exists(),
                "cgroup root {root} left behind"
            );
        }
        self.sb.assert_no_leaks();
    }
}

/// Reads a cell's stdout as JSON lines.
struct Out {
    lines: thrum::LineReader<BufReader<tokio::process::ChildStdout>>,
}

impl Out {
    fn of(cell: &hum::cell::Cell) -> Out {
        Out {
            lines: thrum::LineReader::new(BufReader::new(cell.take_stdout().unwrap()), 1 << 20),
        }
    }

    async fn next(&mut self) -> Option<Value> {
        match tokio::time::timeout(PROMPTLY, self.lines.next_line())
            .await
            .expect("cell stdout silent")
        {
            Ok(Some(thrum::RawLine::Line(l))) => {
                Some(serde_json::from_slice(l).expect("JSON line"))
            }
            _ => None,
        }
    }

    async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next().await.expect("stdout ended first");
            if pred(&v) {
                return v;
            }
        }
    }

    /// Drains the rest in the background so the agent never blocks on us.
    fn drain(mut self) {
        tokio::spawn(async move { while let Ok(Some(_)) = self.lines.next_line().await {} });
    }
}

fn user(text: &str) -> Vec<u8> {
    format!(
        "{}\n",
        serde_json::json!({"type": "user", "message": {"role": "user", "content": text}})
    )
    .into_bytes()
}

fn is_result(v: &Value) -> bool {
    v["type"] == "result"
}

fn is_delta(v: &Value) -> bool {
    v["event"]["delta"]["type"] == "text_delta"
}

fn quick() -> Grace {
    Grace {
        close: Duration::from_millis(800),
        term: Duration::from_millis(800),
        kill: Duration::from_secs(5),
    }
}

/// Pids of the test's processes other than `leader`.
fn helpers(sb: &Sandbox, leader: i32) -> Vec<ProcId> {
    sb.live().into_iter().filter(|p| p.pid != leader).collect()
}

/// The leader exits on its stdin's EOF at once; its setsid'ed child does
/// not read stdin but obeys SIGTERM (a `sleep` a Bash tool left behind).
/// Waiting `close` for it would only delay the prompt that needs the slot.
async fn a_leader_gone_on_eof_does_not_make_a_lingering_child_wait_the_close_grace(mode: Mode) {
    let grace = Grace {
        close: Duration::from_secs(3),
        term: Duration::from_secs(3),
        kill: Duration::from_secs(5),
    };
    let host = Host::start(mode, grace).await;
    let spec = CellSpec {
        program: "/bin/sh".into(),
        // `cat` is the leader (exec'd) and ends on EOF; the sleep has its
        // own session and never reads stdin.
        args: vec![
            "-c".into(),
            "setsid sleep 60 </dev/null >/dev/null 2>&1 & exec cat >/dev/null".into(),
        ],
        env: vec![(TAG_VAR.into(), host.sb.tag.clone().into())],
        clean_env: false,
        cwd: Some(host.sb.work()),
    };
    let cell = host.cells.spawn(spec).await.unwrap();
    let sleeper = || {
        host.sb
            .live()
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{}/cmdline", p.pid))
                    .is_ok_and(|c| c.starts_with(b"sleep"))
            })
            .collect::<Vec<_>>()
    };
    assert!(wait_until(PROMPTLY, || !sleeper().is_empty()), "no sleeper");
    let child = sleeper()[0];
    let report = cell.teardown(Reason::Evicted).await;
    assert_eq!(report.rung, Rung::Term, "{report:?}");
    assert!(
        Duration::from_millis(report.elapsed_ms) < grace.close,
        "waited the close grace for what cannot answer: {report:?}"
    );
    assert!(!alive(child), "the sleeper survived");
    eprintln!("evicted in {} ms at the TERM rung", report.elapsed_ms);
    host.finish().await;
}

async fn idle_cell_ends_at_the_stdin_rung(mode: Mode) {
    let host = Host::start(mode, Grace::default()).await;
    let cell = host
        .cells
        .spawn(host.sim(&["--sim-mcp-servers=2"]))
        .await
        .unwrap();
    let mut out = Out::of(&cell);
    cell.write(&user("hello")).await.unwrap();
    let result = out.until(is_result).await;
    assert_eq!(result["result"], "SIM-REPLY #1: you said <hello>");
    out.drain();
    if let Some(dir) = cell.cgroup_dir() {
        assert!(
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap()
                .lines()
                .count()
                >= 3,
            "cell and its MCP servers in its cgroup"
        );
    }
    let released = cell.release(Reason::Idle).await;
    let report = cell.teardown(Reason::Idle).await;
    assert_eq!(report.rung, Rung::Stdin, "{report:?}");
    assert_eq!(report.reason, Reason::Idle);
    assert_eq!(report.leader_exit, Some(Exit::Code(0)));
    assert!(report.signalled.is_empty());
    assert!(report.complete);
    assert_eq!(released.rung, Rung::Stdin, "{released:?}");
    if cell.cgroup_dir().is_none() {
        // No cgroup to count: the slot is released when all is done.
        assert_eq!(*released, *report);
    }
    host.finish().await;
}

async fn a_cell_mid_turn_finishes_its_turn_within_close_grace(mode: Mode) {
    let host = Host::start(mode, Grace::default()).await;
    let cell = host
        .cells
        .spawn(host.sim(&["--sim-chunks=6", "--sim-chunk-delay-ms=100"]))
        .await
        .unwrap();
    let mut out = Out::of(&cell);
    cell.write(&user("long answer")).await.unwrap();
    out.until(is_delta).await;
    let (report, result) = tokio::join!(cell.teardown(Reason::Evicted), out.until(is_result));
    assert_eq!(report.rung, Rung::Stdin, "{report:?}");
    assert_eq!(
        result["subtype"], "success",
        "the turn was finished, not cut"
    );
    assert_eq!(report.leader_exit, Some(Exit::Code(0)));
    host.finish().await;
}

async fn an_agent_ignoring_eof_and_sigterm_ends_at_the_kill_rung(mode: Mode) {
    let host = Host::start(mode, quick()).await;
    let cell = host
        .cells
        .spawn(host.sim(&["--sim-never-answer", "--sim-ignore-sigterm"]))
        .await
        .unwrap();
    cell.write(&user("are you there")).await.unwrap();
    Out::of(&cell).drain();
    let report = cell.teardown(Reason::Cancelled).await;
    assert_eq!(report.rung, Rung::Kill, "{report:?}");
    assert!(report.signalled.contains(&cell.pid()));
    assert_eq!(report.leader_exit, Some(Exit::Signal(9)));
    assert!(
        report.elapsed_ms >= 1600,
        "both graces were waited: {report:?}"
    );
    host.finish().await;
}

async fn mcp_children_in_the_group_end_with_the_cell(mode: Mode) {
    let host = Host::start(mode, quick()).await;
    let cell = host
        .cells
        .spawn(host.sim(&[
            "--sim-mcp-servers=3",
            "--sim-mcp-ignore-eof",
            "--sim-never-answer",
            "--sim-ignore-sigterm",
        ]))
        .await
        .unwrap();
    cell.write(&user("x")).await.unwrap();
    Out::of(&cell).drain();
    assert!(
        wait_until(PROMPTLY, || helpers(&host.sb, cell.pid()).len() == 3),
        "three MCP servers"
    );
    let servers = helpers(&host.sb, cell.pid());
    let report = cell.teardown(Reason::Shutdown).await;
    // SIGTERM to the group ends the servers; the agent ignores it.
    assert_eq!(report.rung, Rung::Kill, "{report:?}");
    for s in &servers {
        assert!(
            report.signalled.contains(&s.pid),
            "server {} not signalled: {report:?}",
            s.pid
        );
    }
    host.finish().await;
}

/// A cell mid-turn (stalled after its first chunk, ignoring SIGTERM) whose
/// agent has started a Bash-tool escapee of the kind `knob` names.
async fn stalled_with_escapee(host: &Host, knob: &str) -> hum::cell::Cell {
    let cell = host
        .cells
        .spawn(host.sim(&[knob, "--sim-stall-after-chunks=1", "--sim-ignore-sigterm"]))
        .await
        .unwrap();
    let mut out = Out::of(&cell);
    cell.write(&user("run it")).await.unwrap();
    out.until(is_delta).await;
    out.drain();
    cell
}

async fn a_setsid_bash_grandchild_ignoring_sigterm_is_found_and_killed(mode: Mode) {
    let host = Host::start(mode, quick()).await;
    let cell = stalled_with_escapee(&host, "--sim-bash-escapee").await;
    // Just spawned: its environ is readable once it is past exec.
    assert!(
        wait_until(PROMPTLY, || helpers(&host.sb, cell.pid()).len() == 1),
        "no escapee"
    );
    let escapee = helpers(&host.sb, cell.pid());
    let esc = escapee[0];
    assert!(
        wait_until(PROMPTLY, || stat(esc.pid).is_some_and(|s| s.sid == esc.pid)
            && sigterm_handled(esc.pid)),
        "escapee has its own session"
    );
    let report = cell.teardown(Reason::Evicted).await;
    assert_eq!(report.rung, Rung::Kill, "{report:?}");
    assert!(
        report.signalled.contains(&esc.pid),
        "escapee not signalled: {report:?}"
    );
    assert!(!alive(esc));
    host.finish().await;
}

/// Children of `parent` (any environment: the tag scan cannot see these).
fn children_of(parent: i32) -> Vec<ProcId> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let s = stat(pid)?;
            (s.ppid == parent && !s.exited()).then_some(ProcId {
                pid,
                start_time: s.start_time,
            })
        })
        .collect()
}

async fn a_setsid_grandchild_that_cleared_its_environment_is_found_through_its_parent(mode: Mode) {
    let host = Host::start(mode, quick()).await;
    let cell = stalled_with_escapee(&host, "--sim-bash-escapee-clean-env").await;
    // No tag, its own session: only the cgroup or the parent chain finds it.
    let untagged = |c: &ProcId| {
        std::fs::read(format!("/proc/{}/environ", c.pid)).is_ok_and(|e| e.is_empty())
            && stat(c.pid).is_some_and(|s| s.sid == c.pid)
    };
    assert!(
        wait_until(PROMPTLY, || children_of(cell.pid()).iter().any(untagged)),
        "no untagged escapee"
    );
    let esc = *children_of(cell.pid())
        .iter()
        .find(|c| untagged(c))
        .unwrap();
    assert!(wait_until(PROMPTLY, || sigterm_handled(esc.pid)));
    let report = cell.teardown(Reason::Evicted).await;
    assert_eq!(report.rung, Rung::Kill, "{report:?}");
    assert!(report.complete, "{report:?}");
    assert!(
        wait_until(PROMPTLY, || !alive(esc)),
        "the untagged escapee outlived its cell: {report:?}"
    );
    host.finish().await;
}

/// An agent (python3) that starts an escapee and ends on stdin EOF: the
/// escapee leaves the group for a session of its own, ignores SIGTERM and
/// ends its first thread while a second runs on, so its leader shows `Z`
/// and has no environment of its own to read.
const LEADER_GONE_ESCAPEE: &str = "\
import ctypes, os, signal, sys, threading, time
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=time.sleep, args=(3600,)).start()
    ctypes.CDLL(None).pthread_exit(None)
sys.stdin.read()
";

async fn an_escapee_whose_first_thread_exited_is_found_and_killed(mode: Mode) {
    let host = Host::start(mode, quick()).await;
    let cell = host.python_cell(LEADER_GONE_ESCAPEE, &[]).await;
    let leader_gone = |c: &ProcId| stat(c.pid).is_some_and(|s| s.state == 'Z' && !s.exited());
    assert!(
        wait_until(PROMPTLY, || children_of(cell.pid()).iter().any(leader_gone)),
        "no escapee with an exited leader thread"
    );
    let esc = *children_of(cell.pid())
        .iter()
        .find(|c| leader_gone(c))
        .unwrap();
    assert_eq!(stat(esc.pid).unwrap().sid, esc.pid, "its own session");
    assert!(host.sb.live().contains(&esc), "the leak check sees it");
    let report = cell.teardown(Reason::Evicted).await;
    assert!(report.complete, "{report:?}");
    assert!(
        wait_until(PROMPTLY, || !alive(esc)),
        "the escapee outlived its cell: {report:?}"
    );
    host.finish().await;
}

async fn a_crashed_agents_children_are_still_cleaned(mode: Mode) {
    let host = Host::start(mode, quick()).await;
    let cell = host
        .cells
        .spawn(host.sim(&[
            "--sim-crash-after-chunks=1",
            "--sim-crash-code=3",
            "--sim-mcp-servers=2",
            "--sim-mcp-ignore-eof",
            "--sim-bash-escapee",
        ]))
        .await
        .unwrap();
    Out::of(&cell).drain();
    cell.write(&user("boom")).await.unwrap();
    let exit = tokio::time::timeout(PROMPTLY, cell.exited())
        .await
        .expect("crash seen");
    assert_eq!(exit, Exit::Code(3));
    // The escapee may still be in exec (its environ not yet readable).
    assert!(
        wait_until(PROMPTLY, || helpers(&host.sb, cell.pid()).len() == 3),
        "two MCP servers and the escapee outlive the crash"
    );
    let orphans = helpers(&host.sb, cell.pid());
    // The escapee is ready to ignore SIGTERM before the teardown starts.
    assert!(wait_until(PROMPTLY, || orphans.iter().any(|o| stat(o.pid)
        .is_some_and(|s| s.sid == o.pid)
        && sigterm_handled(o.pid))));
    let report = cell.teardown(Reason::Crashed).await;
    assert_eq!(report.leader_exit, Some(Exit::Code(3)));
    assert_eq!(
        report.rung,
        Rung::Kill,
        "the escapee ignores SIGTERM: {report:?}"
    );
    for o in &orphans {
        assert!(report.signalled.contains(&o.pid));
    }
    host.finish().await;
}

async fn teardown_twice_and_concurrently_gives_one_report(mode: Mode) {
    let host = Host::start(mode, quick()).await;
    let cell = Arc::new(
        host.cells
            .spawn(host.sim(&["--sim-ignore-sigterm", "--sim-never-answer"]))
            .await
            .unwrap(),
    );
    cell.write(&user("x")).await.unwrap();
    let calls: Vec<_> = [Reason::Evicted, Reason::Idle, Reason::Cleanup]
        .into_iter()
        .map(|r| {
            let c = cell.clone();
            tokio::spawn(async move { c.teardown(r).await })
        })
        .collect();
    let mut reports = Vec::new();
    for c in calls {
        reports.push(c.await.unwrap());
    }
    let again = cell.teardown(Reason::Shutdown).await;
    assert!(
        reports.iter().all(|r| Arc::ptr_eq(r, &again)),
        "one teardown, one report"
    );
    assert_eq!(again.rung, Rung::Kill);
    assert!(again.complete);
    host.finish().await;
}

async fn sixteen_cells_at_once_fast_ones_are_not_delayed_by_slow_ones(mode: Mode) {
    let grace = Grace {
        close: Duration::from_secs(2),
        term: Duration::from_secs(2),
        kill: Duration::from_secs(5),
    };
    let host = Host::start(mode, grace).await;
    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for i in 0..16 {
        let spec = if i % 2 == 0 {
            host.sim(&[])
        } else {
            host.sim(&["--sim-never-answer", "--sim-ignore-sigterm"])
        };
        let cell = host.cells.spawn(spec).await.unwrap();
        Out::of(&cell).drain();
        if i % 2 == 1 {
            cell.write(&user("stuck")).await.unwrap();
            slow.push(cell);
        } else {
            fast.push(cell);
        }
    }
    let t0 = Instant::now();
    let slow_tasks: Vec<_> = slow
        .into_iter()
        .map(|c| tokio::spawn(async move { c.teardown(Reason::Evicted).await }))
        .collect();
    let fast_tasks: Vec<_> = fast
        .into_iter()
        .map(|c| tokio::spawn(async move { (c.teardown(Reason::Idle).await, Instant::now()) }))
        .collect();
    // A spawn while the slow teardowns run is not held up by them either.
    let late = host.cells.spawn(host.sim(&[])).await.unwrap();
    let late_spawned = t0.elapsed();
    for t in fast_tasks {
        let (report, done) = t.await.unwrap();
        assert_eq!(report.rung, Rung::Stdin, "{report:?} after {:?}", done - t0);
        assert!(
            done - t0 < grace.close,
            "a fast teardown waited for slow ones: {:?}",
            done - t0
        );
    }
    assert!(
        late_spawned < grace.close,
        "spawn waited for slow teardowns: {late_spawned:?}"
    );
    for t in slow_tasks {
        let report = t.await.unwrap();
        assert_eq!(report.rung, Rung::Kill);
    }
    Out::of(&late).drain();
    late.teardown(Reason::Shutdown).await;
    host.finish().await;
}

async fn observation_sums_the_tree(mode: Mode) {
    let host = Host::start(mode, Grace::default()).await;
    let cell = host
        .cells
        .spawn(host.sim(&["--sim-mcp-servers=2", "--sim-ballast-mb=32"]))
        .await
        .unwrap();
    let mut out = Out::of(&cell);
    cell.write(&user("hi")).await.unwrap();
    out.until(is_result).await;
    out.drain();
    let one = cell.sample();
    assert_eq!(one.pids.len(), 3, "{one:?}");
    assert_eq!(one.pids[0], cell.pid(), "leader first");
    assert!(one.rss_bytes >= 32 << 20, "ballast counted: {one:?}");
    let many = host.cells.sample_all(&[cell.handle()]);
    assert_eq!(many[0].pids.len(), 3);
    assert!(many[0].age_ms >= one.age_ms);
    cell.teardown(Reason::Idle).await;
    host.finish().await;
}

async fn a_dropped_cell_is_torn_down_anyway(mode: Mode) {
    let host = Host::start(mode, quick()).await;
    let cell = host
        .cells
        .spawn(host.sim(&["--sim-mcp-servers=1"]))
        .await
        .unwrap();
    let pid = cell.pid();
    drop(cell);
    assert!(
        wait_until(PROMPTLY, || host.sb.live().is_empty()),
        "dropped cell {pid} kept running"
    );
    host.finish().await;
}

async fn the_ledger_records_live_cells_and_forgets_gone_ones(mode: Mode) {
    let host = Host::start(mode, Grace::default()).await;
    let a = host.cells.spawn(host.sim(&[])).await.unwrap();
    let b = host.cells.spawn(host.sim(&[])).await.unwrap();
    let ledger = hum::cell::read_ledger(host.cells.ledger_path()).unwrap();
    let pids: Vec<i32> = ledger.live.iter().map(|c| c.pid).collect();
    assert_eq!(pids, vec![a.pid(), b.pid()]);
    assert_eq!(ledger.live[0].start_time, a.start_time());
    assert_eq!(ledger.worker.unwrap().pid as u32, std::process::id());
    a.teardown(Reason::Idle).await;
    let ledger = hum::cell::read_ledger(host.cells.ledger_path()).unwrap();
    assert_eq!(
        ledger.live.iter().map(|c| c.pid).collect::<Vec<_>>(),
        vec![b.pid()]
    );
    b.teardown(Reason::Idle).await;
    let path = host.cells.ledger_path().to_owned();
    host.finish().await;
    assert!(!path.exists(), "a clean shutdown removes the ledger");
}

/// An agent (python3) whose child leaves the cell's cgroup for the one
/// named by `ESCAPE_TO` (a deliberate write no fork or setsid makes),
/// ignores SIGTERM and sleeps; the agent itself ends on stdin EOF.
const CGROUP_ESCAPEE: &str = "\
import os, signal, sys, time
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.environ['ESCAPE_TO'] + '/cgroup.procs', 'w') as f:
        f.write(str(os.getpid()))
    time.sleep(3600)
    os._exit(0)
sys.stdin.read()
";

/// A cgroup cell whose agent has started [`CGROUP_ESCAPEE`], once the
/// escapee is out of the cell's cgroup and ignores SIGTERM.
async fn cell_with_cgroup_escapee(host: &Host) -> (hum::cell::Cell, ProcId) {
    let own = hum::cell::own_cgroup_dir().expect("this test needs cgroup v2");
    let cell = host
        .python_cell(CGROUP_ESCAPEE, &[("ESCAPE_TO", &own)])
        .await;
    let cell_dir = cell
        .cgroup_dir()
        .expect("cgroups are required for this test: the cell has none")
        .to_owned();
    let in_cgroup = |pid: i32, dir: &std::path::Path| {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|procs| procs.lines().any(|l| l.trim() == pid.to_string()))
    };
    let escaped = |c: &ProcId| {
        in_cgroup(c.pid, &own) && !in_cgroup(c.pid, &cell_dir) && sigterm_handled(c.pid)
    };
    assert!(
        wait_until(PROMPTLY, || children_of(cell.pid()).iter().any(escaped)),
        "no child of the agent left the cell's cgroup"
    );
    let esc = *children_of(cell.pid()).iter().find(|c| escaped(c)).unwrap();
    (cell, esc)
}

/// The slot is released on the cgroup's count (the agent left on EOF, its
/// cgroup is empty); the escapee that wrote itself elsewhere is found by
/// the scan after, and the teardown's report says so.
async fn a_process_that_left_its_cells_cgroup_is_ended_after_the_slot_is_released() {
    // The hunt's SIGTERM grace is what the zombie check below has to land
    // in: long enough that a busy machine's scheduling does not outrun it.
    let grace = Grace {
        term: Duration::from_secs(5),
        ..quick()
    };
    let host = Host::start(Mode::Cgroups, grace).await;
    let (cell, esc) = cell_with_cgroup_escapee(&host).await;
    let released = cell.release(Reason::Evicted).await;
    assert_eq!(released.rung, Rung::Stdin, "{released:?}");
    assert!(released.signalled.is_empty(), "{released:?}");
    assert_eq!(released.leader_exit, Some(Exit::Code(0)));
    // The escapee ignores the hunt's SIGTERM for a grace: meanwhile the
    // leader is kept a zombie, so its group id is not handed out again.
    let leader = stat(cell.pid()).expect("the leader is unreaped");
    assert_eq!(leader.start_time, cell.start_time());
    assert_eq!(leader.state, 'Z', "{leader:?}");
    let done = cell.teardown(Reason::Evicted).await;
    assert_eq!(done.rung, Rung::Kill, "it ignores SIGTERM: {done:?}");
    assert!(done.signalled.contains(&esc.pid), "{done:?}");
    assert!(done.complete, "{done:?}");
    assert!(!alive(esc), "the escapee outlived its cell's teardown");
    host.finish().await;
}

/// An agent (python3) whose child stays in its group and cgroup, ignores
/// SIGTERM and sleeps; the agent itself ends on stdin EOF.
const CHILD_STAYS: &str = "\
import os, signal, sys, time
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(3600)
    os._exit(0)
sys.stdin.read()
";

/// The slot is released only once everything of the cell is gone: a
/// child that outlives its leader on EOF and SIGTERM is killed first.
async fn a_release_waits_for_a_child_left_in_the_cell(mode: Mode) {
    let host = Host::start(mode, quick()).await;
    let cell = host.python_cell(CHILD_STAYS, &[]).await;
    let ignores = |c: &ProcId| sigterm_handled(c.pid);
    assert!(
        wait_until(PROMPTLY, || children_of(cell.pid()).iter().any(ignores)),
        "no child ignoring SIGTERM"
    );
    let child = *children_of(cell.pid()).iter().find(|c| ignores(c)).unwrap();
    let released = cell.release(Reason::Evicted).await;
    assert_eq!(released.rung, Rung::Kill, "{released:?}");
    assert!(released.signalled.contains(&child.pid), "{released:?}");
    assert!(
        !alive(child),
        "the slot was released with the child running"
    );
    cell.teardown(Reason::Evicted).await;
    host.finish().await;
}

/// A released cell whose hunt is still on: the layer's shutdown waits for
/// it, so nothing of the cell outlives the worker's clean exit.
async fn the_layers_shutdown_waits_for_a_released_cells_scan() {
    let host = Host::start(Mode::Cgroups, quick()).await;
    let (cell, esc) = cell_with_cgroup_escapee(&host).await;
    let ledger = host.cells.ledger_path().to_owned();
    cell.release(Reason::Evicted).await;
    host.cells.shutdown().await;
    assert!(
        !alive(esc),
        "the layer shut down while a released cell's escapee ran"
    );
    // The teardown's own KILL ended it, not the sentinel's stop (which
    // ends the instance's strays too, and would have cut the ladder
    // short at SIGTERM, which the escapee ignores).
    let done = cell.teardown(Reason::Evicted).await;
    assert_eq!(done.rung, Rung::Kill, "{done:?}");
    // Removed only with no cell in it.
    assert!(
        !ledger.exists(),
        "the layer shut down before the released cell's teardown was done"
    );
    host.sb.assert_no_leaks();
}

/// An agent (python3) whose child starts a grandchild and exits: the
/// grandchild takes a session of its own, ignores SIGTERM, writes itself
/// into the cgroup `ESCAPE_TO` names (when set), and replaces itself with
/// a sleeper with an empty environment and `MARK` in its arguments. No
/// tag, group, cgroup or parent chain leads to it: it is the layer's
/// (the subreaper's) child, and nothing else says whose.
const UNCLAIMED_ORPHAN: &str = "\
import os, signal, sys
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if 'ESCAPE_TO' in os.environ:
            with open(os.environ['ESCAPE_TO'] + '/cgroup.procs', 'w') as f:
                f.write(str(os.getpid()))
        mark = 'import time; time.sleep(3600) # ' + os.environ['MARK']
        os.execve(sys.executable, [sys.executable, '-c', mark], {})
    os._exit(0)
sys.stdin.read()
";

/// A layer that ends unclaimed children, a cell of it running
/// [`UNCLAIMED_ORPHAN`], and the orphan once it is the sleeper (past
/// exec) and handed to this process, found by its mark; killed by pid
/// however the test ends (no scan of the sandbox's tag would find it).
async fn a_cell_with_an_unclaimed_orphan(mode: Mode) -> (Host, hum::cell::Cell, KilledOnDrop) {
    let host = Host::start_with(mode, quick(), true).await;
    let mark = uuid::Uuid::new_v4().simple().to_string();
    let mark_path = std::path::PathBuf::from(&mark);
    let own = hum::cell::own_cgroup_dir().ok();
    let mut env: Vec<(&str, &std::path::Path)> = vec![("MARK", &mark_path)];
    if mode == Mode::Cgroups {
        env.push((
            "ESCAPE_TO",
            own.as_deref().expect("cgroup v2 for this test"),
        ));
    }
    let cell = host.python_cell(UNCLAIMED_ORPHAN, &env).await;
    let me = std::process::id() as i32;
    let orphan = || {
        children_of(me).into_iter().find(|c| {
            std::fs::read(format!("/proc/{}/cmdline", c.pid))
                .is_ok_and(|a| String::from_utf8_lossy(&a).contains(&mark))
                && std::fs::read(format!("/proc/{}/environ", c.pid)).is_ok_and(|e| e.is_empty())
                && sigterm_handled(c.pid)
        })
    };
    assert!(wait_until(PROMPTLY, || orphan().is_some()), "no orphan");
    let orphan = KilledOnDrop(orphan().unwrap());
    let pid = orphan.0.pid;
    assert_eq!(stat(pid).unwrap().sid, pid, "a session of its own");
    (host, cell, orphan)
}

async fn an_orphan_that_left_every_mark_of_its_cell_ends_with_the_next_teardown(mode: Mode) {
    let (host, cell, orphan) = a_cell_with_an_unclaimed_orphan(mode).await;
    let report = cell.teardown(Reason::Evicted).await;
    assert!(
        !alive(orphan.0),
        "the unclaimed orphan outlived the teardown: {report:?}"
    );
    assert!(report.signalled.contains(&orphan.0.pid), "{report:?}");
    host.finish().await;
}

/// A process this test did not start by itself, killed by pid on drop if
/// it is still the same process.
struct KilledOnDrop(ProcId);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        kill_exact(self.0);
    }
}

/// Both modes one after the other: a layer that ends unclaimed children
/// takes any of this process's, so two such tests at once would end each
/// other's orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_orphan_ends_with_the_next_teardown_with_and_without_cgroups() {
    an_orphan_that_left_every_mark_of_its_cell_ends_with_the_next_teardown(Mode::Cgroups).await;
    an_orphan_that_left_every_mark_of_its_cell_ends_with_the_next_teardown(Mode::Fallback).await;
}

mod cgroup_escapee {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_that_left_its_cells_cgroup_is_ended_after_the_slot_is_released() {
        super::a_process_that_left_its_cells_cgroup_is_ended_after_the_slot_is_released().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_layers_shutdown_waits_for_a_released_cells_scan() {
        super::the_layers_shutdown_waits_for_a_released_cells_scan().await
    }
}

macro_rules! in_every_mode {
    ($($name:ident),* $(,)?) => {
        mod with_cgroups {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Mode::Cgroups).await })*
        }
        mod without_cgroups {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Mode::Fallback).await })*
        }
        mod portable {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Mode::Portable).await })*
        }
    };
}

in_every_mode!(
    a_leader_gone_on_eof_does_not_make_a_lingering_child_wait_the_close_grace,
    idle_cell_ends_at_the_stdin_rung,
    a_cell_mid_turn_finishes_its_turn_within_close_grace,
    an_agent_ignoring_eof_and_sigterm_ends_at_the_kill_rung,
    mcp_children_in_the_group_end_with_the_cell,
    a_setsid_bash_grandchild_ignoring_sigterm_is_found_and_killed,
    a_setsid_grandchild_that_cleared_its_environment_is_found_through_its_parent,
    a_crashed_agents_children_are_still_cleaned,
    teardown_twice_and_concurrently_gives_one_report,
    sixteen_cells_at_once_fast_ones_are_not_delayed_by_slow_ones,
    observation_sums_the_tree,
    a_dropped_cell_is_torn_down_anyway,
    the_ledger_records_live_cells_and_forgets_gone_ones,
    a_release_waits_for_a_child_left_in_the_cell,
);

/// Linux's tables only: the portable backend stands in for macOS, where a
/// process whose first thread exits is not shown as a zombie (on Linux,
/// through `sysinfo`, it still is: see the closing note of its session).
mod leader_thread_gone {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_cgroups() {
        super::an_escapee_whose_first_thread_exited_is_found_and_killed(super::Mode::Cgroups).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_cgroups() {
        super::an_escapee_whose_first_thread_exited_is_found_and_killed(super::Mode::Fallback).await
    }
}
