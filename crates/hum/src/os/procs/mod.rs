//! The process table: who is alive, in which group, carrying which tag.
//!
//! A process is identified by pid **and** start time, never by pid alone or
//! by command line: a pid can be recycled, and killing by pattern kills
//! healthy strangers.
//!
//! Two tables sit behind one interface ([`ProcessTable`]): `/proc` read
//! directly (Linux, `os/linux/procfs.rs`) and the portable one (`portable.rs`,
//! the `sysinfo` crate: `/proc` on Linux, libproc and `sysctl` on macOS).
//! [`Procs`] is what the rest of the cell layer holds: the table chosen at
//! start plus whether pidfds may be used, passed by value wherever a process
//! is looked at or signalled.

mod coalesce;
mod portable;

use crate::os;
use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How the names of the environment entries that tag processes begin:
/// all a scan promises to read of an environment.
pub const TAG_PREFIX: &[u8] = b"HUM_";

/// A process as seen once in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    /// In the table's [`StartClock`]; with the pid, unique for the life of
    /// the boot.
    pub start_time: u64,
}

/// What a table's start times count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartClock {
    /// Clock ticks after boot (field 22 of `/proc/<pid>/stat`; 10 ms).
    #[default]
    BootTicks,
    /// Seconds since the epoch, as libproc and `sysinfo` give them. A pid
    /// is recycled only after the kernel has handed out every other one
    /// (99,999 on macOS, 4 million on Linux), which no machine does within a
    /// second, so the pair stays unique.
    UnixSeconds,
}

/// One process as the cell layer uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// `Z` for a zombie, `X` for dead, anything else for running.
    pub state: char,
    pub start_time: u64,
    /// User plus system CPU time.
    pub cpu_ms: u64,
    /// Resident memory.
    pub rss_bytes: u64,
}

impl StartClock {
    /// Whether two start times of one pid name the same process. Boot ticks
    /// are exact. Seconds since the epoch are derived from the boot time,
    /// which moves by a second when the wall clock is stepped or slewed
    /// across a second boundary (Linux computes it from the wall clock),
    /// so they may differ by one; a pid is not handed out twice within two
    /// seconds (see [`StartClock::UnixSeconds`]).
    pub fn same_start(self, a: u64, b: u64) -> bool {
        match self {
            StartClock::BootTicks => a == b,
            StartClock::UnixSeconds => a.abs_diff(b) <= 1,
        }
    }
}

