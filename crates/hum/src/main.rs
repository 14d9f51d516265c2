use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(socket) = hum::cli::mcp_bridge_socket(&args) {
        return hum::cli::run_mcp_bridge(socket);
    }
    let cli = hum::cli::Cli::parse_from(args);
    // Before anything is written: nothing hum creates is readable by others.
    // The simulator is the exception: it stands in for an agent CLI, which
    // runs with the user's umask (its transcripts get explicit modes).
    if !matches!(cli.command, hum::cli::Command::SimAgent(_)) {
        hum::private_fs::set_private_umask();
    }
    hum::cli::run(cli)
}
