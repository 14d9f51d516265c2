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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// User turns so far.
    pub turns: u64,
    /// The most recent user prompt.
    pub last_prompt: Option<String>,
    /// What the session's turns cost so far (claude restores it on
    /// `--resume`: a resumed process reports the session's totals, not its
    /// own).
    pub spent: super::events::Usage,
}

/// One session's transcript file.
#[derive(Debug)]
pub struct Transcript {
    pub session_id: String,
    pub path: PathBuf,
    pub cwd: String,
}

/// Where transcripts of sessions started in `cwd` live: claude's name for
/// the project; a long one cut and followed by a hash of the path (the
/// simulator's own hash: like claude's, found by hum through the prefix).
pub fn project_dir(config_dir: &Path, cwd: &str) -> PathBuf {
    use crate::hive::session::{project_name, PROJECT_NAME_MAX};
    let name = project_name(cwd);
    if name.len() <= PROJECT_NAME_MAX {
        return config_dir.join("projects").join(name);
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(cwd.as_bytes());
    let mut n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let mut hash = String::new();
    while n > 0 {
        hash.insert(0, char::from_digit((n % 36) as u32, 36).expect("a digit"));
        n /= 36;
    }
    config_dir
        .join("projects")
        .join(format!("{}-{hash}", &name[..PROJECT_NAME_MAX]))
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
                if entry["type"] == "assistant" {
                    let u = &entry["message"]["usage"];
                    let n = |k: &str| u[k].as_u64().unwrap_or(0);
                    memory.spent = memory.spent.plus(&super::events::Usage {
                        input_tokens: n("input_tokens"),
                        output_tokens: n("output_tokens"),
                        cache_read_tokens: n("cache_read_input_tokens"),
                        cache_creation_tokens: n("cache_creation_input_tokens"),
                        cost: entry["costUSD"].as_f64(),
                    });
                }
            },
        )?;
        Ok(memory)
    }

    /// Appends one entry (`user` or `assistant`) to the transcript; an
    /// assistant entry carries its turn's usage and cost.
    pub fn append(
        &self,
        kind: &str,
        text: &str,
        model: Option<&str>,
        usage: Option<&super::events::Usage>,
    ) -> io::Result<()> {
        // Private, as claude keeps its own: a transcript holds the prompts.
        if let Some(dir) = self.path.parent() {
            crate::private_fs::create_private_dir(dir)?;
        }
        let mut message = json!({ "role": kind, "content": text });
        if let Some(model) = model {
            message["model"] = json!(model);
        }
        if let Some(u) = usage {
            message["usage"] = u.json();
        }
        let mut entry = json!({
            "type": kind,
            "message": message,
            "sessionId": self.session_id,
            "cwd": self.cwd,
            "uuid": uuid::Uuid::new_v4().to_string(),
            "timestamp": super::events::now_rfc3339(),
        });
        if let Some(u) = usage {
            entry["costUSD"] = json!(u.cost_usd());
        }
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
        t.append("user", "one", None, None).unwrap();
        let used = super::super::events::Usage {
            cost: Some(0.25),
            ..super::super::events::Usage::tokens(7, 3)
        };
        t.append("assistant", "r1", Some("m"), Some(&used)).unwrap();
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
        t.append("user", "two", None, None).unwrap();
        assert_eq!(
            t.recall().unwrap(),
            Memory {
                turns: 2,
                last_prompt: Some("two".into()),
                // The session's cost so far, restored as claude does.
                spent: super::super::events::Usage {
                    cost: Some(0.25),
                    ..super::super::events::Usage::tokens(7, 3)
                },
            }
        );
    }
}
