//! The portable process table, through the `sysinfo` crate: `/proc` on
//! Linux, libproc and `sysctl(KERN_PROCARGS2)` on macOS (another same-user
//! process's environment included, so the tag still finds setsid escapees).
//! The process group is not in `sysinfo`; POSIX `getpgid` gives it on both
//! (called through libc: kernel threads have group 0, which rustix refuses).
//!
//! A `sysinfo::System` keeps what it read last; scans run on many blocking
//! threads at once (every teardown polls its tree), so each takes a `System`
//! from a small pool instead of queueing on one.

use super::{Proc, ProcStat, ProcessTable, StartClock};
use std::sync::Mutex;
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

/// Readers kept for reuse; more may exist while scans overlap, and those
/// past this many are dropped when done.
const POOL: usize = 4;

/// The table. A static: the pool starts empty and fills on use.
pub(super) static TABLE: Sysinfo = Sysinfo {
    pool: Mutex::new(Vec::new()),
};

pub(super) struct Sysinfo {
    pool: Mutex<Vec<System>>,
}

impl std::fmt::Debug for Sysinfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sysinfo")
    }
}

impl Sysinfo {
    /// Runs `f` with a reader refreshed for `which`.
    fn with<T>(
        &self,
        which: ProcessesToUpdate<'_>,
        environ: bool,
        f: impl FnOnce(&System) -> T,
    ) -> Option<T> {
        let taken = self.pool.lock().expect("sysinfo pool").pop();
        let mut sys = match taken {
            Some(s) => s,
            None => System::new().ok()?,
        };
        let mut kind = ProcessRefreshKind::nothing()
            .with_memory()
            .with_cpu()
            .without_tasks();
        if environ {
            // Always: an environment read mid-exec is empty and must be read
            // again next time, not kept.
            kind = kind.with_environ(UpdateKind::Always);
        }
        sys.refresh_processes_specifics(which, true, kind);
        let out = f(&sys);
        let mut pool = self.pool.lock().expect("sysinfo pool");
        if pool.len() < POOL {
            pool.push(sys);
        }
        Some(out)
    }
}

fn stat_of(p: &sysinfo::Process) -> ProcStat {
    let pid = p.pid().as_u32() as i32;
    // SAFETY: getpgid takes a plain integer and touches no memory of ours;
    // -1 (gone, or not ours to ask) reads as no group.
    let pgid = unsafe { libc::getpgid(pid) }.max(0);
    ProcStat {
        pid,
        ppid: p.parent().map_or(0, |p| p.as_u32() as i32),
        pgid,
        sid: p.session_id().map_or(0, |s| s.as_u32() as i32),
        state: match p.status() {
            ProcessStatus::Zombie => 'Z',
            ProcessStatus::Dead => 'X',
            _ => 'R',
        },
        start_time: p.start_time(),
        cpu_ms: p.accumulated_cpu_time(),
        rss_bytes: p.memory(),
    }
}

/// The environment as last read. `sysinfo` keeps a process's previous
/// environment when a new read comes back empty (it does for an exited
/// process), so an exited process is given none here, as `/proc` gives.
fn environ_of(p: &sysinfo::Process) -> Vec<u8> {
    if matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for kv in p.environ() {
        out.extend_from_slice(kv.as_encoded_bytes());
        out.push(0);
    }
    out
}

impl ProcessTable for Sysinfo {
    fn name(&self) -> &'static str {
        "portable (sysinfo)"
    }

    fn clock(&self) -> StartClock {
        StartClock::UnixSeconds
    }

    fn stat(&self, pid: i32) -> Option<ProcStat> {
        let pid = Pid::from_u32(u32::try_from(pid).ok()?);
        self.with(ProcessesToUpdate::Some(&[pid]), false, |sys| {
            sys.process(pid).map(stat_of)
        })?
    }

    fn environ(&self, pid: i32) -> Option<Vec<u8>> {
        let pid = Pid::from_u32(u32::try_from(pid).ok()?);
        self.with(ProcessesToUpdate::Some(&[pid]), true, |sys| {
            sys.process(pid).map(environ_of)
        })?
    }

    fn snapshot(&self, environ: bool) -> Vec<Proc> {
        self.with(ProcessesToUpdate::All, environ, |sys| {
            sys.processes()
                .values()
                .map(|p| Proc {
                    stat: stat_of(p),
                    environ: if environ { environ_of(p) } else { Vec::new() },
                })
                .collect()
        })
        .unwrap_or_default()
    }
}
