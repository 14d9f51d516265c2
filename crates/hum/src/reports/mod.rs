//! What hum reports about itself, typed: the `worker-status` a worker
//! pushes to humd, and the `status` humd answers (`hum status`, `/status`,
//! `/metrics`, `hum demo`, `hum bench`, the gateway's model list all read
//! these types, none of them string keys). Both are thrum extension chis;
//! their JSON is the wire format (camelCase, except the router's counters,
//! which have always been snake_case).
//!
//! A worker's metrics travel inside its status as cumulative counters and
//! histograms (bucket counts), which humd sums across workers and serves as
//! Prometheus text.

mod cluster;
mod histogram;
pub use cluster::{ClusterStatus, ClusterTimings, DrainRequest, NodeView, DRAIN, MAX_SIDS_SHOWN};
pub use histogram::Histogram;

use crate::cell::Mechanism;
use crate::pool::CellState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The chi a worker's status travels under.
pub const WORKER_STATUS: &str = "worker-status";

/// A worker's word after a turn ended well: where the sid's transcript is
/// (`{"chi": "transcript-saved", "sid": …, "path": …}`); a cluster node's
/// humd keeps a copy so the session can move to another node.
pub const TRANSCRIPT_SAVED: &str = "transcript-saved";

/// The prompt field a cluster node's humd adds to a prompt whose sid moved
/// here: a file holding the session's transcript as its last node kept it,
/// which the worker puts in place before the cell starts (and removes).
pub const PROMPT_RESTORE_TRANSCRIPT: &str = "restoreTranscript";

/// The chi of a status request and of humd's answer.
pub const STATUS: &str = "status";

/// The chi a worker tells a humd it (re)linked to which turns it still
/// holds, so humd can hand them to a returning asker or cancel them.
pub const WORKER_TURNS: &str = "worker-turns";

/// The field of humd's `breath` that says how long a gone asker's turns
/// wait for it (ms); a worker gives its turns as long when humd goes.
pub const BREATH_ASKER_GONE_GRACE: &str = "askerGoneGraceMs";

/// The longest grace for gone askers, humd's and a worker's alike
/// (graces are at most 10 minutes; a deadline past the clock's range
/// would panic).
pub const MAX_ASKER_GONE_GRACE_MS: u64 = 600_000;

/// The field humd adds to a prompt it forwards: its asker's name (what
/// the turn's usage is filed under), which the worker tells again if humd
/// restarts while the turn runs.
pub const PROMPT_ASKER_NAME: &str = "humBee";

/// A bee's name is kept to this many characters (in the usage database, on
/// forwarded prompts, in what a worker tells a restarted humd).
pub const MAX_BEE_NAME: usize = 128;

/// The turns a worker still holds when it links to humd (after humd
/// restarted), and how many it dropped or interrupted on its own while no
/// humd was there (their askers' connections died with the last one).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerTurns {
    pub turns: Vec<HeldTurn>,
    pub abandoned: u64,
}

/// One hive of a worker and the models it serves, as the worker's hello
/// lists them (`hives`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HiveModels {
    pub hive: String,
    pub models: Vec<String>,
}

/// The key of a worker's hello that lists its hives.
pub const HELLO_HIVES: &str = "hives";

impl HiveModels {
    /// A worker hello's hives; none when it lists none (an older worker)
    /// or they do not read.
    pub fn of(hello: &thrum::Hello) -> Vec<HiveModels> {
        hello
            .extra
            .get(HELLO_HIVES)
            .and_then(|v| Vec::<HiveModels>::deserialize(v).ok())
            .unwrap_or_default()
    }

    /// The hive of `hives` serving `model`, else `fallback`.
    pub fn serving<'a>(hives: &'a [HiveModels], model: Option<&str>, fallback: &'a str) -> &'a str {
        model
            .and_then(|m| hives.iter().find(|h| h.models.iter().any(|x| x == m)))
            .map_or(fallback, |h| h.hive.as_str())
    }
}

