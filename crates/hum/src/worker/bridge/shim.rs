//! `hum-mcp-bridge <socket>` (or `hum mcp-bridge <socket>`): the MCP
//! server a cell's CLI starts (a stdio server in its `--mcp-config`). It
//! only carries bytes between its stdio and its cell's bridge socket in the
//! worker, which speaks MCP; being the CLI's child, it lives in the cell's
//! process group (and cgroup) and dies with the cell. It ends when either
//! side closes.
//!
//! Every cell starts one, so it has a binary of its own: a start of it
//! costs half the CPU and a quarter of the page faults of a start of the
//! whole `hum` (BENCHMARKS.md). `hum mcp-bridge` is the same shim, for
//! where only `hum` was copied.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The shim's own binary, which `cargo install` puts beside `hum`.
pub const BINARY: &str = "hum-mcp-bridge";

/// The shim's binary beside `exe` (the running `hum`), when one is
/// installed there and is as much its owner's as `hum` is: every cell
/// runs it, with its bridge socket. So it must be a regular executable
/// file (not a symlink), owned by `hum`'s owner or root, and neither it
/// nor its directory writable by anyone else (a shared directory would
/// let another user put one there first, or swap it later).
pub fn beside(exe: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let path = exe.with_file_name(BINARY);
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

/// The `--mcp-config` that starts the shim on `socket`: its own binary
/// `own` when there is one, else `exe mcp-bridge`. Paths that are not
/// UTF-8 cannot be said in JSON: an error, not a mangled path.
pub fn config(
    exe: &Path,
    own: Option<PathBuf>,
    socket: &Path,
) -> std::io::Result<serde_json::Value> {
    let text = |p: &Path| {
        p.to_str().map(str::to_owned).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is not UTF-8, which an MCP config cannot carry",
                    p.display()
                ),
            )
        })
    };
    let socket = text(socket)?;
    let (command, args) = match own {
        Some(bin) => (text(&bin)?, vec![socket]),
        None => (text(exe)?, vec!["mcp-bridge".to_owned(), socket]),
    };
    Ok(
        serde_json::json!({"mcpServers": {crate::hive::argv::BRIDGE_SERVER: {
            "type": "stdio",
            "command": command,
            "args": args,
        }}}),
    )
}

/// Copies `from` into `to` until EOF, flushing each read (MCP messages are
/// lines; a reader waits for each one whole).
fn pump(mut from: impl Read, mut to: impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

pub fn run(socket: &Path) -> ExitCode {
    let stream = match UnixStream::connect(socket).and_then(|s| {
        // The worker's own socket, or nobody's: another user's fake bridge
        // would answer the agent's calls and permission asks.
        thrum::peer::check(std::os::fd::AsFd::as_fd(&s), socket)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{BINARY}: cannot reach {}: {e}", socket.display());
            return ExitCode::from(1);
        }
    };
    let Ok(to_worker) = stream.try_clone() else {
        eprintln!("{BINARY}: cannot share the socket");
        return ExitCode::from(1);
    };
    // The CLI's requests go up on their own thread; when it closes our
    // stdin, the worker is told by a half-close and answers the EOF.
    std::thread::spawn(move || {
        let _ = pump(std::io::stdin().lock(), &to_worker);
        let _ = to_worker.shutdown(std::net::Shutdown::Write);
    });
    match pump(&stream, std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_config_names_the_shims_own_binary_when_there_is_one_else_hum_mcp_bridge() {
        let (exe, socket) = (Path::new("/opt/hum/hum"), Path::new("/run/b/c.sock"));
        let server = |cfg: serde_json::Value| cfg["mcpServers"]["hum"].clone();
        let own = server(config(exe, Some(exe.with_file_name(BINARY)), socket).unwrap());
        assert_eq!(own["command"], "/opt/hum/hum-mcp-bridge");
        assert_eq!(own["args"], serde_json::json!(["/run/b/c.sock"]));
        assert_eq!(own["type"], "stdio");
        let sub = server(config(exe, None, socket).unwrap());
        assert_eq!(sub["command"], "/opt/hum/hum");
        assert_eq!(
            sub["args"],
            serde_json::json!(["mcp-bridge", "/run/b/c.sock"])
        );
    }

    #[test]
    fn a_path_that_is_not_utf8_is_an_error_not_a_mangled_path() {
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"/run/\xff/c.sock"));
        let err = config(Path::new("/opt/hum"), None, odd).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn only_an_executable_file_beside_hum_is_taken_for_the_shim() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.path().join("hum");
        std::fs::write(&exe, b"").unwrap();
        let shim = dir.path().join(BINARY);
        let mode = |m: u32| std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(m));
        assert_eq!(beside(&exe), None, "none installed");
        std::fs::create_dir(&shim).unwrap();
        assert_eq!(beside(&exe), None, "a directory");
        std::fs::remove_dir(&shim).unwrap();
        std::fs::write(&shim, b"#!/bin/sh\n").unwrap();
        mode(0o600).unwrap();
        assert_eq!(beside(&exe), None, "not executable");
        mode(0o775).unwrap();
        assert_eq!(beside(&exe), None, "its group may write it");
        mode(0o755).unwrap();
        assert_eq!(beside(&exe), Some(shim.clone()));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(beside(&exe), None, "in a directory others may write");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_file(&shim).unwrap();
        std::os::unix::fs::symlink("/bin/true", &shim).unwrap();
        assert_eq!(beside(&exe), None, "a symlink");
    }

    /// Another user's file beside `hum` is never run by the cells (root
    /// makes one here; CI runs as root).
    #[test]
    fn a_shim_another_user_owns_is_not_taken() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test makes a file another user owns: run it as root (CI does)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.path().join("hum");
        let shim = dir.path().join(BINARY);
        std::fs::write(&exe, b"").unwrap();
        std::fs::write(&shim, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        // `hum` is nobody's, the shim root's: root's counts as the system's.
        std::os::unix::fs::chown(&exe, Some(65534), None).unwrap();
        assert_eq!(
            beside(&exe),
            Some(shim.clone()),
            "root's shim beside nobody's hum"
        );
        // The other way round: nobody's shim beside root's hum.
        std::os::unix::fs::chown(&exe, Some(0), None).unwrap();
        std::os::unix::fs::chown(&shim, Some(65534), None).unwrap();
        assert_eq!(beside(&exe), None, "another user's shim was taken");
    }
}
