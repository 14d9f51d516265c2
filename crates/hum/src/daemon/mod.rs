//! # humd — `hum daemon`
//!
//! Listens on the thrum socket, admits only its own user (and root) by
//! SO_PEERCRED, answers `hello` with `breath` and acks tones that carry a
//! `rid` with `echo`, and routes: prompts to a worker serving the model
//! (sticky per sid, else the least loaded), worker output back to the asker
//! of that sid. One task reads each connection; one [`router`] owns the
//! state and writes through each peer's bounded outbox, so a bee that stops
//! reading costs only its own connection.
//!
//! - [`listen`]: socket directory and file modes, stale and live sockets.
//! - [`router`]: who holds which sid, and where each tone goes.
//! - [`cluster`]: this humd as a node of a cluster on NATS (optional).

pub mod cluster;
pub mod listen;
pub mod metrics;
mod peers;
pub mod router;

pub(crate) use peers::PeerHost;
use peers::{accept_loop, Admission};

use router::{Router, RouterMsg};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages waiting for the router. Connection tasks wait when it is full;
/// the router's own loop never sends to it, so it can always drain.
const ROUTER_INBOX: usize = 4096;

/// Default cap on connections at once. Each idle connection costs about
/// 10 KiB (a read buffer and a task); the cap keeps a flood of them to a
/// couple of hundred MiB, and leaves room for 8,000 bees.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default bound on the bytes of unfinished lines held across every
/// connection at once. One maximal line (8 MiB) fits many times over; 200
/// peers each trickling a maximal line do not.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 128 * 1024 * 1024;

/// Bytes of decoded tones on their way to the router at once, across all
/// connections. The router's inbox bounds their number; this bounds their
/// size, so 4,096 queued maximal lines cannot add up to gigabytes.
const IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// A connection that says nothing for this long after connecting is
/// closed: silent sockets must not hold slots forever.
const HELLO_WITHIN: Duration = Duration::from_secs(10);

/// Descriptors kept free for everything that is not a bee (logs, the
/// metrics listener, accept itself).
const FD_RESERVE: u64 = 64;

#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Socket path (default: $HUM_THRUM_SOCK, $XDG_RUNTIME_DIR/hum/thrum.sock,
    /// `/run/user/<uid>/hum/thrum.sock`).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Hive of prompts that name no model (default: claude-cli if a worker
    /// offers it, else any).
    #[arg(long)]
    pub default_hive: Option<String>,
    /// Where `/metrics` and `/status` are served (loopback; port 0 picks a
    /// free port). The address bound is written to `metrics.addr` beside
    /// the socket.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: std::net::SocketAddr,
    /// Serve no metrics endpoint.
    #[arg(long)]
    pub no_metrics: bool,
    /// Most connections at once; the rest are answered with an
    /// `overloaded` error and closed until some leave.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most bytes of unfinished lines held across all connections; a line
    /// that does not fit is dropped with an `overloaded` error.
    #[arg(long, default_value_t = DEFAULT_MAX_BUFFERED_BYTES)]
    pub max_buffered_bytes: usize,
    /// How long the turns of a bee whose connection closed wait for it to
    /// come back (a prompt for the same sid adopts them) before they are
    /// cancelled. 0: at once. At most 10 minutes.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=crate::reports::MAX_ASKER_GONE_GRACE_MS))]
    pub asker_gone_grace_ms: u64,
    /// hum.json, for `budgets` and `usage` (default: the worker's default,
    /// ~/.config/hum/hum.json; none there: no budgets).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The usage database (default: usage.sqlite3 in the state dir).
    #[arg(long)]
    pub usage_db: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: cluster::ClusterArgs,
}

pub fn run(args: DaemonArgs) -> ExitCode {
    // Large freed line buffers go back to the OS (glibc keeps them otherwise).
    crate::os::return_freed_memory();
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    rt.block_on(async move {
        let path = args.socket.clone().unwrap_or_else(thrum::socket_path);
        let listener = match listen::bind(&path).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("hum daemon: {e}");
                return ExitCode::from(1);
            }
        };
        // Handled from the moment the socket answers: a SIGTERM right
        // after start must still be a clean stop.
        let mut stop = crate::stop::StopSignals::install();
        let config = match crate::config::Config::load(args.config.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("hum daemon: {e}");
                let _ = std::fs::remove_file(&path);
                return ExitCode::from(2);
            }
        };
        let cluster = match cluster::settings::resolve(&args.cluster, &config.cluster) {
            Ok(None) => None,
            Ok(Some(settings)) => match cluster::first_connect(&settings).await {
                Ok(client) => Some(ClusterStart { settings, client }),
                Err(e) => {
                    eprintln!("hum daemon: {e}");
                    let _ = std::fs::remove_file(&path);
                    return ExitCode::from(2);
                }
            },
            Err(e) => {
                eprintln!("hum daemon: {e}");
                let _ = std::fs::remove_file(&path);
                return ExitCode::from(2);
            }
        };
        let accounting = accounting(&args, &config);
        let mut settings = Settings::from_args(&args, path);
        settings.cluster = cluster;
        match serve(listener, settings, accounting, stop.next()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hum daemon: {e}");
                ExitCode::from(2)
            }
        }
    })
}

