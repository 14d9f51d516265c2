//! Transcripts, kept where claude keeps them, so resuming works the same way:
//! `<config dir>/projects/<cwd with every / replaced by ->/<session-id>.jsonl`,
//! the config dir being `$CLAUDE_CONFIG_DIR`, else `$HOME/.claude`.

use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thrum::{each_line, RawLine, DEFAULT_MAX_LINE};

/// What the simulator remembers of a session: enough to show it remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// User turns so far.
    pub turns: u64,
    /// The most recent user prompt.
    pub last_prompt: Option<String>,
}

/// One session's transcript file.
#[derive(Debug)]
pub struct Transcript {
    pub session_id: String,
    pub path: PathBuf,
    pub cwd: String,
}

/// Where transcripts of sessions started in `cwd` live.
pub fn project_dir(config_dir: &Path, cwd: &str) -> PathBuf {
    config_dir.join("projects").join(cwd.replace('/', "-"))
}

/// The config dir from the environment, as claude finds it.
pub fn config_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".claude")),
        None => Err("HOME is not set".to_owned()),
    }
}

/// Session ids are UUIDs; anything else names no file (and can never walk
/// out of the projects directory).
pub fn is_session_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok()
}

impl Transcript {
    pub fn new(config_dir: &Path, cwd: &str, session_id: &str) -> Self {
        Transcript {
            session_id: session_id.to_owned(),
            path: project_dir(config_dir, cwd).join(format!("{session_id}.jsonl")),
            cwd: cwd.to_owned(),
        }
    }

    pub fn exists(&self) -> bool {
        self.path.is_file()
    }

    /// Reads back what the session said so far. Lines over the wire's limit
    /// or not JSON are skipped, as a damaged transcript should not stop a
    /// resume.
    pub fn recall(&self) -> io::Result<Memory> {
        let mut memory = Memory::default();
        each_line(
            BufReader::new(File::open(&self.path)?),
            DEFAULT_MAX_LINE,
            |line| {
                let RawLine::Line(line) = line else { return };
                let Ok(entry) = serde_json::from_slice::<Value>(line) else {
                    return;
                };
                if entry["type"] == "user" {
                    memory.turns += 1;
                    memory.last_prompt = entry["message"]["content"].as_str().map(str::to_owned);
                }
            },
        )?;
        Ok(memory)
    }

    /// Appends one entry (`user` or `assistant`) to the transcript.
    pub fn append(&self, kind: &str, text: &str, model: Option<&str>) -> io::Result<()> {
        // Private, as claude keeps its own: a transcript holds the prompts.
        if let Some(dir) = self.path.parent() {
            crate::private_fs::create_private_dir(dir)?;
        }
        let mut message = json!({ "role": kind, "content": text });
        if let Some(model) = model {
            message["model"] = json!(model);
        }
        let entry = json!({
            "type": kind,
            "message": message,
            "sessionId": self.session_id,
            "cwd": self.cwd,
            "uuid": uuid::Uuid::new_v4().to_string(),
            "timestamp": super::events::now_rfc3339(),
        });
        let mut line = serde_json::to_vec(&entry)?;
        line.push(b'\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?
            .write_all(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_scheme_is_claudes() {
        let t = Transcript::new(Path::new("/h/.claude"), "/tmp/claudeprobe/work", "abc");
        assert_eq!(
            t.path,
            PathBuf::from("/h/.claude/projects/-tmp-claudeprobe-work/abc.jsonl")
        );
    }

    #[test]
    fn only_uuids_are_session_ids() {
        assert!(is_session_id("11111111-2222-4333-8444-555555555555"));
        assert!(!is_session_id("../../etc/passwd"));
        assert!(!is_session_id(""));
    }

    #[test]
    fn recall_counts_user_turns_and_skips_damage() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transcript::new(dir.path(), "/w", "s");
        t.append("user", "one", None).unwrap();
        t.append("assistant", "r1", Some("m")).unwrap();
        // A torn write, as after a crash.
        OpenOptions::new()
            .append(true)
            .open(&t.path)
            .unwrap()
            .write_all(b"{\"type\":\"us")
            .unwrap();
        OpenOptions::new()
            .append(true)
            .open(&t.path)
            .unwrap()
            .write_all(b"\n")
            .unwrap();
        t.append("user", "two", None).unwrap();
        assert_eq!(
            t.recall().unwrap(),
            Memory {
                turns: 2,
                last_prompt: Some("two".into())
            }
        );
    }
}
