use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if hum::cli::is_mcp_bridge(&args) {
        // Private like every hum process, though it creates no file.
        hum::private_fs::set_private_umask();
        if let Some(code) = hum::cli::mcp_bridge_at_once(&args) {
            return code;
        }
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
