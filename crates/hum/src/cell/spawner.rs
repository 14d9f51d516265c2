//! Forks cells from one dedicated thread that lives as long as the worker.
//!
//! PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
//! the process. tokio's blocking-pool threads exit when idle, which would
//! SIGKILL healthy cells at random; so every cell is forked here, on a thread
//! that never returns.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;
use tokio::sync::oneshot;

type Job = (Command, oneshot::Sender<io::Result<Child>>);

/// The process-wide spawner thread.
pub struct Spawner {
    jobs: mpsc::Sender<Job>,
}

static SPAWNER: OnceLock<Spawner> = OnceLock::new();

impl Spawner {
    /// The spawner, started on first use.
    pub fn get() -> &'static Spawner {
        SPAWNER.get_or_init(|| {
            let (jobs, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("hum-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                    // The sender lives in a static and is never dropped, but
                    // should it ever be, this thread must still not exit.
                    loop {
                        std::thread::park();
                    }
                })
                .expect("cannot start the spawner thread");
            Spawner { jobs }
        })
    }

    /// Spawns `cmd` on the spawner thread.
    pub async fn spawn(&self, cmd: Command) -> io::Result<Child> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((cmd, tx))
            .map_err(|_| io::Error::other("spawner thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("spawner thread dropped the request"))?
    }
}

/// Makes the child receive `sig` when the thread that forks it exits: call
/// it on a command that [`Spawner::spawn`] will run, so that thread is the
/// spawner, which lives as long as the process. The parent is re-checked
/// after the prctl, in case it died first.
pub fn die_with_parent(cmd: &mut Command, sig: rustix::process::Signal) {
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
