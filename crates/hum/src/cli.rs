// The subcommands' doc comments are their --help text, written for a
// terminal, not for rustdoc.
#![allow(rustdoc::invalid_html_tags)]

//! The `hum` command line: one binary, one subcommand per role.

use crate::logging::{init_logging, LogFormat};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "hum",
    version,
    about = "A bounded pool of agent CLI processes that never leaks one."
)]
pub struct Cli {
    /// Log format on stderr: text (default) or json. Also HUM_LOG_FORMAT.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "HUM_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stand-in for the claude CLI, for tests, benchmarks and demos.
    ///
    /// Speaks like `claude -p --verbose --input-format stream-json
    /// --output-format stream-json --include-partial-messages`: one turn per
    /// user message on stdin (system/init, system/status, stream events,
    /// assistant, result), alive after each result, exit 0 on stdin EOF once
    /// the current turn is done.
    ///
    /// The answer is "SIM-REPLY #<n>: you said <prompt>", n counting the
    /// session's turns (a resumed session keeps counting), then "; before that
    /// <previous prompt>" once the session has history. Transcripts live where
    /// claude keeps them: $CLAUDE_CONFIG_DIR (else $HOME/.claude), then
    /// projects/<cwd with every / replaced by ->/<session-id>.jsonl. --resume
    /// of an unknown id prints an error result and exits 1; --session-id of an
    /// id in use exits 1. SIGTERM ends the Bash tool commands and MCP servers,
    /// then exits 143, as claude does.
    ///
    /// The knobs below reproduce the failures hum must survive; each is also
    /// read from its environment variable, so a cell spawned with claude's
    /// argv can still be steered.
    #[command(name = "sim-agent")]
    SimAgent(Box<crate::sim::SimArgs>),

    /// An OpenAI-compatible HTTP front door to humd (chat completions).
    Gateway(crate::gateway::GatewayArgs),

    /// Whole-system benchmarks (JSON on stdout).
    Bench(crate::bench::BenchArgs),

    /// Watch hum absorb a herd of bees without leaking a process.
    Demo(crate::demo::DemoArgs),

    /// Show every cell, the pool, who is connected and how cells are contained.
    Status(crate::status::StatusArgs),

    /// Every cell live: memory, CPU, turns, cost; sort, tear down, quit.
    Top(crate::top::TopArgs),

    /// Be an ACP agent on stdin/stdout for an editor (Zed, JetBrains,
    /// acpx): each session a sid, each prompt a turn in hum's pool.
    Acp(crate::acp_agent::AcpArgs),

    /// Move this cluster node's sessions to the other nodes and take no new
    /// ones (`--off` ends it).
    Drain(crate::drain::DrainArgs),

    /// What turns cost: tokens and dollars by day, sid, bee, model or hive.
    Usage(crate::usage::report::UsageArgs),

    /// Start hum: the daemon and a worker, supervised, until SIGTERM/SIGINT.
    Up(crate::up::UpArgs),

    /// Run humd: route bees' prompts to workers and answers back.
    Daemon(crate::daemon::DaemonArgs),

    /// Ask one question and stream the answer.
    Prompt(crate::prompt::PromptArgs),

    /// Serve agent turns for humd: a capped pool of warm agent CLI cells.
    Worker(crate::worker::WorkerArgs),

    /// Show which process-containment mechanisms this machine offers, and
    /// why not the others.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Configuration file to check (default: ~/.config/hum/hum.json).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },

    /// Internal: ends a worker's cells once the worker is gone.
    #[command(hide = true)]
    Sentinel {
        #[arg(long)]
        instance: String,
        #[arg(long)]
        ledger: std::path::PathBuf,
        #[arg(long)]
        cgroup_root: Option<std::path::PathBuf>,
        /// The worker's backend: its ledger's start times are in that
        /// backend's clock.
        #[arg(long, value_enum, default_value_t = crate::cell::ContainmentMode::Auto)]
        containment: crate::cell::ContainmentMode,
    },

    /// Internal: hosts cells without pool or daemon (tests, benchmarks).
    #[command(name = "cell-host", hide = true)]
    CellHost(crate::cellhost::CellHostArgs),

    /// Internal: the MCP server a cell's CLI starts; carries its stdio to
    /// the cell's tool bridge in the worker.
    #[command(name = "mcp-bridge", hide = true)]
    McpBridge {
        /// The cell's bridge socket.
        socket: std::path::PathBuf,
    },
}

/// The socket of `hum mcp-bridge <socket>`, read without parsing the whole
/// command line: every cell's CLI starts one, and building clap's tree of
/// every subcommand was most of the shim's start-up CPU (BENCHMARKS.md).
/// Any other shape of arguments (`--help`, a missing socket) goes to clap.
pub fn mcp_bridge_socket(args: &[std::ffi::OsString]) -> Option<&std::path::Path> {
    match args {
        [_, cmd, socket] if cmd == "mcp-bridge" => socket_arg(socket),
        _ => None,
    }
}

