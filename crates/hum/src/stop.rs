//! How a hum command runs and learns it should stop: its tokio runtime
//! (built one way for every command), and SIGTERM (a service manager, `hum
//! up`) or SIGINT (Ctrl-C), one type for every command so each stops for
//! the same reasons.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM and SIGINT, installed once; [`StopSignals::next`] may be awaited
/// again after it fires (`hum prompt` counts a second Ctrl-C).
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs the handlers, and watches the lifeline a supervising parent
    /// gave (its EOF becomes a SIGTERM). Panics only if the runtime cannot
    /// register a signal handler at all, which is a broken host, not an
    /// input.
    pub fn install() -> StopSignals {
        let signals = StopSignals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        };
        // After the handlers exist, so the lifeline's SIGTERM is caught.
        crate::lifeline::watch();
        signals
    }

    /// Resolves at the next SIGTERM or SIGINT. Cancel-safe.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        crate::lifeline::stopping();
    }
}

/// How a command's runtime is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One thread: clients and supervisors that mostly wait, and humd and
    /// the worker, whose work per message is small and never blocks (what
    /// does, a /proc scan, goes to `spawn_blocking`). On one thread a
    /// message goes from a socket's reader to the router to a writer
    /// without waking another thread; with a thread per core those
    /// wake-ups were most of the routing time (BENCHMARKS.md, routing).
    One,
    /// A worker thread per core: the gateway (HTTP requests do real work:
    /// JSON bodies, SSE framing).
    PerCore,
}

/// The runtime a command runs on, with I/O and time enabled. Panics only if
/// the host cannot give a process threads or an event loop at all.
pub fn runtime(threads: Threads) -> tokio::runtime::Runtime {
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::PerCore => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build().expect("tokio runtime")
}
