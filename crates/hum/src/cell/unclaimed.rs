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
//! outlive every cell. Such a child is unclaimed: counted a member of
//! every teardown's tree (and swept once at the layer's shutdown), so the
//! first teardown after it was orphaned ends it.
//!
//! Which cell it left cannot be known. One of a cell still running is
//! ended too: it left every mark of its cell on purpose.
//!
//! A cell's leader is a child too, between its fork and the moment it is
//! protected, and in that window it carries the worker's environment, not
//! its tag. Forks and their protection happen under [`SPAWNING`], which a
//! check takes after its scan: a leader forked before the scan is
//! protected by the time the check reads the set.

use super::procs::{Proc, ProcStat, Procs};
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
        let candidates: Vec<ProcStat> = scan
            .iter()
            .filter(|p| p.stat.ppid == me && !p.stat.exited() && !cells(&p.environ))
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
        unclaimed_in(scan, candidates, &protected, &in_cells)
            .into_iter()
            // One this process may not signal (another user's, after a
            // setuid exec) would hold every teardown at its kill rung.
            .filter(|s| may_signal(s.pid))
            .filter(|s| untagged_now(s.pid))
            .collect()
    }
}

impl super::Cells {
    /// At the layer's shutdown: the unclaimed children now, waited for.
    pub(super) async fn end_unclaimed(&self) {
        if let Some(unclaimed) =
            Unclaimed::of(self.config.end_unclaimed_children, &self.containment)
        {
            sweep(&unclaimed, self.containment.procs, self.config.grace).await;
        }
    }
}

/// The ladder over the unclaimed children alone: a tree with no tag, no
/// group, no cgroup and no leader.
async fn sweep(unclaimed: &Unclaimed, procs: Procs, grace: super::teardown::Grace) {
    use super::teardown::{ladder, LeaderRef, NoStdin, Proof, Reason, Tree};
    let tree = Tree {
        leader: LeaderRef::Foreign(None),
        pgid: None,
        cgroup: None,
        tag: &[],
        procs,
        proof: Proof::Scanned,
        unclaimed: Some(unclaimed),
    };
    let report = ladder::<NoStdin>("unclaimed", &tree, None, grace, Reason::Cleanup).await;
    if !report.signalled.is_empty() {
        tracing::warn!(event = "cell.unclaimed.ended", pids = ?report.signalled, rung = %report.rung,
            complete = report.complete, "children no cell claims (they left every mark of their cell) were ended");
    }
}

/// Of `candidates` (children of this process without a cell's tag, in
/// `scan`), those neither `protected` (leaders, sentinels), in a group a
/// cell's leader leads, nor in a cell's cgroup (`in_cells`).
fn unclaimed_in(
    scan: &[Proc],
    candidates: Vec<ProcStat>,
    protected: &std::collections::HashSet<i32>,
    in_cells: &[i32],
) -> Vec<ProcStat> {
    // A group a cell's leader leads: the leader carries its cell's tag,
    // or is a zombie the layer keeps unreaped. (The sentinel is protected
    // too and leads a group of its own: a process that joined it must not
    // pass for a cell's.)
    let cells_group = |pgid: i32| {
        protected.contains(&pgid)
            && scan
                .iter()
                .find(|p| p.stat.pid == pgid)
                .is_some_and(|l| l.stat.exited() || cells(&l.environ))
    };
    candidates
        .into_iter()
        .filter(|s| {
            !protected.contains(&s.pid) && !cells_group(s.pgid) && !in_cells.contains(&s.pid)
        })
        .collect()
}

/// Whether `pid`'s environment, read again now, carries no cell's tag. A
/// cell's process in the middle of an exec shows an empty one for a
/// moment, which the scan may have caught. One this process may not read
/// (not dumpable, as ssh-agent makes itself) may carry a tag: claimed.
/// One that is exiting (its memory gone: the read fails with ESRCH until
/// it is a zombie) or gone is not: it counts until it is a zombie.
fn untagged_now(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(environ) => !cells(&environ),
        Err(e) => e.kind() != std::io::ErrorKind::PermissionDenied,
    }
}

/// Whether `environ` carries a cell's tag.
fn cells(environ: &[u8]) -> bool {
    let entry = super::tag::CELL_VAR.as_bytes();
    environ
        .split(|b| *b == 0)
        .any(|kv| kv.len() > entry.len() && kv.starts_with(entry) && kv[entry.len()] == b'=')
}

/// Whether this process may signal `pid` (read from its status).
fn may_signal(pid: i32) -> bool {
    let (ruid, euid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::geteuid().as_raw(),
    );
    euid == 0
        || std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|status| permits(&status, ruid, euid))
}

