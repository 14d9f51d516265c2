//! One task per ACP cell: the agent's command started in a cell like any
//! other (containment, the one teardown ladder), spoken to over ACP
//! ([`link`]), its updates mapped to thrum ([`crate::hive::acp`]) and
//! forwarded for the turn the cell serves, as the stream-json runner does.
//!
//! - [`link`]: the connection, the handshake, the bounded event channel.
//! - [`sessions`]: the agent's session id per sid, for `session/load`.

pub mod link;
pub mod sessions;

use super::msg::{CellMsg, Msg};
use super::runner::{self, CellCmd, Launch, Running};
use super::serving::Forwarded;
use crate::cell::Reason;
use crate::hive::acp::{self as map, TurnStream};
use crate::pool::{CellId, TurnId};
use agent_client_protocol::v1::schema::{
    CancelNotification, RequestPermissionOutcome, RequestPermissionRequest,
    RequestPermissionResponse, SelectedPermissionOutcome,
};
use agent_client_protocol::v1::Responder;
use link::{FromAgent, Session, SessionPlan};
use sessions::AcpSessions;
use std::collections::VecDeque;
use std::sync::Arc;
use thrum::{Body, SessionReady};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

/// After `session/load`, an agent replays the session's history as
/// updates, and some (Gemini CLI) go on sending them after answering the
/// load: the first prompt waits until the agent has been quiet this long,
/// so no replayed line is taken for the new turn's answer...
const REPLAY_QUIET: Duration = Duration::from_millis(150);

/// ...but never longer than this.
const REPLAY_MAX: Duration = Duration::from_secs(3);

/// What the runner knows of its cell between events.
struct State {
    session: Option<Session>,
    /// The prompt under way (its number), if any.
    prompting: Option<u64>,
    prompts_sent: u64,
    /// The turn that waits for the session to open: its content.
    first: Option<Vec<u8>>,
    stream: TurnStream,
    /// Lines for humd that wait for it to catch up (the agent is not read
    /// meanwhile).
    waiting: VecDeque<(TurnId, Vec<u8>)>,
    exit_seen: bool,
    activity_told: Option<std::time::Instant>,
    /// A loaded session's replay still coming: (last update, give up at).
    settling: Option<(Instant, Instant)>,
}

pub async fn run(
    id: CellId,
    launch: Launch,
    first_line: Vec<u8>,
    mut cmds: mpsc::UnboundedReceiver<CellCmd>,
    tx: mpsc::Sender<Msg>,
    running: Running,
) {
    let send = |m: CellMsg| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Msg::Cell(id, Box::new(m))).await;
        }
    };
    let cell = match runner::spawn_with(&launch, Vec::new()).await {
        Ok(c) => Arc::new(c),
        Err(error) => return runner::spawn_failed(id, error, &mut cmds, &send).await,
    };
    if let Ok(mut slot) = running.lock() {
        *slot = Some(cell.handle());
    }
    let sessions = AcpSessions::new(launch.cells.state_dir(), &launch.hive.name);
    let earlier = sessions.get(&launch.sid);
    runner::announce(
        id,
        &cell,
        &launch,
        earlier.as_deref().unwrap_or(""),
        &first_line,
        &send,
    )
    .await;
    let (events_tx, mut events) = mpsc::channel(link::EVENTS_QUEUED);
    let stdout = cell.take_stdout().expect("fresh cell");
    let plan = SessionPlan {
        cwd: launch.cwd.clone(),
        mcp_servers: map::mcp_servers(launch.args.mcp_config.as_deref()),
        earlier,
        system_prompt: launch.args.system_prompt.clone(),
    };
    let link = link::open(cell.clone(), stdout, events_tx.clone(), plan);
    let mut st = State {
        session: None,
        prompting: None,
        prompts_sent: 0,
        first: Some(first_line),
        stream: TurnStream::default(),
        waiting: VecDeque::new(),
        exit_seen: false,
        activity_told: None,
        settling: None,
    };
    let (uplink, serving) = (&launch.uplink, &launch.serving);
    let mut drains = uplink.drains();
    let mut events_open = true;
    loop {
        tokio::select! {
            changed = drains.changed(), if !st.waiting.is_empty() => {
                if changed.is_err() {
                    st.waiting.clear();
                    continue;
                }
                drains.borrow_and_update();
                while let Some((turn, line)) = st.waiting.pop_front() {
                    if let Forwarded::Wait(line) = serving.forward(uplink, turn, line) {
                        st.waiting.push_front((turn, line));
                        break;
                    }
                }
            }
            ev = events.recv(), if events_open && st.waiting.is_empty() => match ev {
                Some(ev) => st.event(ev, &launch, &sessions, &events_tx, &send).await,
                None => events_open = false,
            },
            () = tokio::time::sleep_until(st.settled_at()), if st.settling.is_some() => {
                st.settle(&launch, &events_tx, &send).await;
            }
            exit = cell.exited(), if !st.exit_seen => {
                st.exit_seen = true;
                let tail = cell.stderr_tail().join("\n");
                let oom_kills = cell.oom_kills();
                tracing::info!(event = "cell.exited", cell = cell.id(), exit = ?exit, oom_kills, stderr = %tail, "cell leader exited");
                send(CellMsg::Exited { oom_kills }).await;
            }
            cmd = cmds.recv() => match cmd {
                Some(CellCmd::Write(line, relist)) => {
                    if let Some((tools, seen)) = relist {
                        runner::await_relist(&cell, &tools, seen).await;
                    }
                    if st.session.is_some() && st.settling.is_none() {
                        st.begin(line, &launch, &events_tx, &send).await;
                    } else {
                        // (The pool sends a turn only to a cell that
                        // started; kept for the session, to be safe.)
                        st.first = Some(line);
                    }
                }
                Some(CellCmd::Interrupt) => {
                    if let Some(s) = &st.session {
                        let _ = s.cx.send_notification(CancelNotification::new(s.id.clone()));
                    }
                }
                Some(CellCmd::Teardown(reason)) => {
                    drop(link);
                    let report = cell.release(reason).await;
                    send(CellMsg::TornDown(report)).await;
                    return;
                }
                None => {
                    drop(link);
                    cell.teardown(Reason::Shutdown).await;
                    return;
                }
            },
        }
    }
}

