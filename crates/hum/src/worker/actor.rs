//! The worker's one owner of state: the pool policy, the turns, the link.
//! Everything else talks to it through [`Msg`]; it turns pool commands into
//! runner commands and tones.

use super::config::Config;
use super::link;
use super::runner::{self, CellCmd, Launch};
use crate::cell::{Cells, Reason, TeardownReport};
use crate::hive::argv::{valid_model_id, CellArgs};
use crate::hive::Hive;
use crate::pool::{CellId, Command, Event, Outcome, Pool, TurnId};
use crate::reports::{CellStatus, PoolStatus, WorkerStatus};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thrum::{Bees, Body, ErrorTone, Finish, Hello, Offer, Outbox, Prompt, Propensity, Pulse, Tone};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages waiting for the actor. Senders (the link, the runners) wait when
/// it is full, which slows a chatty CLI down instead of growing memory.
const ACTOR_INBOX: usize = 1024;

/// Bytes of tones the actor holds for humd beyond what the link's outbox
/// takes. Past this it stops reading its cells' messages, so a cell that
/// prints faster than humd reads waits on its stdout pipe: the link is
/// never overflowed and never closed for being busy.
const LINK_BACKLOG: usize = 1024 * 1024;

/// How often a linked worker sends humd its `worker-status`.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The chis a worker understands.
const CHIS: [&str; 5] = ["prompt", "cancel", "cleanup", "tool-result", "breath"];

/// Each cell's process tree, as last sampled.
type Samples = HashMap<CellId, crate::cell::observe::CellSample>;

/// What reaches the actor.
#[derive(Debug)]
pub enum Msg {
    Linked(Outbox),
    Unlinked,
    /// Tones that arrived together.
    Inbound(Vec<Tone>),
    Cell(CellId, Box<CellMsg>),
}

/// What a runner reports about its cell.
#[derive(Debug)]
pub enum CellMsg {
    Spawned {
        /// For sampling its process tree (and nothing else: the runner
        /// owns the cell).
        handle: crate::cell::CellHandle,
        pid: i32,
        cell_id: String,
        session: String,
    },
    SpawnFailed {
        error: String,
    },
    /// The turn's first event (`session-ready`).
    Started(Body),
    Tone(Body),
    /// The turn's last event (`finish` or `error` from the CLI).
    Ended(Body),
    Exited,
    TornDown(Arc<TeardownReport>),
}

struct TurnInfo {
    sid: String,
    rid: Option<String>,
    /// When the prompt arrived, on the actor's clock.
    arrived: u64,
}

struct CellInfo {
    sid: String,
    hive: String,
    pid: Option<i32>,
    cell_id: Option<String>,
    handle: Option<crate::cell::CellHandle>,
    ready_once: bool,
    spawned_at: Instant,
    turns_served: u64,
    runner: mpsc::UnboundedSender<CellCmd>,
    /// When the pool was last told this cell printed something.
    activity_told: u64,
}

struct Actor {
    config: Config,
    hives: Vec<Hive>,
    cells: Arc<Cells>,
    pool: Pool,
    clock: Instant,
    tx: mpsc::Sender<Msg>,
    turns: HashMap<TurnId, TurnInfo>,
    /// The prompt of each turn not yet given to a cell, to build its message.
    prompts: HashMap<TurnId, Prompt>,
    next_turn: TurnId,
    live: HashMap<CellId, CellInfo>,
    interrupted: HashSet<TurnId>,
    /// Why the last spawn for a sid failed, for the error its turn gets.
    spawn_errors: HashMap<String, String>,
    /// Prompts of the inbound batch being read, decided on together.
    arrived: Vec<Event>,
    outbox: Option<Outbox>,
    /// Encoded tones waiting for room in the link's outbox, oldest first.
    backlog: VecDeque<Vec<u8>>,
    backlog_bytes: usize,
    dropped_unlinked: u64,
    metrics: crate::reports::WorkerMetrics,
    /// Each cell's process tree as last sampled (every [`STATUS_EVERY`]).
    samples: Samples,
    /// A cell or turn changed state since humd was last told.
    dirty: bool,
}