/// The socket of `hum-mcp-bridge <socket>`, the shim's own binary.
pub fn shim_binary_socket(args: &[std::ffi::OsString]) -> Option<&std::path::Path> {
    match args {
        [_, socket] => socket_arg(socket),
        _ => None,
    }
}

/// A socket argument, not an option.
fn socket_arg(arg: &std::ffi::OsStr) -> Option<&std::path::Path> {
    (!arg.as_encoded_bytes().starts_with(b"-")).then(|| std::path::Path::new(arg))
}

/// Runs the shim a cell's CLI starts as its MCP server: private like every
/// hum process, though it creates no file.
pub fn run_mcp_bridge(socket: &std::path::Path) -> ExitCode {
    crate::private_fs::set_private_umask();
    crate::worker::bridge::shim::run(socket)
}

// `hum-sim`'s flags: `hum sim-agent`'s, without the rest of `hum`'s
// command tree to build.
/// Stand-in for the claude CLI, for tests, benchmarks and demos: `hum
/// sim-agent` in a binary of its own (`hum sim-agent --help` says more).
#[derive(Debug, Parser)]
#[command(name = "hum-sim")]
struct SimCli {
    #[command(flatten)]
    args: crate::sim::SimArgs,
}

/// Runs the simulator as `hum-sim`, its own binary: `hum sim-agent`'s
/// flags, help and behaviour, its helpers started as `hum-sim` too.
pub fn run_sim_binary(args: Vec<std::ffi::OsString>) -> ExitCode {
    let args = SimCli::parse_from(args).args;
    crate::sim::started_as_own_binary();
    crate::sim::run(args)
}

/// Runs the chosen subcommand and turns its outcome into an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let format = cli.log_format;
    let init_logging = || init_logging(format);
    match cli.command {
        Command::SimAgent(args) => crate::sim::run(*args),
        Command::Doctor { json, config } => crate::doctor::run(json, config.as_deref()),
        Command::Daemon(args) => {
            init_logging();
            crate::daemon::run(args)
        }
        Command::Prompt(args) => crate::prompt::run(args),
        Command::Status(args) => crate::status::run(args),
        Command::Usage(args) if args.cluster.is_some() => crate::daemon::cluster::usage::run(args),
        Command::Usage(args) => crate::usage::report::run(args),
        Command::Top(args) => crate::top::run(args),
        Command::Drain(args) => crate::drain::run(args),
        Command::Acp(args) => {
            // On stderr, which editors keep as the agent's log (stdout is
            // the protocol).
            init_logging();
            crate::acp_agent::run(args)
        }
        Command::Demo(args) => crate::demo::run(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::Gateway(args) => {
            init_logging();
            crate::gateway::run(args)
        }
        Command::Up(args) => {
            init_logging();
            crate::up::run(args)
        }
        Command::Worker(args) => {
            init_logging();
            crate::worker::run(args)
        }
        Command::Sentinel {
            instance,
            ledger,
            cgroup_root,
            containment,
        } => {
            init_logging();
            crate::cell::sentinel::run(&instance, &ledger, cgroup_root, containment)
        }
        Command::McpBridge { socket } => run_mcp_bridge(&socket),
        Command::CellHost(args) => {
            init_logging();
            crate::cellhost::run(args)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<std::ffi::OsString> {
        a.iter().map(Into::into).collect()
    }

    #[test]
    fn only_a_bridge_with_its_socket_skips_the_command_line_parser() {
        for other in [
            &["hum", "status"][..],
            &["hum", "mcp-bridge"],
            &["hum", "mcp-bridge", "--help"],
            &["hum", "mcp-bridge", "/s", "extra"],
            &["hum", "sim-agent", "mcp-bridge"],
        ] {
            assert!(mcp_bridge_socket(&args(other)).is_none(), "{other:?}");
        }
        let taken = args(&["hum", "mcp-bridge", "/run/b/c.sock"]);
        assert_eq!(
            mcp_bridge_socket(&taken),
            Some(std::path::Path::new("/run/b/c.sock"))
        );
    }

    #[test]
    fn the_shims_own_binary_takes_one_socket_and_no_option() {
        for other in [
            &["hum-mcp-bridge"][..],
            &["hum-mcp-bridge", "--help"],
            &["hum-mcp-bridge", "/s", "extra"],
        ] {
            assert!(shim_binary_socket(&args(other)).is_none(), "{other:?}");
        }
        assert_eq!(
            shim_binary_socket(&args(&["hum-mcp-bridge", "/run/b/c.sock"])),
            Some(std::path::Path::new("/run/b/c.sock"))
        );
    }

    #[test]
    fn the_bridge_subcommand_still_parses_for_clap() {
        let cli = Cli::try_parse_from(["hum", "mcp-bridge", "/s"]).unwrap();
        assert!(matches!(cli.command, Command::McpBridge { .. }));
    }
}
