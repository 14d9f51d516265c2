//! Forks cells from one dedicated thread that lives as long as the worker.
//!
//! PR_SET_PDEATHSIG (Linux, `os::die_with_parent`) fires when the *thread*
//! that forked the child exits, not the process. tokio's blocking-pool threads exit when idle, which would
//! SIGKILL healthy cells at random; so every cell is forked here, on a thread
//! that never returns.

use std::io;
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
                        let child = super::unclaimed::fork_protected(|| cmd.spawn(), |c| c.id());
                        let _ = reply.send(child);
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