impl ProcStat {
    pub fn id(&self) -> ProcId {
        ProcId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// Exited, whether or not reaped yet: a zombie has left everything but
    /// its exit status behind.
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// A process with its environment (NUL-separated `NAME=value` entries; empty
/// when unreadable: another user's, exited, or in the middle of exec).
#[derive(Debug, Clone)]
pub struct Proc {
    pub stat: ProcStat,
    pub environ: Vec<u8>,
}

/// A source of process facts. Implementations read the OS; everything the
/// cell layer concludes from them is written once, in [`Procs`].
pub trait ProcessTable: Send + Sync + std::fmt::Debug {
    /// How status output names it.
    fn name(&self) -> &'static str;
    fn clock(&self) -> StartClock;
    fn stat(&self, pid: i32) -> Option<ProcStat>;
    fn environ(&self, pid: i32) -> Option<Vec<u8>>;
    /// Every process, with its environment when `environ` is set: at
    /// least every entry beginning with [`TAG_PREFIX`] (a table may leave
    /// out the rest).
    fn snapshot(&self, environ: bool) -> Vec<Proc>;
}

/// How the cell layer sees and touches processes: the table chosen at start,
/// and whether pidfds may be used to signal and watch them.
#[derive(Debug, Clone, Copy)]
pub struct Procs {
    table: &'static dyn ProcessTable,
    pidfd: bool,
    /// Scans with environments, shared by callers that ask at once.
    scans: &'static Scans,
}

type Scans = coalesce::Coalesced<Vec<Proc>>;

/// The shared scans of each table.
static NATIVE_SCANS: Scans = Scans::new();
static PORTABLE_SCANS: Scans = Scans::new();

impl Procs {
    /// The portable floor: the `sysinfo` table, plain `kill` after a start
    /// time check. What macOS gets, and what `HUM_CONTAINMENT=portable`
    /// forces on Linux.
    pub fn portable() -> Procs {
        Procs {
            table: &portable::TABLE,
            pidfd: false,
            scans: &PORTABLE_SCANS,
        }
    }

    /// The best this OS offers: on Linux `/proc` and pidfds (when the kernel
    /// has them); elsewhere the portable floor.
    pub fn native() -> Procs {
        match os::native_table() {
            Some(table) => Procs {
                table,
                pidfd: os::pidfd_available(),
                scans: &NATIVE_SCANS,
            },
            None => Procs::portable(),
        }
    }

    pub fn table_name(&self) -> &'static str {
        self.table.name()
    }

    pub fn clock(&self) -> StartClock {
        self.table.clock()
    }

    /// Whether leaders are watched and processes signalled through pidfds.
    pub fn uses_pidfd(&self) -> bool {
        self.pidfd
    }

    pub fn stat(&self, pid: i32) -> Option<ProcStat> {
        self.table.stat(pid)
    }

    /// Whether this exact process is running (not exited).
    pub fn running(&self, id: ProcId) -> bool {
        matches!(self.stat(id.pid), Some(s) if self.clock().same_start(s.start_time, id.start_time) && !s.exited())
    }

    /// Whether the environment of `pid` holds exactly `entry` (`NAME=value`).
    /// Exited processes have an empty environment and never match, and so,
    /// for an instant, does a process in the middle of exec: callers that
    /// must not miss one scan again (the kill rung loops until a scan finds
    /// nothing, and group and cgroup signals do not depend on the environ).
    pub fn environ_has(&self, pid: i32, entry: &[u8]) -> bool {
        self.table
            .environ(pid)
            .is_some_and(|env| has_entry(&env, entry))
    }

    /// Running processes that carry `entry` in their environment or belong
    /// to process group `pgid`, and every descendant of those: the members
    /// of a cell a scan can find. The parent chain catches a process that
    /// cleared its environment and left the group, as long as its parent is
    /// a member still (once orphaned it is reparented out of the chain:
    /// where the OS has cgroups they catch it anyway).
    pub fn scan_members(&self, entry: &[u8], pgid: Option<i32>) -> Vec<ProcStat> {
        members_in(&self.tagged_scan(), entry, pgid)
    }

    /// Every process with its tags, as a scan that began after this call
    /// saw them (shared with whoever asked while the last one ran).
    pub fn tagged_scan(&self) -> std::sync::Arc<Vec<Proc>> {
        self.scans.get(|| self.table.snapshot(true))
    }

    /// Every process with its tags, in a scan of the caller's own, shared
    /// with nobody: for a caller at low priority, whom the shared scans'
    /// other callers must not wait for.
    pub fn fresh_tagged_scan(&self) -> std::sync::Arc<Vec<Proc>> {
        std::sync::Arc::new(self.table.snapshot(true))
    }

    /// One pass grouping every running process by the value of `var` in its
    /// environment: how many cells are sampled for the cost of one scan.
    pub fn scan_by_tag(&self, var: &str) -> HashMap<String, Vec<ProcStat>> {
        by_tag(&self.tagged_scan(), var)
    }

    /// Our own children that have exited and wait to be reaped.
    pub fn zombie_children(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        self.table
            .snapshot(false)
            .into_iter()
            .filter(|p| p.stat.ppid == me && p.stat.state == 'Z')
            .map(|p| p.stat.pid)
            .collect()
    }

    /// Signals the process `id` names, if it is still that process. With
    /// pidfds the descriptor is opened first and the start time checked
    /// after, so a recycled pid is never signalled. Without them the check
    /// comes first and the signal a moment later: the pid would have to be
    /// handed out again in between, after the kernel went through every
    /// other pid (see [`StartClock::UnixSeconds`]).
    pub fn signal_exact(&self, id: ProcId, sig: Signal) -> bool {
        let Some(pid) = pid(id.pid) else {
            return false;
        };
        if self.pidfd {
            if let Some(fd) = os::PidFd::open(pid) {
                return self.running(id) && fd.send_signal(sig).is_ok();
            }
        }
        self.running(id) && rustix::process::kill_process(pid, sig).is_ok()
    }
}

fn has_entry(environ: &[u8], entry: &[u8]) -> bool {
    environ.split(|b| *b == 0).any(|kv| kv == entry)
}

/// The running processes of `scan` by the value of `var` in their
/// environment.
pub fn by_tag(scan: &[Proc], var: &str) -> HashMap<String, Vec<ProcStat>> {
    debug_assert!(
        var.as_bytes().starts_with(TAG_PREFIX),
        "a scan reads only tags"
    );
    let prefix = format!("{var}=");
    let mut by_tag: HashMap<String, Vec<ProcStat>> = HashMap::new();
    for p in scan.iter().filter(|p| !p.stat.exited()) {
        let Some(value) = p
            .environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        by_tag.entry(value).or_default().push(p.stat);
    }
    by_tag
}

pub fn pid(raw: i32) -> Option<Pid> {
    Pid::from_raw(raw)
}

/// The running processes of `scan` that carry `entry` in their environment
/// (none by tag when `entry` is empty) or belong to process group `pgid`,
/// and every descendant of those (see [`Procs::scan_members`]); this
/// process is never one.
pub fn members_in(scan: &[Proc], entry: &[u8], pgid: Option<i32>) -> Vec<ProcStat> {
    debug_assert!(
        entry.is_empty() || entry.starts_with(TAG_PREFIX),
        "a scan reads only tags"
    );
    let me = std::process::id() as i32;
    let running: Vec<&Proc> = scan
        .iter()
        .filter(|p| p.stat.pid != me && !p.stat.exited())
        .collect();
    let mut members: std::collections::HashSet<i32> = running
        .iter()
        .filter(|p| {
            pgid == Some(p.stat.pgid) || (!entry.is_empty() && has_entry(&p.environ, entry))
        })
        .map(|p| p.stat.pid)
        .collect();
    // Descendants, generation by generation, until one adds nobody.
    loop {
        let before = members.len();
        for p in &running {
            if members.contains(&p.stat.ppid) {
                members.insert(p.stat.pid);
            }
        }
        if members.len() == before {
            break;
        }
    }
    running
        .into_iter()
        .filter(|p| members.contains(&p.stat.pid))
        .map(|p| p.stat)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_entry_names_no_member_by_tag() {
        let proc = |pid: i32, pgid: i32, environ: &[u8]| Proc {
            stat: ProcStat {
                pid,
                ppid: 1,
                pgid,
                sid: pgid,
                state: 'S',
                start_time: 1,
                cpu_ms: 0,
                rss_bytes: 0,
            },
            environ: environ.to_vec(),
        };
        // Split on NUL, a trailing one leaves an empty entry behind: it
        // must not match the empty tag.
        let scan = [
            proc(2_000_001, 2_000_001, b"HUM_CELL=\0"),
            proc(2_000_002, 7, b"A=1\0"),
        ];
        assert!(members_in(&scan, b"", None).is_empty());
        let by_group: Vec<i32> = members_in(&scan, b"", Some(7))
            .iter()
            .map(|s| s.pid)
            .collect();
        assert_eq!(by_group, vec![2_000_002]);
        let by_tag: Vec<i32> = members_in(&scan, b"HUM_CELL=", None)
            .iter()
            .map(|s| s.pid)
            .collect();
        assert_eq!(by_tag, vec![2_000_001]);
    }

    fn both() -> [Procs; 2] {
        [Procs::native(), Procs::portable()]
    }

    #[test]
    fn each_table_reads_our_own_process_and_checks_start_time() {
        for procs in both() {
            let me = procs.stat(std::process::id() as i32).unwrap();
            assert_eq!(me.pid as u32, std::process::id(), "{}", procs.table_name());
            assert_eq!(me.ppid as u32, std::os::unix::process::parent_id());
            assert_eq!(
                Some(me.pgid),
                rustix::process::getpgrp().as_raw_nonzero().get().into()
            );
            assert!(me.rss_bytes > 0, "{}: {me:?}", procs.table_name());
            assert!(procs.running(me.id()));
            assert!(
                !procs.running(ProcId {
                    pid: me.pid,
                    start_time: me.start_time + 5
                }),
                "{}: start time must match",
                procs.table_name()
            );
        }
    }

    #[test]
    fn each_table_matches_environ_entries_exactly() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("HUM_PROCS_TEST", "abc")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        for procs in both() {
            // Right after exec the new environ may not be readable yet.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !procs.environ_has(pid, b"HUM_PROCS_TEST=abc") {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{}: environ never showed the variable",
                    procs.table_name()
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(!procs.environ_has(pid, b"HUM_PROCS_TEST=ab"));
            assert!(procs
                .scan_members(b"HUM_PROCS_TEST=abc", None)
                .iter()
                .any(|s| s.pid == pid));
            assert_eq!(
                procs.scan_by_tag("HUM_PROCS_TEST")["abc"]
                    .iter()
                    .map(|s| s.pid)
                    .collect::<Vec<_>>(),
                vec![pid]
            );
        }
        child.kill().unwrap();
        // Unreaped: a zombie child of ours, which both tables see as exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for procs in both() {
            while !procs.zombie_children().contains(&pid) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{}: no zombie",
                    procs.table_name()
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(!procs.environ_has(pid, b"HUM_PROCS_TEST=abc"));
            assert!(procs.stat(pid).unwrap().exited());
        }
        child.wait().unwrap();
    }

    #[test]
    fn the_two_tables_agree_on_who_is_who() {
        // The same process through both: same parent, group and session; the
        // start times in their own clocks.
        let native = Procs::native();
        let portable = Procs::portable();
        let me = std::process::id() as i32;
        let (a, b) = (native.stat(me).unwrap(), portable.stat(me).unwrap());
        assert_eq!(
            (a.pid, a.ppid, a.pgid, a.sid),
            (b.pid, b.ppid, b.pgid, b.sid)
        );
        assert_eq!(portable.clock(), StartClock::UnixSeconds);
        assert!(StartClock::UnixSeconds.same_start(b.start_time, b.start_time + 1));
        assert!(!StartClock::UnixSeconds.same_start(b.start_time, b.start_time + 2));
        assert!(!StartClock::BootTicks.same_start(a.start_time, a.start_time + 1));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(b.start_time <= now && b.start_time + 3600 > now, "{b:?}");
    }
}
