//! Where the daemon's socket lives.
//!
//! First that applies: `$HUM_THRUM_SOCK`; `$XDG_RUNTIME_DIR/hum/thrum.sock`;
//! then on Linux `/run/user/<uid>/hum/thrum.sock`, on macOS (which has no
//! `/run/user`) `$TMPDIR/hum/thrum.sock` (launchd gives each user a private
//! `$TMPDIR`), else `/tmp/hum-<uid>/thrum.sock`. An empty variable counts as
//! unset, so `HUM_THRUM_SOCK=` cannot silently mean "the current directory".

use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable that overrides the socket path.
pub const SOCK_ENV: &str = "HUM_THRUM_SOCK";

/// Where per-user runtime files go when nothing says: the one place this
/// crate names a target OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeDirs {
    /// `/run/user/<uid>`, made by the login manager.
    RunUser,
    /// `$TMPDIR` (private per user on macOS), else `/tmp/hum-<uid>`.
    TmpDir,
}

impl RuntimeDirs {
    /// This build's convention.
    pub const HOST: RuntimeDirs = if cfg!(target_os = "linux") {
        RuntimeDirs::RunUser
    } else {
        RuntimeDirs::TmpDir
    };
}

/// The socket path for this process: its environment and its real uid.
pub fn socket_path() -> PathBuf {
    socket_path_from(|k| std::env::var_os(k), current_uid())
}

/// The resolution rule with this build's convention, the environment and
/// uid passed in.
pub fn socket_path_from(env: impl Fn(&str) -> Option<OsString>, uid: u32) -> PathBuf {
    socket_path_for(RuntimeDirs::HOST, env, uid)
}

/// The resolution rule itself, for either convention.
pub fn socket_path_for(
    dirs: RuntimeDirs,
    env: impl Fn(&str) -> Option<OsString>,
    uid: u32,
) -> PathBuf {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = set(SOCK_ENV) {
        return PathBuf::from(p);
    }
    if let Some(dir) = set("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("hum").join("thrum.sock");
    }
    match (dirs, set("TMPDIR")) {
        (RuntimeDirs::RunUser, _) => PathBuf::from(format!("/run/user/{uid}/hum/thrum.sock")),
        (RuntimeDirs::TmpDir, Some(tmp)) => PathBuf::from(tmp).join("hum").join("thrum.sock"),
        (RuntimeDirs::TmpDir, None) => PathBuf::from(format!("/tmp/hum-{uid}/thrum.sock")),
    }
}

fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// How long [`connect`] keeps trying while the daemon's accept queue is
/// full. A burst of thousands of connections fills it for moments, not
/// longer; a daemon that is not there fails at once.
pub const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects to the daemon's socket, and refuses it (`PermissionDenied`,
/// naming who serves it) unless it is served by this user or root: a
/// socket another user bound first must not get our prompts. A Unix
/// socket whose accept queue is full answers a non-blocking connect with
/// `EAGAIN` rather than making it wait; that is "busy", not "gone", so it
/// is retried (with a growing pause) for up to [`CONNECT_PATIENCE`]. Any
/// other error is returned as is.
pub async fn connect(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    let stream = connect_unchecked(path).await?;
    crate::peer::check(std::os::fd::AsFd::as_fd(&stream), path)?;
    Ok(stream)
}

/// [`connect`] without the check of who serves the socket: for a probe
/// that only asks whether anyone answers.
pub async fn connect_unchecked(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        match tokio::net::UnixStream::connect(path).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn explicit_variable_wins() {
        let p = socket_path_from(
            env(&[
                ("HUM_THRUM_SOCK", "/tmp/x.sock"),
                ("XDG_RUNTIME_DIR", "/run/user/5"),
            ]),
            5,
        );
        assert_eq!(p, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn xdg_runtime_dir_is_second() {
        let p = socket_path_from(env(&[("XDG_RUNTIME_DIR", "/xdg")]), 5);
        assert_eq!(p, PathBuf::from("/xdg/hum/thrum.sock"));
    }

    #[test]
    fn run_user_uid_is_last_on_linux() {
        assert_eq!(
            socket_path_for(RuntimeDirs::RunUser, env(&[("TMPDIR", "/t")]), 1234),
            PathBuf::from("/run/user/1234/hum/thrum.sock")
        );
    }

    #[test]
    fn macos_uses_its_private_tmpdir_and_never_run_user() {
        let tmp = "/var/folders/xy/abc123/T/";
        assert_eq!(
            socket_path_for(RuntimeDirs::TmpDir, env(&[("TMPDIR", tmp)]), 501),
            PathBuf::from("/var/folders/xy/abc123/T/hum/thrum.sock")
        );
        assert_eq!(
            socket_path_for(RuntimeDirs::TmpDir, env(&[("TMPDIR", "")]), 501),
            PathBuf::from("/tmp/hum-501/thrum.sock")
        );
        // A socket path must fit sun_path (104 bytes on macOS).
        assert!(
            socket_path_for(RuntimeDirs::TmpDir, env(&[("TMPDIR", tmp)]), 501)
                .as_os_str()
                .len()
                < 104
        );
    }

    #[test]
    fn empty_variables_count_as_unset() {
        for dirs in [RuntimeDirs::RunUser, RuntimeDirs::TmpDir] {
            let p = socket_path_for(
                dirs,
                env(&[("HUM_THRUM_SOCK", ""), ("XDG_RUNTIME_DIR", "")]),
                7,
            );
            assert!(p.ends_with("thrum.sock") && p.is_absolute(), "{p:?}");
            assert_ne!(p, PathBuf::from("thrum.sock"));
        }
    }

    #[test]
    fn current_uid_reads_the_real_uid() {
        let id = std::process::Command::new("id")
            .arg("-ru")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&id.stdout).trim(),
            current_uid().to_string()
        );
    }
}
