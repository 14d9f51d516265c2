//! One supervised child of `hum up` (humd, the worker, the gateway): how it
//! is started (its log, its environment, dying with `hum up`), restarted
//! with backoff when it dies, and stopped.

use super::*;

pub(super) struct Supervised {
    pub(super) name: &'static str,
    pub(super) args: Vec<String>,
    /// Variables for this child alone (the gateway's token, at most).
    pub(super) env: Vec<(String, String)>,
    pub(super) log: PathBuf,
    pub(super) child: Option<crate::stack::HumChild>,
    /// Also PR_SET_PDEATHSIG (Linux, unless the portable backend is asked
    /// for: the lifeline alone is what macOS has).
    pub(super) pdeathsig: bool,
    pub(super) started: Instant,
    pub(super) backoff: crate::backoff::Backoff,
    pub(super) restart_at: Option<Instant>,
}

impl Supervised {
    pub(super) fn spawn(&mut self) -> std::io::Result<()> {
        // This runtime is single-threaded: the forking thread (whose end
        // PR_SET_PDEATHSIG watches) is the main thread, which lives as long
        // as `hum up`.
        let child =
            crate::stack::HumChild::start(&self.args, &self.env, &self.log, self.pdeathsig)?;
        tracing::info!(
            event = "up.started",
            child = self.name,
            pid = child.id(),
            "supervised process started"
        );
        self.child = Some(child);
        self.started = Instant::now();
        self.restart_at = None;
        Ok(())
    }

    /// Waits for the child to exit (never, when none runs).
    pub(super) async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match &mut self.child {
            Some(c) => c.child.wait().await,
            None => std::future::pending().await,
        }
    }

    /// When the child starts again; returns the wait.
    pub(super) fn schedule_restart(&mut self) -> Duration {
        if self.started.elapsed() >= HEALTHY_AFTER {
            self.backoff.reset();
        }
        let wait = self.backoff.next_delay();
        self.restart_at = Some(Instant::now() + wait);
        wait
    }

    pub(super) fn died(&mut self, status: std::io::Result<std::process::ExitStatus>) {
        self.child = None;
        let wait = self.schedule_restart();
        tracing::warn!(event = "up.child_died", child = self.name, status = ?status.ok(), backoff_ms = wait.as_millis() as u64, "supervised process died; restarting");
    }

    pub(super) fn restart(&mut self) {
        if let Err(e) = self.spawn() {
            tracing::error!(event = "up.restart_failed", child = self.name, error = %e, "cannot restart");
            self.schedule_restart();
        }
    }

    /// SIGKILLs a child that does not answer; the exit is noticed and the
    /// child restarted like any death.
    pub(super) fn kill_now(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.child.start_kill();
        }
    }

    pub(super) async fn stop(&mut self, within: Duration) {
        let Some(child) = self.child.take() else {
            return;
        };
        if !child.stop(within).await {
            tracing::error!(
                event = "up.stop_timeout",
                child = self.name,
                "did not stop in time; killed it"
            );
        }
    }
}

pub(super) async fn restart_due(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