impl State {
    async fn event<F, Fut>(
        &mut self,
        ev: FromAgent,
        launch: &Launch,
        sessions: &AcpSessions,
        events: &mpsc::Sender<FromAgent>,
        send: &F,
    ) where
        F: Fn(CellMsg) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        match ev {
            FromAgent::Ready(Ok(session)) => {
                tracing::info!(event = "acp.session", sid = %launch.sid, session = %session.id, history_carried = session.history_carried, "the agent's session is open");
                sessions.put(&launch.sid, &session.id.to_string());
                let loaded = session.loaded;
                if !session.history_carried {
                    send(CellMsg::HistoryNotCarried).await;
                }
                self.session = Some(session);
                if loaded {
                    let now = Instant::now();
                    self.settling = Some((now, now + REPLAY_MAX));
                } else if let Some(first) = self.first.take() {
                    self.begin(first, launch, events, send).await;
                }
            }
            FromAgent::Ready(Err(error)) => {
                tracing::warn!(event = "acp.no_session", sid = %launch.sid, error = %error, "the agent opened no session");
                send(CellMsg::SpawnFailed { error }).await;
            }
            FromAgent::Update(n) => {
                if let Some((last, _)) = self.settling.as_mut() {
                    *last = Instant::now();
                }
                let ours = self.session.as_ref().is_some_and(|s| s.id == n.session_id);
                // (Updates before a prompt — a loaded session's history
                // replayed — and between prompts are nobody's turn.)
                if !ours || self.prompting.is_none() {
                    return;
                }
                if self
                    .activity_told
                    .is_none_or(|t| t.elapsed() >= launch.activity_every)
                {
                    self.activity_told = Some(std::time::Instant::now());
                    send(CellMsg::Activity).await;
                }
                for body in self.stream.update(&n.update) {
                    self.forward(launch, body);
                }
            }
            FromAgent::Permission(req, responder) => permit(launch, req, responder),
            FromAgent::Answered(seq, answer) => {
                if self.prompting != Some(seq) {
                    return;
                }
                self.prompting = None;
                let body = match answer {
                    Ok(resp) => {
                        for body in self.stream.close() {
                            self.forward(launch, body);
                        }
                        let carried = self.session.as_ref().is_none_or(|s| s.history_carried);
                        map::finish(
                            &resp.stop_reason,
                            resp.meta.as_ref(),
                            resp.usage.as_ref(),
                            carried,
                        )
                    }
                    // The agent died: its exit ends the turn (worker_lost),
                    // not an error of the agent's.
                    Err(None) => return,
                    Err(Some(e)) => Body::Error(thrum::ErrorTone::new(
                        thrum::ErrorCode::AgentError,
                        format!("the agent failed the prompt: {e}"),
                    )),
                };
                let line = launch.serving.finish(body).and_then(|(_, line)| line);
                send(CellMsg::Ended(line)).await;
            }
        }
    }

    /// A turn begins: said (`session-ready`, as claude's init line says it
    /// each turn), then prompted.
    async fn begin<F, Fut>(
        &mut self,
        line: Vec<u8>,
        launch: &Launch,
        events: &mpsc::Sender<FromAgent>,
        send: &F,
    ) where
        F: Fn(CellMsg) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let Some(session) = &self.session else {
            return;
        };
        let mut extra = serde_json::Map::new();
        if !session.history_carried {
            extra.insert("historyCarried".into(), serde_json::Value::Bool(false));
        }
        launch.serving.start_event(
            &launch.uplink,
            Body::SessionReady(SessionReady {
                nest_id: Some(session.id.to_string()),
                model: launch.args.model.clone(),
                tools: None,
                extra,
            }),
        );
        send(CellMsg::Started).await;
        self.stream = TurnStream::default();
        self.prompts_sent += 1;
        self.prompting = Some(self.prompts_sent);
        let mut blocks = map::prompt_blocks(&line, session.images);
        if let Some(system) = self.session.as_mut().and_then(|s| s.inline_system.take()) {
            blocks.insert(0, map::inline_system(&system));
        }
        let session = self.session.as_ref().expect("checked above");
        link::prompt(session, self.prompts_sent, blocks, events.clone());
    }

    /// A loaded session's replay is quiet (or taking too long): the first
    /// turn begins.
    async fn settle<F, Fut>(&mut self, launch: &Launch, events: &mpsc::Sender<FromAgent>, send: &F)
    where
        F: Fn(CellMsg) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let Some((last, give_up)) = self.settling else {
            return;
        };
        let now = Instant::now();
        if now >= give_up || now >= last + REPLAY_QUIET {
            self.settling = None;
            if let Some(first) = self.first.take() {
                self.begin(first, launch, events, send).await;
            }
        }
    }

    /// When a loaded session's replay is next looked at.
    fn settled_at(&self) -> Instant {
        match self.settling {
            Some((last, give_up)) => (last + REPLAY_QUIET).min(give_up),
            None => Instant::now(),
        }
    }

    fn forward(&mut self, launch: &Launch, body: Body) {
        let Some((turn, line)) = launch.serving.line_for(body) else {
            return;
        };
        if !self.waiting.is_empty() {
            self.waiting.push_back((turn, line));
            return;
        }
        if let Forwarded::Wait(line) = launch.serving.forward(&launch.uplink, turn, line) {
            self.waiting.push_back((turn, line));
        }
    }
}

