//! Unclaimed children: the worker's children that are no cell's leader,
//! no sentinel, and no cell's member by any mark.
//!
//! The worker starts no process of its own but cells and their sentinel,
//! and it is the child subreaper: a process whose parent died comes back
//! to it. Any other child is an orphan of some cell. Most carry their
//! cell's tag, sit in its process group or its cgroup, and are found as
//! its members. One that cleared its environment, took a session of its
//! own and wrote itself out of its cell's cgroup, and whose parent then
//! died, is found by none of those: no scan names it, and it would
//! outlive every cell. Such a child is unclaimed, counted a member of
//! every teardown's tree, so the first teardown after it was orphaned
//! ends it.
//!
//! Which cell it left cannot be known. One of a cell still running is
//! ended too: it left every mark of its cell on purpose.
//!
//! A cell's leader is a child too, between its fork and the moment it is
//! protected, and in that window it carries the worker's environment, not
//! its tag. Forks and their protection happen under [`SPAWNING`], which a
//! check takes after its scan: a leader forked before the scan is
//! protected by the time the check reads the set.

use super::procs::{Proc, ProcStat};
use std::path::PathBuf;
use std::sync::Mutex;

/// Held while a child of the cell layer is forked and protected.
static SPAWNING: Mutex<()> = Mutex::new(());

/// Starts a child of this process with `fork` and protects it (by the
/// pid `pid_of` reads), both under [`SPAWNING`].
pub(super) fn fork_protected<T>(
    fork: impl FnOnce() -> std::io::Result<T>,
    pid_of: impl FnOnce(&T) -> u32,
) -> std::io::Result<T> {
    let _forks = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    let child = fork()?;
    super::protected()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid_of(&child) as i32);
    Ok(child)
}

/// How this process tells its unclaimed children from its cells' members.
#[derive(Debug, Clone)]
pub(super) struct Unclaimed {
    /// The directory holding one cgroup per cell, if cells have them: a
    /// child in one of those is that cell's, ended with it.
    pub(super) cells_root: Option<PathBuf>,
}

impl Unclaimed {
    /// The unclaimed children of a layer told to end them, when this
    /// process is the subreaper (else orphans go to init, not to it).
    pub(super) fn of(end: bool, containment: &super::Containment) -> Option<Unclaimed> {
        (end && containment.subreaper).then(|| Unclaimed {
            cells_root: containment.cgroup.as_ref().map(|c| c.dir().to_path_buf()),
        })
    }

    /// This process's children in `scan` that no cell can claim.
    pub(super) fn among(&self, scan: &[Proc]) -> Vec<ProcStat> {
        let me = std::process::id() as i32;
        let cell_entry = format!("{}=", super::tag::CELL_VAR);
        let candidates: Vec<ProcStat> = scan
            .iter()
            .filter(|p| p.stat.ppid == me && !p.stat.exited())
            .filter(|p| {
                !p.environ
                    .split(|b| *b == 0)
                    .any(|kv| kv.starts_with(cell_entry.as_bytes()))
            })
            .map(|p| p.stat)
            .collect();
        if candidates.is_empty() {
            return candidates;
        }
        let protected = {
            let _forks = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
            super::protected()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        let in_cells: Vec<i32> = match &self.cells_root {
            Some(root) => std::fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .flat_map(|e| super::cgroup::pids_in(&e.path()))
                .collect(),
            None => Vec::new(),
        };
        candidates
            .into_iter()
            .filter(|s| {
                !protected.contains(&s.pid)
                    && !protected.contains(&s.pgid)
                    && !in_cells.contains(&s.pid)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::procs::ProcStat;

    fn child(pid: i32, pgid: i32, environ: &[u8]) -> Proc {
        Proc {
            stat: ProcStat {
                pid,
                ppid: std::process::id() as i32,
                pgid,
                sid: pgid,
                state: 'S',
                start_time: 1,
                cpu_ms: 0,
                rss_bytes: 0,
            },
            environ: environ.to_vec(),
        }
    }

    #[test]
    fn only_an_unprotected_untagged_child_outside_any_cells_group_is_unclaimed() {
        // Pids no real process of this test has: protected ones are kept
        // in a process-wide set.
        let (leader, orphan, tagged, grouped, other) =
            (2_000_001, 2_000_002, 2_000_003, 2_000_004, 2_000_005);
        super::super::protected().lock().unwrap().insert(leader);
        let mut foreign = child(other, other, b"");
        foreign.stat.ppid = 1;
        let mut zombie = child(2_000_006, 2_000_006, b"");
        zombie.stat.state = 'Z';
        let scan = vec![
            child(leader, leader, b"PATH=/bin\0"),
            child(orphan, orphan, b"PATH=/bin\0HUM_OTHER=1\0"),
            child(tagged, tagged, b"HUM_CELL=abc-1\0"),
            child(grouped, leader, b""),
            foreign,
            zombie,
        ];
        let found: Vec<i32> = Unclaimed { cells_root: None }
            .among(&scan)
            .iter()
            .map(|s| s.pid)
            .collect();
        super::super::protected().lock().unwrap().remove(&leader);
        assert_eq!(found, vec![orphan]);
    }
}
