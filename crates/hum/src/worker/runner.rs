//! One task per cell: spawn the CLI (retrying once with the other session
//! form if it refuses the session at start), write turns to its stdin,
//! translate its stdout, report its exit, and tear it down when told.

use super::bridge::CellTools;
use super::msg::{CellMsg, Msg};
use super::serving::{Forwarded, Serving};
use super::uplink::Uplink;
use crate::cell::{CellSpec, Cells, Reason, Rung, TeardownReport};
use crate::hive::argv::{self, CellArgs};
use crate::hive::session::{self, SessionStart};
use crate::hive::stream_json::{Line, StreamEvent};
use crate::hive::translate::{translate_line, Translated};
use crate::hive::Hive;
use crate::pool::CellId;
use serde_json::Value;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use thrum::RawLine;
use tokio::io::BufReader;
use tokio::sync::mpsc;

/// How long to wait for a dead CLI's stderr to drain before reading why it
/// refused to start.
const STDERR_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a turn whose tools changed waits for the CLI to list them
/// again (it does so on the bridge's notice, in milliseconds when idle; a
/// node.js CLI on a loaded 2-core machine took over 2 s, and once, under a
/// whole test suite, over 5 s: its turn then went without the new tools).
/// A CLI that ignores the notice costs its cell one such wait: later turns
/// of that cell do not wait while it has listed nothing since
/// ([`CellTools::await_listed`]).
const RELIST_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a turn waits, once its CLI listed the new tools, before its
/// prompt goes (see [`await_relist`]); only turns whose tools changed.
const RELIST_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// What the actor asks of a cell.
#[derive(Debug)]
pub enum CellCmd {
    /// Write one stdin line (a user message), once the CLI has listed the
    /// cell's tools again when they changed for this turn.
    Write(Vec<u8>, Option<(Arc<CellTools>, u64)>),
    /// Ask the CLI to stop its turn.
    Interrupt,
    Teardown(Reason),
}

/// Everything a runner needs to start its cell.
#[derive(Debug, Clone)]
pub struct Launch {
    pub cells: Arc<Cells>,
    pub hive: Hive,
    pub args: CellArgs,
    pub sid: String,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    /// Where the CLI keeps transcripts, to choose resume or create.
    pub config_dir: PathBuf,
    /// The sid's transcript as another node kept it, to put in place
    /// before the cell starts (its session moved here).
    pub restore: Option<PathBuf>,
    /// Where the cell's output goes, for the turn `serving` names.
    pub uplink: Arc<Uplink>,
    pub serving: Arc<Serving>,
    /// How often, at most, the pool is told the cell is printing (it needs
    /// to know the cell is not silent, not every line it prints).
    pub activity_every: std::time::Duration,
    /// The cell's tool bridge, told each model call's usage.
    pub tools: Option<Arc<CellTools>>,
    /// Each session's cost so far (the CLI reports it per session).
    pub meters: Arc<crate::hive::meter::SessionMeters>,
    /// The worker's tool bridge, which asks ACP agents' permission asks of
    /// the asker (claude's come through the cell's MCP bridge instead).
    pub bridge: Option<Arc<super::bridge::Bridge>>,
}

/// Tells the bridge the usage a stdout line reports for the model call
/// under way (what a `tool-call` made by that call carries).
fn note_usage(tools: &CellTools, line: &Line) {
    match line {
        Line::Stream(StreamEvent::MessageStart(m)) | Line::Assistant(m) => {
            if let Some(usage) = &m.usage {
                tools.note_usage(m.id.as_deref(), usage)
            }
        }
        Line::Stream(StreamEvent::MessageDelta { usage: Some(usage) }) => {
            tools.note_usage(None, usage)
        }
        _ => {}
    }
}

fn interrupt_line() -> Vec<u8> {
    let msg = serde_json::json!({
        "type": "control_request",
        "request_id": uuid::Uuid::new_v4().to_string(),
        "request": {"subtype": "interrupt"},
    });
    format!("{msg}\n").into_bytes()
}

