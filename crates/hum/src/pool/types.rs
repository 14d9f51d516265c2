//! The policy's vocabulary: its knobs, the events it hears, the commands
//! it gives, how a turn ends, and a cell as seen from outside.

use crate::cell::Reason;
use serde::{Deserialize, Serialize};

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;
/// A turn: one prompt, numbered by the caller in arrival order.
pub type TurnId = u64;
/// A cell slot, numbered by the pool.
pub type CellId = u64;

/// How long a cold prompt waits before an idle cell is evicted for it,
/// unless hum.json says otherwise: long enough for a herd's prompts to
/// arrive (they are written over a few milliseconds), nothing beside a
/// bootstrap's seconds.
pub const EVICTION_HOLD_MS: Millis = 10;

/// The pool's knobs: hum.json's `nest` section, read straight into this
/// (its names are the file's; one set of defaults, here). Two of them are
/// the teardown ladder's, which the worker's cells climb; the policy itself
/// counts only `cancel_grace_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Hard ceiling on cells in any state.
    pub max_active_cells: usize,
    /// Cells bootstrapping (spawned, no first event yet) at once.
    pub max_concurrent_spawns: usize,
    /// How long a prompt may wait for a cell before `overloaded`.
    pub admission_timeout_ms: Millis,
    /// Waiting prompts beyond which new ones get `overloaded` at once.
    pub max_queued_prompts: usize,
    /// How long a turn may go without the cell's first event.
    pub first_event_timeout_ms: Millis,
    /// Idle cells older than this are torn down.
    #[serde(rename = "cellIdlePruneThresholdMs")]
    pub idle_prune_ms: Millis,
    /// After an interrupt, how long the cell has to end the turn before it
    /// is torn down.
    pub cancel_grace_ms: Millis,
    /// A teardown's wait after closing the agent's stdin, then after
    /// SIGTERM, before the next step.
    pub close_grace_ms: Millis,
    pub term_grace_ms: Millis,
    /// Once a turn has begun, how long the cell may go without output
    /// (a hung API call, a stuck tool) before it is torn down.
    pub turn_idle_timeout_ms: Millis,
    /// The longest a turn may run from its start, output or not.
    pub max_turn_ms: Option<Millis>,
    /// How long a prompt with no cell waits before an idle cell is evicted
    /// for it. The prompts of a herd reach the worker over some
    /// milliseconds, not at once: without a wait, the first cold sids would
    /// evict warm cells whose own prompts are a moment behind. A cold
    /// prompt pays a bootstrap of seconds anyway.
    pub eviction_hold_ms: Millis,
    /// Resident memory of every cell together beyond which idle cells are
    /// evicted, least recently used first (`maxPoolRssMb`, in MiB).
    #[serde(rename = "maxPoolRssMb", deserialize_with = "mib_in_bytes")]
    pub max_pool_rss_bytes: Option<u64>,
    /// Resident memory of one cell beyond which it is torn down after its
    /// turn, or at once past twice this mid-turn; where cells have
    /// cgroups, twice this is also their `memory.max` (`maxCellRssMb`).
    #[serde(rename = "maxCellRssMb", deserialize_with = "mib_in_bytes")]
    pub max_cell_rss_bytes: Option<u64>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_active_cells: 8,
            max_concurrent_spawns: 2,
            admission_timeout_ms: 120_000,
            max_queued_prompts: 256,
            first_event_timeout_ms: 60_000,
            idle_prune_ms: 300_000,
            cancel_grace_ms: 5_000,
            close_grace_ms: 2_000,
            term_grace_ms: 2_000,
            turn_idle_timeout_ms: 600_000,
            max_turn_ms: None,
            eviction_hold_ms: EVICTION_HOLD_MS,
            max_pool_rss_bytes: None,
            max_cell_rss_bytes: None,
        }
    }
}

/// A size the file gives in MiB, kept in bytes (a count too big for that
/// is refused here; the range is checked with the other rules).
fn mib_in_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        None => Ok(None),
        Some(mib) => mib
            .checked_mul(1 << 20)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{mib} MiB is more than any machine"))),
    }
}

