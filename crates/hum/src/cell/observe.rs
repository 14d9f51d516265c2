//! What a cell costs right now: its processes, their memory and CPU time.
//! Read from the process table (and the cell's cgroup when it has one);
//! cheap enough to sample every cell every second.

use super::procs::ProcStat;
use serde::Serialize;
use std::time::Duration;

/// One observation of one cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CellSample {
    pub cell_id: String,
    /// Running processes of the tree, the leader first.
    pub pids: Vec<i32>,
    /// Resident memory of all of them.
    pub rss_bytes: u64,
    /// CPU time (user + system) of all of them.
    pub cpu_ms: u64,
    pub age_ms: u64,
    /// Processes the kernel's OOM killer ended in the cell so far.
    pub oom_kills: u64,
}

/// Sums the members of one cell into a sample.
pub fn summarize(
    cell_id: &str,
    leader: i32,
    mut members: Vec<ProcStat>,
    age: Duration,
) -> CellSample {
    members.sort_by_key(|s| (s.pid != leader, s.pid));
    members.dedup_by_key(|s| s.pid);
    CellSample {
        cell_id: cell_id.to_owned(),
        pids: members.iter().map(|s| s.pid).collect(),
        rss_bytes: members.iter().map(|s| s.rss_bytes).sum(),
        cpu_ms: members.iter().map(|s| s.cpu_ms).sum(),
        age_ms: age.as_millis() as u64,
        oom_kills: 0,
    }
}