pub(super) fn synthetic_report(id: CellId, reason: Reason) -> Arc<TeardownReport> {
    Arc::new(TeardownReport {
        cell_id: format!("unspawned-{id}"),
        reason,
        rung: Rung::AlreadyGone,
        signalled: Vec::new(),
        leader_exit: None,
        elapsed_ms: 0,
        complete: true,
    })
}

/// The cell a runner runs right now, for its supervisor: if the runner
/// panics, the supervisor still has a way to see the cell's tree gone.
pub type Running = Arc<std::sync::Mutex<Option<crate::cell::CellHandle>>>;

/// Test hook: with this variable set in the worker's environment, a runner
/// whose first stdin line contains its value panics right after spawning
/// (the supervision path must then tear the cell down and free its slot).
const PANIC_HOOK_VAR: &str = "HUM_TEST_PANIC_IN_RUNNER";

/// Runs a cell under supervision: a panic of its task becomes a crash of
/// the cell (torn down, reported to the actor like any teardown), never a
/// slot held forever.
pub fn supervise(
    id: CellId,
    launch: Launch,
    first_line: Vec<u8>,
    cmds: mpsc::UnboundedReceiver<CellCmd>,
    tx: mpsc::Sender<Msg>,
) {
    let running: Running = Arc::default();
    let task = match launch.hive.protocol {
        crate::hive::Protocol::StreamJson => tokio::spawn(run(
            id,
            launch,
            first_line,
            cmds,
            tx.clone(),
            running.clone(),
        )),
        crate::hive::Protocol::Acp => tokio::spawn(super::acp::run(
            id,
            launch,
            first_line,
            cmds,
            tx.clone(),
            running.clone(),
        )),
    };
    tokio::spawn(async move {
        let Err(e) = task.await else { return };
        if !e.is_panic() {
            return;
        }
        let handle = running.lock().ok().and_then(|h| h.clone());
        tracing::error!(event = "cell.task_panicked", admission = id, error = %e,
            "a cell's task panicked; tearing the cell down");
        let report = match handle {
            Some(h) => h.release(Reason::Crashed).await,
            None => synthetic_report(id, Reason::Crashed),
        };
        let _ = tx
            .send(Msg::Cell(id, Box::new(CellMsg::Exited { oom_kills: 0 })))
            .await;
        let _ = tx
            .send(Msg::Cell(id, Box::new(CellMsg::TornDown(report))))
            .await;
    });
}

