//! `hum-mcp-bridge <socket>`: the MCP server every cell's CLI starts, the
//! same shim as `hum mcp-bridge <socket>` in a binary of its own. Every
//! cell starts one, and a start of the whole `hum` binary (its loader's
//! relocations and page faults) cost twice what this one does
//! (BENCHMARKS.md); the worker uses it when it is installed next to `hum`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match hum::cli::shim_binary_socket(&args) {
        Some(socket) => hum::cli::run_mcp_bridge(socket),
        None => {
            eprintln!(
                "usage: hum-mcp-bridge <socket> (started by a hum worker's cells, not by hand)"
            );
            ExitCode::from(2)
        }
    }
}
