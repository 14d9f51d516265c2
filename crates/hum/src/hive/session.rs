//! Session continuity: every sid maps to one CLI session id, for good.
//!
//! The mapping is uuid5 in the namespace the system we replace used, so its
//! users' sessions carry over (`sid-1` → `13cea9ec-dca7-5328-8c47-7d0697efb7e0`).
//! A cell starts with `--resume` when the transcript exists on disk, else
//! with `--session-id`; if the CLI refuses at start (unknown session, or id
//! already in use) the other form is tried once. A new sid costs one spawn.

use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The namespace of the sid → session id mapping.
pub const SESSION_NAMESPACE: Uuid = Uuid::from_u128(0x68756d2d_7365_7373_696f_6e2d6e730001);

/// The CLI session id of `sid`.
pub fn session_id(sid: &str) -> String {
    Uuid::new_v5(&SESSION_NAMESPACE, sid.as_bytes()).to_string()
}

/// How a cell joins its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStart {
    /// `--resume=<id>`: continue the transcript.
    Resume(String),
    /// `--session-id=<id>`: a new session with this id.
    Create(String),
}

impl SessionStart {
    pub fn id(&self) -> &str {
        match self {
            SessionStart::Resume(id) | SessionStart::Create(id) => id,
        }
    }

    /// The other form, for the one retry after a preflight refusal.
    pub fn switched(&self) -> SessionStart {
        match self {
            SessionStart::Resume(id) => SessionStart::Create(id.clone()),
            SessionStart::Create(id) => SessionStart::Resume(id.clone()),
        }
    }
}

/// The longest project directory name claude uses as is; a longer one is
/// cut here and followed by `-` and a hash of the path.
pub const PROJECT_NAME_MAX: usize = 200;

/// claude's name for the directory of a project (the cwd its sessions ran
/// in), as 2.1.332 makes it: every UTF-16 unit that is not an ASCII letter
/// or digit becomes `-` (`/tmp/.x/work` → `-tmp--x-work`).
pub fn project_name(cwd: &str) -> String {
    let mut name = String::with_capacity(cwd.len());
    for c in cwd.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else {
            for _ in 0..c.len_utf16() {
                name.push('-');
            }
        }
    }
    name
}

/// Where claude keeps the transcript of `session_id` started in `cwd`. For
/// a name over [`PROJECT_NAME_MAX`] the directory is found by its cut
/// prefix (claude's hash of the path is its own); none found, a path that
/// does not exist.
pub fn transcript_path(config_dir: &Path, cwd: &str, session_id: &str) -> PathBuf {
    let projects = config_dir.join("projects");
    let file = format!("{session_id}.jsonl");
    let name = project_name(cwd);
    if name.len() <= PROJECT_NAME_MAX {
        return projects.join(name).join(file);
    }
    let prefix = format!("{}-", &name[..PROJECT_NAME_MAX]);
    std::fs::read_dir(&projects)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join(&file))
        .find(|p| p.is_file())
        .unwrap_or_else(|| projects.join(prefix).join(file))
}

/// Resume when the transcript exists, else create.
pub fn start_for(config_dir: &Path, cwd: &str, sid: &str) -> SessionStart {
    let id = session_id(sid);
    if transcript_path(config_dir, cwd, &id).is_file() {
        SessionStart::Resume(id)
    } else {
        SessionStart::Create(id)
    }
}

/// Whether the CLI refused to start because of the session (BRIEF section
/// 4): an unknown `--resume` id, or a `--session-id` already in use. Looks
/// at the first stdout line and at stderr (claude says both on stderr too,
/// which matters when the process is seen to exit before its stdout line is
/// read).
pub fn is_preflight_refusal(
    stdout_first_line: Option<&super::stream_json::Line>,
    stderr: &str,
) -> bool {
    let unknown = matches!(stdout_first_line, Some(super::stream_json::Line::Result(r))
        if r.is_error && r.error_list().iter().any(|m| m.contains("No conversation found")));
    unknown
        || stderr.contains("is already in use")
        || stderr.contains("No conversation found with session ID")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_maps_like_the_system_we_replace() {
        assert_eq!(session_id("sid-1"), "13cea9ec-dca7-5328-8c47-7d0697efb7e0");
        assert_eq!(session_id("sid-1"), session_id("sid-1"));
        assert_ne!(session_id("sid-1"), session_id("sid-2"));
    }

    #[test]
    fn resume_only_when_the_transcript_exists() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            start_for(dir.path(), "/w", "a"),
            SessionStart::Create(session_id("a"))
        );
        let path = transcript_path(dir.path(), "/w", &session_id("a"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{}\n").unwrap();
        assert_eq!(
            start_for(dir.path(), "/w", "a"),
            SessionStart::Resume(session_id("a"))
        );
        assert_eq!(
            start_for(dir.path(), "/w", "a").switched(),
            SessionStart::Create(session_id("a"))
        );
    }

    #[test]
    fn project_names_follow_claudes_rule() {
        // Measured with claude 2.1.332: `/tmp/.tmpXYZ/work` is kept in
        // `projects/-tmp--tmpXYZ-work`.
        assert_eq!(project_name("/tmp/.tmpXYZ/work"), "-tmp--tmpXYZ-work");
        assert_eq!(project_name("/home/a_b/my.proj"), "-home-a-b-my-proj");
        // UTF-16 units: é is one, an emoji two.
        assert_eq!(project_name("/é/😀"), "-----");
    }

    #[test]
    fn a_long_projects_transcript_is_found_by_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = format!("/{}", "deep/".repeat(60));
        let id = session_id("long");
        // Where the simulator (and claude, with its own hash) keeps it.
        let real = crate::sim::session::project_dir(dir.path(), &cwd).join(format!("{id}.jsonl"));
        assert!(real.parent().unwrap().file_name().unwrap().len() > PROJECT_NAME_MAX);
        assert_eq!(
            start_for(dir.path(), &cwd, "long"),
            SessionStart::Create(id.clone())
        );
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "{}\n").unwrap();
        assert_eq!(transcript_path(dir.path(), &cwd, &id), real);
        assert_eq!(
            start_for(dir.path(), &cwd, "long"),
            SessionStart::Resume(id)
        );
    }

    #[test]
    fn preflight_refusals_are_recognised_from_the_fixtures() {
        let fixture =
            include_str!("../../tests/fixtures/claude-2.1.332/resume-unknown.stdout.jsonl");
        let first = super::super::stream_json::Line::read(
            &serde_json::from_str(fixture.lines().next().unwrap()).unwrap(),
        );
        assert!(is_preflight_refusal(Some(&first), ""));
        assert!(is_preflight_refusal(
            None,
            "Error: Session ID 0b9c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e is already in use.\n"
        ));
        // The unknown-resume refusal is on stderr too.
        let stderr = include_str!("../../tests/fixtures/claude-2.1.332/resume-unknown.stderr.txt");
        assert!(is_preflight_refusal(None, stderr));
        assert!(!is_preflight_refusal(
            Some(&super::super::stream_json::Line::read(
                &serde_json::json!({"type": "system", "subtype": "init"})
            )),
            ""
        ));
    }
}
