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
/// them (a process we may not trace): then the environment is read every
/// time.
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
        if let Some(id) = identity {
            if id == EnvIdentity::KERNEL {
                return Vec::new();
            }
            let kept = self.kept.lock().expect("kept environments");
            if let Some(k) = kept.get(&pid).filter(|k| k.identity == id) {
                return k.entries.clone();
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
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A child of the test, killed and reaped however the test ends.
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A table of the test's own: other tests' scans (through the shared
    /// one) cannot forget what this one kept.
    fn own_table() -> ProcFs {
        ProcFs {
            kept: Mutex::new(BTreeMap::new()),
            reads: Mutex::new(BTreeMap::new()),
        }
    }

    /// `program` with only `PATH` and `tag` in its environment (the
    /// test's own may hold other `HUM_` entries: the suite's settings),
    /// its stdin a pipe.
    fn start(program: &str, args: &[&str], tag: (&str, &str)) -> Child {
        Child(
            std::process::Command::new(program)
                .args(args)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env(tag.0, tag.1)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {program} (the test needs it): {e}")),
        )
    }

    fn tags_of(table: &ProcFs, pid: i32) -> Option<Vec<u8>> {
        table
            .snapshot(true)
            .into_iter()
            .find(|p| p.stat.pid == pid)
            .map(|p| p.environ)
    }

    /// Scans until `pid`'s kept entries are `want`, within a deadline.
    fn await_tags(table: &ProcFs, pid: i32, want: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = tags_of(table, pid);
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "scan never showed {:?} for {pid}: {:?}",
                String::from_utf8_lossy(want),
                got.map(|g| String::from_utf8_lossy(&g).into_owned())
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_kernel_thread_is_never_read() {
        // This process's own stat line, with the kernel-thread flag set
        // (field 9, the 7th after the command's closing paren).
        let line = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (head, tail) = line.rsplit_once(") ").unwrap();
        let mut fields: Vec<String> = tail.split(' ').map(str::to_owned).collect();
        let flags: u32 = fields[6].parse().unwrap();
        let ours = parse_stat(line.as_bytes()).unwrap().identity;
        assert!(
            matches!(ours, Some(id) if id != EnvIdentity::KERNEL),
            "{ours:?}"
        );
        fields[6] = (flags | PF_KTHREAD).to_string();
        let kthread = format!("{head}) {}", fields.join(" "));
        let kernel = parse_stat(kthread.as_bytes()).unwrap();
        assert_eq!(kernel.identity, Some(EnvIdentity::KERNEL));
        // Kept as nothing, and never read: pid 0 is no process to read.
        let table = own_table();
        assert_eq!(table.tags(0, &kernel), Vec::<u8>::new());
        assert_eq!(table.reads.lock().unwrap().get(&0), None);
    }

    #[test]
    fn a_scan_keeps_only_the_hum_entries_of_an_environment() {
        assert_eq!(
            kept_entries(b"PATH=/bin\0HUM_CELL=a-1\0SECRET=x\0HUM_WORKER_INSTANCE=w\0"),
            b"HUM_CELL=a-1\0HUM_WORKER_INSTANCE=w\0".to_vec()
        );
        assert_eq!(kept_entries(b""), Vec::<u8>::new());
        assert_eq!(kept_entries(b"NOT_HUM=1\0XHUM_A=2"), Vec::<u8>::new());
    }

    #[test]
    fn an_environment_seen_once_is_not_read_again_while_it_is_the_same() {
        let child = start("sleep", &["30"], ("HUM_PROCS_KEPT", "once"));
        let pid = child.0.id() as i32;
        let table = own_table();
        await_tags(&table, pid, b"HUM_PROCS_KEPT=once\0");
        let reads = || table.reads.lock().unwrap().get(&pid).copied().unwrap_or(0);
        let before = reads();
        for _ in 0..5 {
            assert_eq!(tags_of(&table, pid).unwrap(), b"HUM_PROCS_KEPT=once\0");
        }
        // The table is this test's alone: no other scan forgets the child.
        let again = reads() - before;
        assert_eq!(
            again, 0,
            "the same environment was read again {again} times in 5 scans"
        );
        drop(child);
    }

    #[test]
    fn a_process_that_execs_with_another_environment_is_read_again() {
        // The shell is seen with one tag, then (told on its stdin)
        // replaces itself with a process carrying another: same pid, same
        // start time.
        let script = "read go; exec env HUM_PROCS_EXEC=after sleep 30";
        let mut child = start("sh", &["-c", script], ("HUM_PROCS_EXEC", "before"));
        let pid = child.0.id() as i32;
        let table = own_table();
        await_tags(&table, pid, b"HUM_PROCS_EXEC=before\0");
        use std::io::Write;
        child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        await_tags(&table, pid, b"HUM_PROCS_EXEC=after\0");
    }

    #[test]
    fn a_process_whose_first_thread_exited_is_alive_and_found_by_its_tag() {
        // Its main thread ends (pthread_exit) while another waits on
        // stdin: the leader shows Z, the process runs on.
        let script = "import ctypes, sys, threading\n\
            threading.Thread(target=sys.stdin.read).start()\n\
            ctypes.CDLL(None).pthread_exit(None)\n";
        let child = start("python3", &["-c", script], ("HUM_PROCS_LEADER", "gone"));
        let pid = child.0.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if raw.rsplit_once(") ").unwrap().1.starts_with('Z') {
                break;
            }
            assert!(Instant::now() < deadline, "the leader never exited: {raw}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let table = own_table();
        let stat = table.stat(pid).unwrap();
        assert!(!stat.exited(), "{stat:?}");
        assert!(
            stat.rss_bytes > 0,
            "its memory, through a live thread: {stat:?}"
        );
        assert_eq!(tags_of(&table, pid).unwrap(), b"HUM_PROCS_LEADER=gone\0");
        let environ = table.environ(pid).unwrap();
        assert!(kept_entries(&environ) == b"HUM_PROCS_LEADER=gone\0");
        drop(child);
    }

    #[test]
    fn tags_longer_than_a_cells_are_read_every_time_not_kept() {
        let long = "x".repeat(MAX_KEPT_BYTES);
        let child = start("sleep", &["30"], ("HUM_PROCS_LONG", &long));
        let pid = child.0.id() as i32;
        let table = own_table();
        let want = format!("HUM_PROCS_LONG={long}\0");
        await_tags(&table, pid, want.as_bytes());
        let reads = || table.reads.lock().unwrap().get(&pid).copied().unwrap_or(0);
        let before = reads();
        assert_eq!(tags_of(&table, pid).unwrap(), want.as_bytes());
        assert_eq!(reads() - before, 1, "read again, not kept");
        assert!(!table.kept.lock().unwrap().contains_key(&pid));
    }
}
