use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything is written: nothing hum creates is readable by others.
    hum::private_fs::set_private_umask();
    let cli = hum::cli::Cli::parse();
    hum::cli::run(cli)
}
