//! Who is at the other end of a Unix socket, and whether hum may talk to
//! them. A socket path in a shared directory may have been bound by
//! another local user first: a client that connected to it would hand
//! that user its prompts (or, as a worker, run theirs). Every hum client
//! checks the peer's uid right after connecting; the daemon checks each
//! bee's the same way.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// This process's effective uid: what the kernel reports to its peers.
pub fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether a peer with `uid` may be talked to by a process running as
/// `own`: the same user, or root (a root daemon serving the user; root can
/// read the user's files anyway).
pub fn allowed(uid: u32, own: u32) -> bool {
    uid == own || uid == 0
}

/// The uid of the process at the other end of a connected Unix socket
/// (as it was when it bound or connected).
pub fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    peer_uid_raw(fd.as_raw_fd())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid_raw(fd: std::os::fd::RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `fd` is a live descriptor borrowed for the call; `cred` and
    // `len` are valid for writes of the size passed, as SO_PEERCRED needs.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_uid_raw(fd: std::os::fd::RawFd) -> io::Result<u32> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: `fd` is a live descriptor borrowed for the call; `uid` and
    // `gid` are valid for writes.
    let r = unsafe { libc::getpeereid(fd, &mut uid, &mut gid) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
}

/// A user's login name, from `/etc/passwd` (none when it is not there).
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

/// `uid`, with its name when known: `65534 (nobody)`.
pub fn describe(uid: u32) -> String {
    match user_name(uid) {
        Some(n) => format!("{uid} ({n})"),
        None => uid.to_string(),
    }
}

/// Refuses a peer that is neither this user nor root, with an error that
/// names who it is: `path` is what was connected to.
pub fn check(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let own = own_uid();
    let peer = peer_uid(fd).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot tell who serves {}: {e}", path.display()),
        )
    })?;
    if allowed(peer, own) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} is served by uid {}, not by you (uid {}): refusing to talk to it (another user may have bound it first)",
            path.display(),
            describe(peer),
            describe(own)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn only_the_same_user_or_root() {
        assert!(allowed(1000, 1000));
        assert!(allowed(0, 1000));
        assert!(!allowed(65534, 1000));
        assert!(!allowed(65534, 0));
    }

    #[test]
    fn a_socket_pair_is_our_own() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_uid(a.as_fd()).unwrap(), own_uid());
        check(a.as_fd(), Path::new("pair")).unwrap();
    }

    #[test]
    fn root_is_named() {
        assert_eq!(describe(0), "0 (root)");
    }
}