async fn run(
    id: CellId,
    launch: Launch,
    first_line: Vec<u8>,
    mut cmds: mpsc::UnboundedReceiver<CellCmd>,
    tx: mpsc::Sender<Msg>,
    running: Running,
) {
    // Bounded: a CLI printing faster than the actor forwards waits for it.
    let send = |m: CellMsg| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Msg::Cell(id, Box::new(m))).await;
        }
    };
    // The system prompt in a private file for the life of this runner
    // (every process of the cell reads it at start), never in argv.
    let mut launch = launch;
    let (_system_prompt, unwritten) = super::system_prompt::for_launch(&mut launch);
    let cwd = launch.cwd.to_string_lossy().into_owned();
    if let Some(from) = &launch.restore {
        restore_transcript(from, &launch.config_dir, &cwd, &launch.sid);
    }
    let mut start = session::start_for(&launch.config_dir, &cwd, &launch.sid);
    let mut retried = false;
    'spawn: loop {
        let cell = match spawn(&launch, &start).await {
            Ok(c) => c,
            Err(error) => {
                // (Without its file, the argv builder refused the prompt:
                // the reason is the file's.)
                let error = unwritten.clone().unwrap_or(error);
                return spawn_failed(id, error, &mut cmds, &send).await;
            }
        };
        if let Ok(mut slot) = running.lock() {
            *slot = Some(cell.handle());
        }
        announce(id, &cell, &launch, start.id(), &first_line, &send).await;
        if let Err(e) = cell.write(&first_line).await {
            tracing::warn!(event = "cell.write_failed", cell = cell.id(), error = %e, "first turn not delivered");
        }
        let mut out = thrum::LineReader::new(
            BufReader::new(cell.take_stdout().expect("fresh cell")),
            thrum::DEFAULT_MAX_LINE,
        );
        let (mut stdout_open, mut exit_seen) = (true, false);
        // The session's cost so far: its results report it cumulatively,
        // a resumed process with its earlier processes' turns.
        // Told once the process took its session (its first event): a
        // `--session-id` refused as in use is retried as a resume.
        let mut reading = Reading {
            session: start.id().to_owned(),
            resumed: matches!(start, SessionStart::Resume(_)),
            saw_init: false,
            activity_told: None,
            waiting: None,
        };
        let (uplink, serving) = (&launch.uplink, &launch.serving);
        let mut drains = uplink.drains();
        loop {
            tokio::select! {
                changed = drains.changed(), if reading.waiting.is_some() => {
                    if changed.is_err() {
                        reading.waiting = None;
                        continue;
                    }
                    drains.borrow_and_update();
                    let (turn, line) = reading.waiting.take().expect("guarded");
                    if let Forwarded::Wait(line) = serving.forward(uplink, turn, line) {
                        reading.waiting = Some((turn, line));
                    }
                }
                line = out.next_line(), if stdout_open && reading.waiting.is_none() => match line {
                    Ok(Some(RawLine::Line(bytes))) => {
                        if reading.line(bytes, cell.id(), retried, &launch, &mut drains, &send).await == LineEnd::Refused {
                            break;
                        }
                    }
                    Ok(Some(RawLine::TooLong { limit })) => {
                        tracing::warn!(event = "cell.stdout.too_long", cell = cell.id(), limit, "skipped an over-long stdout line");
                    }
                    Ok(None) | Err(_) => stdout_open = false,
                },
                exit = cell.exited(), if !exit_seen => {
                    exit_seen = true;
                    if !reading.saw_init && !retried {
                        // Let stderr drain, then look for a refusal.
                        let _ = tokio::time::timeout(STDERR_DRAIN, cell.stderr_closed()).await;
                        let tail = cell.stderr_tail().join("\n");
                        if session::is_preflight_refusal(None, &tail) {
                            break;
                        }
                    }
                    let tail = cell.stderr_tail().join("\n");
                    let oom_kills = cell.oom_kills();
                    tracing::info!(event = "cell.exited", cell = cell.id(), exit = ?exit, oom_kills, stderr = %tail, "cell leader exited");
                    send(CellMsg::Exited { oom_kills }).await;
                }
                cmd = cmds.recv() => {
                    if command(&cell, cmd, &send).await {
                        return;
                    }
                },
            }
        }
        // The CLI refused the session: the other form, once.
        let report = cell.release(Reason::Crashed).await;
        tracing::info!(event = "cell.session_retry", cell = %report.cell_id, from = ?start, "session refused at start; retrying once");
        start = start.switched();
        retried = true;
        continue 'spawn;
    }
}

/// The cell could not be started: said, then the teardown that follows is
/// answered (nothing runs).
pub(super) async fn spawn_failed<F, Fut>(
    id: CellId,
    error: String,
    cmds: &mut mpsc::UnboundedReceiver<CellCmd>,
    send: &F,
) where
    F: Fn(CellMsg) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    send(CellMsg::SpawnFailed { error }).await;
    while let Some(cmd) = cmds.recv().await {
        if let CellCmd::Teardown(reason) = cmd {
            send(CellMsg::TornDown(synthetic_report(id, reason))).await;
            return;
        }
    }
}

