//! `hum up`: the one command. Starts humd and a worker as supervised
//! children, restarts a worker (or daemon) that dies with backoff, and on
//! SIGTERM/SIGINT stops the worker first (it tears down every cell), then
//! the daemon, and exits 0. With no config file it works out of the box: the
//! `claude-cli` hive when a `claude` binary is on PATH, and always the `sim`
//! hive (model `sim`), so hum can be tried without an API key.

use crate::cell::spawner::die_with_parent;
use crate::worker::config::Config;
use rustix::process::Signal;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// First restart delay of a child that died; doubled up to [`RESTART_MAX`].
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long before dying restarts at [`RESTART_MIN`] again.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// How long the worker may take to tear its cells down before SIGKILL (its
/// own ladder is at most close + term + kill graces).
const WORKER_STOP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Configuration file (default: ~/.config/hum/hum.json; none: defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// humd's socket (default: the thrum socket path rules).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Where humd serves /metrics and /status (loopback only).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: std::net::SocketAddr,
    /// Serve no metrics endpoint.
    #[arg(long)]
    pub no_metrics: bool,
    /// Where the OpenAI/Anthropic-compatible gateway listens (loopback).
    #[arg(long, default_value = "127.0.0.1:8199")]
    pub gateway_addr: std::net::SocketAddr,
    /// Start no HTTP gateway.
    #[arg(long)]
    pub no_gateway: bool,
}

/// The `claude` binary on PATH, if any.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

async fn claude_version(path: &Path) -> Option<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        Command::new(path).arg("--version").output(),
    )
    .await
    .ok()?
    .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|v| !v.is_empty())
}

struct Supervised {
    name: &'static str,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
}

impl Supervised {
    fn spawn(&mut self) -> std::io::Result<()> {
        let exe = std::env::current_exe()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // This runtime is single-threaded: the forking thread is the main
        // thread, which lives as long as `hum up`.
        die_with_parent(&mut cmd, Signal::TERM);
        let child = Command::from(cmd).spawn()?;
        tracing::info!(
            event = "up.started",
            child = self.name,
            pid = child.id(),
            "supervised process started"
        );
        self.child = Some(child);
        self.started = Instant::now();
        self.restart_at = None;
        Ok(())
    }

    /// Waits for the child to exit (never, when none runs).
    async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match &mut self.child {
            Some(c) => c.wait().await,
            None => std::future::pending().await,
        }
    }

    fn schedule_restart(&mut self) {
        if self.started.elapsed() >= HEALTHY_AFTER {
            self.backoff = RESTART_MIN;
        }
        self.restart_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RESTART_MAX);
    }

    fn died(&mut self, status: std::io::Result<std::process::ExitStatus>) {
        tracing::warn!(event = "up.child_died", child = self.name, status = ?status.ok(), backoff_ms = self.backoff.as_millis() as u64, "supervised process died; restarting");
        self.child = None;
        self.schedule_restart();
    }

    fn restart(&mut self) {
        if let Err(e) = self.spawn() {
            tracing::error!(event = "up.restart_failed", child = self.name, error = %e, "cannot restart");
            self.schedule_restart();
        }
    }

    async fn stop(&mut self, within: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        if tokio::time::timeout(within, child.wait()).await.is_err() {
            tracing::error!(
                event = "up.stop_timeout",
                child = self.name,
                "did not stop in time; killing it"
            );
            let _ = child.kill().await;
        }
    }
}

async fn restart_due(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

pub fn run(args: UpArgs) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(up(args))
}

