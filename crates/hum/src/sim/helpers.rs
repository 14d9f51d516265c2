//! The processes the simulated agent starts, like claude's: stdio "MCP
//! servers" in its own process group, and "Bash tool" commands that escape
//! into a session of their own. They are the same binary (`hum sim-agent`
//! or `hum-sim`) in a hidden role, so tests need nothing else installed.

use rustix::process::{kill_process, Pid, Signal};
use std::io;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the agent waits for its MCP servers after SIGTERMing them on the
/// way out; claude does not linger either.
const MCP_EXIT_WAIT: Duration = Duration::from_millis(500);

/// Children of the agent, ended by [`Helpers::shutdown`].
#[derive(Debug, Default)]
pub struct Helpers {
    mcp: Vec<Child>,
    bash: Vec<Child>,
}

pub type SharedHelpers = Arc<Mutex<Helpers>>;

/// Whether this process was started as `hum-sim` rather than as `hum
/// sim-agent`: its helpers are started the same way (`hum-sim` has no
/// subcommands to name).
static OWN_BINARY: AtomicBool = AtomicBool::new(false);

/// Says this process is `hum-sim`; its entry point calls it first.
pub fn started_as_own_binary() {
    OWN_BINARY.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn hum_command(role: &str) -> io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    if !OWN_BINARY.load(std::sync::atomic::Ordering::Relaxed) {
        cmd.arg("sim-agent");
    }
    cmd.args(["--sim-role", role]);
    Ok(cmd)
}

impl Helpers {
    /// Starts `n` MCP servers, each reading the pipe we hold as its stdin.
    pub fn spawn_mcp_servers(&mut self, n: usize, ignore_eof: bool) -> io::Result<()> {
        for _ in 0..n {
            let mut cmd = hum_command("mcp-server")?;
            if ignore_eof {
                cmd.arg("--sim-mcp-ignore-eof");
            }
            let child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
            self.mcp.push(child);
        }
        Ok(())
    }

    /// Starts a "Bash tool" command; it moves itself into a new session.
    /// Starts a Bash tool command; with `clean_env`, with an empty
    /// environment.
    pub fn spawn_bash_tool(&mut self, clean_env: bool) -> io::Result<()> {
        let mut cmd = hum_command("bash-tool")?;
        if clean_env {
            cmd.env_clear();
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
        self.bash.push(child);
        Ok(())
    }

    pub fn has_bash_tool(&self) -> bool {
        !self.bash.is_empty()
    }

    /// What claude does on SIGTERM or on its way out: kill the Bash tool
    /// commands, close the MCP servers' stdin and SIGTERM them.
    /// Ends the running Bash tool commands, as claude does when a turn is
    /// interrupted.
    pub fn kill_bash_tools(&mut self) {
        for mut child in self.bash.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn shutdown(&mut self) {
        self.kill_bash_tools();
        for child in &mut self.mcp {
            drop(child.stdin.take());
            let _ = kill_process(Pid::from_child(child), Signal::TERM);
        }
        let deadline = Instant::now() + MCP_EXIT_WAIT;
        for mut child in self.mcp.drain(..) {
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Blocks the calling thread for good. Used by stalls and by helpers that
/// only a signal may end.
pub fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Body of an MCP server: read stdin until EOF, then exit (or keep running).
pub fn run_mcp_server(ignore_eof: bool) -> ExitCode {
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    if ignore_eof {
        park_forever();
    }
    ExitCode::SUCCESS
}

/// Body of a Bash tool command: a new session (so our group's signals miss
/// it), SIGTERM ignored, then wait for SIGKILL.
pub fn run_bash_tool() -> ExitCode {
    if let Err(e) = rustix::process::setsid() {
        eprintln!("sim-agent bash-tool: setsid failed: {e}");
        return ExitCode::FAILURE;
    }
    ignore_sigterm();
    park_forever();
}

/// Makes SIGTERM harmless to this process.
pub fn ignore_sigterm() {
    // A registered handler replaces the default action (exit); the flag it
    // sets is never read.
    if let Err(e) = signal_hook::flag::register(
        signal_hook::consts::SIGTERM,
        Arc::new(AtomicBool::new(false)),
    ) {
        eprintln!("sim-agent: cannot handle SIGTERM: {e}");
    }
}

/// On SIGTERM, behave like claude (end the helpers, exit 143), or ignore it.
pub fn handle_sigterm(helpers: SharedHelpers, ignore: bool) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])?;
    std::thread::Builder::new()
        .name("sigterm".into())
        .spawn(move || {
            for _ in signals.forever() {
                if ignore {
                    continue;
                }
                if let Ok(mut h) = helpers.lock() {
                    h.shutdown();
                }
                std::process::exit(143);
            }
        })?;
    Ok(())
}
