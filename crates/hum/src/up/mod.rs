//! `hum up`: the one command. Starts humd and a worker as supervised
//! children, restarts a worker (or daemon) that dies with backoff, and on
//! SIGTERM/SIGINT stops the worker first (it tears down every cell), then
//! the daemon, and exits 0. With no config file it works out of the box: the
//! `claude-cli` hive when a `claude` binary is on PATH, and always the `sim`
//! hive (model `sim`), so hum can be tried without an API key.

use crate::cell::ContainmentMode;
use crate::client::Answering;
use crate::config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod banner;
mod supervised;

use banner::{print_banner, Banner};
use supervised::{restart_due, Supervised};

/// First restart delay of a child that died; doubled up to [`RESTART_MAX`].
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// How long a dead child waits before it is started again.
fn restart_backoff() -> crate::backoff::Backoff {
    crate::backoff::Backoff::new(RESTART_MIN, RESTART_MAX).exact()
}

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
    /// The gateway's token file (default: `gateway.token` in the state dir,
    /// made on first start). HUM_GATEWAY_TOKEN, when set, is used instead.
    #[arg(long)]
    pub gateway_token_file: Option<PathBuf>,
    /// Let the gateway accept requests without a token (loopback only).
    /// Every local user can then prompt your agents: say so only on a
    /// machine that is yours alone.
    #[arg(long)]
    pub no_auth: bool,
    /// How often humd is asked for its status; after three
    /// unanswered asks in a row it is killed and restarted.
    #[arg(long, default_value_t = 5000, hide = true)]
    pub watchdog_ms: u64,
    /// This machine as a node of a cluster (`--cluster nats://HOST:PORT
    /// --node NAME`); humd joins it.
    #[command(flatten)]
    pub cluster: crate::daemon::cluster::ClusterArgs,
}

/// Unanswered status requests in a row after which humd counts as wedged.
const WATCHDOG_MISSES: u32 = 3;

/// How the gateway gets its token.
enum GatewayAuth {
    /// `--token-file=<path>`: the token never passes through an environment.
    File(PathBuf),
    /// HUM_GATEWAY_TOKEN from the caller, handed to the gateway alone.
    Env(String),
    Off,
}