async fn up(args: UpArgs) -> ExitCode {
    let socket = args.socket.clone().unwrap_or_else(thrum::socket_path);
    let state = crate::cell::default_state_dir();
    let logs = state.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!("hum up: cannot create {}: {e}", logs.display());
        return ExitCode::from(1);
    }
    // The worker's configuration: the user's, or one made for this machine.
    let explicit = args
        .config
        .clone()
        .or_else(|| Some(Config::default_path()).filter(|p| p.exists()));
    let (config_path, config) = match explicit {
        Some(path) => match Config::load(Some(&path)) {
            Ok(c) => (path, c),
            Err(e) => {
                eprintln!("hum up: {e}");
                return ExitCode::from(2);
            }
        },
        None => {
            let claude = find_on_path("claude");
            let mut config = Config::default();
            config.claude.enabled = claude.is_some();
            if let Some(p) = claude {
                config.claude.path = p;
            }
            let path = state.join("hum-up.json");
            let json = serde_json::json!({"claude": {"enabled": config.claude.enabled, "path": config.claude.path}});
            if let Err(e) = std::fs::write(&path, json.to_string()) {
                eprintln!("hum up: cannot write {}: {e}", path.display());
                return ExitCode::from(1);
            }
            (path, config)
        }
    };
    let claude_line = if config.claude.enabled {
        let version = claude_version(&config.claude.path)
            .await
            .unwrap_or_else(|| "version unknown".into());
        format!(
            "claude-cli: {} ({version}), models {}",
            config.claude.path.display(),
            config.claude.models.join(", ")
        )
    } else {
        "claude-cli: off (no `claude` on PATH; npm i -g @anthropic-ai/claude-code)".to_owned()
    };
    let sim_line = if config.sim.enabled {
        format!("sim: models {}", config.sim.models.join(", "))
    } else {
        "sim: off".into()
    };
    let gateway_line = if args.no_gateway {
        "off".to_owned()
    } else {
        format!(
            "http://{0}/v1 (OpenAI clients), http://{0} (Anthropic clients)",
            args.gateway_addr
        )
    };
    let banner = |metrics: &str| {
        println!("hum up");
        println!("  socket     {}", socket.display());
        println!("  state dir  {}", state.display());
        println!("  logs       {}/daemon.log, worker.log", logs.display());
        println!("  config     {}", config_path.display());
        println!("  hives      {claude_line}");
        println!("             {sim_line}");
        println!("  metrics    {metrics}");
        println!("  gateway    {gateway_line}");
        println!("  try        hum prompt --model sim \"hello\"   ·   hum status");
    };

    let default_hive = if config.claude.enabled {
        "claude-cli"
    } else {
        "sim"
    };
    let mut daemon = Supervised {
        name: "daemon",
        args: vec![
            "daemon".into(),
            format!("--socket={}", socket.display()),
            format!("--default-hive={default_hive}"),
            if args.no_metrics {
                "--no-metrics".into()
            } else {
                format!("--metrics-addr={}", args.metrics_addr)
            },
        ],
        log: logs.join("daemon.log"),
        child: None,
        started: Instant::now(),
        backoff: RESTART_MIN,
        restart_at: None,
    };
    let mut worker = Supervised {
        name: "worker",
        args: vec![
            "worker".into(),
            format!("--config={}", config_path.display()),
            format!("--socket={}", socket.display()),
        ],
        log: logs.join("worker.log"),
        child: None,
        started: Instant::now(),
        backoff: RESTART_MIN,
        restart_at: None,
    };
    let mut gateway = Supervised {
        name: "gateway",
        args: vec![
            "gateway".into(),
            format!("--socket={}", socket.display()),
            format!("--listen={}", args.gateway_addr),
        ],
        log: logs.join("gateway.log"),
        child: None,
        started: Instant::now(),
        backoff: RESTART_MIN,
        restart_at: None,
    };
    if let Err(e) = daemon.spawn() {
        eprintln!("hum up: cannot start the daemon: {e}");
        return ExitCode::from(1);
    }
    // The worker reconnects on its own; starting it once the socket answers
    // just saves it a retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::UnixStream::connect(&socket).await.is_err() && Instant::now() < deadline {
        if let Some(Ok(Some(status))) = daemon.child.as_mut().map(|c| c.try_wait()) {
            eprintln!(
                "hum up: the daemon exited at start ({status}); see {}",
                daemon.log.display()
            );
            return ExitCode::from(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = if args.no_metrics {
        "off".to_owned()
    } else {
        match std::fs::read_to_string(socket.with_file_name("metrics.addr")) {
            Ok(addr) => format!("http://{addr}/metrics and /status"),
            Err(_) => format!("not served ({} busy? see daemon.log)", args.metrics_addr),
        }
    };
    banner(&metrics);
    if let Err(e) = worker.spawn() {
        eprintln!("hum up: cannot start the worker: {e}");
        daemon.stop(Duration::from_secs(5)).await;
        return ExitCode::from(1);
    }
    if !args.no_gateway {
        if let Err(e) = gateway.spawn() {
            eprintln!("hum up: cannot start the gateway: {e}");
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .expect("SIGINT handler");
    loop {
        let (worker_due, daemon_due, gateway_due) =
            (worker.restart_at, daemon.restart_at, gateway.restart_at);
        tokio::select! {
            status = worker.exited() => worker.died(status),
            status = daemon.exited() => daemon.died(status),
            status = gateway.exited() => gateway.died(status),
            _ = restart_due(worker_due) => worker.restart(),
            _ = restart_due(daemon_due) => daemon.restart(),
            _ = restart_due(gateway_due) => gateway.restart(),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    println!("hum up: stopping (the worker tears down every cell first)");
    gateway.stop(Duration::from_secs(5)).await;
    worker.stop(WORKER_STOP).await;
    daemon.stop(Duration::from_secs(10)).await;
    println!("hum up: stopped");
    ExitCode::SUCCESS
}