/// Runs the worker until SIGTERM or SIGINT; then tears every cell down (in
/// parallel) and exits 0 once all are gone.
pub async fn serve(
    config: Config,
    hives: Vec<Hive>,
    cells: Arc<Cells>,
    socket: PathBuf,
) -> ExitCode {
    // Two inboxes: the link's (always read) and the cells' (read only while
    // the link keeps up), so humd's prompts and cancels are never stuck
    // behind a cell's output.
    let (tx, mut rx) = mpsc::channel(ACTOR_INBOX);
    let (cell_tx, mut cell_rx) = mpsc::channel(ACTOR_INBOX);
    let stop_link = CancellationToken::new();
    let hello = hello(&config, &hives);
    tokio::spawn(link::run(socket, hello, tx.clone(), stop_link.clone()));
    let mut actor = Actor {
        pool: Pool::new(config.pool()),
        config,
        hives,
        cells: cells.clone(),
        clock: Instant::now(),
        tx: cell_tx,
        turns: HashMap::new(),
        prompts: HashMap::new(),
        next_turn: 0,
        live: HashMap::new(),
        interrupted: HashSet::new(),
        spawn_errors: HashMap::new(),
        arrived: Vec::new(),
        outbox: None,
        backlog: VecDeque::new(),
        backlog_bytes: 0,
        dropped_unlinked: 0,
        samples: HashMap::new(),
        dirty: false,
        metrics: crate::reports::WorkerMetrics {
            orphans_swept: cells
                .sweep_reports()
                .iter()
                .flat_map(|r| &r.cells)
                .map(|c| c.signalled.len() as u64)
                .sum(),
            ..Default::default()
        },
    };
    let mut stop = crate::stop::StopSignals::install();
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
        let waiting = actor.waiting_for_room();
        let keeping_up = actor.backlog_bytes < LINK_BACKLOG;
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => actor.handle(m),
                None => break,
            },
            _ = room(&waiting) => actor.flush_backlog(),
            Some(m) = cell_rx.recv(), if keeping_up => actor.handle(m),
            _ = sleep_until(deadline) => actor.event(Event::Tick),
            _ = reap.tick() => {
                actor.cells.reap_orphans();
            }
            _ = report.tick(), if sampling.is_none() => {
                sampling = Some(actor.start_sampling());
            }
            done = async { sampling.as_mut().expect("guarded").await }, if sampling.is_some() => {
                sampling = None;
                actor.samples = done.unwrap_or_default();
                actor.report_status();
            }
            _ = stop.next() => break,
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
        cells = actor.live.len(),
        "tearing every cell down"
    );
    actor.event(Event::Shutdown);
    while !actor.live.is_empty() {
        let waiting = actor.waiting_for_room();
        tokio::select! {
            m = cell_rx.recv() => match m {
                Some(m) => actor.handle(m),
                None => break,
            },
            _ = room(&waiting) => actor.flush_backlog(),
            m = rx.recv() => match m {
                // Still linked: what cells say on the way out reaches humd.
                Some(m @ (Msg::Linked(_) | Msg::Unlinked)) => actor.handle(m),
                Some(_) => {}
                None => std::future::pending::<()>().await,
            },
        }
    }
    actor.flush_backlog();
    stop_link.cancel();
    if let Some(o) = actor.outbox.take() {
        o.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), o.closed()).await;
    }
    cells.shutdown().await;
    tracing::info!(event = "worker.stopped", "every cell is gone");
    ExitCode::SUCCESS
}