/// One turn a worker holds: its sid and rid name it, the asker's name and
/// the model are what its usage is filed under.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeldTurn {
    pub sid: String,
    pub rid: String,
    pub bee: Option<String>,
    pub model: Option<String>,
}

impl WorkerTurns {
    /// As `worker-turns` lines (newline included), each within `max_line`,
    /// the count on the first; none when there is nothing to say. A turn too
    /// big for a line of its own (it cannot be: its prompt's line held its
    /// sid and rid) is left out.
    pub fn to_lines(&self, max_line: usize) -> Vec<Vec<u8>> {
        #[derive(Serialize)]
        struct Line<'a> {
            chi: &'static str,
            from: &'static str,
            turns: &'a [HeldTurn],
            abandoned: u64,
        }
        let encode = |turns: &[HeldTurn], abandoned: u64| {
            let mut line = serde_json::to_vec(&Line {
                chi: WORKER_TURNS,
                from: "worker",
                turns,
                abandoned,
            })
            .unwrap_or_default();
            line.push(b'\n');
            line
        };
        let mut lines = Vec::new();
        let (all, mut abandoned) = (&self.turns[..], self.abandoned);
        let mut start = 0;
        while start < all.len() || abandoned > 0 {
            // Halved until the line fits.
            let mut end = all.len();
            let mut line = encode(&all[start..end], abandoned);
            while line.len() > max_line && end > start {
                end = start + (end - start) / 2;
                line = encode(&all[start..end], abandoned);
            }
            if line.len() > max_line {
                // Not even the count fits: nothing can be said.
                break;
            }
            if end == start && start < all.len() {
                // The turn at `start` alone does not fit: left out.
                start += 1;
                if abandoned == 0 {
                    continue;
                }
            }
            lines.push(line);
            abandoned = 0;
            start = start.max(end);
        }
        lines
    }
}

/// A worker's state, pushed to humd on every change.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerStatus {
    /// The worker's first hive.
    pub hive: Option<String>,
    pub models: Vec<String>,
    /// How cells are contained; absent from a worker that never said.
    pub containment: Option<Mechanism>,
    pub pool: PoolStatus,
    pub cells: Vec<CellStatus>,
    pub metrics: WorkerMetrics,
    /// The agent's own tools a new cell starts without, for the
    /// capabilities connected foragers serve (sorted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub builtins_off: Vec<String>,
}

impl WorkerStatus {
    /// The `worker-status` tone as one line (newline included), written
    /// straight from the typed status: no JSON tree on the way.
    pub fn to_line(&self) -> serde_json::Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Line<'a> {
            chi: &'static str,
            from: &'static str,
            #[serde(flatten)]
            status: &'a WorkerStatus,
        }
        let mut line = serde_json::to_vec(&Line {
            chi: WORKER_STATUS,
            from: "worker",
            status: self,
        })?;
        line.push(b'\n');
        Ok(line)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PoolStatus {
    /// Cells in any state.
    pub live: usize,
    pub cap: usize,
    /// Prompts waiting for a cell.
    pub queued: usize,
    pub bootstrapping: usize,
    pub max_concurrent_spawns: usize,
    /// `nest.maxPoolRssMb` and `nest.maxCellRssMb`, in bytes.
    pub max_pool_rss_bytes: Option<u64>,
    pub max_cell_rss_bytes: Option<u64>,
}

/// One cell, with its process tree as last sampled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CellStatus {
    pub sid: String,
    pub hive: String,
    pub state: CellState,
    /// The leader; none before it has started.
    pub pid: Option<i32>,
    /// Every running process of the tree, the leader first.
    #[serde(default)]
    pub pids: Vec<i32>,
    #[serde(default)]
    pub rss_bytes: u64,
    #[serde(default)]
    pub cpu_ms: u64,
    #[serde(default)]
    pub age_ms: u64,
    /// How long it has been idle; none unless it is.
    pub idle_ms: Option<u64>,
    #[serde(default)]
    pub turns_served: u64,
    pub cell_id: Option<String>,
    /// The agent's own tools it was started without, for the capabilities
    /// foragers serve (sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builtins_off: Vec<String>,
    /// Its agent could not load the sid's session: the conversation began
    /// again in it (an ACP agent without `loadSession`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub history_not_carried: bool,
    /// The model it runs (none: its CLI's default, or a worker that never
    /// said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// humd's answer to `status`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DaemonStatus {
    pub daemon: DaemonInfo,
    pub workers: Vec<WorkerEntry>,
}