/// What humd runs with: plain values, whatever read them (the command
/// line, a test).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The socket it listens on (removed on the way out).
    pub socket: PathBuf,
    /// Hive of prompts that name no model.
    pub default_hive: Option<String>,
    /// How long a gone asker's turns wait for it.
    pub asker_gone_grace: Duration,
    /// Bytes of unfinished lines held across all connections.
    pub max_buffered_bytes: usize,
    /// Connections at once (lowered to what the open-file limit allows).
    pub max_connections: usize,
    /// Where `/metrics` and `/status` are served (loopback only); none:
    /// not served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// This humd as a node of a cluster; none: one machine.
    pub cluster: Option<ClusterStart>,
}

/// How a cluster node starts: its settings and, if NATS answered at once,
/// the connection.
#[derive(Debug, Clone)]
pub struct ClusterStart {
    pub settings: cluster::ClusterSettings,
    pub client: Option<async_nats::Client>,
}

impl Settings {
    /// The settings `hum daemon`'s arguments ask for, on `socket`.
    pub fn from_args(args: &DaemonArgs, socket: PathBuf) -> Settings {
        Settings {
            socket,
            default_hive: args.default_hive.clone(),
            asker_gone_grace: Duration::from_millis(args.asker_gone_grace_ms),
            max_buffered_bytes: args.max_buffered_bytes,
            max_connections: args.max_connections,
            metrics_addr: (!args.no_metrics).then_some(args.metrics_addr),
            cluster: None,
        }
    }
}

/// Why humd could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--metrics-addr must be a loopback address (it has no authentication)")]
    MetricsNotLoopback,
}

/// Serves bees and workers on `listener` (bound at `path`, removed on the
/// way out) until `shutdown` resolves; then tells every peer and closes.
/// Signals are the caller's business: `hum daemon` passes SIGTERM/SIGINT,
/// a test a channel.
pub async fn serve(
    listener: tokio::net::UnixListener,
    settings: Settings,
    accounting: Option<router::Accounting>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let path = settings.socket.clone();
    let own_uid = rustix::process::getuid().as_raw();
    tracing::info!(event = "daemon.listening", socket = %path.display(), uid = own_uid, "humd is up");
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "/".into());
    let default_hive = settings
        .default_hive
        .clone()
        .or_else(|| Some("claude-cli".into()));
    let (tx, mut rx) = mpsc::channel::<RouterMsg>(ROUTER_INBOX);
    let line_budget = Arc::new(thrum::ByteBudget::new(settings.max_buffered_bytes));
    let mut router = Router::new(default_hive, cwd)
        .with_asker_gone_grace(settings.asker_gone_grace)
        .with_line_budget(line_budget.clone());
    if let Some(a) = accounting {
        router = router.with_accounting(a);
    }
    // A cluster node's router asks the cluster where new sids go.
    let cluster = settings.cluster.clone().map(|start| {
        let (asks, asked) = mpsc::channel(cluster::PLACE_QUEUE);
        router.set_placer(asks);
        (start, asked)
    });
    let addr_file = path.with_file_name("metrics.addr");
    if let Some(metrics_addr) = settings.metrics_addr {
        if let Err(e) = serve_metrics(metrics_addr, &addr_file, tx.clone()).await {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    }
    let fd_room = listen::raise_fd_limit().saturating_sub(FD_RESERVE) as usize;
    let max_connections = settings.max_connections.min(fd_room.max(1));
    if max_connections < settings.max_connections {
        tracing::warn!(
            event = "daemon.connection_cap_lowered",
            wanted = settings.max_connections,
            cap = max_connections,
            "the open-file limit allows fewer connections"
        );
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let host = PeerHost {
        tx: tx.clone(),
        budget: line_budget,
        in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_BYTES)),
    };
    let acceptor = tokio::spawn(accept_loop(
        listener,
        Admission {
            own_uid,
            max_connections,
            open: Arc::new(AtomicUsize::new(0)),
            host: host.clone(),
        },
    ));
    let cluster_task = cluster.map(|(start, asked)| {
        let (leave, stop) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(cluster::run(
            start.settings,
            start.client,
            host.clone(),
            tx.clone(),
            asked,
            stop,
        ));
        (task, leave)
    });
    drop(tx);
    // The router's loop: it only ever receives here, never sends to its own
    // inbox, so a full inbox can always drain.
    loop {
        let deadline = router.next_deadline();
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => router.handle(msg),
                None => break,
            },
            _ = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => router.tick(std::time::Instant::now()),
            () = &mut shutdown => break,
        }
    }
    acceptor.abort();
    let _ = acceptor.await;
    if let Some((task, leave)) = cluster_task {
        leave_cluster(task, leave).await;
    }
    tracing::info!(
        event = "daemon.stopping",
        workers = router.workers(),
        askers = router.askers(),
        "humd is stopping"
    );
    router.shutdown();
    for outbox in router.outboxes() {
        let _ = tokio::time::timeout(Duration::from_secs(1), outbox.closed()).await;
    }
    router.finish_accounting();
    let _ = std::fs::remove_file(&path);
    crate::private_fs::remove_own_file(&addr_file);
    tracing::info!(event = "daemon.stopped", stats = ?router.stats, "humd stopped");
    Ok(())
}

