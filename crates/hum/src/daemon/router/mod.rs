//! The daemon's one owner of state: who is connected, which worker holds
//! which sid, which asker waits for which sid's turns. A pure-ish actor: it
//! reacts to [`RouterMsg`]s and writes through each peer's outbox, never
//! waiting on any of them (a full outbox closes that peer, see
//! `thrum::connection`).

use crate::reports::{DaemonInfo, DaemonStatus, LineBudget, WorkerEntry};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thrum::{Body, Echo, ErrorCode, ErrorTone, Outbox, RawTone, Rejected, SendError, Tone};

mod accounting;
mod asker;
mod bounce;
mod desk;
mod foragers;
mod permits;
pub mod placing;
mod registry;
mod routes;
#[cfg(test)]
mod tests;
mod tools;
mod turns;
mod worker;

pub use accounting::Accounting;

/// How many sids' last session totals humd keeps.
pub fn accounting_max_sessions() -> usize {
    accounting::MAX_SESSIONS
}

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
    /// Where the cluster placed a sid whose prompts wait here.
    Placed {
        sid: String,
        placement: placing::Placement,
        /// The transcript of a sid that moved here.
        restore: Option<std::path::PathBuf>,
    },
    /// The cluster as its loop last saw it, for status.
    ClusterView(crate::reports::ClusterStatus),
    /// What a turn asked on another node cost.
    SpentElsewhere(placing::SpentNote),
    /// The cluster settled a sid on another node: its cell here goes.
    TearDown(String),
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
        /// Each hive and its models (a worker may run several).
        hives: Vec<crate::reports::HiveModels>,
    },
    /// Serves tools to the agents (`bee: ["forager"]`).
    Forager,
    /// Another cluster node's cells calling the tools of foragers here
    /// (only ever a link: see [`placing::CALLS_HID_PREFIX`]).
    Calls,
}

struct Peer {
    role: Role,
    /// A status probe (`hum status`, `hum up`'s watchdog every few
    /// seconds): its comings and goings are logged at debug, not info.
    probe: bool,
    outbox: Outbox,
    /// A worker's latest `worker-status` line, for `status` requests.
    status: Option<Vec<u8>>,
    /// What the peer calls itself (its hello's `hid` or `source`).
    name: Option<String>,
    /// Its hello's `hid`: who it is across connections.
    hid: Option<String>,
    /// It said it answers `permission-ask` (in its hello's `chis`).
    answers_permits: bool,
}

use routes::{Abandoned, Routes, Turn};

pub use crate::reports::RouterStats;

pub struct Router {
    peers: HashMap<ConnId, Peer>,
    /// Which worker holds each sid and which asker waits for each turn.
    routes: Routes,
    default_hive: Option<String>,
    cwd: String,
    /// The budget for unfinished lines across connections, reported in
    /// status (how full it is explains `overloaded` answers).
    line_budget: Option<Arc<thrum::ByteBudget>>,
    pub stats: RouterStats,
    /// Tools, calls in flight and permission asks.
    desk: desk::ToolDesk,
    /// Usage and budgets; none without a usage database.
    accounting: Option<Accounting>,
    /// New sids wait here for the cluster; none: one machine.
    placing: Option<placing::Placing>,
    /// The cluster as last reported, for status.
    cluster_view: Option<crate::reports::ClusterStatus>,
    /// What the cluster adds to turns routed here.
    cluster_timings: crate::reports::ClusterTimings,
    /// This cluster node drains (`hum drain`): its cells go as their turns
    /// end, and its sids move to other nodes.
    draining: bool,
}

