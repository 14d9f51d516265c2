//! The daemon's socket: the directory 0700, the socket 0600 (file
//! permissions are the trust boundary), one live daemon per socket, and a
//! stale socket left by a dead one removed.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::net::UnixListener;

/// Why the daemon cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("another hum daemon is already serving {0}")]
    AlreadyRunning(String),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(String),
    #[error("cannot prepare {path}: {source}")]
    Io { path: String, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ListenError + '_ {
    move |source| ListenError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Binds `path`, creating its directory (0700) and restricting the socket
/// (0600). A socket file nobody answers on is stale and replaced; one that
/// answers belongs to a live daemon, and this one refuses to start.
pub async fn bind(path: &Path) -> Result<UnixListener, ListenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(dir))?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        // Only a socket may be replaced: anything else at that path is
        // somebody's file, and a failed connect says nothing about it.
        if !meta.file_type().is_socket() {
            return Err(ListenError::NotASocket(path.display().to_string()));
        }
        match tokio::net::UnixStream::connect(path).await {
            Ok(_) => return Err(ListenError::AlreadyRunning(path.display().to_string())),
            // A full accept queue: a live daemon under a burst, not a stale
            // socket.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(ListenError::AlreadyRunning(path.display().to_string()))
            }
            Err(_) => {
                tracing::info!(event = "daemon.stale_socket", path = %path.display(), "removing a stale socket");
                std::fs::remove_file(path).map_err(io_err(path))?;
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    Ok(listener)
}

/// Whether a peer with `uid` may talk to a daemon running as `own`: the same
/// user, or root.
pub fn allowed(uid: u32, own: u32) -> bool {
    uid == own || uid == 0
}

/// Raises the open-file limit to its hard maximum (a thousand bees are a
/// thousand sockets) and returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        let raised = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
        if raised.is_ok() {
            return max;
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_user_or_root() {
        assert!(allowed(1000, 1000));
        assert!(allowed(0, 1000));
        assert!(!allowed(65534, 1000));
        assert!(!allowed(65534, 0));
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_and_live_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/thrum.sock");
        let live = bind(&path).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(matches!(
            bind(&path).await,
            Err(ListenError::AlreadyRunning(_))
        ));
        drop(live);
        // The file is still there, nobody answers: stale.
        assert!(path.exists());
        let again = bind(&path).await.unwrap();
        drop(again);
    }

    #[tokio::test]
    async fn a_regular_file_at_the_socket_path_survives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thrum.sock");
        std::fs::write(&path, "precious").unwrap();
        assert!(matches!(bind(&path).await, Err(ListenError::NotASocket(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(bind(&link).await, Err(ListenError::NotASocket(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }
}
