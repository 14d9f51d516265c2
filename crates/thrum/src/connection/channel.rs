//! An outbox whose lines the caller takes ([`Outbox::channel`]), for a
//! peer inside this process.

use super::{Limits, Outbox, Outgoing, Shared};
use std::sync::Arc;
use tokio::sync::mpsc;

impl Outbox {
    /// An outbox whose lines are taken from [`Lines`] by the caller, not
    /// written to a stream: for a peer inside this process (another
    /// node's link), where a writer task and a pipe would only hand each
    /// line on twice more. Queue limits, overflow and closing work as for
    /// a stream; a line counts as written once it is taken.
    pub fn channel(limits: Limits, label: impl Into<Arc<str>>) -> (Outbox, Lines) {
        let shared = Shared::new(limits, label.into());
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Outbox {
                tx,
                shared: shared.clone(),
            },
            Lines { rx, shared },
        )
    }
}

/// The taking end of [`Outbox::channel`]: each line as queued, newline
/// included. Dropping it closes the outbox, as a writer's end would.
pub struct Lines {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
}

impl Lines {
    /// The next line; `None` once the outbox was closed (gracefully, after
    /// every line queued before; or aborted, at once) or every sender is
    /// gone.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let next = tokio::select! {
            biased;
            _ = self.shared.closed.cancelled() => None,
            next = self.rx.recv() => next,
        };
        self.taken(next)
    }

    /// A line already queued, without waiting; `None` when there is none
    /// now (or the outbox is closed).
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        if self.shared.closed.is_cancelled() {
            return None;
        }
        match self.rx.try_recv() {
            Ok(next) => self.taken(Some(next)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => self.taken(None),
        }
    }

    fn taken(&mut self, next: Option<Outgoing>) -> Option<Vec<u8>> {
        match next {
            Some(Outgoing::Line(line)) => {
                self.shared.budget.add_permits(line.len());
                Some(line)
            }
            Some(Outgoing::Close) | None => {
                self.finish();
                None
            }
        }
    }

    fn finish(&self) {
        self.shared.closed.cancel();
        self.shared.reading.cancel();
        self.shared.budget.close();
        self.shared.done.cancel();
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.finish();
    }
}