impl DaemonStatus {
    /// The answer as a tone, to `rid`'s request.
    pub fn to_tone(&self, rid: Option<&str>) -> thrum::Tone {
        let fields = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        let mut t = thrum::Tone::new(thrum::Unknown {
            chi: STATUS.into(),
            fields,
        });
        t.envelope.rid = rid.map(str::to_owned);
        t.envelope.from = Some("daemon".into());
        t
    }

    /// Reads humd's answer (a `status` tone).
    pub fn from_tone(tone: &thrum::Tone) -> Result<DaemonStatus, String> {
        serde_json::from_value(tone.to_value())
            .map_err(|e| format!("humd's status is unreadable: {e}"))
    }

    /// Every worker's cells.
    pub fn cells(&self) -> impl Iterator<Item = &CellStatus> {
        self.workers
            .iter()
            .filter_map(|w| w.status.as_ref())
            .flat_map(|s| &s.cells)
    }

    /// Every worker's metrics.
    pub fn metrics(&self) -> impl Iterator<Item = &WorkerMetrics> {
        self.workers
            .iter()
            .filter_map(|w| w.status.as_ref())
            .map(|s| &s.metrics)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    /// Workers connected.
    pub workers: usize,
    /// Askers connected.
    pub askers: usize,
    pub stats: RouterStats,
    /// humd's budget for unfinished lines across connections.
    pub unfinished_lines: Option<LineBudget>,
    /// Foragers, their tools and the calls in flight.
    #[serde(default)]
    pub tools: ToolsStatus,
    /// Spend today, budgets, and tokens since humd started; none when humd
    /// keeps no usage (its database could not be opened).
    #[serde(default)]
    pub usage: Option<UsageStatus>,
    /// The cluster as this node sees it; none when humd is not a node.
    #[serde(default)]
    pub cluster: Option<ClusterStatus>,
}

/// What humd knows of spend: today's (UTC) against the budgets, per live
/// cell's sid, and every hive's and model's tokens since it started.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageStatus {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub spent_today_usd: f64,
    pub budgets: crate::usage::Budgets,
    /// Today's spend of each sid that has a cell now.
    pub spent_today_by_sid: BTreeMap<String, f64>,
    /// Since humd started, per hive and model (the `/metrics` counters).
    pub since_start: Vec<UsageSeries>,
    /// Turns written to the database, and dropped (writer behind or
    /// failing).
    pub recorded: u64,
    pub dropped: u64,
    /// Prompts refused with `budget_exceeded`.
    pub refused: u64,
    /// Turns cancelled by `budgets.hardStop`.
    pub hard_stopped: u64,
}

/// One hive's and model's tokens and cost.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageSeries {
    pub hive: String,
    pub model: String,
    #[serde(flatten)]
    pub tally: crate::usage::Tally,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LineBudget {
    pub bytes: usize,
    pub limit: usize,
}

/// A connected worker as humd sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerEntry {
    pub conn: u64,
    pub hive: String,
    pub models: Vec<String>,
    /// Each of its hives and their models (absent from an older humd).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hives: Vec<HiveModels>,
    /// Turns routed to it and not yet ended.
    pub in_flight: usize,
    /// Its latest `worker-status`; none before the first.
    pub status: Option<WorkerStatus>,
}

