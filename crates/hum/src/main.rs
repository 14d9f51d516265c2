use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = hum::cli::Cli::parse();
    // Before anything is written: nothing hum creates is readable by others.
    // The simulator is the exception: it stands in for an agent CLI, which
    // runs with the user's umask (its transcripts get explicit modes).
    if !matches!(cli.command, hum::cli::Command::SimAgent(_)) {
        hum::private_fs::set_private_umask();
    }
    hum::cli::run(cli)
}
