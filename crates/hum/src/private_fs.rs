//! Everything hum writes is private from the first write: state dir, logs,
//! ledger, tokens, configs it makes, the simulator's transcripts. Every hum
//! process sets its umask to 077 before doing anything else, so no file or
//! directory it creates is ever readable by another user, even for an
//! instant; directories that already exist are tightened where hum owns
//! them. Cells get the user's own umask back: files an agent writes into a
//! project are the user's business.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
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

/// Creates `dir` and its missing parents as 0700, and makes `dir` itself
/// 0700 if it existed with a looser mode.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
