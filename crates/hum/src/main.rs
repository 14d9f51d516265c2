use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = hum::cli::Cli::parse();
    hum::cli::run(cli)
}