/// What happens in the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A prompt for `sid`; `turn` ids increase with arrival.
    Prompt { turn: TurnId, sid: String },
    /// The cell printed the first event of its current turn.
    FirstEvent { cell: CellId },
    /// The cell printed something mid-turn (reported at most every so
    /// often, not per line): it is not silent.
    Activity { cell: CellId },
    /// The cell finished its current turn (its finish or error was sent).
    TurnDone { cell: CellId },
    /// The cell's leader exited (crash, or the end of its teardown).
    CellExited { cell: CellId },
    /// The spawn of a cell failed; nothing runs.
    SpawnFailed { cell: CellId },
    /// The cell's teardown is complete: its slot is free.
    TeardownDone { cell: CellId },
    /// Cancel the current or a waiting turn of `sid`.
    Cancel { sid: String },
    /// Cancel exactly `turn`, running or waiting (a turn named by its
    /// rid: another turn of its sid is not touched). An ended or unknown
    /// turn: nothing to do.
    CancelTurn { turn: TurnId },
    /// Forget `sid`: cancel its turns, tear down its cell.
    Cleanup { sid: String },
    /// A cell's process tree holds `bytes` of resident memory (sampled).
    Rss { cell: CellId, bytes: u64 },
    /// The kernel's OOM killer ended the cell's leader (its cgroup's
    /// memory limit): the turn ends with `cell_oom`.
    CellOomKilled { cell: CellId },
    /// Whether the cell was started differently from how a new cell of its
    /// sid would start now (a forager's `provides` turned the agent's own
    /// tools off or on since). An outdated cell serves no further turn: at
    /// its sid's next turn it is torn down and a new one is started, which
    /// resumes the session. The turn it serves, if any, runs to its end.
    Outdated { cell: CellId, outdated: bool },
    /// Time passes.
    Tick,
    /// Stop: end every turn, tear down every cell, accept nothing new.
    Shutdown,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The cell answered; its finish (or error result) was already sent.
    Done,
    /// Cancelled by the asker: a `finish` with `finishReason: "cancelled"`.
    Cancelled,
    /// Could not be admitted in time, or the queue was full.
    Overloaded { retry_after_ms: Millis },
    /// The cell showed no first event in time.
    CellTimeout,
    /// Mid-turn, the cell was silent for `turn_idle_timeout_ms`, or the turn
    /// ran past `max_turn_ms`.
    TurnTimeout,
    /// The cell died mid-turn.
    CellDied,
    /// The cell could not be started.
    SpawnFailed,
    /// Dropped by a `cleanup` of its sid.
    CleanedUp,
    /// The worker is shutting down.
    ShuttingDown,
    /// The cell's memory went past twice `max_cell_rss_bytes` mid-turn, or
    /// the kernel killed it at its cgroup's limit.
    CellOom,
}

impl Outcome {
    /// The thrum error code, for outcomes that are errors.
    pub fn error_code(&self) -> Option<thrum::ErrorCode> {
        match self {
            Outcome::Done | Outcome::Cancelled => None,
            Outcome::Overloaded { .. } => Some(thrum::ErrorCode::Overloaded),
            Outcome::CellTimeout | Outcome::TurnTimeout => Some(thrum::ErrorCode::CellTimeout),
            Outcome::CellDied => Some(thrum::ErrorCode::CellDied),
            Outcome::SpawnFailed => Some(thrum::ErrorCode::SpawnFailed),
            Outcome::CleanedUp => Some(thrum::ErrorCode::CleanedUp),
            Outcome::ShuttingDown => Some(thrum::ErrorCode::ShuttingDown),
            Outcome::CellOom => Some(thrum::ErrorCode::CellOom),
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Spawn cell `cell` for `sid` and send it `turn`.
    Spawn {
        cell: CellId,
        sid: String,
        turn: TurnId,
    },
    /// Send `turn` to the idle cell `cell`.
    Send { cell: CellId, turn: TurnId },
    /// Ask the cell to stop its current turn (cancel).
    Interrupt { cell: CellId, turn: TurnId },
    /// Tear the cell down; answer with `TeardownDone`.
    Teardown { cell: CellId, reason: Reason },
    /// The turn is over; tell the asker unless `Done`.
    End {
        turn: TurnId,
        sid: String,
        outcome: Outcome,
        waited_ms: Millis,
    },
}

/// Where a cell is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    /// Spawned for a turn, no first event yet.
    Bootstrapping,
    /// Serving a turn.
    Busy,
    Idle,
    TearingDown,
}

thrum::one_spelling!(CellState {
    Bootstrapping => "bootstrapping",
    Busy => "busy",
    Idle => "idle",
    TearingDown => "tearing_down",
});

/// A cell as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellView {
    pub id: CellId,
    pub sid: String,
    pub state: CellState,
    /// The turn it serves, if any.
    pub turn: Option<TurnId>,
    /// When it last became idle, or started its current state.
    pub since: Millis,
    /// When it was last used (sent a turn).
    pub last_used: Millis,
    /// Its tree's resident memory as last sampled.
    pub rss_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_states_have_one_spelling_in_serde_and_as_str() {
        for s in CellState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.as_str().parse::<CellState>(), Ok(*s));
        }
    }
}