/// Has the cluster's loop say this node leaves (its sids move at once),
/// within bounds: a NATS that does not answer does not hold the stop.
async fn leave_cluster(
    task: tokio::task::JoinHandle<()>,
    leave: tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>>,
) {
    let (done, left) = tokio::sync::oneshot::channel();
    if leave.send(done).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(3), left).await;
    }
    task.abort();
    let _ = task.await;
}

/// Serves `/metrics` and `/status` on `addr` (loopback only), and writes
/// the address bound to `addr_file`.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    addr_file: &std::path::Path,
    tx: mpsc::Sender<RouterMsg>,
) -> Result<(), ServeError> {
    if !addr.ip().is_loopback() {
        return Err(ServeError::MetricsNotLoopback);
    }
    match metrics::serve(addr, tx).await {
        Ok(bound) => {
            tracing::info!(event = "daemon.metrics", addr = %bound, "serving /metrics and /status");
            if let Err(e) =
                crate::private_fs::write_private_file(addr_file, bound.to_string().as_bytes())
            {
                tracing::warn!(event = "daemon.metrics_addr_unwritten", path = %addr_file.display(), error = %e, "where /metrics listens is not written down");
            }
        }
        Err(e) => {
            tracing::warn!(event = "daemon.metrics_unavailable", addr = %addr, error = %e, "no metrics endpoint")
        }
    }
    Ok(())
}

/// Opens the usage database and reads today's spend from it. Without it
/// humd still routes, but keeps no usage and can enforce no budget: said
/// loudly, as budgets the user set are then not kept.
fn accounting(args: &DaemonArgs, config: &crate::config::Config) -> Option<router::Accounting> {
    let path = args
        .usage_db
        .clone()
        .unwrap_or_else(crate::usage::default_db_path);
    if let Some(dir) = path.parent() {
        if let Err(e) = crate::private_fs::create_private_dir(dir) {
            tracing::error!(event = "usage.unavailable", path = %path.display(), error = %e, "no usage is recorded and no budget enforced");
            return None;
        }
    }
    let db = match crate::usage::UsageDb::open_writer(&path) {
        Ok(db) => db,
        Err(e) => {
            tracing::error!(event = "usage.unavailable", path = %path.display(), error = %e, "no usage is recorded and no budget enforced");
            return None;
        }
    };
    let now = crate::usage::unix_ms();
    let today = crate::usage::budget::day_of(now) * crate::usage::budget::DAY_MS;
    let spend = match db.spend_since(today) {
        Ok(rows) => crate::usage::Spend::new(now, rows.all, rows.bees, rows.sids),
        Err(e) => {
            tracing::error!(event = "usage.unreadable", path = %path.display(), error = %e, "today's spend is unknown; budgets count from zero");
            crate::usage::Spend::new(now, 0.0, Vec::new(), Vec::new())
        }
    };
    tracing::info!(event = "usage.opened", path = %path.display(), spent_today_usd = spend.all(now),
        budgets = config.budgets.any(), "recording usage");
    let last_session = db
        .last_session_costs(router::accounting_max_sessions())
        .unwrap_or_else(|e| {
            tracing::error!(event = "usage.unreadable", path = %path.display(), error = %e, "sessions' totals unknown; a resumed session's first turn counts its history");
            Vec::new()
        });
    let writer = crate::usage::UsageWriter::start(db, config.usage.retention());
    Some(router::Accounting::new(
        Some(writer),
        spend,
        config.budgets.clone(),
        last_session,
    ))
}
