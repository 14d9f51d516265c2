//! At start, end what previous worker instances left behind.
//!
//! Every ledger whose worker is no longer running (pid **and** start time) is
//! read; each cell it names goes down the same ladder as any cell (from the
//! SIGTERM rung: nobody holds its stdin). A ledger pid that now belongs to
//! another process (different start time) is left alone and reported; the
//! cell's members are still found by their tag and cgroup. Finally anything
//! else tagged with the dead instance is ended, its cgroups removed, and the
//! ledger deleted.
//!
//! Start times are compared only in the clock they were recorded in. A
//! ledger written by the other backend (Linux's boot ticks, the portable
//! table's seconds) cannot prove who a pid is: its worker counts as alive
//! while its pid is, and its cells' pids are left alone; their members are
//! still found by tag, which never names a stranger.

use super::cgroup::{CellCgroup, CgroupRoot};
use super::ledger::{self, CellRecord};
use super::procs::Procs;
use super::tag::{self, INSTANCE_VAR};
use super::teardown::{ladder, Grace, LeaderRef, NoStdin, Proof, Reason, TeardownReport, Tree};
use serde::Serialize;
use std::path::Path;

/// What the sweep of one dead instance did.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub instance: String,
    pub ledger: String,
    pub cells: Vec<TeardownReport>,
    /// Ledger entries whose pid now names an unrelated process, left alone.
    pub left_alone: Vec<LeftAlone>,
    /// Lines of the ledger that could not be read (torn writes).
    pub bad_lines: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeftAlone {
    pub cell_id: String,
    pub pid: i32,
    pub why: String,
}

/// Sweeps every ledger under `state_dir` but `own_instance`'s whose worker is
/// gone.
pub async fn sweep_previous(
    state_dir: &Path,
    own_instance: &str,
    grace: Grace,
    procs: Procs,
) -> Vec<SweepReport> {
    let mut reports = Vec::new();
    for path in ledger::others(state_dir, own_instance) {
        let read = match ledger::read(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(event = "cell.sweep.unreadable", path = %path.display(), error = %e, "cannot read a ledger");
                continue;
            }
        };
        let same_clock = read
            .worker
            .as_ref()
            .is_none_or(|w| w.clock == procs.clock());
        let instance = match &read.worker {
            Some(w) if same_clock && procs.running(w.proc_id()) => {
                tracing::debug!(event = "cell.sweep.skip_live", instance = %w.instance, pid = w.pid, "ledger of a running worker");
                continue;
            }
            Some(w) if !same_clock && procs.stat(w.pid).is_some_and(|s| !s.exited()) => {
                tracing::info!(event = "cell.sweep.skip_unverifiable", instance = %w.instance, pid = w.pid,
                    "ledger of the other backend whose worker pid is alive; kept until that pid is gone");
                continue;
            }
            Some(w) => w.instance.clone(),
            // A ledger torn before its first line: the file name carries the instance.
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let mut report = SweepReport {
            instance: instance.clone(),
            ledger: path.display().to_string(),
            cells: Vec::new(),
            left_alone: Vec::new(),
            bad_lines: read.bad_lines,
        };
        for cell in &read.live {
            report
                .cells
                .push(sweep_cell(cell, grace, procs, same_clock, &mut report.left_alone).await);
        }
        // Anything else the dead instance started, found by its tag.
        if !instance.is_empty() {
            let entry = tag::entry(INSTANCE_VAR, &instance);
            let tree = Tree {
                leader: LeaderRef::Foreign(None),
                pgid: None,
                cgroup: None,
                tag: &entry,
                procs,
                proof: Proof::Scanned,
                unclaimed: None,
            };
            let strays = ladder::<NoStdin>(
                &format!("{instance}/strays"),
                &tree,
                None,
                grace,
                Reason::Swept,
            )
            .await;
            if !strays.signalled.is_empty() {
                report.cells.push(strays);
            }
        }
        let root = read.worker.as_ref().and_then(|w| w.cgroup_root.clone());
        if let Some(root) = root.and_then(|r| CgroupRoot::at(r.into())) {
            root.kill_all();
            root.remove();
        }
        if !instance.is_empty() {
            crate::os::memcg::remove_stale(&instance);
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(event = "cell.sweep.ledger_kept", path = %path.display(), error = %e, "cannot remove a swept ledger");
        }
        for cell in &report.cells {
            for pid in &cell.signalled {
                tracing::info!(event = "cell.sweep.killed", instance = %instance, cell = %cell.cell_id, pid, "ended a process left by a previous instance");
            }
        }
        reports.push(report);
    }
    reports
}

async fn sweep_cell(
    cell: &CellRecord,
    grace: Grace,
    procs: Procs,
    same_clock: bool,
    left_alone: &mut Vec<LeftAlone>,
) -> TeardownReport {
    let recorded = cell.proc_id();
    let leader = match procs.stat(cell.pid) {
        Some(s) if !same_clock && !s.exited() => {
            left_alone.push(LeftAlone {
                cell_id: cell.cell_id.clone(),
                pid: cell.pid,
                why: "recorded by the other containment backend; its start time cannot be checked"
                    .to_owned(),
            });
            None
        }
        Some(s) if procs.clock().same_start(s.start_time, recorded.start_time) && !s.exited() => {
            Some(recorded)
        }
        Some(s) if !s.exited() => {
            left_alone.push(LeftAlone {
                cell_id: cell.cell_id.clone(),
                pid: cell.pid,
                why: format!(
                    "pid now belongs to another process (start time {} ≠ recorded {})",
                    s.start_time, cell.start_time
                ),
            });
            None
        }
        _ => None,
    };
    let cgroup = cell
        .cgroup
        .as_ref()
        .and_then(|dir| CellCgroup::at(dir.into()).ok());
    let entry = tag::entry(tag::CELL_VAR, &cell.cell_id);
    let tree = Tree {
        leader: LeaderRef::Foreign(leader),
        // The group is only safe to signal while its recorded leader lives.
        pgid: leader.map(|_| cell.pgid),
        cgroup: cgroup.as_ref(),
        tag: &entry,
        procs,
        // A dead worker's cell: no slot waits for it, so nothing is
        // released before the scan.
        proof: Proof::Scanned,
        unclaimed: None,
    };
    let report = ladder::<NoStdin>(&cell.cell_id, &tree, None, grace, Reason::Swept).await;
    if let Some(cg) = &cgroup {
        let _ = cg.remove();
    }
    report
}
