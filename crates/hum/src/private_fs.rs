//! Everything hum writes is private from the first write: state dir, logs,
//! ledger, tokens, configs it makes, the simulator's transcripts. Every hum
//! process sets its umask to 077 before doing anything else, so no file or
//! directory it creates is ever readable by another user, even for an
//! instant; directories that already exist are tightened where hum owns
//! them. Cells get the user's own umask back: files an agent writes into a
//! project are the user's business.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// The umask hum was started with (`u32::MAX` until [`set_private_umask`]).
static ORIGINAL_UMASK: AtomicU32 = AtomicU32::new(u32::MAX);

/// Sets the process umask to 077, remembering the one it replaced.
pub fn set_private_umask() {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    ORIGINAL_UMASK.store(old.as_raw_mode() as u32, Ordering::Relaxed);
}

/// Makes a child get the umask hum was started with.
pub fn restore_umask_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let original = ORIGINAL_UMASK.load(Ordering::Relaxed);
    if original == u32::MAX {
        return;
    }
    let mode = rustix::fs::Mode::from_raw_mode(original as _);
    // SAFETY: runs in the child between fork and exec; umask(2) is
    // async-signal-safe and the mode was captured by copy.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::umask(mode);
            Ok(())
        });
    }
}

/// Refused: not ours, or not a place hum may keep private files.
fn refused(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, what)
}

/// Creates `dir` (0700) and its missing parents, or takes it as it is
/// when it exists and is really this user's: opened without following a
/// symlink, its owner checked on the open descriptor, then tightened to
/// 0700 through that descriptor (never by path after a check). A symlink,
/// a directory of another user, or a shared (sticky, world-writable) one
/// is refused: another user may have made it first, to read or swap what
/// hum keeps there.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use rustix::fs::{fchmod, fstat, mkdir, open, Mode, OFlags};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match mkdir(dir, Mode::RWXU) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => refused(format!(
            "{} is a symlink or not a directory: refusing to use it",
            dir.display()
        )),
        e => e.into(),
    })?;
    let st = fstat(&fd)?;
    let own = thrum::peer::own_uid();
    if st.st_uid != own {
        return Err(refused(format!(
            "{} belongs to uid {}, not to you (uid {}): refusing to use it",
            dir.display(),
            thrum::peer::describe(st.st_uid),
            thrum::peer::describe(own)
        )));
    }
    let mode = st.st_mode as u32 & 0o7777;
    if mode & 0o1000 != 0 && mode & 0o022 != 0 {
        return Err(refused(format!(
            "{} is a shared directory (mode {mode:o}): hum keeps its files in a directory of your own",
            dir.display()
        )));
    }
    if mode & 0o077 != 0 {
        fchmod(&fd, Mode::from_raw_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` (created 0600), refusing a symlink there and a
/// file another user owns: the file is opened without following links and
/// checked on its descriptor before anything is written.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use rustix::fs::{fstat, ftruncate, open, FileType, Mode, OFlags};
    let fd = open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => refused(format!(
            "{} is a symlink: refusing to write through it",
            path.display()
        )),
        e => e.into(),
    })?;
    let st = fstat(&fd)?;
    let own = thrum::peer::own_uid();
    if st.st_uid != own || FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(refused(format!(
            "{} belongs to uid {} or is not a plain file: refusing to write it",
            path.display(),
            thrum::peer::describe(st.st_uid)
        )));
    }
    ftruncate(&fd, 0)?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes)
}

/// Reads `path` whole, at most `max` bytes, refusing a symlink there and a
/// file another user owns (checked on the open descriptor).
pub fn read_own_file(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    use rustix::fs::{fstat, open, FileType, Mode, OFlags};
    let fd = open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = fstat(&fd)?;
    if st.st_uid != thrum::peer::own_uid()
        || FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
    {
        return Err(refused(format!(
            "{} belongs to uid {} or is not a plain file: refusing to read it",
            path.display(),
            thrum::peer::describe(st.st_uid)
        )));
    }
    let mut bytes = Vec::new();
    let file = std::fs::File::from(fd);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, max as u64 + 1), &mut bytes)?;
    if bytes.len() > max {
        return Err(refused(format!("{} is over {max} bytes", path.display())));
    }
    Ok(bytes)
}

/// Removes `path` if it is this user's (a file in a shared directory may
/// be another user's by now).
pub fn remove_own_file(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.uid() == thrum::peer::own_uid()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_dir_is_0700_and_an_own_loose_one_is_tightened() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
    }

    #[test]
    fn a_symlinked_dir_is_refused_and_its_target_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("theirs");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = t.path().join("bridge-1");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_private_dir(&link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(mode(&target), 0o755, "the target was not touched");
    }

    #[test]
    fn a_shared_sticky_dir_is_refused_and_left_as_it_is() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("shared");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = create_private_dir(&d).unwrap_err();
        assert!(e.to_string().contains("shared"), "{e}");
        assert_eq!(mode(&d), 0o1777);
    }

    #[test]
    fn a_symlink_is_never_written_through() {
        let t = tempfile::tempdir().unwrap();
        let precious = t.path().join("precious");
        std::fs::write(&precious, "keep").unwrap();
        let link = t.path().join("metrics.addr");
        std::os::unix::fs::symlink(&precious, &link).unwrap();
        assert!(write_private_file(&link, b"127.0.0.1:1").is_err());
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
        let own = t.path().join("mine");
        write_private_file(&own, b"long content").unwrap();
        write_private_file(&own, b"short").unwrap();
        assert_eq!(std::fs::read_to_string(&own).unwrap(), "short");
        assert_eq!(mode(&own), 0o600);
        assert_eq!(
            std::fs::metadata(&own).unwrap().uid(),
            thrum::peer::own_uid()
        );
    }
}
