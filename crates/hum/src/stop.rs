//! How a long-running hum command learns it should stop: SIGTERM (a service
//! manager, `hum up`) or SIGINT (Ctrl-C), one type for every command so
//! each stops for the same reasons.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM and SIGINT, installed once; [`StopSignals::next`] may be awaited
/// again after it fires (`hum prompt` counts a second Ctrl-C).
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs the handlers. Panics only if the runtime cannot register a
    /// signal handler at all, which is a broken host, not an input.
    pub fn install() -> StopSignals {
        StopSignals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    /// Resolves at the next SIGTERM or SIGINT. Cancel-safe.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