/// A process of the cell started: humd and the actor are told (`session`:
/// the CLI's session id, when known at start).
pub(super) async fn announce<F, Fut>(
    id: CellId,
    cell: &crate::cell::Cell,
    launch: &Launch,
    session: &str,
    first_line: &[u8],
    send: &F,
) where
    F: Fn(CellMsg) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Said here, before any of the cell's output, so askers see it first.
    launch.uplink.pulse(
            thrum::PulseKind::CellSpawned,
            &launch.sid,
            // `admission` numbers cells in the order the pool admitted them.
            serde_json::json!({"pid": cell.pid(), "cellId": cell.id(), "nestId": session, "admission": id}),
        );
    send(CellMsg::Spawned {
        handle: cell.handle(),
        pid: cell.pid(),
        cell_id: cell.id().to_owned(),
        session: session.to_owned(),
    })
    .await;
    if std::env::var(PANIC_HOOK_VAR).is_ok_and(|needle| {
        !needle.is_empty() && String::from_utf8_lossy(first_line).contains(&needle)
    }) {
        panic!("{PANIC_HOOK_VAR}: a test asked this runner to panic");
    }
}

/// What one process of a cell has said so far, and the line of it that
/// waits for humd to catch up (stdout is not read meanwhile, so the CLI
/// waits on its pipe).
struct Reading {
    /// The session the process took (its results report its cost so far).
    session: String,
    resumed: bool,
    saw_init: bool,
    activity_told: Option<std::time::Instant>,
    waiting: Option<(crate::pool::TurnId, Vec<u8>)>,
}

#[derive(Debug, PartialEq, Eq)]
enum LineEnd {
    Go,
    /// The CLI refused its session at start: the other form is tried.
    Refused,
}

impl Reading {
    /// One stdout line: metered, decoded, forwarded for the turn the cell
    /// serves.
    async fn line<F, Fut>(
        &mut self,
        bytes: &[u8],
        cell: &str,
        retried: bool,
        launch: &Launch,
        drains: &mut tokio::sync::watch::Receiver<u64>,
        send: &F,
    ) -> LineEnd
    where
        F: Fn(CellMsg) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let Ok(event) = serde_json::from_slice::<Value>(bytes) else {
            tracing::warn!(
                event = "cell.stdout.not_json",
                cell,
                len = bytes.len(),
                "skipped a stdout line"
            );
            return LineEnd::Go;
        };
        // (Before the meter: the refusal is the CLI's own word.)
        let mut decoded = Line::read(&event);
        if !self.saw_init && !retried && session::is_preflight_refusal(Some(&decoded), "") {
            return LineEnd::Refused;
        }
        launch.meters.per_turn(&self.session, &mut decoded);
        if let Some(tools) = &launch.tools {
            note_usage(tools, &decoded);
        }
        let (uplink, serving) = (&launch.uplink, &launch.serving);
        match translate_line(&decoded) {
            Some(Translated::Started(body)) => {
                if !self.saw_init {
                    launch.meters.process_started(&self.session, self.resumed);
                }
                self.saw_init = true;
                serving.start_event(uplink, body);
                send(CellMsg::Started).await;
            }
            Some(Translated::Tone(body)) => {
                if self
                    .activity_told
                    .is_none_or(|t| t.elapsed() >= launch.activity_every)
                {
                    self.activity_told = Some(std::time::Instant::now());
                    send(CellMsg::Activity).await;
                }
                if let Some((turn, line)) = serving.line_for(body) {
                    drains.borrow_and_update();
                    if let Forwarded::Wait(line) = serving.forward(uplink, turn, line) {
                        self.waiting = Some((turn, line));
                    }
                }
            }
            Some(Translated::Ended(body)) => {
                let line = serving.finish(body).and_then(|(_, line)| line);
                send(CellMsg::Ended(line)).await;
            }
            None => {}
        }
        LineEnd::Go
    }
}

