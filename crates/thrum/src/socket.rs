//! Where the daemon's socket lives.
//!
//! First that applies: `$HUM_THRUM_SOCK`; `$XDG_RUNTIME_DIR/hum/thrum.sock`;
//! `/run/user/<uid>/hum/thrum.sock`. An empty variable counts as unset, so
//! `HUM_THRUM_SOCK=` cannot silently mean "the current directory".

use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable that overrides the socket path.
pub const SOCK_ENV: &str = "HUM_THRUM_SOCK";

/// The socket path for this process: its environment and its real uid.
pub fn socket_path() -> PathBuf {
    socket_path_from(|k| std::env::var_os(k), current_uid())
}

/// The resolution rule itself, with the environment and uid passed in.
pub fn socket_path_from(env: impl Fn(&str) -> Option<OsString>, uid: u32) -> PathBuf {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = set(SOCK_ENV) {
        return PathBuf::from(p);
    }
    if let Some(dir) = set("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("hum").join("thrum.sock");
    }
    PathBuf::from(format!("/run/user/{uid}/hum/thrum.sock"))
}

fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// How long [`connect`] keeps trying while the daemon's accept queue is
/// full. A burst of thousands of connections fills it for moments, not
/// longer; a daemon that is not there fails at once.
pub const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects to the daemon's socket. A Unix socket whose accept queue is
/// full answers a non-blocking connect with `EAGAIN` rather than making it
/// wait; that is "busy", not "gone", so it is retried (with a growing
/// pause) for up to [`CONNECT_PATIENCE`]. Any other error is returned as is.
pub async fn connect(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
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
    fn run_user_uid_is_last() {
        assert_eq!(
            socket_path_from(env(&[]), 1234),
            PathBuf::from("/run/user/1234/hum/thrum.sock")
        );
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let p = socket_path_from(env(&[("HUM_THRUM_SOCK", ""), ("XDG_RUNTIME_DIR", "")]), 7);
        assert_eq!(p, PathBuf::from("/run/user/7/hum/thrum.sock"));
    }

    #[test]
    fn current_uid_reads_the_real_uid() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status.contains(&format!("Uid:\t{}", current_uid())));
    }
}
