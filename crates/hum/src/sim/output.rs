//! The simulated agent's small utilities: its stdout (a line at a time,
//! flushed, exiting when the reader is gone, as claude does), its reading of
//! a user message's text and of tool-list flags, its pauses.

use serde_json::Value;
use std::io::{self, Write};
use std::time::Duration;

/// Tool lists arrive as repeated flags, comma- or space-separated.
pub(super) fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split([',', ' ']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The text of a user message's content: a string, or its text blocks.
pub(super) fn user_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

pub(super) fn sleep_ms(ms: u64) {
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Writes one JSON line and flushes it, so a reader sees events as they
/// happen. A reader that went away ends us, as it ends claude.
pub(super) fn emit_line(value: &Value) {
    let mut line = serde_json::to_vec(value).expect("events serialize");
    line.push(b'\n');
    write_or_exit(&line);
}

pub(super) fn emit_text(text: &str) {
    write_or_exit(format!("{text}\n").as_bytes());
}

pub(super) fn write_or_exit(bytes: &[u8]) {
    let mut out = io::stdout().lock();
    if out.write_all(bytes).and_then(|_| out.flush()).is_err() {
        std::process::exit(1);
    }
}
