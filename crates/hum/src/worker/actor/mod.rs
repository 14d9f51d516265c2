//! The worker's one owner of state: the pool policy, the turns, the link.
//! Everything else talks to it through [`Msg`]; it turns pool commands into
//! runner commands and tones.

mod book;
mod cells;
mod humd_gone;
mod outbound;
mod table;
mod turns;

use super::bridge::{Answer, Bridge, CellSocket, CellTools, ToolAnswer};
use super::link;
pub use super::msg::{CellMsg, Msg};
use super::runner::{self, CellCmd, Launch};
use super::serving::Serving;
use super::uplink::Uplink;
use crate::cell::{Cells, Reason};
use crate::config::Config;
use crate::hive::argv::valid_model_id;
use crate::hive::Hive;
use crate::pool::{CellId, Command, Event, Outcome, Pool, TurnId};
use crate::reports::{PoolStatus, WorkerStatus};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thrum::{Body, ErrorCode, ErrorTone, Finish, Hello, Prompt, Propensity, Tone};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages waiting for the actor. Senders (the link, the runners) wait when
/// it is full, which slows a chatty CLI down instead of growing memory.
const ACTOR_INBOX: usize = 1024;

/// How often a linked worker sends humd its `worker-status`.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The chis a worker understands.
const CHIS: [&str; 7] = [
    "prompt",
    "cancel",
    "cleanup",
    "tool-result",
    "tool-info",
    "release-permit",
    "breath",
];

use table::{CellInfo, CellTable, Samples};

struct Actor {
    config: Config,
    hives: Vec<Hive>,
    cells: Arc<Cells>,
    pool: Pool,
    clock: Instant,
    tx: mpsc::Sender<Msg>,
    /// Every turn from its prompt's arrival to its end.
    turns: book::Turns,
    /// The live cells' records and samples.
    table: CellTable,
    /// Why the last spawn for a sid failed, for the error its turn gets.
    spawn_errors: HashMap<String, String>,
    /// Prompts of the inbound batch being read, decided on together.
    arrived: Vec<Event>,
    /// The ordered way to humd, shared with the runners.
    uplink: Arc<Uplink>,
    /// Lends the bees' tools to the cells (off in the config, or when its
    /// directory cannot be made: then cells start without it).
    bridge: Option<Arc<Bridge>>,
    metrics: crate::reports::WorkerMetrics,
    /// A cell or turn changed state since humd was last told.
    dirty: bool,
    /// Each session's cost so far, across its cells.
    meters: Arc<crate::hive::meter::SessionMeters>,
    /// The agent's own tools a new cell with the bridge starts without:
    /// those of the capabilities connected foragers serve (humd's
    /// `tool-info` says which), sorted.
    builtins_off: Vec<String>,
}

/// Runs the worker until `shutdown` resolves (`hum worker` passes SIGTERM
/// and SIGINT); then tears every cell down (in parallel) and exits 0 once
/// all are gone.
/// The tool bridge cells are started with: none when the config turns it
/// off or its directory cannot be made (cells then start without it).
fn bridge_for(config: &Config, socket: &Path, uplink: &Arc<Uplink>) -> Option<Arc<Bridge>> {
    if config.tools.bridge {
        let dir = Bridge::dir_for(socket);
        let timeout = Duration::from_millis(config.tools.call_timeout_ms);
        let permit = Duration::from_millis(config.tools.permission_timeout_ms);
        match Bridge::new(dir.clone(), uplink.clone(), timeout, permit) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(event = "bridge.unavailable", dir = %dir.display(), error = %e, "cells start without the tool bridge");
                None
            }
        }
    } else {
        None
    }
}

impl Actor {
    fn new(
        config: Config,
        hives: Vec<Hive>,
        cells: Arc<Cells>,
        tx: mpsc::Sender<Msg>,
        uplink: Arc<Uplink>,
        bridge: Option<Arc<Bridge>>,
    ) -> Actor {
        Actor {
            pool: Pool::new(config.pool()),
            config,
            hives,
            cells: cells.clone(),
            clock: Instant::now(),
            tx,
            turns: book::Turns::default(),
            table: CellTable::default(),
            spawn_errors: HashMap::new(),
            arrived: Vec::new(),
            uplink,
            bridge,
            dirty: false,
            meters: Arc::default(),
            builtins_off: Vec::new(),
            metrics: crate::reports::WorkerMetrics {
                orphans_swept: cells
                    .sweep_reports()
                    .iter()
                    .flat_map(|r| &r.cells)
                    .map(|c| c.signalled.len() as u64)
                    .sum(),
                ..Default::default()
            },
        }
    }
}

