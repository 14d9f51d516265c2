//! A child learns that the parent that started it is gone: the portable
//! stand-in for PR_SET_PDEATHSIG, which only Linux has.
//!
//! The parent gives the child a pipe as stdin and keeps the write end
//! (close-on-exec, so nobody else holds it) without ever writing. However
//! the parent ends, SIGKILL included, the kernel closes that end and the
//! child reads EOF: it then sends itself SIGTERM, so it stops the one way
//! it always stops ([`crate::stop::StopSignals`]), cells torn down first.
//! The same trick wakes the sentinel. `hum up` and `hum demo` give one to
//! each child they supervise, on every OS; on Linux, unless the portable
//! backend is asked for, PR_SET_PDEATHSIG is set as well.

use std::io::Read;
use std::process::{Command, Stdio};

/// Set on a child whose stdin is its lifeline.
pub const LIFELINE_ENV: &str = "HUM_LIFELINE";

/// Makes `cmd`'s stdin a lifeline. The caller keeps the child's stdin
/// handle (the write end) for as long as it lives and never writes to it.
pub fn attach(cmd: &mut Command) {
    cmd.stdin(Stdio::piped()).env(LIFELINE_ENV, "stdin");
}

/// Blocks until `r` reads EOF (or fails): the moment the other end's last
/// holder is gone. What is written is ignored.
pub fn until_eof(mut r: impl Read) {
    let mut sink = [0u8; 64];
    loop {
        match r.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Set once this process was told to stop (a signal): a lifeline that
/// closes after that is the parent letting go, not the parent gone.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// This process was told to stop.
pub fn stopping() {
    STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// In the child: when this process was given a lifeline, watches it from a
/// thread of its own and sends this process SIGTERM at its EOF. Returns
/// whether a lifeline is being watched.
pub fn watch() -> bool {
    if std::env::var_os(LIFELINE_ENV).is_none_or(|v| v != "stdin") {
        return false;
    }
    let spawned = std::thread::Builder::new()
        .name("hum-lifeline".into())
        .spawn(|| {
            until_eof(std::io::stdin().lock());
            if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
                // Told to stop already: the parent let go as we go.
                tracing::debug!(event = "lifeline.cut", "the lifeline closed while stopping");
            } else {
                tracing::warn!(
                    event = "lifeline.cut",
                    "the parent that started this process is gone; stopping"
                );
            }
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::TERM,
            );
        });
    spawned.is_ok()
}
