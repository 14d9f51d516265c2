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
pub const BINARY: &str = crate::os::installed::MCP_SHIM;

/// The shim's binary beside `exe` (the running `hum`), when one is
/// installed there and may be trusted ([`crate::os::installed::beside`]).
pub fn beside(exe: &Path) -> Option<PathBuf> {
    crate::os::installed::beside(exe, BINARY)
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
}