pub async fn serve(
    config: Config,
    hives: Vec<Hive>,
    cells: Arc<Cells>,
    socket: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) -> ExitCode {
    // Two inboxes: the link's and the cells' (lifecycle only), so humd's
    // prompts and cancels are never stuck behind a burst of cell events.
    let (tx, mut rx) = mpsc::channel(ACTOR_INBOX);
    let (cell_tx, mut cell_rx) = mpsc::channel(ACTOR_INBOX);
    // System prompts a SIGKILLed worker left on disk.
    super::system_prompt::sweep(cells.state_dir(), false);
    let stop_link = CancellationToken::new();
    let hello = hello(&config, &hives);
    tokio::spawn(link::run(
        socket.clone(),
        hello,
        tx.clone(),
        stop_link.clone(),
    ));
    let uplink = Uplink::new();
    tokio::spawn(uplink.clone().pump(stop_link.clone()));
    let bridge = bridge_for(&config, &socket, &uplink);
    let mut actor = Actor::new(
        config,
        hives,
        cells.clone(),
        cell_tx,
        uplink.clone(),
        bridge.clone(),
    );
    let mut shutdown = std::pin::pin!(shutdown);
    let mut reap = tokio::time::interval(Duration::from_secs(5));
    let mut report = tokio::time::interval(STATUS_EVERY);
    // The once-a-second /proc scan runs on a blocking thread; its result
    // comes back here.
    let mut sampling: Option<tokio::task::JoinHandle<Samples>> = None;
    loop {
        let deadline = actor
            .pool
            .next_deadline()
            .and_then(|d| actor.clock.checked_add(Duration::from_millis(d)));
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => actor.handle(m),
                None => break,
            },
            Some(m) = cell_rx.recv() => actor.handle(m),
            _ = sleep_until(deadline) => actor.event(Event::Tick),
            _ = sleep_until(actor.turns.humd_gone_until()) => actor.humd_gone_grace_over(),
            _ = reap.tick() => {
                actor.cells.reap_orphans();
            }
            _ = report.tick(), if sampling.is_none() => {
                sampling = Some(actor.start_sampling());
            }
            done = async { sampling.as_mut().expect("guarded").await }, if sampling.is_some() => {
                sampling = None;
                actor.memory_sampled(done.unwrap_or_default());
                actor.report_status();
            }
            () = &mut shutdown => break,
        }
        // humd always has the state as of now: every change is pushed as
        // soon as the message that caused it is handled (cheap: humd keeps
        // the line as it came and reads it only when asked).
        if actor.dirty {
            actor.report_status();
        }
    }
    tracing::info!(
        event = "worker.stopping",
        cells = actor.table.len(),
        "tearing every cell down"
    );
    actor.event(Event::Shutdown);
    while !actor.table.is_empty() {
        tokio::select! {
            m = cell_rx.recv() => match m {
                Some(m) => actor.handle(m),
                None => break,
            },
            m = rx.recv() => match m {
                // Still linked: what cells say on the way out reaches humd.
                Some(m @ (Msg::Linked(_) | Msg::Unlinked)) => actor.handle(m),
                Some(_) => {}
                None => std::future::pending::<()>().await,
            },
        }
    }
    uplink.flush_now();
    stop_link.cancel();
    if let Some(o) = uplink.take_outbox() {
        o.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), o.closed()).await;
    }
    cells.shutdown().await;
    if let Some(b) = &bridge {
        b.remove_dir();
    }
    super::system_prompt::sweep(cells.state_dir(), true);
    tracing::info!(event = "worker.stopped", "every cell is gone");
    ExitCode::SUCCESS
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn hello(config: &Config, hives: &[Hive]) -> Tone {
    let mut extra = Map::new();
    let listed: Vec<crate::reports::HiveModels> = hives
        .iter()
        .map(|h| crate::reports::HiveModels {
            hive: h.name.clone(),
            models: h.models.clone(),
        })
        .collect();
    extra.insert(crate::reports::HELLO_HIVES.into(), json!(listed));
    let hive = hives.first().map(|h| h.name.as_str()).unwrap_or_default();
    let base = crate::client::Client::worker_hello("hum worker", hive, config.models());
    Tone::new(Hello {
        propensity: Some(Propensity {
            statefulness: Some("stateful_session".into()),
            wire: Some("claude-cli".into()),
            extra: Map::new(),
        }),
        chis: Some(CHIS.iter().map(|c| c.to_string()).collect()),
        hive: hives.first().map(|h| h.name.clone()),
        extra,
        ..base
    })
    .with_rid(thrum::rid())
}

impl Actor {
    fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Linked(outbox) => {
                let dropped = self.uplink.link(outbox);
                // A restarted humd knows the cells at once, not a second later.
                self.report_status();
                self.tell_turns_held();
                if dropped > 0 {
                    tracing::info!(
                        event = "worker.relinked",
                        dropped,
                        "tones dropped while humd was away"
                    );
                }
            }
            Msg::Unlinked => {
                self.uplink.unlink();
                self.humd_gone();
            }
            Msg::Inbound(tones) => {
                for tone in tones {
                    self.inbound(tone);
                }
                self.flush_prompts();
            }
            Msg::Cell(id, m) => self.cell_msg(id, *m),
        }
    }

    fn event(&mut self, event: Event) {
        // Prompts that arrived before this event are decided first.
        self.flush_prompts();
        let now = self.now();
        for cmd in self.pool.handle(now, event) {
            self.command(cmd);
        }
    }
}