/// Waits (a while at most) for the CLI to list the cell's tools again
/// after they changed for the turn about to be written.
pub(super) async fn await_relist(cell: &crate::cell::Cell, tools: &CellTools, seen: u64) {
    match tools.await_listed(seen, RELIST_WAIT).await {
        // Served is not yet received: the list goes to the CLI through its
        // `hum mcp-bridge` process, one hop more than the prompt takes on
        // its stdin, and under load the prompt overtook it (the CLI began
        // the turn with its old tools).
        crate::worker::bridge::Relist::Listed => tokio::time::sleep(RELIST_SETTLE).await,
        crate::worker::bridge::Relist::TimedOut => tracing::info!(
            event = "bridge.not_relisted",
            cell = cell.id(),
            "the CLI did not list its new tools in time; the turn goes on"
        ),
        crate::worker::bridge::Relist::Skipped => tracing::info!(
            event = "bridge.relist_skipped",
            cell = cell.id(),
            "the CLI has not listed its tools since an earlier notice; the turn goes on without waiting"
        ),
    }
}

/// Carries out one of the actor's commands; `true` once the cell is gone.
async fn command<F, Fut>(cell: &crate::cell::Cell, cmd: Option<CellCmd>, send: &F) -> bool
where
    F: Fn(CellMsg) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    match cmd {
        Some(CellCmd::Write(line, relist)) => {
            if let Some((tools, seen)) = relist {
                await_relist(cell, &tools, seen).await;
            }
            if let Err(e) = cell.write(&line).await {
                tracing::warn!(event = "cell.write_failed", cell = cell.id(), error = %e, "stdin write failed");
            }
            false
        }
        Some(CellCmd::Interrupt) => {
            let _ = cell.write(&interrupt_line()).await;
            false
        }
        Some(CellCmd::Teardown(reason)) => {
            // The slot is free once the cell's processes are: the rest of
            // its teardown goes on without holding the next cell up.
            let report = cell.release(reason).await;
            send(CellMsg::TornDown(report)).await;
            true
        }
        None => {
            cell.teardown(Reason::Shutdown).await;
            true
        }
    }
}

async fn spawn(launch: &Launch, start: &SessionStart) -> Result<crate::cell::Cell, String> {
    let argv = argv::build(&launch.args, start).map_err(|e| e.to_string())?;
    spawn_with(launch, argv).await
}

/// Starts the hive's program with its own arguments, then `argv`, in a new
/// cell.
pub(super) async fn spawn_with(
    launch: &Launch,
    argv: Vec<String>,
) -> Result<crate::cell::Cell, String> {
    let spec = CellSpec {
        program: launch.hive.program.clone().into(),
        args: launch
            .hive
            .prefix_args
            .iter()
            .map(OsString::from)
            .chain(argv.into_iter().map(OsString::from))
            .collect(),
        env: crate::hive::env::cell_env(std::env::vars_os(), &launch.env),
        clean_env: true,
        cwd: Some(launch.cwd.clone()),
    };
    launch
        .cells
        .spawn(spec)
        .await
        .map_err(|e| format!("cannot start {}: {e}", launch.hive.program.display()))
}

/// Puts the transcript another node kept for `sid` where this node's CLI
/// looks for it (replacing what is there: the cluster's copy is the
/// newest), then removes humd's file. Failure is logged: the session then
/// starts without its history, as it would have anyway.
fn restore_transcript(from: &std::path::Path, config_dir: &std::path::Path, cwd: &str, sid: &str) {
    let to = session::transcript_path(config_dir, cwd, &session::session_id(sid));
    let copied = to
        .parent()
        .map_or(Ok(()), crate::private_fs::create_private_dir)
        .and_then(|()| std::fs::read(from))
        .and_then(|bytes| crate::private_fs::write_private_file(&to, &bytes));
    match copied {
        Ok(()) => {
            tracing::info!(event = "cell.transcript_restored", sid = %sid, path = %to.display(), "the session's transcript came from the cluster")
        }
        Err(e) => {
            tracing::warn!(event = "cell.transcript_unrestored", sid = %sid, error = %e, "the session starts without the history the cluster kept")
        }
    }
    crate::private_fs::remove_own_file(from);
}
