//! A cell's system prompt goes to the CLI in a file (`--system-prompt-file`),
//! never in its argv: every local user can read `/proc/<pid>/cmdline`. The
//! file is 0600 in a 0700 directory of the worker's own (under its state
//! dir, one per worker process), made exclusively, and removed when the
//! cell's runner is done with it; a SIGKILLed worker's are removed by the
//! next worker.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One system prompt on disk, removed on drop.
#[derive(Debug)]
pub struct SystemPromptFile {
    path: PathBuf,
}

/// Where this worker keeps its cells' system prompts.
pub fn dir_for(state_dir: &Path) -> PathBuf {
    state_dir
        .join("prompts")
        .join(std::process::id().to_string())
}

impl SystemPromptFile {
    /// Writes `text` to a new file in `dir` (made private if missing).
    pub fn write(dir: &Path, text: &str) -> io::Result<SystemPromptFile> {
        use std::os::unix::fs::OpenOptionsExt;
        crate::private_fs::create_private_dir(dir)?;
        let path = dir.join(format!("{}.txt", uuid::Uuid::new_v4().simple()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)?;
        let file = SystemPromptFile { path };
        f.write_all(text.as_bytes())?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SystemPromptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the prompt directories of worker processes that are gone (and
/// this one's, at its exit): only directories of this user's.
pub fn sweep(state_dir: &Path, also_this_one: bool) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(state_dir.join("prompts")) else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let mine = pid == std::process::id() as i32;
        let gone = !mine
            && rustix::process::Pid::from_raw(pid).is_none_or(|p| {
                rustix::process::test_kill_process(p).is_err_and(|e| e == rustix::io::Errno::SRCH)
            });
        let own = std::fs::symlink_metadata(e.path())
            .is_ok_and(|m| m.is_dir() && m.uid() == thrum::peer::own_uid());
        if own && (gone || (mine && also_this_one)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Writes the system prompt to a private file for the life of the runner;
/// the file (kept open while the cell lives) and why it could not be
/// written.
pub(super) fn for_launch(
    launch: &mut super::runner::Launch,
) -> (Option<SystemPromptFile>, Option<String>) {
    let Some(text) = launch.args.system_prompt.as_deref() else {
        return (None, None);
    };
    let dir = dir_for(launch.cells.state_dir());
    match SystemPromptFile::write(&dir, text) {
        Ok(f) => {
            launch.args.system_prompt_file = Some(f.path().to_owned());
            (Some(f), None)
        }
        Err(e) => {
            tracing::error!(event = "cell.system_prompt_unwritten", dir = %dir.display(), error = %e, "the system prompt could not be written");
            let why = format!(
                "the system prompt could not be written to {}: {e}",
                dir.display()
            );
            (None, Some(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_system_prompt_file_is_private_and_gone_with_its_guard() {
        let state = tempfile::tempdir().unwrap();
        let dir = dir_for(state.path());
        let f = SystemPromptFile::write(&dir, "be terse; the launch code is 0000").unwrap();
        let path = f.path().to_owned();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "be terse; the launch code is 0000"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        drop(f);
        assert!(!path.exists());
        // A dead worker's directory goes; this one's stays until asked.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let theirs = state.path().join("prompts").join(dead.to_string());
        std::fs::create_dir_all(&theirs).unwrap();
        sweep(state.path(), false);
        assert!(!theirs.exists());
        assert!(dir.exists());
        sweep(state.path(), true);
        assert!(!dir.exists());
    }
}
