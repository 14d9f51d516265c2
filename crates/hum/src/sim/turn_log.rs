//! `--sim-turn-log`: one JSON line per turn start and end, appended by
//! every sim process of a test to one file, so the test can count the
//! turns agents really ran (and when) however hum routed them.

use serde_json::json;
use std::io::Write;
use std::path::Path;

/// Appends `{"event", "atMs", "pid", "session", "prompt"}`. One `write` of
/// a line in append mode: lines of processes writing at once do not mix.
pub(super) fn note(path: &Path, event: &str, session: &str, prompt: &str) {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut line = json!({
        "event": event,
        "atMs": at_ms,
        "pid": std::process::id(),
        "session": session,
        "prompt": prompt,
    })
    .to_string();
    line.push('\n');
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "sim-agent: cannot write the turn log {}: {e}",
            path.display()
        );
    }
}
