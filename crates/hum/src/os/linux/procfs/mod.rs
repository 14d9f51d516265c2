//! The Linux process table: `/proc` read directly, parsed by the `procfs`
//! crate. Start times are clock ticks after boot (10 ms), finer than the
//! portable table's seconds.
//!
//! A scan reads every process on the machine, and a worker scans at every
//! teardown (a herd tears down dozens of cells a second across the
//! workers of a machine). So a scan reads each process's `stat` with one
//! open, and its environment only the first time it sees that
//! environment: the entries the cell layer reads (`HUM_…`) are kept per
//! process, for as long as the process keeps the same environment, which
//! its `stat` names (start time and the address range of the environment
//! block: exec gives a process a new one, so a child seen between fork and
//! exec is read again once it has exec'd).

use crate::os::procs::{Proc, ProcStat, ProcessTable, StartClock, TAG_PREFIX};
use procfs::FromRead;
use std::collections::BTreeMap;
use std::sync::Mutex;

pub(super) static TABLE: ProcFs = ProcFs {
    kept: Mutex::new(BTreeMap::new()),
    #[cfg(test)]
    reads: Mutex::new(BTreeMap::new()),
};

#[derive(Debug)]
pub(super) struct ProcFs {
    /// By pid: the environment's identity and its `HUM_` entries.
    kept: Mutex<BTreeMap<i32, Kept>>,
    /// Environments read from `/proc`, by pid (a test sees the cache work
    /// while other tests scan).
    #[cfg(test)]
    reads: Mutex<BTreeMap<i32, u64>>,
}

/// One process's kept entries, and what says they are still its own.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    identity: EnvIdentity,
    entries: Vec<u8>,
}

/// What names one environment block: the process (pid and start time) and
/// where its environment, its arguments and its code lie. Exec replaces
/// all of them; with address-space randomisation off, the new ones could
/// fall where the old ones were only for the same program with arguments
/// and an environment of the same sizes. `None` when `stat` does not show
/// them (a process we may not trace, or one whose memory is gone because
/// it is exiting): then its entries kept under the same start time stand,
/// else the environment is read every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EnvIdentity {
    start_time: u64,
    env: (u64, u64),
    args: (u64, u64),
    code: (u64, u64),
}

/// The most of one process's `HUM_` entries kept between scans: a cell's
/// tags are two ids, well under this; a process with more is read at
/// every scan instead (as every process was before anything was kept).
const MAX_KEPT_BYTES: usize = 1024;

/// `stat`'s flag of a kernel thread (`include/linux/sched.h`).
const PF_KTHREAD: u32 = 0x0020_0000;

impl EnvIdentity {
    /// What every kernel thread's (empty) environment is kept under.
    const KERNEL: EnvIdentity = EnvIdentity {
        start_time: 0,
        env: (0, 0),
        args: (0, 0),
        code: (0, 0),
    };
}

fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// `stat` of `pid`, read with one open, and the identity of its
/// environment when the kernel shows it.
fn read_stat(pid: i32) -> Option<StatLine> {
    use std::io::Read;
    // One read of a buffer the line fits in: `std::fs::read` would ask the
    // file's size first (procfs says 0) and read again to see the end.
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; STAT_LINE];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let mut line = if len < buf.len() {
        parse_stat(&buf[..len])?
    } else {
        // A longer line than any kernel writes today: read the rest.
        let mut whole = buf.to_vec();
        file.read_to_end(&mut whole).ok()?;
        parse_stat(&whole)?
    };
    if line.leader_exited {
        // The leader shows no memory: the process's is a live thread's.
        line.stat.rss_bytes = threads_of(pid)
            .filter_map(|tid| std::fs::read(format!("/proc/{pid}/task/{tid}/stat")).ok())
            .filter_map(|b| parse_stat(&b))
            .map(|t| t.stat.rss_bytes)
            .find(|rss| *rss > 0)
            .unwrap_or(0);
    }
    Some(line)
}

/// The most threads of one process a scan reads through (a leader that
/// exited early leaves its process to be read through a live thread): a
/// process of thousands of threads costs no more than this.
const THREADS_TRIED: usize = 8;

/// Thread ids of `pid`, at most [`THREADS_TRIED`].
fn threads_of(pid: i32) -> impl Iterator<Item = i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .take(THREADS_TRIED)
}

/// Room for a `stat` line: 52 numbers of at most 20 digits and a command
/// name of at most 64 bytes, escaped, fit in 1.2 KiB.
const STAT_LINE: usize = 2048;

/// What a scan takes from one process's `stat`.
#[derive(Debug, Clone, Copy)]
struct StatLine {
    stat: ProcStat,
    /// Its environment's identity, when the kernel shows it.
    identity: Option<EnvIdentity>,
    /// Its first thread has exited while others run on: the process
    /// lives, but its environment is read through a live thread (the
    /// leader has no memory left to show).
    leader_exited: bool,
}