fn error(
    code: ErrorCode,
    message: impl Into<String>,
    sid: Option<&str>,
    rid: Option<&str>,
) -> Tone {
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
            routes: Routes::new(Duration::ZERO),
            default_hive,
            cwd,
            line_budget: None,
            stats: RouterStats::default(),
            desk: Default::default(),
            accounting: None,
            placing: None,
            cluster_view: None,
            cluster_timings: Default::default(),
            draining: false,
        }
    }

    /// Reports this budget's use in status.
    pub fn with_line_budget(mut self, budget: Arc<thrum::ByteBudget>) -> Router {
        self.line_budget = Some(budget);
        self
    }

    /// Sets how long a gone asker's turns wait before they are cancelled.
    pub fn with_asker_gone_grace(mut self, grace: Duration) -> Router {
        self.routes = Routes::new(grace);
        self
    }

    pub fn handle(&mut self, msg: RouterMsg) {
        match msg {
            RouterMsg::Joined(id, outbox) => {
                self.routes.joined(id);
                self.peers.insert(
                    id,
                    Peer {
                        role: Role::Unknown,
                        probe: false,
                        outbox,
                        status: None,
                        name: None,
                        hid: None,
                        answers_permits: false,
                    },
                );
            }
            RouterMsg::Tone(id, tone, _in_flight) => self.tone(id, *tone),
            RouterMsg::Rejected(id, rejected) => self.rejected(id, rejected),
            RouterMsg::Left(id) => self.left(id),
            RouterMsg::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            RouterMsg::Placed {
                sid,
                placement,
                restore,
            } => self.placed(&sid, placement, restore),
            RouterMsg::ClusterView(view) => self.cluster_view = Some(view),
            RouterMsg::SpentElsewhere(note) => self.spent_elsewhere(note),
            RouterMsg::TearDown(sid) => self.tear_down_here(&sid, "settled elsewhere"),
        }
    }

    /// Answers what a peer sent that could not be used.
    fn rejected(&mut self, id: ConnId, rejected: Rejected) {
        let (code, rid) = match &rejected {
            Rejected::Invalid { rid, .. } => (ErrorCode::BadRequest, rid.clone()),
            Rejected::TooLong { .. } => (ErrorCode::BadRequest, None),
            Rejected::Busy(_) => (ErrorCode::Overloaded, None),
        };
        if code == ErrorCode::BadRequest {
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
                ErrorCode::ShuttingDown,
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

    fn refuse(&mut self, id: ConnId, tone: &Tone, code: ErrorCode, message: String) {
        if code == ErrorCode::BadRequest {
            self.stats.bad_requests += 1;
        }
        tracing::info!(event = "daemon.refused", conn = id, chi = tone.chi(), code = code.as_str(), detail = %message, "request refused");
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
            // The old humd routed a prompt that came without a hello: it
            // is taken as an asker's, once said in the log.
            (Role::Unknown, Body::Prompt(_)) => {
                let role = Role::Asker { cwd: None };
                if let Some(p) = self.peers.get_mut(&id) {
                    p.role = role.clone();
                    p.name = Some("anonymous".into());
                }
                tracing::info!(
                    event = "daemon.implicit_hello",
                    conn = id,
                    "a prompt before any hello: taken as an asker's"
                );
                self.asker_tone(id, &role, tone)
            }
            (Role::Unknown, _) => self.refuse(
                id,
                &tone,
                ErrorCode::BadRequest,
                format!("say hello before {}", tone.chi()),
            ),
            (Role::Asker { .. } | Role::Forager, Body::ToolResult(_)) => self.tool_result(id, tone),
            (Role::Asker { .. } | Role::Forager, Body::ReleasePermit(_)) => {
                self.release_permit(id, tone)
            }
            // A forager's informational tones (`tool-info`, `tool-meta`, …).
            (
                Role::Forager,
                Body::ToolInfo(_) | Body::Breath(_) | Body::Echo(_) | Body::Pulse(_),
            ) => self.ack(id, tone.rid(), true),
            (Role::Forager, Body::Unknown(u)) if u.chi.starts_with("tool-") => {
                self.ack(id, tone.rid(), true)
            }
            // A bee may ask as well as lend tools.
            (Role::Asker { .. } | Role::Forager, _) => self.asker_tone(id, &role, tone),
            (Role::Calls, Body::ToolCall(_)) => self.tool_call(id, tone),
            (Role::Calls, Body::Cancel(c)) => {
                if let Some(call) = c.call_id.clone() {
                    self.call_cancelled_by_worker(id, &call);
                }
            }
            (Role::Calls, _) => {}
            // Went to `worker_tone` above.
            (Role::Worker { .. }, _) => {}
        }
    }
}
