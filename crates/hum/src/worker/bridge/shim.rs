//! `hum mcp-bridge <socket>`: the MCP server a cell's CLI starts (a stdio
//! server in its `--mcp-config`). It only carries bytes between its stdio
//! and its cell's bridge socket in the worker, which speaks MCP; being the
//! CLI's child, it lives in the cell's process group (and cgroup) and dies
//! with the cell. It ends when either side closes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

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
            eprintln!("hum mcp-bridge: cannot reach {}: {e}", socket.display());
            return ExitCode::from(1);
        }
    };
    let Ok(to_worker) = stream.try_clone() else {
        eprintln!("hum mcp-bridge: cannot share the socket");
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
