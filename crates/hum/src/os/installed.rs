//! hum's companion binaries, installed beside `hum` by `cargo install`:
//! the MCP shim every cell's CLI starts and the simulator every sim cell
//! runs. Each is a start of a small binary instead of the whole `hum`
//! (its loader's relocations and page faults), once per cell
//! (BENCHMARKS.md). Without them `hum` runs the same code as a
//! subcommand.

use std::path::{Path, PathBuf};

/// The MCP shim's binary (`hum mcp-bridge` in a binary of its own).
pub const MCP_SHIM: &str = "hum-mcp-bridge";

/// The simulator's binary (`hum sim-agent` in a binary of its own).
pub const SIM: &str = "hum-sim";

/// The binary `name` beside `exe` (the running `hum`), when one is
/// installed there and is as much its owner's as `hum` is: cells run it.
/// So it must be a regular executable file (not a symlink), owned by
/// `hum`'s owner or root, and neither it nor its directory writable by
/// anyone else (a shared directory would let another user put one there
/// first, or swap it later).
pub fn beside(exe: &Path, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let path = exe.with_file_name(name);
    let owner = std::fs::metadata(exe).ok()?.uid();
    let dir = std::fs::metadata(path.parent()?).ok()?;
    let file = std::fs::symlink_metadata(&path).ok()?;
    let ours = |uid: u32| uid == owner || uid == 0;
    let others_write = |mode: u32| mode & 0o022 != 0;
    let fit = file.is_file()
        && file.mode() & 0o111 != 0
        && ours(file.uid())
        && !others_write(file.mode())
        && ours(dir.uid())
        && !others_write(dir.mode());
    fit.then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NAME: &str = "hum-companion";

    #[test]
    fn only_an_executable_file_beside_hum_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.path().join("hum");
        std::fs::write(&exe, b"").unwrap();
        let bin = dir.path().join(NAME);
        let mode = |m: u32| std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(m));
        assert_eq!(beside(&exe, NAME), None, "none installed");
        std::fs::create_dir(&bin).unwrap();
        assert_eq!(beside(&exe, NAME), None, "a directory");
        std::fs::remove_dir(&bin).unwrap();
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        mode(0o600).unwrap();
        assert_eq!(beside(&exe, NAME), None, "not executable");
        mode(0o775).unwrap();
        assert_eq!(beside(&exe, NAME), None, "its group may write it");
        mode(0o755).unwrap();
        assert_eq!(beside(&exe, NAME), Some(bin.clone()));
        assert_eq!(beside(&exe, "hum-other"), None, "another name");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(beside(&exe, NAME), None, "in a directory others may write");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_file(&bin).unwrap();
        std::os::unix::fs::symlink("/bin/true", &bin).unwrap();
        assert_eq!(beside(&exe, NAME), None, "a symlink");
    }

    /// Another user's file beside `hum` is never run by the cells (root
    /// makes one here; CI runs as root).
    #[test]
    fn a_binary_another_user_owns_is_not_taken() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test makes a file another user owns: run it as root (CI does)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.path().join("hum");
        let bin = dir.path().join(NAME);
        std::fs::write(&exe, b"").unwrap();
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        // `hum` is nobody's, the binary root's: root's counts as the system's.
        std::os::unix::fs::chown(&exe, Some(65534), None).unwrap();
        assert_eq!(
            beside(&exe, NAME),
            Some(bin.clone()),
            "root's binary beside nobody's hum"
        );
        // The other way round: nobody's binary beside root's hum.
        std::os::unix::fs::chown(&exe, Some(0), None).unwrap();
        std::os::unix::fs::chown(&bin, Some(65534), None).unwrap();
        assert_eq!(beside(&exe, NAME), None, "another user's binary was taken");
    }
}