/// Whether a sender of real and effective uids `ruid`, `euid` (not root)
/// may signal the process whose `/proc/<pid>/status` is `status`: when
/// either is the target's real or saved uid (kill(2)).
fn permits(status: &str, ruid: u32, euid: u32) -> bool {
    let ids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let (Some(&real), Some(&saved)) = (ids.first(), ids.get(2)) else {
        return false;
    };
    [ruid, euid].iter().any(|me| *me == real || *me == saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(pid: i32, pgid: i32, environ: &[u8]) -> Proc {
        Proc {
            stat: ProcStat {
                pid,
                ppid: 7,
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
    fn only_a_child_no_leader_group_or_cgroup_of_a_cell_claims_is_unclaimed() {
        let (leader, gone_leader, sentinel) = (10, 11, 12);
        let mut zombie = child(gone_leader, gone_leader, b"");
        zombie.stat.state = 'Z';
        let scan = vec![
            child(leader, leader, b"HUM_CELL=abc-1\0"),
            zombie,
            child(sentinel, sentinel, b"HUM_WORKER_INSTANCE=w\0"),
            // In a live leader's group, in a zombie leader's group.
            child(20, leader, b""),
            child(21, gone_leader, b""),
            // In the sentinel's group: no cell's, whatever it joined.
            child(22, sentinel, b""),
            // A session of its own; the same in a cell's cgroup.
            child(23, 23, b"PATH=/bin\0HUM_OTHER=1\0"),
            child(24, 24, b""),
        ];
        let protected = [leader, gone_leader, sentinel].into_iter().collect();
        let candidates = scan[3..].iter().map(|p| p.stat).collect();
        let found: Vec<i32> = unclaimed_in(&scan, candidates, &protected, &[24])
            .iter()
            .map(|s| s.pid)
            .collect();
        assert_eq!(found, vec![22, 23]);
    }

    #[test]
    fn a_cells_tag_is_its_name_and_an_equals_sign() {
        assert!(cells(b"PATH=/bin\0HUM_CELL=abc-1\0"));
        assert!(!cells(b"HUM_CELLAR=1\0HUM_CELL\0"));
        assert!(!cells(b""));
    }

    /// (state, whether its environment's start, field 50, reads 0) from
    /// `stat`.
    fn state_and_memoryless(pid: i32) -> Option<(char, bool)> {
        let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = line.rsplit_once(") ")?.1.split(' ').collect();
        Some((fields[0].chars().next()?, fields.get(47) == Some(&"0")))
    }

    #[test]
    fn an_exiting_child_whose_environment_cannot_be_read_is_not_taken_for_claimed() {
        // A SIGKILLed process freeing a large heap: until it is a zombie
        // its environment's read fails (ESRCH). It must still count.
        for _ in 0..10 {
            let mut dd = std::process::Command::new("dd")
                .args(["if=/dev/zero", "bs=1G", "count=2", "status=none"])
                .env_clear()
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("dd (the test needs it)");
            let pid = dd.id() as i32;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while Procs::native().stat(pid).map_or(0, |s| s.rss_bytes) < (1 << 30) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "dd never filled its buffer"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            dd.kill().unwrap();
            let mut seen = 0;
            while let Some((state, memoryless)) = state_and_memoryless(pid) {
                if state == 'Z' {
                    break;
                }
                if memoryless {
                    seen += 1;
                    assert!(untagged_now(pid), "an exiting child taken for claimed");
                }
            }
            dd.wait().unwrap();
            if seen > 0 {
                return;
            }
        }
        panic!("never saw the exit's memoryless moment in 10 rounds");
    }

    #[test]
    fn a_process_may_be_signalled_by_its_real_or_saved_uid_only() {
        let status = |ids: &str| format!("Name:\tx\nUid:\t{ids}\nGid:\t0\t0\t0\t0\n");
        // Ours.
        assert!(permits(&status("1000\t1000\t1000\t1000"), 1000, 1000));
        // A setuid-root program we started: its real uid is still ours.
        assert!(permits(&status("1000\t0\t0\t0"), 1000, 1000));
        // sudo -b: every uid root's.
        assert!(!permits(&status("0\t0\t0\t0"), 1000, 1000));
        // Another user's.
        assert!(!permits(&status("1001\t1001\t1001\t1001"), 1000, 1000));
        assert!(!permits("Name:\tx\n", 1000, 1000), "no Uid line: no");
        assert!(may_signal(std::process::id() as i32));
    }
}
