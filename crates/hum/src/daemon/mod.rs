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
use std::time::Duration;
use thrum::{Connection, Inbound, Limits};
use tokio::sync::mpsc;

/// Messages waiting for the router; readers wait when it is full.
const ROUTER_INBOX: usize = 4096;

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
}

pub fn run(args: DaemonArgs) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(args))
}

async fn serve(args: DaemonArgs) -> ExitCode {
    listen::raise_fd_limit();
    let path = args.socket.unwrap_or_else(thrum::socket_path);
    let listener = match listen::bind(&path).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hum daemon: {e}");
            return ExitCode::from(1);
        }
    };
    let own_uid = rustix::process::getuid().as_raw();
    tracing::info!(event = "daemon.listening", socket = %path.display(), uid = own_uid, "humd is up");
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "/".into());
    let default_hive = args.default_hive.or_else(|| Some("claude-cli".into()));
    let (tx, mut rx) = mpsc::channel::<RouterMsg>(ROUTER_INBOX);
    let mut router = Router::new(default_hive, cwd);
    let addr_file = path.with_file_name("metrics.addr");
    if !args.no_metrics {
        if !args.metrics_addr.ip().is_loopback() {
            eprintln!(
                "hum daemon: --metrics-addr must be a loopback address (it has no authentication)"
            );
            return ExitCode::from(2);
        }
        match metrics::serve(args.metrics_addr, tx.clone()).await {
            Ok(bound) => {
                tracing::info!(event = "daemon.metrics", addr = %bound, "serving /metrics and /status");
                let _ = std::fs::write(&addr_file, bound.to_string());
            }
            Err(e) => {
                tracing::warn!(event = "daemon.metrics_unavailable", addr = %args.metrics_addr, error = %e, "no metrics endpoint")
            }
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .expect("SIGINT handler");
    let mut next_id: ConnId = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let uid = match stream.peer_cred() {
                        Ok(cred) => cred.uid(),
                        Err(e) => {
                            tracing::warn!(event = "daemon.peer_cred_failed", error = %e, "cannot read peer credentials; refusing");
                            continue;
                        }
                    };
                    if !listen::allowed(uid, own_uid) {
                        tracing::warn!(event = "daemon.peer_refused", uid, "a process of another user tried to connect");
                        drop(stream);
                        continue;
                    }
                    let id = next_id;
                    next_id += 1;
                    let Connection { mut inbox, outbox } = Connection::unix(stream, Limits::default(), format!("conn-{id}"));
                    if tx.send(RouterMsg::Joined(id, outbox)).await.is_err() {
                        break;
                    }
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        loop {
                            let msg = match inbox.recv().await {
                                Ok(Some(Inbound::Tone(t))) => RouterMsg::Tone(id, Box::new(t)),
                                Ok(Some(Inbound::Rejected(r))) => RouterMsg::Rejected(id, r),
                                Ok(None) | Err(_) => break,
                            };
                            if tx.send(msg).await.is_err() {
                                return;
                            }
                        }
                        let _ = tx.send(RouterMsg::Left(id)).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(event = "daemon.accept_failed", error = %e, "accept failed");
                    // Out of descriptors, most likely: let some close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(msg) = rx.recv() => router.handle(msg),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(
        event = "daemon.stopping",
        workers = router.workers(),
        askers = router.askers(),
        "humd is stopping"
    );
    drop(listener);
    router.shutdown();
    for outbox in router.outboxes() {
        let _ = tokio::time::timeout(Duration::from_secs(1), outbox.closed()).await;
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&addr_file);
    tracing::info!(event = "daemon.stopped", stats = ?router.stats, "humd stopped");
    ExitCode::SUCCESS
}
