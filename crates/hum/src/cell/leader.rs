//! The cell's leader: the direct child, watched through a pidfd.
//!
//! A pidfd names one process, never a recycled pid; it becomes readable when
//! the process exits, so waiting costs no polling; and `waitid(P_PIDFD,
//! WNOWAIT)` reads the exit status without reaping. The leader stays a zombie
//! until its whole tree is gone, which keeps its pid (and so the group's
//! pgid) from being recycled while hum still signals the group. Without
//! pidfds (older kernels, the portable backend, macOS) SIGCHLD wakes the
//! waiter and `waitid(P_PID, WNOWAIT)` reads the status: the leader is our
//! unreaped child, so its pid cannot name anyone else.

use super::procs::Procs;
use crate::os::PidFd;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use serde::Serialize;
use std::io;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// How often a leader is polled without a pidfd, should a SIGCHLD be
/// missed (several exits may arrive as one signal; each wakes every
/// waiter, so this is a backstop, not the usual path).
const POLL: Duration = Duration::from_millis(20);

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// The leader of a cell, a child of this process.
#[derive(Debug)]
pub struct Leader {
    pid: Pid,
    pidfd: Option<AsyncFd<PidFd>>,
    /// Set once reaped; the exit status stays readable.
    reaped: Mutex<Option<Exit>>,
}

impl Leader {
    /// Watches child `pid`, through a pidfd when `procs` uses them. Must be
    /// called inside a tokio runtime.
    pub fn new(pid: Pid, procs: Procs) -> Leader {
        let pidfd = procs
            .uses_pidfd()
            .then(|| PidFd::open(pid))
            .flatten()
            .and_then(|fd| {
                // SAFETY: `fd` is a pidfd we just opened; the AsyncFd takes
                // ownership of it and nothing else closes or replaces it.
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
            });
        Leader {
            pid,
            pidfd,
            reaped: Mutex::new(None),
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The exit status if the leader has exited; does not reap.
    pub fn try_exit(&self) -> Option<Exit> {
        if let Some(exit) = *self.reaped.lock().expect("leader lock") {
            return Some(exit);
        }
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
        let status = match &self.pidfd {
            Some(fd) => fd.get_ref().wait(opts),
            None => rustix::process::waitid(WaitId::Pid(self.pid), opts).map_err(Into::into),
        };
        match status {
            Ok(Some(s)) if s.exited() => Some(Exit::Code(s.exit_status().unwrap_or(0))),
            Ok(Some(s)) if s.killed() || s.dumped() => {
                Some(Exit::Signal(s.terminating_signal().unwrap_or(0)))
            }
            _ => None,
        }
    }

    /// Resolves when the leader has exited (without reaping it).
    pub async fn exited(&self) -> Exit {
        // Without a pidfd, SIGCHLD (sent to us when any child exits) is the
        // wake-up; listening starts before the first check so an exit in
        // between is not missed. The timer is a backstop only.
        let mut sigchld = match &self.pidfd {
            Some(_) => None,
            None => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok(),
        };
        loop {
            if let Some(exit) = self.try_exit() {
                return exit;
            }
            match (&self.pidfd, &mut sigchld) {
                (Some(fd), _) => match fd.readable().await {
                    Ok(mut guard) => {
                        if self.try_exit().is_none() {
                            guard.clear_ready();
                        }
                    }
                    Err(_) => tokio::time::sleep(POLL).await,
                },
                (None, Some(chld)) => {
                    let _ = tokio::time::timeout(POLL, chld.recv()).await;
                }
                (None, None) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Sends `sig` to the leader unless it has exited. Through the pidfd the
    /// signal can only reach this process, whatever happened to its pid.
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        if self.try_exit().is_some() {
            return Ok(());
        }
        let sent = match &self.pidfd {
            Some(fd) => fd.get_ref().send_signal(sig),
            // Unreaped, so the pid is still ours.
            None => rustix::process::kill_process(self.pid, sig).map_err(io::Error::from),
        };
        match sent {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => Ok(()),
            other => other,
        }
    }

    /// Reaps the leader once it has exited; idempotent.
    pub fn reap(&self) -> Option<Exit> {
        // Read the status before taking the lock: `try_exit` takes it too.
        let exit = self.try_exit()?;
        let mut reaped = self.reaped.lock().expect("leader lock");
        if reaped.is_none() {
            let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
            let _ = match &self.pidfd {
                Some(fd) => fd.get_ref().wait(opts),
                None => rustix::process::waitid(WaitId::Pid(self.pid), opts).map_err(Into::into),
            };
            *reaped = Some(exit);
        }
        *reaped
    }

    pub fn is_reaped(&self) -> bool {
        self.reaped.lock().expect("leader lock").is_some()
    }
}
