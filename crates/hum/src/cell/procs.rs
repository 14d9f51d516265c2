//! Reading /proc: who is alive, in which group, carrying which tag.
//!
//! A process is identified by pid **and** start time (field 22 of
//! `/proc/<pid>/stat`), never by pid alone or by command line: a pid can be
//! recycled, and killing by pattern kills healthy strangers.

use rustix::process::Pid;

/// A process as seen once in /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ProcId {
    pub pid: i32,
    /// Clock ticks after boot; with the pid, unique for the life of the boot.
    pub start_time: u64,
}

/// The fields of `/proc/<pid>/stat` hum uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: char,
    pub start_time: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident pages.
    pub rss_pages: u64,
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

pub fn stat(pid: i32) -> Option<ProcStat> {
    let s = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some(ProcStat {
        pid: s.pid,
        ppid: s.ppid,
        pgid: s.pgrp,
        sid: s.session,
        state: s.state,
        start_time: s.starttime,
        cpu_ticks: s.utime + s.stime,
        rss_pages: s.rss,
    })
}

/// Whether this exact process is running (not exited).
pub fn running(id: ProcId) -> bool {
    matches!(stat(id.pid), Some(s) if s.start_time == id.start_time && !s.exited())
}

/// Whether `/proc/<pid>/environ` holds exactly `entry` (`NAME=value`).
/// Exited processes have an empty environ and never match, and so, for an
/// instant, does a process in the middle of exec: callers that must not miss
/// one scan again (the kill rung loops until a scan finds nothing, and group
/// and cgroup signals do not depend on the environ).
pub fn environ_has(pid: i32, entry: &[u8]) -> bool {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(env) => env.split(|b| *b == 0).any(|kv| kv == entry),
        Err(_) => false,
    }
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Running processes that carry `entry` in their environment or belong to
/// process group `pgid`: the members of a cell that a /proc scan can find.
pub fn scan_members(entry: &[u8], pgid: Option<i32>) -> Vec<ProcStat> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|pid| *pid != me)
        .filter_map(stat)
        .filter(|s| !s.exited())
        .filter(|s| pgid == Some(s.pgid) || environ_has(s.pid, entry))
        .collect()
}

/// Our own children that have exited and wait to be reaped.
pub fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter_map(stat)
        .filter(|s| s.ppid == me && s.state == 'Z')
        .map(|s| s.pid)
        .collect()
}

pub fn pid(raw: i32) -> Option<Pid> {
    Pid::from_raw(raw)
}

pub fn clock_ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

pub fn page_size() -> u64 {
    procfs::page_size()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_stat() {
        let me = stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid as u32, std::process::id());
        assert!(running(me.id()));
        assert!(
            !running(ProcId {
                pid: me.pid,
                start_time: me.start_time + 1
            }),
            "start time must match"
        );
    }

    #[test]
    fn environ_match_is_exact() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("HUM_PROCS_TEST", "abc")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Right after exec the new environ may not be readable yet.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !environ_has(pid, b"HUM_PROCS_TEST=abc") {
            assert!(
                std::time::Instant::now() < deadline,
                "environ never showed the variable"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!environ_has(pid, b"HUM_PROCS_TEST=ab"));
        assert!(scan_members(b"HUM_PROCS_TEST=abc", None)
            .iter()
            .any(|s| s.pid == pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!environ_has(pid, b"HUM_PROCS_TEST=abc"));
    }
}