/// The router's counters, for status and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouterStats {
    pub prompts_routed: u64,
    pub no_worker: u64,
    pub bad_requests: u64,
    pub worker_lost: u64,
    /// Worker tones for an asker that had gone.
    pub dropped_for_gone_askers: u64,
    /// Turns cancelled because their asker stopped reading.
    pub cancelled_slow_askers: u64,
    /// Turns (queued or in flight) cancelled because their asker left
    /// (or, told of by a worker after a restart, nobody came back for).
    pub cancelled_gone_askers: u64,
    /// Turns workers dropped or interrupted on their own while no humd
    /// was there (every asker's connection had died with the last humd).
    pub abandoned_humd_gone: u64,
    /// Turns a returning asker took back by sending their rid again.
    pub turns_adopted: u64,
    /// Lines dropped because the daemon's budget for unfinished lines
    /// across all connections was spent.
    pub lines_dropped_busy: u64,
    /// Prompts of new sids sent to another node of the cluster.
    pub placed_remote: u64,
    /// New sids served here because the cluster could not be asked.
    pub placed_here_unasked: u64,
}

/// Tool calls humd routed, by how they ended, and how long they took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolStats {
    /// Calls by outcome: `ok`, `error`, `unrouted`, `owner_gone`,
    /// `worker_gone`, `timed_out`, `cancelled`.
    pub by_outcome: BTreeMap<String, u64>,
    /// From the call to its owner's result.
    pub seconds: Histogram,
}

impl Default for ToolStats {
    fn default() -> Self {
        ToolStats {
            by_outcome: BTreeMap::new(),
            seconds: Histogram::new(&[0.01, 0.1, 1.0, 10.0, 60.0, 300.0]),
        }
    }
}

impl ToolStats {
    pub fn count(&mut self, outcome: &str) {
        *self.by_outcome.entry(outcome.to_owned()).or_default() += 1;
    }
}

/// A forager and the tools it owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForagerEntry {
    pub conn: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub tools: Vec<String>,
    /// The capabilities it serves in the agent's stead (its `provides`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provides: Vec<String>,
}

/// A capability: the agent's built-in tools it stands for, and whether a
/// connected forager serves it now (then cells start without them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityEntry {
    pub name: String,
    pub builtins: Vec<String>,
    pub served: bool,
}

/// A tool name offered by more than one forager: calls go to `owner`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConflict {
    pub tool: String,
    pub owner: u64,
    pub others: Vec<u64>,
}

/// Tools as humd sees them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ToolsStatus {
    pub foragers: Vec<ForagerEntry>,
    pub conflicts: Vec<ToolConflict>,
    pub calls_in_flight: usize,
    /// Turns waiting for their own asker's tool results (a gateway
    /// client's functions, `hum prompt --tool`): each holds a busy cell.
    pub parked_turns: usize,
    pub calls: ToolStats,
    /// Permission asks each asker (by name) let lapse: it said it answers
    /// them and did not in time.
    pub unanswered_permits: BTreeMap<String, u64>,
    /// Every capability humd knows, and any other a forager serves.
    pub capabilities: Vec<CapabilityEntry>,
}

/// Everything a worker counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerMetrics {
    pub spawns: u64,
    pub reuses: u64,
    /// By "reason/rung".
    pub teardowns: BTreeMap<String, u64>,
    /// Turns ended, by outcome (`done`, `cancelled`, `overloaded`, …).
    pub turns: BTreeMap<String, u64>,
    /// Processes of previous instances ended at start-up.
    pub orphans_swept: u64,
    /// Processes the kernel's OOM killer ended inside cells (their memory
    /// limit).
    #[serde(default)]
    pub oom_kills: u64,
    pub teardown_seconds: Histogram,
    pub admission_wait_seconds: Histogram,
    pub turn_seconds: Histogram,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            spawns: 0,
            reuses: 0,
            teardowns: BTreeMap::new(),
            turns: BTreeMap::new(),
            orphans_swept: 0,
            oom_kills: 0,
            teardown_seconds: Histogram::new(&[0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0]),
            admission_wait_seconds: Histogram::new(&[
                0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            turn_seconds: Histogram::new(&[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
        }
    }
}

#[cfg(test)]
mod tests;
