//! The session id an ACP agent gave each sid, kept on disk so a sid whose
//! cell was evicted (or whose worker restarted) resumes with
//! `session/load`. One private file per sid, named by a hash of it (a sid
//! is any string a bee chose; a file name must not be).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// An agent's session id longer than this is not kept (nor trusted): ids
/// are short handles, and the file is read back whole.
const MAX_SESSION_ID: usize = 512;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct AcpSessions {
    dir: PathBuf,
}

impl AcpSessions {
    /// The sessions of `hive`, under the worker's state directory.
    pub fn new(state_dir: &Path, hive: &str) -> AcpSessions {
        AcpSessions {
            dir: state_dir.join("acp-sessions").join(hive),
        }
    }

    fn file(&self, sid: &str) -> PathBuf {
        let digest = Sha256::digest(sid.as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    /// The session the agent gave `sid` last, if one is kept.
    pub fn get(&self, sid: &str) -> Option<String> {
        let bytes = crate::private_fs::read_own_file(&self.file(sid), MAX_SESSION_ID).ok()?;
        let id = String::from_utf8(bytes).ok()?;
        valid(&id).then_some(id)
    }

    /// Keeps `session` as `sid`'s (a failure is logged: the sid's next
    /// cell then starts a new session).
    pub fn put(&self, sid: &str, session: &str) {
        if !valid(session) {
            tracing::warn!(event = "acp.session_not_kept", sid = %sid, len = session.len(), "the agent's session id is not kept (too long or unprintable)");
            return;
        }
        let written = crate::private_fs::create_private_dir(&self.dir).and_then(|()| {
            crate::private_fs::write_private_file(&self.file(sid), session.as_bytes())
        });
        if let Err(e) = written {
            tracing::warn!(event = "acp.session_not_kept", sid = %sid, error = %e, "the agent's session id could not be written");
        }
    }
}

fn valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_SESSION_ID && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sid_gets_back_the_session_kept_for_it_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let s = AcpSessions::new(dir.path(), "gemini");
        assert_eq!(s.get("bee/1"), None);
        s.put("bee/1", "sess-abc");
        s.put("../../etc/passwd", "sess-x");
        assert_eq!(s.get("bee/1").as_deref(), Some("sess-abc"));
        assert_eq!(s.get("../../etc/passwd").as_deref(), Some("sess-x"));
        assert_eq!(s.get("bee/2"), None);
        s.put("bee/1", "sess-def");
        assert_eq!(s.get("bee/1").as_deref(), Some("sess-def"), "the newest");
        s.put("bee/3", &"x".repeat(MAX_SESSION_ID + 1));
        s.put("bee/4", "a\nb");
        assert_eq!((s.get("bee/3"), s.get("bee/4")), (None, None));
        let other = AcpSessions::new(dir.path(), "qwen");
        assert_eq!(other.get("bee/1"), None, "each hive its own");
    }
}
