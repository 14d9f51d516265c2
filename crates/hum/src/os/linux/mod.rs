//! Linux: the mechanisms hum layers on the portable floor.

pub mod cgroup;
pub mod memcg;
mod procfs;

use crate::os::procs::ProcessTable;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, WaitIdStatus};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// What Linux adds to the portable floor, as `hum doctor` names them.
pub const EXTRA_MECHANISMS: &[&str] = &[
    "cgroup v2",
    "child subreaper",
    "pdeathsig",
    "pidfd",
    "/proc read directly",
];

/// `/proc`, read directly.
pub fn native_table() -> Option<&'static dyn ProcessTable> {
    Some(&procfs::TABLE)
}

/// Whether `pidfd_open` works here (Linux 5.3+).
pub fn pidfd_available() -> bool {
    rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .is_ok()
}

/// Makes this process the child subreaper: orphaned descendants come back
/// to it instead of going to PID 1.
pub fn set_subreaper() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(Into::into)
}

/// A descriptor naming one process, never a recycled pid.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid`; `None` when the kernel has none or the
    /// process is gone. Non-blocking, so it can be polled for the exit.
    pub fn open(pid: Pid) -> Option<PidFd> {
        rustix::process::pidfd_open(pid, PidfdFlags::NONBLOCK)
            .ok()
            .map(PidFd)
    }

    pub fn send_signal(&self, sig: Signal) -> io::Result<()> {
        rustix::process::pidfd_send_signal(&self.0, sig).map_err(Into::into)
    }

    /// `waitid(P_PIDFD, …)`.
    pub fn wait(&self, opts: WaitIdOptions) -> io::Result<Option<WaitIdStatus>> {
        rustix::process::waitid(WaitId::PidFd(self.0.as_fd()), opts).map_err(Into::into)
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl std::os::fd::AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }
}

/// Makes the child receive `sig` when the thread that forks it exits: call
/// it on a command that `cell::spawner::Spawner` will run, so that thread is
/// the spawner, which lives as long as the process. The parent is re-checked
/// after the prctl, in case it died first.
pub fn die_with_parent(cmd: &mut Command, sig: Signal) {
    let parent = rustix::process::getpid();
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: two raw syscalls through rustix
    // on a value captured by copy, and an error built from a raw errno,
    // which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(sig))?;
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::SRCH.raw_os_error(),
                ));
            }
            Ok(())
        });
    }
}

/// Allocations this large are mapped on their own and unmapped when freed.
/// glibc raises its threshold as big blocks are freed (up to 32 MiB), after
/// which a burst of 8 MiB lines stays in its heap long after the peers that
/// sent them are gone; a fixed threshold gives that memory back.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Tunes the allocator so large freed buffers go back to the OS (glibc; a
/// no-op with other C libraries, whose allocators do not keep them).
pub fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called once at start,
    // before the runtime's threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Puts the calling thread, and it alone, at nice 19, the lowest of the
/// ordinary priorities: for work that may wait while every core is
/// wanted by something on a cell's path. Linux keeps a nice value per
/// thread, so this leaves the rest of the process as it was.
pub fn lower_this_threads_priority() -> io::Result<()> {
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19).map_err(Into::into)
}
