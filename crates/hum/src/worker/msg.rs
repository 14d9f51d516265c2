//! What the worker's tasks tell its actor: the link's tones and the
//! runners' reports about their cells (lifecycle only: a cell's output goes
//! from its runner straight to humd, see [`super::serving`]). Its own module, so the link and the
//! runners depend on the messages, not on the actor that reads them.

use crate::cell::TeardownReport;
use crate::pool::CellId;
use std::sync::Arc;
use thrum::{Outbox, Tone};

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
    /// The turn's first event (`session-ready`), already sent to humd.
    Started,
    /// An ACP agent opened its session without the sid's earlier turns
    /// (it cannot load them): said in status.
    HistoryNotCarried,
    /// The cell is printing (said at most every so often).
    Activity,
    /// The turn's last event (`finish` or `error` from the CLI), as the
    /// line to send humd (none if the turn was interrupted or had ended).
    Ended(Option<Vec<u8>>),
    /// The leader exited; `oom_kills`: processes of the cell the kernel's
    /// OOM killer ended so far (its memory limit).
    Exited {
        oom_kills: u64,
    },
    TornDown(Arc<TeardownReport>),
}
