//! What a cell costs right now: its processes, their memory and CPU time.
//! Read from /proc (and the cell's cgroup when it has one); cheap enough to
//! sample every cell every second.

use super::procs::{self, ProcStat};
use serde::Serialize;
use std::collections::HashMap;
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
    let ticks = procs::clock_ticks_per_second().max(1);
    let page = procs::page_size();
    CellSample {
        cell_id: cell_id.to_owned(),
        pids: members.iter().map(|s| s.pid).collect(),
        rss_bytes: members.iter().map(|s| s.rss_pages * page).sum(),
        cpu_ms: members.iter().map(|s| s.cpu_ticks).sum::<u64>() * 1000 / ticks,
        age_ms: age.as_millis() as u64,
    }
}

/// One pass over /proc grouping every running process by the value of
/// `var` in its environment: how many cells are sampled at once for the cost
/// of one scan.
pub fn scan_by_tag(var: &str) -> HashMap<String, Vec<ProcStat>> {
    let prefix = format!("{var}=");
    let mut by_tag: HashMap<String, Vec<ProcStat>> = HashMap::new();
    for pid in procs::all_pids() {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(value) = env
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        if let Some(s) = procs::stat(pid).filter(|s| !s.exited()) {
            by_tag.entry(value).or_default().push(s);
        }
    }
    by_tag
}
