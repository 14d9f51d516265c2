//! The daemon's one owner of state: who is connected, which worker holds
//! which sid, which asker waits for which sid's turns. A pure-ish actor: it
//! reacts to [`RouterMsg`]s and writes through each peer's outbox, never
//! waiting on any of them (a full outbox closes that peer, see
//! `thrum::connection`).

use crate::reports::{DaemonInfo, DaemonStatus, LineBudget, WorkerEntry};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thrum::{Body, Echo, ErrorTone, Outbox, RawTone, Rejected, SendError, Tone};

pub type ConnId = u64;

/// Prompts whose `text` is at most this long also get it as `content` when
/// they have none (the wire's rule); a longer text is forwarded as `text`
/// alone rather than doubled.
const FILL_CONTENT_UP_TO: usize = 1024 * 1024;

/// What reaches the router.
#[derive(Debug)]
pub enum RouterMsg {
    Joined(ConnId, Outbox),
    /// A tone as read (its head decoded, its line kept), and its share of
    /// the bytes in flight to the router (given back when the router is
    /// done with it).
    Tone(
        ConnId,
        Box<RawTone>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
    Rejected(ConnId, Rejected),
    Left(ConnId),
    /// The status answer, for `/status` and `/metrics`.
    Snapshot(tokio::sync::oneshot::Sender<DaemonStatus>),
}

#[derive(Debug, Clone, PartialEq)]
enum Role {
    /// Connected, no hello yet.
    Unknown,
    Asker {
        cwd: Option<String>,
    },
    Worker {
        hive: String,
        models: Vec<String>,
    },
}

struct Peer {
    role: Role,
    /// A status probe (`hum status`, `hum up`'s watchdog every few
    /// seconds): its comings and goings are logged at debug, not info.
    probe: bool,
    outbox: Outbox,
    /// A worker's latest `worker-status` line, for `status` requests.
    status: Option<Vec<u8>>,
}

/// A prompt forwarded to a worker and not yet finished.
#[derive(Debug, Clone)]
struct Turn {
    asker: ConnId,
    worker: ConnId,
    rid: Option<String>,
    /// humd already asked the worker to cancel it (its asker is gone or
    /// stopped reading); never asked twice.
    cancel_sent: bool,
}

/// Why humd cancels a turn nobody asked to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abandoned {
    /// The asker's connection closed (after the grace).
    AskerGone,
    /// The asker stopped reading and was cut off.
    SlowAsker,
}

pub use crate::reports::RouterStats;

pub struct Router {
    peers: HashMap<ConnId, Peer>,
    /// Sticky: the worker holding each sid's cell.
    sid_worker: HashMap<String, ConnId>,
    /// The asker that last prompted each sid: its output goes there.
    sid_asker: HashMap<String, ConnId>,
    /// Turns in flight per sid, oldest first.
    turns: HashMap<String, VecDeque<Turn>>,
    default_hive: Option<String>,
    cwd: String,
    /// How long a gone asker's turns wait for it to come back (a prompt
    /// for the same sid) before they are cancelled.
    asker_gone_grace: Duration,
    /// Gone askers whose turns are cancelled at the deadline.
    gone: Vec<(Instant, ConnId)>,
    /// The budget for unfinished lines across connections, reported in
    /// status (how full it is explains `overloaded` answers).
    line_budget: Option<Arc<thrum::ByteBudget>>,
    pub stats: RouterStats,
}

fn error(code: &str, message: impl Into<String>, sid: Option<&str>, rid: Option<&str>) -> Tone {
    let mut t = Tone::new(ErrorTone::new(code, message));
    t.envelope.sid = sid.map(str::to_owned);
    t.envelope.rid = rid.map(str::to_owned);
    t.envelope.from = Some("daemon".into());
    t
}

impl Router {
    pub fn new(default_hive: Option<String>, cwd: String) -> Router {
        Router {
            peers: HashMap::new(),
            sid_worker: HashMap::new(),
            sid_asker: HashMap::new(),
            turns: HashMap::new(),
            default_hive,
            cwd,
            asker_gone_grace: Duration::ZERO,
            gone: Vec::new(),
            line_budget: None,
            stats: RouterStats::default(),
        }
    }

