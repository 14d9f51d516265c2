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

pub mod listen;
pub mod metrics;
pub mod router;

use router::{ConnId, Router, RouterMsg};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thrum::{Connection, InboundRaw, Limits};
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
        let accounting = accounting(&args, &config);
        match serve(
            listener,
            Settings::from_args(&args, path),
            accounting,
            stop.next(),
        )
        .await
        {
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
    let addr_file = path.with_file_name("metrics.addr");
    if let Some(metrics_addr) = settings.metrics_addr {
        if !metrics_addr.ip().is_loopback() {
            let _ = std::fs::remove_file(&path);
            return Err(ServeError::MetricsNotLoopback);
        }
        match metrics::serve(metrics_addr, tx.clone()).await {
            Ok(bound) => {
                tracing::info!(event = "daemon.metrics", addr = %bound, "serving /metrics and /status");
                if let Err(e) =
                    crate::private_fs::write_private_file(&addr_file, bound.to_string().as_bytes())
                {
                    tracing::warn!(event = "daemon.metrics_addr_unwritten", path = %addr_file.display(), error = %e, "where /metrics listens is not written down");
                }
            }
            Err(e) => {
                tracing::warn!(event = "daemon.metrics_unavailable", addr = %metrics_addr, error = %e, "no metrics endpoint")
            }
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
    let acceptor = tokio::spawn(accept_loop(
        listener,
        tx.clone(),
        Admission {
            own_uid,
            max_connections,
            open: Arc::new(AtomicUsize::new(0)),
            budget: line_budget,
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_BYTES)),
        },
    ));
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

/// What the accept loop needs to admit a connection.
struct Admission {
    own_uid: u32,
    max_connections: usize,
    /// Connections open right now.
    open: Arc<AtomicUsize>,
    /// Unfinished lines across every connection.
    budget: Arc<thrum::ByteBudget>,
    /// Bytes of tones read and not yet handled by the router.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Decrements the open-connection count when a connection's task ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections and hands each to a task of its own. It never waits
/// on the router: the hand-over (`Joined`) is sent from the connection's
/// task, so a full router inbox slows only new connections' first words,
/// never the loop that drains it.
async fn accept_loop(
    listener: tokio::net::UnixListener,
    tx: mpsc::Sender<RouterMsg>,
    admission: Admission,
) {
    let mut next_id: ConnId = 0;
    let mut refused_busy: u64 = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(event = "daemon.accept_failed", error = %e, "accept failed");
                // Out of descriptors, most likely: let some close. Only this
                // loop waits; the router goes on.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                tracing::warn!(event = "daemon.peer_cred_failed", error = %e, "cannot read peer credentials; refusing");
                continue;
            }
        };
        if !thrum::peer::allowed(uid, admission.own_uid) {
            tracing::warn!(
                event = "daemon.peer_refused",
                uid,
                "a process of another user tried to connect"
            );
            continue;
        }
        let open = admission.open.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Slot(admission.open.clone());
        if open > admission.max_connections {
            refused_busy += 1;
            // Logged once per hundred so a flood does not flood the log.
            if refused_busy % 100 == 1 {
                tracing::warn!(
                    event = "daemon.connection_refused",
                    open = open - 1,
                    cap = admission.max_connections,
                    refused = refused_busy,
                    "connection cap reached"
                );
            }
            refuse_busy(stream, admission.max_connections);
            drop(slot);
            continue;
        }
        let id = next_id;
        next_id += 1;
        let budget = admission.budget.clone();
        let in_flight = admission.in_flight.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Connection { inbox, outbox } =
                Connection::unix(stream, Limits::default(), format!("conn-{id}"));
            let mut inbox = inbox.with_budget(budget);
            if tx
                .send(RouterMsg::Joined(id, outbox.clone()))
                .await
                .is_err()
            {
                return;
            }
            let mut first = true;
            loop {
                let next = if first {
                    first = false;
                    match tokio::time::timeout(HELLO_WITHIN, inbox.recv_raw()).await {
                        Ok(n) => n,
                        Err(_) => {
                            tracing::info!(
                                event = "daemon.silent_peer",
                                conn = id,
                                "closed a connection that said nothing"
                            );
                            outbox.abort();
                            break;
                        }
                    }
                } else {
                    inbox.recv_raw().await
                };
                let msg = match next {
                    Ok(Some(InboundRaw::Tone(t))) => {
                        let bytes = inbox.last_line_len().clamp(1, IN_FLIGHT_BYTES) as u32;
                        let Ok(permit) = in_flight.clone().acquire_many_owned(bytes).await else {
                            return;
                        };
                        RouterMsg::Tone(id, Box::new(t), Some(permit))
                    }
                    Ok(Some(InboundRaw::Rejected(r))) => RouterMsg::Rejected(id, r),
                    Ok(None) | Err(_) => break,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(RouterMsg::Left(id)).await;
            // The slot is held until the writer has let go of the socket.
            let _ = tokio::time::timeout(Duration::from_secs(1), outbox.closed()).await;
        });
    }
}

/// Answers a connection over the cap with one error line and closes it.
/// The write never waits: a fresh socket's send buffer has room for a line.
fn refuse_busy(stream: tokio::net::UnixStream, cap: usize) {
    let mut tone = thrum::Tone::new(thrum::ErrorTone::new(
        thrum::ErrorCode::Overloaded,
        format!("humd serves at most {cap} connections at once; retry later"),
    ));
    tone.envelope.from = Some("daemon".into());
    if let Ok(line) = tone.encode_line(thrum::DEFAULT_MAX_LINE) {
        let _ = stream.try_write(&line);
    }
}
