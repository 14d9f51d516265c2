//! `hum-sim`: the simulated agent CLI, `hum sim-agent` in a binary of its
//! own. Every sim cell starts one, and a start of the whole `hum` (its
//! loader's relocations and page faults, and building every subcommand's
//! flags) cost half again what this one does (BENCHMARKS.md); the worker
//! uses it when it is installed next to `hum`.

use std::process::ExitCode;

fn main() -> ExitCode {
    hum::cli::run_sim_binary(std::env::args_os().collect())
}