    /// Reports this budget's use in status.
    pub fn with_line_budget(mut self, budget: Arc<thrum::ByteBudget>) -> Router {
        self.line_budget = Some(budget);
        self
    }

    /// Sets how long a gone asker's turns wait before they are cancelled.
    pub fn with_asker_gone_grace(mut self, grace: Duration) -> Router {
        self.asker_gone_grace = grace;
        self
    }

    /// When [`Router::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.gone.iter().map(|(at, _)| *at).min()
    }

    /// Cancels the turns of askers whose grace has run out.
    pub fn tick(&mut self, now: Instant) {
        let due: Vec<ConnId> = self
            .gone
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        self.gone.retain(|(at, _)| *at > now);
        for id in due {
            self.abandon_turns_of(id, Abandoned::AskerGone);
        }
    }

    pub fn handle(&mut self, msg: RouterMsg) {
        match msg {
            RouterMsg::Joined(id, outbox) => {
                self.peers.insert(
                    id,
                    Peer {
                        role: Role::Unknown,
                        probe: false,
                        outbox,
                        status: None,
                    },
                );
            }
            RouterMsg::Tone(id, tone, _in_flight) => self.tone(id, *tone),
            RouterMsg::Rejected(id, rejected) => self.rejected(id, rejected),
            RouterMsg::Left(id) => self.left(id),
            RouterMsg::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
        }
    }

    /// Answers what a peer sent that could not be used.
    fn rejected(&mut self, id: ConnId, rejected: Rejected) {
        let (code, rid) = match &rejected {
            Rejected::Invalid { rid, .. } => ("bad_request", rid.clone()),
            Rejected::TooLong { .. } => ("bad_request", None),
            Rejected::Busy(_) => ("overloaded", None),
        };
        if code == "bad_request" {
            self.stats.bad_requests += 1;
        } else {
            self.stats.lines_dropped_busy += 1;
        }
        self.send(id, error(code, rejected.to_string(), None, rid.as_deref()));
    }

    /// Tells every peer the daemon is going, and closes them.
    pub fn shutdown(&mut self) {
        for peer in self.peers.values() {
            let _ = peer.outbox.try_send(&error(
                "shutting_down",
                "the hum daemon is stopping",
                None,
                None,
            ));
            peer.outbox.close();
        }
    }

    pub fn outboxes(&self) -> Vec<Outbox> {
        self.peers.values().map(|p| p.outbox.clone()).collect()
    }

    pub fn workers(&self) -> usize {
        self.peers
            .values()
            .filter(|p| matches!(p.role, Role::Worker { .. }))
            .count()
    }

    pub fn askers(&self) -> usize {
        self.peers
            .values()
            .filter(|p| matches!(p.role, Role::Asker { .. }))
            .count()
    }

    /// Every model some connected worker serves.
    pub fn models(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .peers
            .values()
            .filter_map(|p| match &p.role {
                Role::Worker { models, .. } => Some(models.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn send(&mut self, id: ConnId, tone: Tone) -> bool {
        let Some(p) = self.peers.get(&id) else {
            return false;
        };
        let sent = p.outbox.try_send(&tone);
        self.sent(id, sent)
    }

    /// Forwards a tone as it came.
    fn send_raw(&mut self, id: ConnId, tone: RawTone) -> bool {
        let Some(p) = self.peers.get(&id) else {
            return false;
        };
        let sent = p.outbox.try_send_raw(tone);
        self.sent(id, sent)
    }

    fn sent(&mut self, id: ConnId, sent: Result<(), SendError>) -> bool {
        match sent {
            Ok(()) => true,
            Err(SendError::Overflow { .. }) => {
                self.stalled(id);
                false
            }
            Err(_) => false,
        }
    }

    /// A peer stopped reading and its connection was closed (outbox
    /// overflow). If it was an asker, its turns are cancelled on their
    /// workers: a bee that does not read loses its own turns, and the
    /// worker's link, shared with every other bee, carries on.
    fn stalled(&mut self, id: ConnId) {
        if matches!(
            self.peers.get(&id).map(|p| &p.role),
            Some(Role::Asker { .. })
        ) {
            self.abandon_turns_of(id, Abandoned::SlowAsker);
        }
    }

    /// Asks the workers to cancel every turn of asker `id`, queued or in
    /// flight, each once, through the same path as a bee's own `cancel`.
    fn abandon_turns_of(&mut self, id: ConnId, why: Abandoned) {
        let mut mine: Vec<(String, Turn)> = Vec::new();
        for (sid, q) in self.turns.iter_mut() {
            for t in q.iter_mut().filter(|t| t.asker == id && !t.cancel_sent) {
                t.cancel_sent = true;
                mine.push((sid.clone(), t.clone()));
            }
        }
        for (sid, turn) in mine {
            match why {
                Abandoned::AskerGone => self.stats.cancelled_gone_askers += 1,
                Abandoned::SlowAsker => self.stats.cancelled_slow_askers += 1,
            }
            tracing::info!(event = "daemon.turn_abandoned", conn = id, sid = %sid, rid = turn.rid.as_deref(), why = ?why, "cancelling a turn nobody waits for");
            let mut cancel = Tone::new(thrum::Cancel::default()).with_sid(&sid);
            cancel.envelope.rid = turn.rid.clone();
            cancel.envelope.from = Some("daemon".into());
            let hive = self.hive_of(turn.worker);
            cancel.envelope.sigil = Some(thrum::sigil(&hive, &sid));
            self.send(turn.worker, cancel);
        }
    }

    fn ack(&mut self, id: ConnId, rid: Option<&str>, ok: bool) {
        if let Some(rid) = rid {
            let mut t = Tone::new(Echo {
                ok,
                extra: Map::new(),
            })
            .with_rid(rid);
            t.envelope.from = Some("daemon".into());
            self.send(id, t);
        }
    }

    fn refuse(&mut self, id: ConnId, tone: &Tone, code: &str, message: String) {
        if code == "bad_request" {
            self.stats.bad_requests += 1;
        }
        tracing::info!(event = "daemon.refused", conn = id, chi = tone.chi(), code, %message, "request refused");
        self.send(id, error(code, message, tone.sid(), tone.rid()));
        self.ack(id, tone.rid(), false);
    }

    /// A worker's tones (other than its hello) are routed by their head and
    /// forwarded as they came; everything else is decoded whole here, once.
    fn tone(&mut self, id: ConnId, raw: RawTone) {
        let Some(role) = self.peers.get(&id).map(|p| p.role.clone()) else {
            return;
        };
        if matches!(role, Role::Worker { .. }) && raw.head.chi != "hello" {
            return self.worker_tone(id, raw);
        }
        let tone = match raw.decode() {
            Ok(tone) => tone,
            Err(error) => {
                let rid = raw.head.rid;
                return self.rejected(id, Rejected::Invalid { rid, error });
            }
        };
        match (&role, &tone.body) {
            (_, Body::Hello(_)) => self.hello(id, tone),
            (Role::Unknown, _) => self.refuse(
                id,
                &tone,
                "bad_request",
                format!("say hello before {}", tone.chi()),
            ),
            (Role::Asker { .. }, _) => self.asker_tone(id, &role, tone),
            // Went to `worker_tone` above.
            (Role::Worker { .. }, _) => {}
        }
    }

    fn hello(&mut self, id: ConnId, tone: Tone) {
        let Body::Hello(hello) = &tone.body else {
            return;
        };
        if hello
            .proto_version
            .as_deref()
            .is_some_and(|v| v != thrum::PROTO_VERSION)
        {
            tracing::warn!(event = "daemon.proto_mismatch", conn = id, theirs = ?hello.proto_version, ours = thrum::PROTO_VERSION, "protocol version differs");
        }
        let is_worker = hello.bee.as_ref().is_some_and(|b| b.contains("worker"));
        let role = if is_worker {
            let Some(models) = hello.models.clone().filter(|m| !m.is_empty()) else {
                return self.refuse(
                    id,
                    &tone,
                    "bad_request",
                    "a worker's hello needs models".into(),
                );
            };
            Role::Worker {
                hive: hello.hive.clone().unwrap_or_else(|| "unknown".into()),
                models,
            }
        } else {
            Role::Asker {
                cwd: hello
                    .extra
                    .get("cwd")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }
        };
        let probe = hello.source.as_deref() == Some(crate::status::SOURCE);
        if probe {
            tracing::debug!(event = "daemon.hello", conn = id, role = ?role, "status probe");
        } else {
            tracing::info!(event = "daemon.hello", conn = id, role = ?role, "peer registered");
        }
        if let Some(p) = self.peers.get_mut(&id) {
            p.role = role;
            p.probe = probe;
        }
        let mut extra = Map::new();
        extra.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        extra.insert("workers".into(), json!(self.workers()));
        extra.insert("models".into(), json!(self.models()));
        let mut breath = Tone::new(thrum::Breath {
            proto_version: Some(thrum::PROTO_VERSION.into()),
            extra,
        });
        breath.envelope.from = Some("daemon".into());
        breath.envelope.rid = tone.rid().map(str::to_owned);
        self.send(id, breath);
        self.ack(id, tone.rid(), true);
    }

    fn asker_tone(&mut self, id: ConnId, role: &Role, tone: Tone) {
        match &tone.body {
            Body::Prompt(_) => self.prompt(id, role, tone),
            Body::Cancel(_) | Body::Cleanup(_) | Body::ToolResult(_) => {
                let Some(sid) = tone.sid().map(str::to_owned) else {
                    return self.refuse(
                        id,
                        &tone,
                        "bad_request",
                        format!("{} needs a sid", tone.chi()),
                    );
                };
                match self.sid_worker.get(&sid).copied() {
                    Some(worker) => {
                        let rid = tone.rid().map(str::to_owned);
                        let mut fwd = tone;
                        fwd.envelope.from = Some("daemon".into());
                        let hive = self.hive_of(worker);
                        fwd.envelope.sigil = Some(thrum::sigil(&hive, &sid));
                        let sent = self.send(worker, fwd);
                        self.ack(id, rid.as_deref(), sent);
                    }
                    // Nothing holds the sid: a cleanup has nothing to do.
                    None if matches!(tone.body, Body::Cleanup(_)) => self.ack(id, tone.rid(), true),
                    None => self.refuse(
                        id,
                        &tone,
                        "bad_request",
                        format!("no worker holds sid {sid}"),
                    ),
                }
            }
            Body::Unknown(u) if u.chi == crate::reports::STATUS => self.status(id, tone.rid()),
            _ => self.ack(id, tone.rid(), true),
        }
    }

    /// Answers a `status` request (a thrum extension chi) with the daemon's
    /// view and each worker's latest `worker-status`.
    fn status(&mut self, id: ConnId, rid: Option<&str>) {
        let t = self.status_tone(rid);
        self.send(id, t);
    }

    /// The daemon's view and each worker's latest status.
    pub fn snapshot(&self) -> DaemonStatus {
        let workers = self
            .peers
            .iter()
            .filter_map(|(conn, p)| match &p.role {
                Role::Worker { hive, models } => Some(WorkerEntry {
                    conn: *conn,
                    hive: hive.clone(),
                    models: models.clone(),
                    in_flight: self.load(*conn),
                    // Read from the line as it came, now that someone asks.
                    status: p.status.as_deref().and_then(|l| {
                        serde_json::from_slice(l)
                            .map_err(|e| {
                                tracing::warn!(event = "daemon.worker_status_unreadable", conn, error = %e,
                                    "a worker's status does not read as this humd's (another version?)")
                            })
                            .ok()
                    }),
                }),
                _ => None,
            })
            .collect();
        DaemonStatus {
            daemon: DaemonInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                workers: self.workers(),
                askers: self.askers(),
                stats: self.stats,
                unfinished_lines: self.line_budget.as_ref().map(|b| LineBudget {
                    bytes: b.used(),
                    limit: b.limit(),
                }),
            },
            workers,
        }
    }

    fn status_tone(&self, rid: Option<&str>) -> Tone {
        self.snapshot().to_tone(rid)
    }

    fn hive_of(&self, worker: ConnId) -> String {
        match self.peers.get(&worker).map(|p| &p.role) {
            Some(Role::Worker { hive, .. }) => hive.clone(),
            _ => "unknown".into(),
        }
    }

    fn serves(&self, worker: ConnId, model: Option<&str>) -> bool {
        match self.peers.get(&worker).map(|p| &p.role) {
            Some(Role::Worker { models, hive }) => match model {
                Some(m) => models.iter().any(|x| x == m),
                None => self.default_hive.as_deref().is_none_or(|h| h == hive),
            },
            _ => false,
        }
    }

    fn load(&self, worker: ConnId) -> usize {
        self.turns
            .values()
            .flatten()
            .filter(|t| t.worker == worker)
            .count()
    }

    fn pick(&self, sid: &str, model: Option<&str>) -> Option<ConnId> {
        if let Some(&w) = self.sid_worker.get(sid) {
            if self.serves(w, model) || (model.is_none() && self.peers.contains_key(&w)) {
                return Some(w);
            }
        }
        let mut candidates: Vec<ConnId> = self
            .peers
            .keys()
            .copied()
            .filter(|w| self.serves(*w, model))
            .collect();
        if candidates.is_empty() && model.is_none() {
            // No worker of the default hive: any worker will do.
            candidates = self
                .peers
                .iter()
                .filter(|(_, p)| matches!(p.role, Role::Worker { .. }))
                .map(|(w, _)| *w)
                .collect();
        }
        candidates.into_iter().min_by_key(|w| (self.load(*w), *w))
    }

    fn prompt(&mut self, id: ConnId, role: &Role, mut tone: Tone) {
        let Some(sid) = tone.sid().filter(|s| !s.is_empty()).map(str::to_owned) else {
            return self.refuse(id, &tone, "bad_request", "prompt needs a sid".into());
        };
        let Body::Prompt(prompt) = &mut tone.body else {
            return;
        };
        if prompt.content.is_none() {
            match &prompt.text {
                // A copy of a big text would double the line (and could take
                // it over the limit); workers read `text` as well.
                Some(text) if text.len() > FILL_CONTENT_UP_TO => {}
                Some(text) => prompt.content = Some(Value::String(text.clone())),
                None => {
                    return self.refuse(
                        id,
                        &tone,
                        "bad_request",
                        "prompt needs content or text".into(),
                    )
                }
            }
        }
        if prompt.cwd.is_none() {
            let cwd = match role {
                Role::Asker { cwd: Some(c) } => c.clone(),
                _ => self.cwd.clone(),
            };
            prompt.cwd = Some(cwd);
        }
        let model = prompt.model_id.clone();
        let Some(worker) = self.pick(&sid, model.as_deref()) else {
            self.stats.no_worker += 1;
            let offered = self.models();
            let message = match &model {
                Some(m) => format!(
                    "no worker serves model {m}; models on offer: {}",
                    if offered.is_empty() {
                        "none".into()
                    } else {
                        offered.join(", ")
                    }
                ),
                None => "no worker is connected".into(),
            };
            return self.refuse(id, &tone, "no_worker", message);
        };
        let hive = self.hive_of(worker);
        tone.envelope.sigil = Some(thrum::sigil(&hive, &sid));
        tone.envelope.from = Some("daemon".into());
        let rid = tone.rid().map(str::to_owned);
        // A prompt too big to forward is the asker's problem, not a lost
        // worker.
        if let Err(thrum::EncodeError::TooLong { len, limit }) =
            tone.encode_line(thrum::DEFAULT_MAX_LINE)
        {
            return self.refuse(
                id,
                &tone,
                "bad_request",
                format!(
                    "the prompt is {len} bytes once forwarded, over the {limit}-byte line limit"
                ),
            );
        }
        if !self.send(worker, tone) {
            self.stats.worker_lost += 1;
            self.send(
                id,
                error(
                    "worker_lost",
                    "the worker could not take the prompt",
                    Some(&sid),
                    rid.as_deref(),
                ),
            );
            return;
        }
        self.stats.prompts_routed += 1;
        self.sid_worker.insert(sid.clone(), worker);
        self.sid_asker.insert(sid.clone(), id);
        // A bee back within the grace keeps its turns: their output now
        // comes here.
        let mut adopted = false;
        for t in self.turns.entry(sid.clone()).or_default().iter_mut() {
            if t.asker != id && !t.cancel_sent && !self.peers.contains_key(&t.asker) {
                adopted = true;
                t.asker = id;
            }
        }
        if adopted {
            tracing::info!(event = "daemon.turn_adopted", conn = id, sid = %sid, "a returning asker keeps its turn");
        }
        self.turns.entry(sid).or_default().push_back(Turn {
            asker: id,
            worker,
            rid: rid.clone(),
            cancel_sent: false,
        });
        self.ack(id, rid.as_deref(), true);
    }

    fn worker_tone(&mut self, id: ConnId, tone: RawTone) {
        if tone.head.chi == crate::reports::WORKER_STATUS {
            if let Some(p) = self.peers.get_mut(&id) {
                // Kept as it came; read only when someone asks for status.
                p.status = Some(tone.line);
            }
            return;
        }
        let Some(sid) = tone.head.sid.clone() else {
            // A worker's sid-less error answers one of its own requests.
            return;
        };
        // A cell that is gone frees its sid: the next prompt for it may go
        // to the least loaded worker, and the map stays as small as the
        // worker's pool plus the turns in flight.
        if tone.head.chi == "pulse" {
            if let Ok(Tone {
                body: Body::Pulse(p),
                ..
            }) = tone.decode()
            {
                if matches!(p.kind.as_str(), "cell-died" | "cell-evicted")
                    && !self.turns.contains_key(&sid)
                    && self.sid_worker.get(&sid) == Some(&id)
                {
                    self.sid_worker.remove(&sid);
                }
            }
        }
        let ends_turn = matches!(tone.head.chi.as_str(), "finish" | "error");
        let turn = if ends_turn {
            let q = self.turns.get_mut(&sid);
            let t = q
                .and_then(|q| q.iter().position(|t| t.worker == id).map(|i| q.remove(i)))
                .flatten();
            if self.turns.get(&sid).is_some_and(VecDeque::is_empty) {
                self.turns.remove(&sid);
            }
            t
        } else {
            self.turns
                .get(&sid)
                .and_then(|q| q.iter().find(|t| t.worker == id).cloned())
        };
        let asker = turn
            .map(|t| t.asker)
            .or_else(|| self.sid_asker.get(&sid).copied());
        let delivered = match asker {
            Some(a) if self.peers.contains_key(&a) => self.send_raw(a, tone),
            _ => false,
        };
        if !delivered {
            self.stats.dropped_for_gone_askers += 1;
        }
    }

    fn left(&mut self, id: ConnId) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        if peer.probe {
            tracing::debug!(event = "daemon.left", conn = id, role = ?peer.role, "status probe done");
        } else {
            tracing::info!(event = "daemon.left", conn = id, role = ?peer.role, "peer disconnected");
        }
        // Output for its sids has nowhere to go now.
        self.sid_asker.retain(|_, a| *a != id);
        if let Role::Asker { .. } = peer.role {
            // Nobody waits for its turns: cancel them (after the grace).
            if self.asker_gone_grace.is_zero() {
                self.abandon_turns_of(id, Abandoned::AskerGone);
            } else if self.turns.values().flatten().any(|t| t.asker == id) {
                self.gone.push((Instant::now() + self.asker_gone_grace, id));
            }
        }
        if let Role::Worker { .. } = peer.role {
            self.sid_worker.retain(|_, w| *w != id);
            let lost: Vec<(String, Turn)> = self
                .turns
                .iter()
                .flat_map(|(sid, q)| {
                    q.iter()
                        .filter(|t| t.worker == id)
                        .map(|t| (sid.clone(), t.clone()))
                })
                .collect();
            for q in self.turns.values_mut() {
                q.retain(|t| t.worker != id);
            }
            self.turns.retain(|_, q| !q.is_empty());
            for (sid, turn) in lost {
                self.stats.worker_lost += 1;
                let e = error(
                    "worker_lost",
                    "the worker serving this turn went away",
                    Some(&sid),
                    turn.rid.as_deref(),
                );
                self.send(turn.asker, e);
            }
        }
    }
}