/// Resolves when the link's outbox has room for the oldest held tone; never
/// when nothing is held.
async fn room(waiting: &Option<(Outbox, usize)>) {
    match waiting {
        Some((outbox, bytes)) => outbox.room(*bytes).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn hello(config: &Config, hives: &[Hive]) -> Tone {
    let mut extra = Map::new();
    extra.insert(
        "hives".into(),
        json!(hives
            .iter()
            .map(|h| json!({"hive": h.name, "models": h.models}))
            .collect::<Vec<_>>()),
    );
    Tone::new(Hello {
        bee: Some(Bees::Many(vec!["worker".into()])),
        proto_version: Some(thrum::PROTO_VERSION.into()),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        propensity: Some(Propensity {
            statefulness: Some("stateful_session".into()),
            wire: Some("claude-cli".into()),
            extra: Map::new(),
        }),
        chis: Some(CHIS.iter().map(|c| c.to_string()).collect()),
        source: Some("hum worker".into()),
        hid: None,
        hive: hives.first().map(|h| h.name.clone()),
        models: Some(config.models()),
        extra,
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
                self.outbox = Some(outbox);
                // A restarted humd knows the cells at once, not a second later.
                self.report_status();
                if self.dropped_unlinked > 0 {
                    tracing::info!(
                        event = "worker.relinked",
                        dropped = self.dropped_unlinked,
                        "tones dropped while humd was away"
                    );
                }
            }
            Msg::Unlinked => {
                self.outbox = None;
                self.dropped_unlinked += self.backlog.len() as u64;
                self.backlog.clear();
                self.backlog_bytes = 0;
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

    /// `worker-status` (a thrum extension chi): the pool and every cell, for
    /// `hum status`. Sent every second while linked; humd keeps the latest.
    ///
    /// ```json
    /// {"chi": "worker-status", "hive": "sim", "models": ["sim"],
    ///  "containment": {"kind": "cgroup", "root": "…"},
    ///  "pool": {"live": 3, "cap": 8, "queued": 0, "bootstrapping": 1},
    ///  "cells": [{"sid": "…", "hive": "sim", "state": "idle", "pid": 42,
    ///             "pids": [42, 43], "rssBytes": 1, "cpuMs": 2, "ageMs": 3,
    ///             "idleMs": 4, "turnsServed": 1, "cellId": "…"}]}
    /// ```
    ///
    /// The process trees come from the last sample (taken once a second
    /// off this thread, see [`Actor::start_sampling`]), so a push on each
    /// state change costs no /proc scan.
    /// Samples every live cell's process tree on a blocking thread (one
    /// /proc scan reads a file per process on the machine).
    fn start_sampling(&self) -> tokio::task::JoinHandle<Samples> {
        let cells = self.cells.clone();
        let handles: Vec<(CellId, crate::cell::CellHandle)> = self
            .live
            .iter()
            .filter_map(|(id, info)| Some((*id, info.handle.clone()?)))
            .collect();
        tokio::task::spawn_blocking(move || {
            let samples = cells.sample_all(handles.iter().map(|(_, h)| h));
            handles.iter().map(|(id, _)| *id).zip(samples).collect()
        })
    }

    fn report_status(&mut self) {
        self.dirty = false;
        if self.outbox.is_none() {
            return;
        }
        let now = self.now();
        let views = self.pool.cells();
        let mut cells = Vec::with_capacity(views.len());
        for view in &views {
            let Some(info) = self.live.get(&view.id) else {
                continue;
            };
            // A cell newer than the last sample: its leader alone, read now
            // (one /proc file), until the next full sample.
            let sample = match self.samples.get(&view.id) {
                Some(s) => s.clone(),
                None => {
                    let leader = info.pid.and_then(crate::cell::procs::stat);
                    let s = crate::cell::observe::summarize(
                        info.cell_id.as_deref().unwrap_or(""),
                        info.pid.unwrap_or(0),
                        leader.into_iter().collect(),
                        info.spawned_at.elapsed(),
                    );
                    if info.pid.is_some() {
                        self.samples.insert(view.id, s.clone());
                    }
                    s
                }
            };
            cells.push(CellStatus {
                sid: info.sid.clone(),
                hive: info.hive.clone(),
                state: view.state,
                pid: info.pid,
                pids: sample.pids,
                rss_bytes: sample.rss_bytes,
                cpu_ms: sample.cpu_ms,
                age_ms: sample.age_ms,
                idle_ms: (view.state == crate::pool::CellState::Idle)
                    .then(|| now.saturating_sub(view.since)),
                turns_served: info.turns_served,
                cell_id: info.cell_id.clone(),
            });
        }
        let status = WorkerStatus {
            hive: self.hives.first().map(|h| h.name.clone()),
            models: self.config.models(),
            containment: Some(self.cells.mechanism().clone()),
            pool: PoolStatus {
                live: views.len(),
                cap: self.pool.config().max_active_cells,
                queued: self.pool.queued(),
                bootstrapping: views
                    .iter()
                    .filter(|c| c.state == crate::pool::CellState::Bootstrapping)
                    .count(),
                max_concurrent_spawns: self.pool.config().max_concurrent_spawns,
            },
            cells,
            metrics: self.metrics.clone(),
        };
        match status.to_line() {
            Ok(bytes) => self.send_line(bytes),
            Err(e) => {
                tracing::error!(event = "worker.status_unencodable", error = %e, "worker-status did not serialize")
            }
        }
    }

    /// Sends a tone to humd in order: straight to the link's outbox when it
    /// has room and nothing is held, else behind what is held. Never closes
    /// the link for being busy, never waits.
    fn send(&mut self, tone: Tone) {
        match tone.encode_line(thrum::DEFAULT_MAX_LINE) {
            Ok(line) => self.send_line(line),
            Err(e) => {
                tracing::warn!(event = "worker.send_failed", error = %e, chi = tone.chi(), "tone not sent")
            }
        }
    }

    /// [`Actor::send`] for a line already encoded (newline included).
    fn send_line(&mut self, line: Vec<u8>) {
        let Some(o) = &self.outbox else {
            self.dropped_unlinked += 1;
            return;
        };
        let offered = if self.backlog.is_empty() {
            o.offer_line(line)
        } else {
            Err(Offer::Full(line))
        };
        match offered {
            Ok(()) => {}
            Err(Offer::Full(line)) => {
                self.backlog_bytes += line.len();
                self.backlog.push_back(line);
            }
            Err(Offer::Closed) => self.dropped_unlinked += 1,
            Err(Offer::Encode(e)) => {
                tracing::warn!(event = "worker.send_failed", error = %e, "line not sent")
            }
        }
    }

    /// The outbox and the size of the oldest held tone, while one is held.
    fn waiting_for_room(&self) -> Option<(Outbox, usize)> {
        let front = self.backlog.front()?;
        Some((self.outbox.clone()?, front.len()))
    }

    /// Moves held tones into the link's outbox while they fit.
    fn flush_backlog(&mut self) {
        let Some(o) = self.outbox.clone() else {
            return;
        };
        while let Some(line) = self.backlog.pop_front() {
            let len = line.len();
            match o.offer_line(line) {
                Ok(()) => self.backlog_bytes -= len,
                Err(Offer::Full(line)) => {
                    self.backlog.push_front(line);
                    return;
                }
                Err(_) => {
                    self.backlog_bytes -= len;
                    self.dropped_unlinked += 1;
                }
            }
        }
    }

    /// Sends a tone about `sid`, with the rid of the turn when known.
    fn send_for(&mut self, body: impl Into<Body>, sid: &str, rid: Option<&str>) {
        let mut tone = Tone::new(body).with_sid(sid);
        tone.envelope.rid = rid.map(str::to_owned);
        tone.envelope.from = Some("worker".into());
        self.send(tone);
    }

    fn pulse(&mut self, kind: &str, sid: &str, fields: Value) {
        let extra = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.send_for(
            Pulse {
                kind: kind.into(),
                extra,
            },
            sid,
            None,
        );
    }

    fn reject(&mut self, sid: Option<&str>, rid: Option<&str>, code: &str, message: String) {
        tracing::info!(event = "turn.rejected", sid, code, %message, "request refused");
        let mut tone = Tone::new(ErrorTone::new(code, message));
        tone.envelope.sid = sid.map(str::to_owned);
        tone.envelope.rid = rid.map(str::to_owned);
        self.send(tone);
    }

    fn inbound(&mut self, tone: Tone) {
        let sid = tone.sid().map(str::to_owned);
        let rid = tone.rid().map(str::to_owned);
        match tone.body {
            Body::Prompt(prompt) => self.prompt(sid, rid, prompt),
            Body::Cancel(_) => match sid {
                Some(sid) => self.event(Event::Cancel { sid }),
                None => self.reject(
                    None,
                    rid.as_deref(),
                    "bad_request",
                    "cancel needs a sid".into(),
                ),
            },
            Body::Cleanup(_) => match sid {
                Some(sid) => self.event(Event::Cleanup { sid }),
                None => self.reject(
                    None,
                    rid.as_deref(),
                    "bad_request",
                    "cleanup needs a sid".into(),
                ),
            },
            Body::ToolResult(tr) => self.tool_result(sid, rid, tr),
            Body::Breath(_) | Body::Echo(_) => {}
            other => tracing::debug!(
                event = "worker.inbound.ignored",
                chi = other.chi(),
                "tone not for a worker"
            ),
        }
    }

    fn prompt(&mut self, sid: Option<String>, rid: Option<String>, prompt: Prompt) {
        let rid = rid.as_deref();
        let Some(sid) = sid.filter(|s| !s.is_empty()) else {
            return self.reject(None, rid, "bad_request", "prompt needs a sid".into());
        };
        if prompt.user_text().is_none() && prompt.content.is_none() {
            return self.reject(
                Some(&sid),
                rid,
                "bad_request",
                "prompt needs content or text".into(),
            );
        }
        // Whatever goes into argv, cwd or environment must be a C string.
        let argv_fields = [
            ("cwd", prompt.cwd.as_deref()),
            ("systemPrompt", prompt.system_prompt.as_deref()),
            ("modelId", prompt.model_id.as_deref()),
        ];
        let tool_lists = [
            ("allowedTools", prompt.allowed_tools.as_deref()),
            ("disallowedTools", prompt.disallowed_tools.as_deref()),
        ];
        let nul = argv_fields
            .iter()
            .find(|(_, v)| v.is_some_and(|v| v.contains('\0')))
            .map(|(k, _)| *k)
            .or_else(|| {
                tool_lists
                    .iter()
                    .find(|(_, v)| v.is_some_and(|l| l.iter().any(|t| t.contains('\0'))))
                    .map(|(k, _)| *k)
            });
        if let Some(field) = nul {
            return self.reject(
                Some(&sid),
                rid,
                "bad_request",
                format!("{field} contains a NUL byte"),
            );
        }
        if let Some(cwd) = prompt.cwd.as_deref() {
            if !std::path::Path::new(cwd).is_dir() {
                return self.reject(
                    Some(&sid),
                    rid,
                    "bad_request",
                    format!("cwd {cwd:?} is not a directory on the worker's machine"),
                );
            }
        }
        if let Some(model) = &prompt.model_id {
            if !valid_model_id(model) {
                return self.reject(
                    Some(&sid),
                    rid,
                    "bad_request",
                    format!("modelId {model:?} is not a model name"),
                );
            }
            if self.hive_for(Some(model)).is_none() {
                let offered = self.config.models().join(", ");
                return self.reject(
                    Some(&sid),
                    rid,
                    "no_worker",
                    format!("model {model} is not served here (offered: {offered})"),
                );
            }
        }
        let turn = self.next_turn;
        self.next_turn += 1;
        let arrived = self.now();
        self.turns.insert(
            turn,
            TurnInfo {
                sid: sid.clone(),
                rid: rid.map(str::to_owned),
                arrived,
            },
        );
        self.prompts.insert(turn, prompt);
        tracing::info!(event = "turn.queued", sid = %sid, turn, depth = self.pool.queued() + self.arrived.len() + 1, "prompt accepted");
        self.arrived.push(Event::Prompt { turn, sid });
    }

    fn tool_result(&mut self, sid: Option<String>, rid: Option<String>, tr: thrum::ToolResult) {
        let cell = sid.as_deref().and_then(|s| self.pool.cell_of(s));
        let serving = cell
            .and_then(|c| self.pool.cell(c))
            .and_then(|c| c.turn.map(|_| c.id));
        let Some(cell) = serving else {
            return self.reject(
                sid.as_deref(),
                rid.as_deref(),
                "bad_request",
                "no turn in flight for this sid".into(),
            );
        };
        let msg = json!({"type": "user", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tr.call_id, "content": tr.result.unwrap_or(Value::Null)}
        ]}});
        if let Some(info) = self.live.get(&cell) {
            let _ = info
                .runner
                .send(CellCmd::Write(format!("{msg}\n").into_bytes()));
        }
    }

    fn hive_for(&self, model: Option<&str>) -> Option<&Hive> {
        let model = model.or(self.config.default_model.as_deref());
        match model {
            Some(m) => self.hives.iter().find(|h| h.models.iter().any(|x| x == m)),
            None => self.hives.first(),
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

    /// Hands the prompts of one inbound batch to the pool together.
    fn flush_prompts(&mut self) {
        if self.arrived.is_empty() {
            return;
        }
        let now = self.now();
        let events = std::mem::take(&mut self.arrived);
        for cmd in self.pool.handle_all(now, events) {
            self.command(cmd);
        }
    }

    fn user_line(prompt: &Prompt) -> Vec<u8> {
        let content = match (&prompt.content, prompt.user_text()) {
            (Some(c @ Value::Array(_)), _) => c.clone(),
            (_, Some(text)) => Value::String(text),
            (Some(c), None) => c.clone(),
            (None, None) => Value::String(String::new()),
        };
        let msg = json!({"type": "user", "message": {"role": "user", "content": content}, "parent_tool_use_id": null});
        format!("{msg}\n").into_bytes()
    }

    fn admitted(&mut self, turn: TurnId, how: &str) {
        if let Some(t) = self.turns.get(&turn) {
            let waited_ms = self.now().saturating_sub(t.arrived);
            self.metrics.admission_wait_seconds.observe_ms(waited_ms);
            if how == "reuse" {
                self.metrics.reuses += 1;
            }
            tracing::info!(event = "turn.admitted", sid = %t.sid, turn, waited_ms, how, "turn given to a cell");
        }
    }

    fn command(&mut self, cmd: Command) {
        self.dirty = true;
        match &cmd {
            Command::Spawn { turn, .. } => self.admitted(*turn, "spawn"),
            Command::Send { turn, .. } => self.admitted(*turn, "reuse"),
            _ => {}
        }
        match cmd {
            Command::Spawn { cell, sid, turn } => self.spawn(cell, sid, turn),
            Command::Send { cell, turn } => {
                let line = self
                    .prompts
                    .remove(&turn)
                    .map(|p| Self::user_line(&p))
                    .unwrap_or_default();
                if let Some(info) = self.live.get(&cell) {
                    tracing::info!(event = "cell.reused", sid = %info.sid, pid = info.pid, turn, "warm cell serves the turn");
                    let _ = info.runner.send(CellCmd::Write(line));
                }
            }
            Command::Interrupt { cell, turn } => {
                self.interrupted.insert(turn);
                if let Some(info) = self.live.get(&cell) {
                    tracing::info!(event = "turn.interrupting", sid = %info.sid, pid = info.pid, turn, "asking the agent to stop its turn");
                    let _ = info.runner.send(CellCmd::Interrupt);
                }
            }
            Command::Teardown { cell, reason } => {
                if let Some(info) = self.live.get(&cell) {
                    if reason == Reason::Evicted {
                        let idle_ms = self
                            .pool
                            .cell(cell)
                            .map(|c| self.now().saturating_sub(c.since))
                            .unwrap_or(0);
                        tracing::info!(event = "cell.evicted", sid = %info.sid, pid = info.pid, reason = %reason, idle_ms, "evicting an idle cell");
                    }
                    let _ = info.runner.send(CellCmd::Teardown(reason));
                }
            }
            Command::End {
                turn,
                sid,
                outcome,
                waited_ms,
            } => self.end(turn, sid, outcome, waited_ms),
        }
    }

    fn spawn(&mut self, cell: CellId, sid: String, turn: TurnId) {
        let prompt = self.prompts.remove(&turn).unwrap_or_default();
        let Some(hive) = self.hive_for(prompt.model_id.as_deref()).cloned() else {
            // Checked at arrival; a config without hives cannot start.
            return self.event(Event::SpawnFailed { cell });
        };
        let hive_env = hive.env.clone();
        let var = |k: &str| {
            hive_env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| PathBuf::from(v))
                .or_else(|| std::env::var_os(k).map(PathBuf::from))
        };
        let config_dir = var("CLAUDE_CONFIG_DIR").unwrap_or_else(|| {
            var("HOME")
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".claude")
        });
        let cwd = prompt
            .cwd
            .clone()
            .map(PathBuf::from)
            .or_else(|| self.config.cwd.clone())
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        let model = prompt
            .model_id
            .clone()
            .or_else(|| self.config.default_model.clone());
        let launch = Launch {
            cells: self.cells.clone(),
            args: CellArgs {
                model,
                system_prompt: prompt.system_prompt.clone(),
                allowed_tools: prompt.allowed_tools.clone().unwrap_or_default(),
                disallowed_tools: prompt.disallowed_tools.clone().unwrap_or_default(),
            },
            hive,
            sid: sid.clone(),
            cwd,
            env: hive_env
                .into_iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
            config_dir,
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let hive_name = launch.hive.name.clone();
        self.live.insert(
            cell,
            CellInfo {
                sid,
                hive: hive_name,
                pid: None,
                cell_id: None,
                handle: None,
                ready_once: false,
                spawned_at: Instant::now(),
                turns_served: 0,
                runner: cmd_tx,
                activity_told: 0,
            },
        );
        runner::supervise(
            cell,
            launch,
            Self::user_line(&prompt),
            cmd_rx,
            self.tx.clone(),
        );
    }

    fn end(&mut self, turn: TurnId, sid: String, outcome: Outcome, waited_ms: u64) {
        self.prompts.remove(&turn);
        self.interrupted.remove(&turn);
        let info = self.turns.remove(&turn);
        let outcome_name = match &outcome {
            Outcome::Done => "done",
            Outcome::Cancelled => "cancelled",
            other => other.error_code().unwrap_or("error"),
        };
        *self
            .metrics
            .turns
            .entry(outcome_name.to_owned())
            .or_default() += 1;
        if let (Outcome::Done, Some(t)) = (&outcome, &info) {
            self.metrics
                .turn_seconds
                .observe_ms(self.now().saturating_sub(t.arrived));
        }
        let rid = info.and_then(|t| t.rid);
        let rid = rid.as_deref();
        match &outcome {
            Outcome::Done => {}
            Outcome::Cancelled => {
                tracing::info!(event = "turn.cancelled", sid = %sid, turn, "turn ended by a cancel");
                let finish = Finish {
                    finish_reason: Some("cancelled".into()),
                    usage: None,
                    extra: Map::new(),
                };
                self.send_for(finish, &sid, rid);
            }
            Outcome::Overloaded { retry_after_ms } => {
                let mut e = ErrorTone::new(
                    "overloaded",
                    format!("no cell free within {waited_ms} ms; retry later"),
                );
                e.retry_after_ms = Some(*retry_after_ms);
                tracing::info!(event = "turn.rejected", sid = %sid, code = "overloaded", waited_ms, "prompt not admitted");
                self.send_for(e, &sid, rid);
            }
            other => {
                let code = other.error_code().unwrap_or("error");
                let message = match other {
                    Outcome::CellTimeout => {
                        "the agent showed no first event in time; it was torn down".to_owned()
                    }
                    Outcome::TurnTimeout => "the agent went silent mid-turn (or ran past the longest turn allowed); it was torn down".to_owned(),
                    Outcome::CellDied => "the agent died during the turn".to_owned(),
                    Outcome::SpawnFailed => match self.spawn_errors.remove(&sid) {
                        Some(why) => format!("the agent could not be started: {why}"),
                        None => "the agent could not be started".to_owned(),
                    },
                    Outcome::CleanedUp => "the session was cleaned up".to_owned(),
                    Outcome::ShuttingDown => "the worker is shutting down".to_owned(),
                    _ => code.to_owned(),
                };
                tracing::info!(event = "turn.failed", sid = %sid, code, "turn ended with an error");
                self.send_for(ErrorTone::new(code, message), &sid, rid);
            }
        }
    }

    /// Tells the pool a cell is not silent, at most every so often (a
    /// quarter of the idle timeout, at most a second): the pool needs to
    /// know the cell spoke, not every line it spoke.
    fn activity(&mut self, cell: CellId) {
        let now = self.now();
        let every = (self.pool.config().turn_idle_timeout_ms / 4).clamp(1, 1000);
        let Some(info) = self.live.get_mut(&cell) else {
            return;
        };
        if now.saturating_sub(info.activity_told) >= every {
            info.activity_told = now;
            self.event(Event::Activity { cell });
        }
    }

    /// The turn a cell serves right now, if its output is still wanted.
    fn serving(&self, cell: CellId) -> Option<(TurnId, String, Option<String>)> {
        let turn = self.pool.cell(cell)?.turn?;
        let info = self.turns.get(&turn)?;
        Some((turn, info.sid.clone(), info.rid.clone()))
    }

    fn cell_msg(&mut self, cell: CellId, msg: CellMsg) {
        if !matches!(msg, CellMsg::Tone(_)) {
            self.dirty = true;
        }
        match msg {
            CellMsg::Spawned {
                handle,
                pid,
                cell_id,
                session,
            } => {
                self.metrics.spawns += 1;
                let Some(info) = self.live.get_mut(&cell) else {
                    return;
                };
                info.handle = Some(handle);
                info.pid = Some(pid);
                info.cell_id = Some(cell_id.clone());
                let sid = info.sid.clone();
                tracing::info!(event = "cell.spawned", sid = %sid, pid, cell = %cell_id, session = %session, "cell started");
                self.pulse(
                    "cell-spawned",
                    &sid,
                    // `admission` numbers cells in the order the pool admitted them.
                    json!({"pid": pid, "cellId": cell_id, "nestId": session, "admission": cell}),
                );
            }
            CellMsg::SpawnFailed { error } => {
                let sid = self.live.get(&cell).map(|i| i.sid.clone());
                tracing::error!(event = "cell.spawn_failed", sid = sid.as_deref(), error = %error, "cell could not start");
                if let Some(sid) = sid {
                    self.spawn_errors.insert(sid, error);
                }
                self.event(Event::SpawnFailed { cell });
            }
            CellMsg::Started(body) => {
                if let Some((_, sid, rid)) = self.serving(cell) {
                    self.send_for(body, &sid, rid.as_deref());
                    if let Some(info) = self.live.get_mut(&cell) {
                        if !info.ready_once {
                            info.ready_once = true;
                            let pid = info.pid;
                            self.pulse("cell-ready", &sid, json!({"pid": pid}));
                        }
                    }
                }
                self.event(Event::FirstEvent { cell });
            }
            CellMsg::Tone(body) => {
                self.activity(cell);
                if let Some((turn, sid, rid)) = self.serving(cell) {
                    if !self.interrupted.contains(&turn) {
                        self.send_for(body, &sid, rid.as_deref());
                    }
                }
            }
            CellMsg::Ended(body) => {
                if let Some((turn, sid, rid)) = self.serving(cell) {
                    // A cancelled turn ends with the worker's own finish.
                    if !self.interrupted.contains(&turn) {
                        self.send_for(body, &sid, rid.as_deref());
                    }
                    let pid = self.live.get(&cell).and_then(|i| i.pid);
                    if let Some(info) = self.live.get_mut(&cell) {
                        info.turns_served += 1;
                    }
                    self.event(Event::TurnDone { cell });
                    self.pulse("cell-idle", &sid, json!({"pid": pid}));
                }
            }
            CellMsg::Exited => self.event(Event::CellExited { cell }),
            CellMsg::TornDown(report) => {
                let key = format!("{}/{}", report.reason, report.rung);
                *self.metrics.teardowns.entry(key).or_default() += 1;
                self.metrics.teardown_seconds.observe_ms(report.elapsed_ms);
                let info = self.live.remove(&cell);
                if let Some(info) = info {
                    tracing::info!(event = "cell.torn_down", sid = %info.sid, pid = info.pid, reason = %report.reason,
                        rung = %report.rung, ms = report.elapsed_ms, pids = ?report.signalled, "cell gone");
                    let kind = if report.reason == Reason::Evicted {
                        "cell-evicted"
                    } else {
                        "cell-died"
                    };
                    self.pulse(
                        kind,
                        &info.sid,
                        json!({"pid": info.pid, "cellId": info.cell_id, "reason": report.reason, "rung": report.rung,
                               "ms": report.elapsed_ms, "pids": report.signalled}),
                    );
                }
                self.event(Event::TeardownDone { cell });
            }
        }
    }
}