/// Checks what can be checked before anything starts; the message says
/// why `hum up` refuses (exit 2).
async fn validate(args: &UpArgs, socket: &Path) -> Result<(), String> {
    if !args.no_metrics && !args.metrics_addr.ip().is_loopback() {
        return Err(format!(
            "--metrics-addr {} is not a loopback address (the endpoint has no authentication)",
            args.metrics_addr
        ));
    }
    if !args.no_gateway && !args.gateway_addr.ip().is_loopback() {
        if args.no_auth {
            return Err(format!(
                "--no-auth with --gateway-addr {} would let anyone on the network prompt your agents",
                args.gateway_addr
            ));
        }
        let explicit = args.gateway_token_file.is_some()
            || std::env::var_os("HUM_GATEWAY_TOKEN").is_some_and(|t| !t.is_empty());
        if !explicit {
            return Err(format!(
                "--gateway-addr {} is not loopback: give a token explicitly (--gateway-token-file or HUM_GATEWAY_TOKEN)",
                args.gateway_addr
            ));
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if !meta.file_type().is_socket() {
            return Err(format!("{} exists and is not a socket", socket.display()));
        }
        let own = thrum::peer::own_uid();
        if meta.uid() != own {
            return Err(format!(
                "{} belongs to uid {}, not to you (uid {}): refusing to use or remove it; choose another --socket (a directory of your own)",
                socket.display(),
                thrum::peer::describe(meta.uid()),
                thrum::peer::describe(own)
            ));
        }
        match crate::client::answering(socket).await {
            // A daemon whose accept queue is full is one all the same.
            Answering::Yes | Answering::Busy => {
                return Err(format!(
                    "a hum daemon already serves {}; stop it first (or use --socket)",
                    socket.display()
                ))
            }
            Answering::Stranger(uid) => {
                return Err(format!(
                    "uid {} answers on {}: refusing to use it; choose another --socket (a directory of your own)",
                    thrum::peer::describe(uid),
                    socket.display()
                ))
            }
            Answering::No => {}
        }
    }
    Ok(())
}

pub fn run(args: UpArgs) -> ExitCode {
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    rt.block_on(up(args))
}

/// Where the gateway's token comes from: none, the environment, or a
/// file (made when missing).
fn gateway_auth(args: &UpArgs) -> Result<GatewayAuth, String> {
    Ok(if args.no_gateway || args.no_auth {
        GatewayAuth::Off
    } else if let Some(t) = std::env::var("HUM_GATEWAY_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        GatewayAuth::Env(t)
    } else {
        let path = args
            .gateway_token_file
            .clone()
            .unwrap_or_else(crate::gateway::default_token_file);
        crate::gateway::load_or_create_token(&path)?;
        GatewayAuth::File(path)
    })
}

/// The worker's configuration: the user's, or one made for this machine
/// (claude when it is on PATH). An error says why, with its exit code.
fn worker_config(args: &UpArgs, state: &Path) -> Result<(PathBuf, Config), (String, u8)> {
    let explicit = args
        .config
        .clone()
        .or_else(|| Some(Config::default_path()).filter(|p| p.exists()));
    match explicit {
        Some(path) => match Config::load(Some(&path)) {
            Ok(c) => Ok((path, c)),
            Err(e) => Err((e.to_string(), 2)),
        },
        None => {
            let claude = crate::os::paths::find_on_path("claude");
            let mut config = Config::default();
            config.claude.enabled = claude.is_some();
            if let Some(p) = claude {
                config.claude.path = p;
            }
            let path = state.join("hum-up.json");
            let json = serde_json::json!({"claude": {"enabled": config.claude.enabled, "path": config.claude.path}});
            if let Err(e) = std::fs::write(&path, json.to_string()) {
                return Err((format!("cannot write {}: {e}", path.display()), 1));
            }
            Ok((path, config))
        }
    }
}

/// How long the banner waits for humd to say where it serves /metrics
/// (it writes the address once bound, a moment after its socket answers).
const METRICS_ADDR_WAIT: Duration = Duration::from_secs(5);

/// The address this humd (started at `since`) wrote to `file` once it
/// bound /metrics: a file from before is a previous humd's, and an address
/// with port 0 is none. Waits up to `within`.
async fn metrics_addr_written(
    file: &Path,
    since: std::time::SystemTime,
    within: Duration,
) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let fresh = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if fresh {
            let addr = std::fs::read_to_string(file).ok()?;
            let addr = addr.trim().to_owned();
            let bound = addr
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.port() != 0);
            if bound {
                return Some(addr);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The three children `hum up` supervises, not started yet.
struct Children {
    daemon: Supervised,
    worker: Supervised,
    gateway: Supervised,
}

fn children(
    args: &UpArgs,
    socket: &Path,
    config_path: &Path,
    config: &Config,
    logs: &Path,
    auth: &GatewayAuth,
) -> Children {
    let default_hive = if config.claude.enabled {
        "claude-cli"
    } else {
        "sim"
    };
    // The portable backend goes without PR_SET_PDEATHSIG here too: what
    // macOS has is the lifeline alone.
    let pdeathsig = ContainmentMode::from_env() != ContainmentMode::Portable
        && config.containment != ContainmentMode::Portable;
    let mut daemon_args = vec![
        "daemon".into(),
        format!("--socket={}", socket.display()),
        format!("--default-hive={default_hive}"),
        // Budgets, the usage retention and the cluster are humd's.
        format!("--config={}", config_path.display()),
        if args.no_metrics {
            "--no-metrics".into()
        } else {
            format!("--metrics-addr={}", args.metrics_addr)
        },
    ];
    daemon_args.extend(args.cluster.to_argv());
    let daemon = Supervised {
        name: "daemon",
        args: daemon_args,
        env: Vec::new(),
        log: logs.join("daemon.log"),
        child: None,
        pdeathsig,
        started: Instant::now(),
        backoff: restart_backoff(),
        restart_at: None,
    };
    let worker = Supervised {
        name: "worker",
        args: vec![
            "worker".into(),
            format!("--config={}", config_path.display()),
            format!("--socket={}", socket.display()),
        ],
        env: Vec::new(),
        log: logs.join("worker.log"),
        child: None,
        pdeathsig,
        started: Instant::now(),
        backoff: restart_backoff(),
        restart_at: None,
    };
    let gateway = Supervised {
        name: "gateway",
        args: vec![
            "gateway".into(),
            format!("--socket={}", socket.display()),
            format!("--listen={}", args.gateway_addr),
            // Its `gateway` section (how long parked turns keep a cell).
            format!("--config={}", config_path.display()),
        ]
        .into_iter()
        .chain(match auth {
            GatewayAuth::File(p) => Some(format!("--token-file={}", p.display())),
            GatewayAuth::Off => Some("--no-auth".to_owned()),
            GatewayAuth::Env(_) => None,
        })
        .collect(),
        env: match auth {
            GatewayAuth::Env(t) => vec![("HUM_GATEWAY_TOKEN".to_owned(), t.clone())],
            _ => Vec::new(),
        },
        log: logs.join("gateway.log"),
        child: None,
        pdeathsig,
        started: Instant::now(),
        backoff: restart_backoff(),
        restart_at: None,
    };
    Children {
        daemon,
        worker,
        gateway,
    }
}

/// Restarts whichever child dies, kills a humd that stops answering, until
/// SIGTERM or SIGINT.
async fn supervise(
    args: &UpArgs,
    socket: &Path,
    daemon: &mut Supervised,
    worker: &mut Supervised,
    gateway: &mut Supervised,
) {
    let mut stop = crate::stop::StopSignals::install();
    let mut watchdog = tokio::time::interval(Duration::from_millis(args.watchdog_ms.max(10)));
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut misses = 0u32;
    // The status request in flight, polled beside everything else so a
    // wedged humd never holds up the supervisor.
    let mut probe: Option<std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>> = None;
    loop {
        let (worker_due, daemon_due, gateway_due) =
            (worker.restart_at, daemon.restart_at, gateway.restart_at);
        tokio::select! {
            _ = watchdog.tick(), if probe.is_none() && daemon.child.is_some() => {
                let socket = socket.to_path_buf();
                let within = Duration::from_millis(args.watchdog_ms.max(10));
                probe = Some(Box::pin(async move {
                    matches!(tokio::time::timeout(within, crate::client::fetch_status(&socket)).await, Ok(Ok(_)))
                }));
            }
            answered = async { probe.as_mut().expect("guarded").await }, if probe.is_some() => {
                probe = None;
                if answered || daemon.child.is_none() {
                    misses = 0;
                } else {
                    misses += 1;
                    tracing::warn!(event = "up.daemon_silent", misses, "humd did not answer a status request");
                }
                if misses >= WATCHDOG_MISSES {
                    misses = 0;
                    tracing::error!(event = "up.daemon_unresponsive", pid = daemon.child.as_ref().and_then(|c| c.id()), "humd stopped answering; killing and restarting it");
                    eprintln!("hum up: humd stopped answering; restarting it");
                    daemon.kill_now();
                }
            }
            status = worker.exited() => worker.died(status),
            status = daemon.exited() => daemon.died(status),
            status = gateway.exited() => gateway.died(status),
            _ = restart_due(worker_due) => worker.restart(),
            _ = restart_due(daemon_due) => daemon.restart(),
            _ = restart_due(gateway_due) => gateway.restart(),
            _ = stop.next() => break,
        }
    }
}

async fn up(args: UpArgs) -> ExitCode {
    let socket = args.socket.clone().unwrap_or_else(thrum::socket_path);
    if let Err(e) = validate(&args, &socket).await {
        eprintln!("hum up: {e}");
        return ExitCode::from(2);
    }
    let state = crate::os::paths::default_state_dir();
    let logs = crate::os::paths::Paths::current().logs;
    for dir in [&state, &logs] {
        if let Err(e) = crate::private_fs::create_private_dir(dir) {
            eprintln!("hum up: cannot create {}: {e}", dir.display());
            return ExitCode::from(1);
        }
    }
    let auth = match gateway_auth(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hum up: {e}");
            return ExitCode::from(2);
        }
    };
    let (config_path, config) = match worker_config(&args, &state) {
        Ok(c) => c,
        Err((e, code)) => {
            eprintln!("hum up: {e}");
            return ExitCode::from(code);
        }
    };
    // Said here, once, rather than by a humd restarted over and over.
    if let Err(e) = crate::daemon::cluster::settings::resolve(&args.cluster, &config.cluster) {
        eprintln!("hum up: {e}");
        return ExitCode::from(2);
    }
    let Children {
        mut daemon,
        mut worker,
        mut gateway,
    } = children(&args, &socket, &config_path, &config, &logs, &auth);
    let spawned_at = std::time::SystemTime::now();
    if let Err(e) = daemon.spawn() {
        eprintln!("hum up: cannot start the daemon: {e}");
        return ExitCode::from(1);
    }
    // The worker reconnects on its own; starting it once the socket answers
    // just saves it a retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        crate::client::answering(&socket).await,
        crate::client::Answering::Yes | crate::client::Answering::Busy
    ) && Instant::now() < deadline
    {
        if let Some(Ok(Some(status))) = daemon.child.as_mut().map(|c| c.child.try_wait()) {
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
        let file = socket.with_file_name("metrics.addr");
        match metrics_addr_written(&file, spawned_at, METRICS_ADDR_WAIT).await {
            Some(addr) => format!("http://{addr}/metrics and /status"),
            None => format!("not served ({} busy? see daemon.log)", args.metrics_addr),
        }
    };
    print_banner(&Banner {
        args: &args,
        socket: &socket,
        state: &state,
        logs: &logs,
        config_path: &config_path,
        config: &config,
        auth: &auth,
        metrics: &metrics,
    })
    .await;
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
    supervise(&args, &socket, &mut daemon, &mut worker, &mut gateway).await;
    say("hum up: stopping (the worker tears down every cell first)\n");
    gateway.stop(Duration::from_secs(5)).await;
    worker.stop(WORKER_STOP).await;
    daemon.stop(Duration::from_secs(10)).await;
    say("hum up: stopped\n");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests;

/// Writes `text` to stdout; a stdout closed by its reader (`hum up |
/// head`) does not stop hum up (println! would panic on it).
fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