/// A `stat` line: the process, and the identity of its environment.
fn parse_stat(bytes: &[u8]) -> Option<StatLine> {
    let s = procfs::process::Stat::from_read(bytes).ok()?;
    let ticks = procfs::ticks_per_second().max(1);
    // A kernel thread has no environment to read.
    let identity = match (s.env_start, s.env_end) {
        _ if s.flags & PF_KTHREAD != 0 => Some(EnvIdentity::KERNEL),
        // Zero when the kernel hides them (no right to trace the process)
        // or the process has no memory left (exiting).
        (Some(a), Some(b)) if a != 0 && b > a => Some(EnvIdentity {
            start_time: s.starttime,
            env: (a, b),
            args: (s.arg_start.unwrap_or(0), s.arg_end.unwrap_or(0)),
            code: (s.startcode, s.endcode),
        }),
        _ => None,
    };
    // A leader that exits before its other threads shows `Z` while the
    // process runs on in them; `num_threads` still counts the leader
    // until the last thread is gone, so a true zombie has 1.
    let leader_exited = s.state == 'Z' && s.num_threads > 1;
    let stat = ProcStat {
        pid: s.pid,
        ppid: s.ppid,
        pgid: s.pgrp,
        sid: s.session,
        // Alive, whatever its leader's state: it must be found and killed.
        state: if leader_exited { 'S' } else { s.state },
        start_time: s.starttime,
        cpu_ms: (s.utime + s.stime) * 1000 / ticks,
        rss_bytes: s.rss * procfs::page_size(),
    };
    Some(StatLine {
        stat,
        identity,
        leader_exited,
    })
}

/// The entries of `environ` that begin with [`TAG_PREFIX`], NUL-separated:
/// the cell layer's tags and nothing else (a scan keeps no secrets, and
/// what it keeps per process stays a few dozen bytes).
fn kept_entries(environ: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for kv in environ.split(|b| *b == 0) {
        if kv.starts_with(TAG_PREFIX) {
            out.extend_from_slice(kv);
            out.push(0);
        }
    }
    out
}

impl ProcFs {
    /// `pid`'s environment; through one of its live threads when its
    /// leader has exited (the leader's own file is empty then).
    fn read_environ(&self, pid: i32, leader_exited: bool) -> Option<Vec<u8>> {
        #[cfg(test)]
        {
            *self.reads.lock().expect("reads").entry(pid).or_default() += 1;
        }
        if leader_exited {
            // Every thread, the leader's id too: a thread that execs takes
            // it over (its own file reads empty while it is a zombie).
            for tid in threads_of(pid) {
                match std::fs::read(format!("/proc/{pid}/task/{tid}/environ")) {
                    Ok(e) if !e.is_empty() => return Some(e),
                    // Another user's: none of its threads is readable.
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => break,
                    _ => {}
                }
            }
        }
        std::fs::read(format!("/proc/{pid}/environ")).ok()
    }

    /// The `HUM_` entries of `pid`'s environment: kept ones while its
    /// environment is the one they were read from, else read now.
    fn tags(&self, pid: i32, line: &StatLine) -> Vec<u8> {
        let identity = line.identity;
        {
            let kept = self.kept.lock().expect("kept environments");
            let kept = kept.get(&pid);
            match identity {
                Some(EnvIdentity::KERNEL) => return Vec::new(),
                Some(id) => {
                    if let Some(k) = kept.filter(|k| k.identity == id) {
                        return k.entries.clone();
                    }
                }
                // No memory shown: a process in the last moments of its
                // exit (its memory released, not yet a zombie: a SIGKILLed
                // process freeing a large heap stays so for tens of ms)
                // reads as an empty environment. It is still the process
                // whose tags were kept, and is counted until it is a
                // zombie, or a teardown would call it gone early.
                None => {
                    if let Some(k) = kept.filter(|k| k.identity.start_time == line.stat.start_time)
                    {
                        return k.entries.clone();
                    }
                }
            }
        }
        let environ = self
            .read_environ(pid, line.leader_exited)
            .unwrap_or_default();
        let entries = kept_entries(&environ);
        // An empty read is a process we may not read, or one between
        // fork and exec whose block is being replaced: not kept, read
        // again next time. Nor are tags past any a cell carries: a
        // process may not make the table hold its environment.
        if let (Some(identity), false, true) = (
            identity,
            environ.is_empty(),
            entries.len() <= MAX_KEPT_BYTES,
        ) {
            self.kept.lock().expect("kept environments").insert(
                pid,
                Kept {
                    identity,
                    entries: entries.clone(),
                },
            );
        }
        entries
    }

    /// Forgets the processes a listing no longer has.
    fn forget_all_but(&self, listed: &[i32]) {
        let listed: std::collections::BTreeSet<i32> = listed.iter().copied().collect();
        self.kept
            .lock()
            .expect("kept environments")
            .retain(|pid, _| listed.contains(pid));
    }
}

impl ProcessTable for ProcFs {
    fn name(&self) -> &'static str {
        "procfs"
    }

    fn clock(&self) -> StartClock {
        StartClock::BootTicks
    }

    fn stat(&self, pid: i32) -> Option<ProcStat> {
        read_stat(pid).map(|l| l.stat)
    }

    fn environ(&self, pid: i32) -> Option<Vec<u8>> {
        match self.read_environ(pid, false) {
            Some(e) if !e.is_empty() => Some(e),
            // Empty or gone: its `stat` says whether a live thread holds
            // it (a leader that exited first).
            own if read_stat(pid).is_some_and(|l| l.leader_exited) => {
                self.read_environ(pid, true).or(own)
            }
            own => own,
        }
    }

    /// With `environ`, each process's environment holds its `HUM_` entries
    /// only (all a scan looks for).
    fn snapshot(&self, environ: bool) -> Vec<Proc> {
        let pids = all_pids();
        let procs = pids
            .iter()
            .filter_map(|&pid| {
                let line = read_stat(pid)?;
                let environ = if environ && !line.stat.exited() {
                    self.tags(pid, &line)
                } else {
                    Vec::new()
                };
                Some(Proc {
                    stat: line.stat,
                    environ,
                })
            })
            .collect();
        if environ {
            self.forget_all_but(&pids);
        }
        procs
    }
}

#[cfg(test)]
mod tests;
