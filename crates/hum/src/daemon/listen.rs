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
    #[error("{path} belongs to uid {owner}, not to you: refusing to use or replace it (another user may have bound it first; choose a socket in a directory of your own)")]
    Foreign { path: String, owner: String },
    #[error("the socket's directory {path} is {why}: refusing to serve there (choose a directory of your own)")]
    UnsafeDir { path: String, why: String },
    #[error("cannot prepare {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// What a directory that holds (or would hold) the socket is to its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirSafety {
    /// Theirs (or root's), and nobody else may write in it.
    Private,
    /// Writable by everyone but sticky (like `/tmp`): nobody can remove or
    /// replace this user's socket there, but anyone can take the path
    /// first, which every client and humd check.
    SharedSticky,
    /// Another user's.
    Foreign(u32),
    /// Others may write in it and nothing stops them replacing files.
    WritableByOthers(u32),
}

impl DirSafety {
    /// Judges a directory by its owner and mode, for a process of `own`.
    pub fn judge(owner: u32, mode: u32, own: u32) -> DirSafety {
        if owner != own && owner != 0 {
            return DirSafety::Foreign(owner);
        }
        match (mode & 0o022 != 0, mode & 0o1000 != 0) {
            (false, _) => DirSafety::Private,
            (true, true) => DirSafety::SharedSticky,
            (true, false) => DirSafety::WritableByOthers(mode & 0o7777),
        }
    }

    /// The directory at `dir` (symlinks followed: what counts is the
    /// directory the socket lands in).
    pub fn of(dir: &Path) -> io::Result<DirSafety> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir)?;
        Ok(DirSafety::judge(m.uid(), m.mode(), thrum::peer::own_uid()))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ListenError + '_ {
    move |source| ListenError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Binds `path`, creating its directory (0700) and restricting the socket
/// (0600). An existing directory must be this user's or root's and not
/// writable by others unless sticky; an existing socket must be this
/// user's. A socket file nobody answers on is stale and replaced; one that
/// answers belongs to a live daemon, and this one refuses to start.
pub async fn bind(path: &Path) -> Result<UnixListener, ListenError> {
    use std::os::unix::fs::MetadataExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                crate::private_fs::create_private_dir(dir).map_err(io_err(dir))?
            }
            _ => {
                let why = match DirSafety::of(dir).map_err(io_err(dir))? {
                    DirSafety::Private => None,
                    DirSafety::SharedSticky => {
                        tracing::warn!(event = "daemon.shared_socket_dir", dir = %dir.display(),
                            "the socket is in a shared directory: another user could take its path first (clients check who serves it)");
                        None
                    }
                    DirSafety::Foreign(uid) => {
                        Some(format!("owned by uid {}", thrum::peer::describe(uid)))
                    }
                    DirSafety::WritableByOthers(mode) => Some(format!(
                        "writable by other users without the sticky bit (mode {mode:o})"
                    )),
                };
                if let Some(why) = why {
                    return Err(ListenError::UnsafeDir {
                        path: dir.display().to_string(),
                        why,
                    });
                }
            }
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        // Only a socket may be replaced: anything else at that path is
        // somebody's file, and a failed connect says nothing about it.
        if !meta.file_type().is_socket() {
            return Err(ListenError::NotASocket(path.display().to_string()));
        }
        if meta.uid() != thrum::peer::own_uid() {
            return Err(ListenError::Foreign {
                path: path.display().to_string(),
                owner: thrum::peer::describe(meta.uid()),
            });
        }
        match crate::client::answering(path).await {
            crate::client::Answering::Yes
            | crate::client::Answering::Busy
            | crate::client::Answering::Stranger(_) => {
                return Err(ListenError::AlreadyRunning(path.display().to_string()))
            }
            crate::client::Answering::No => {
                tracing::info!(event = "daemon.stale_socket", path = %path.display(), "removing a stale socket");
                std::fs::remove_file(path).map_err(io_err(path))?;
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    Ok(listener)
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
    fn socket_dirs_are_judged_by_owner_and_mode() {
        use DirSafety::*;
        assert_eq!(DirSafety::judge(1000, 0o40700, 1000), Private);
        assert_eq!(DirSafety::judge(0, 0o40755, 1000), Private);
        assert_eq!(DirSafety::judge(0, 0o41777, 1000), SharedSticky);
        assert_eq!(DirSafety::judge(65534, 0o40700, 1000), Foreign(65534));
        assert_eq!(DirSafety::judge(65534, 0o41777, 0), Foreign(65534));
        assert_eq!(
            DirSafety::judge(1000, 0o40777, 1000),
            WritableByOthers(0o777)
        );
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
