//! The Linux process table: `/proc` read directly through the `procfs` crate.
//! Start times are clock ticks after boot (10 ms), finer than the portable
//! table's seconds.

use crate::os::procs::{Proc, ProcStat, ProcessTable, StartClock};

pub(super) static TABLE: ProcFs = ProcFs;

#[derive(Debug)]
pub(super) struct ProcFs;

fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

impl ProcessTable for ProcFs {
    fn name(&self) -> &'static str {
        "procfs"
    }

    fn clock(&self) -> StartClock {
        StartClock::BootTicks
    }

    fn stat(&self, pid: i32) -> Option<ProcStat> {
        let s = procfs::process::Process::new(pid).ok()?.stat().ok()?;
        let ticks = procfs::ticks_per_second().max(1);
        Some(ProcStat {
            pid: s.pid,
            ppid: s.ppid,
            pgid: s.pgrp,
            sid: s.session,
            state: s.state,
            start_time: s.starttime,
            cpu_ms: (s.utime + s.stime) * 1000 / ticks,
            rss_bytes: s.rss * procfs::page_size(),
        })
    }

    fn environ(&self, pid: i32) -> Option<Vec<u8>> {
        std::fs::read(format!("/proc/{pid}/environ")).ok()
    }

    fn snapshot(&self, environ: bool) -> Vec<Proc> {
        all_pids()
            .into_iter()
            .filter_map(|pid| {
                let stat = self.stat(pid)?;
                let environ = if environ {
                    self.environ(pid).unwrap_or_default()
                } else {
                    Vec::new()
                };
                Some(Proc { stat, environ })
            })
            .collect()
    }
}