/// The agent asks permission: its asker decides through the bridge (a
/// task of its own: the agent goes on being read), else the hive's
/// default; the answer is the agent's option of that kind.
fn permit(
    launch: &Launch,
    req: RequestPermissionRequest,
    responder: Responder<RequestPermissionResponse>,
) {
    let fields = &req.tool_call.fields;
    let tool = fields
        .title
        .clone()
        .or_else(|| {
            fields
                .kind
                .as_ref()
                .and_then(|k| serde_json::to_value(k).ok())
                .and_then(|v| v.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| "tool".to_owned());
    let input = fields.raw_input.clone().unwrap_or(serde_json::json!({}));
    let options = serde_json::to_value(&req.options).unwrap_or_default();
    let asked = launch.bridge.clone().zip(launch.tools.clone());
    let by_default = launch.hive.permit_by_default;
    tokio::spawn(async move {
        let (allow, named) = match asked {
            Some((bridge, tools)) => {
                bridge
                    .ask_acp_permission(&tools, &tool, input, options)
                    .await
            }
            None => (by_default, None),
        };
        let option = named
            .and_then(|n| req.options.iter().find(|o| o.option_id.to_string() == n))
            .or_else(|| map::chosen_option(&req.options, allow));
        let outcome = match option {
            Some(o) => RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(
                o.option_id.clone(),
            )),
            None => RequestPermissionOutcome::Cancelled,
        };
        let _ = responder.respond(RequestPermissionResponse::new(outcome));
    });
}
