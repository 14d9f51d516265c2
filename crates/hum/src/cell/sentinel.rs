//! The sentinel: what ends a worker's cells when the worker is SIGKILLed.
//!
//! Why a sentinel process, and one per worker rather than one per cell: when
//! the worker dies nothing inside it runs, so something outside must act,
//! and must act at once (within 5 s), not at the next start. PR_SET_PDEATHSIG
//! alone ends only each cell's leader; MCP servers that ignore stdin EOF and
//! Bash-tool commands that setsid'd survive it. cgroups would hold them all,
//! but nobody is left to write `cgroup.kill`, and they are not always
//! available. So each worker starts one `hum sentinel`: it holds the read end
//! of a pipe whose write end only the worker has (close-on-exec, so no cell
//! inherits it). Any death of the worker, SIGKILL included, closes the pipe;
//! the sentinel then SIGKILLs every cell group recorded in the ledger (pid and
//! start time checked), every cell cgroup, and every process carrying the
//! instance's tag, until a scan finds none, and exits. One process per worker
//! costs a few MB; a guardian per cell would cost that per cell and would
//! take the cells' parenthood (pidfds, reaping, stdio) away from the worker.
//! The sentinel runs in its own process group so a signal to the worker's
//! group (a terminal's Ctrl-C) does not take it down with the worker.

use super::cgroup::CgroupRoot;
use super::containment::ContainmentMode;
use super::ledger;
use super::procs::{self, Procs};
use super::tag::{self, INSTANCE_VAR};
use rustix::process::Signal;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How long the sentinel keeps killing before giving up: inside the 5 s
/// promise with room to spare.
const SWEEP_DEADLINE: Duration = Duration::from_secs(4);

/// The worker's handle on its sentinel.
#[derive(Debug)]
pub struct Sentinel {
    child: Child,
    /// The write end; closing it (or dying) wakes the sentinel.
    pipe: Option<ChildStdin>,
}

impl Sentinel {
    pub fn start(
        hum_bin: &Path,
        instance: &str,
        ledger: &Path,
        cgroup_root: Option<&Path>,
        mode: ContainmentMode,
    ) -> io::Result<Sentinel> {
        let mut cmd = Command::new(hum_bin);
        cmd.env("HUM_LOG_FORMAT", crate::logging::log_format_name())
            .arg("sentinel")
            .arg("--instance")
            .arg(instance)
            .arg("--ledger")
            .arg(ledger)
            .arg("--containment")
            .arg(mode.as_str());
        if let Some(root) = cgroup_root {
            cmd.arg("--cgroup-root").arg(root);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take();
        Ok(Sentinel { child, pipe })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Clean shutdown: wakes the sentinel (which finds nothing left to end)
    /// and reaps it. Blocking; the sentinel exits within its deadline.
    pub fn stop(mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

/// `hum sentinel`: waits for the worker to go, then ends its cells.
pub fn run(
    instance: &str,
    ledger_path: &Path,
    cgroup_root: Option<PathBuf>,
    mode: ContainmentMode,
) -> ExitCode {
    // The worker's table: the ledger's start times are in its clock.
    let procs = match mode {
        ContainmentMode::Portable => Procs::portable(),
        ContainmentMode::Auto => Procs::native(),
    };
    // Block until EOF: the worker closed the pipe or died.
    crate::lifeline::until_eof(io::stdin().lock());
    let killed = sweep_now(instance, ledger_path, cgroup_root.as_deref(), procs);
    if !killed.is_empty() {
        tracing::warn!(event = "sentinel.swept", instance, count = killed.len(), pids = ?killed,
            "the worker is gone; ended what it left");
    }
    ExitCode::SUCCESS
}

/// SIGKILLs everything of `instance` until a scan finds nothing; returns the
/// pids signalled.
pub fn sweep_now(
    instance: &str,
    ledger_path: &Path,
    cgroup_root: Option<&Path>,
    procs: Procs,
) -> Vec<i32> {
    let deadline = Instant::now() + SWEEP_DEADLINE;
    let entry = tag::entry(INSTANCE_VAR, instance);
    let cells = ledger::read(ledger_path)
        .map(|l| l.live)
        .unwrap_or_default();
    let root = cgroup_root.and_then(|r| CgroupRoot::at(r.to_path_buf()));
    let mut killed = Vec::new();
    let mut quiet_scans = 0;
    while quiet_scans < 2 && Instant::now() < deadline {
        let mut found = false;
        for cell in &cells {
            if procs.running(cell.proc_id()) {
                found = true;
                // The leader leads the group: the group's SIGKILL ends it
                // too, and it counts as killed either way (by the time
                // `signal_exact` runs it may be gone already).
                let group = procs::pid(cell.pgid)
                    .is_some_and(|g| rustix::process::kill_process_group(g, Signal::KILL).is_ok());
                if procs.signal_exact(cell.proc_id(), Signal::KILL) || group {
                    killed.push(cell.pid);
                }
            }
        }
        if let Some(root) = &root {
            for cg in root.cells() {
                if cg.populated() {
                    found = true;
                    // Named in the report like the others.
                    killed.extend(cg.pids());
                    cg.kill();
                }
            }
        }
        for member in procs.scan_members(&entry, None) {
            found = true;
            if procs.signal_exact(member.id(), Signal::KILL) {
                killed.push(member.pid);
            }
        }
        quiet_scans = if found { 0 } else { quiet_scans + 1 };
        // Spaced scans: a process caught mid-exec shows an empty environ for
        // a moment, and one forked just now may not be visible yet.
        std::thread::sleep(Duration::from_millis(if found { 10 } else { 50 }));
    }
    if let Some(root) = &root {
        root.remove();
    }
    killed.sort_unstable();
    killed.dedup();
    killed
}
