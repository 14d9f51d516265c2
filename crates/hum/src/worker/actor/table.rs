//! The worker's live cells as records: what each is (its sid, hive,
//! process, runner, bridge, how it was started), what became of it (its
//! first answer, OOM kills seen, turns served), its process tree as last
//! sampled, and the status rows built from all that. A plain value: the
//! actor does the I/O (runners, pulses, /proc) around it.

use super::{CellCmd, CellSocket, CellTools, Serving};
use crate::cell::observe::CellSample;
use crate::cell::Reason;
use crate::pool::{CellId, CellState, CellView};
use crate::reports::CellStatus;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Each cell's process tree, as last sampled.
pub(super) type Samples = HashMap<CellId, CellSample>;

pub(super) struct CellInfo {
    pub sid: String,
    pub hive: String,
    pub pid: Option<i32>,
    pub cell_id: Option<String>,
    pub handle: Option<crate::cell::CellHandle>,
    pub ready_once: bool,
    pub spawned_at: Instant,
    pub turns_served: u64,
    /// Kernel OOM kills in it already counted.
    pub oom_kills_seen: u64,
    pub runner: mpsc::UnboundedSender<CellCmd>,
    /// The turn it serves, shared with its runner.
    pub serving: Arc<Serving>,
    /// Its tool bridge (the tools of its turn, and its socket, closed with
    /// the cell).
    pub tools: Option<(Arc<CellTools>, CellSocket)>,
    /// The agent's own tools it was started without for foragers'
    /// capabilities (sorted; empty without the bridge).
    pub builtins_off: Vec<String>,
    /// The agent's own tools it was started with (`--tools`).
    pub builtin: crate::hive::builtin::BuiltinTools,
    /// A prompt of its sid asked for another set of the agent's own
    /// tools: it is replaced at that turn.
    pub wants_other_builtins: bool,
    /// Its agent started the sid afresh: the earlier turns are not in it.
    pub history_not_carried: bool,
    /// The model it runs (none: its CLI's default).
    pub model: Option<String>,
    /// Where its CLI keeps transcripts and the cwd its session runs in:
    /// where the sid's transcript is after each turn.
    pub transcripts: (std::path::PathBuf, std::path::PathBuf),
}

/// OOM kills a sample showed that were not seen before.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct OomNews {
    pub sid: String,
    pub pid: Option<i32>,
    /// New since the last look.
    pub new: u64,
    /// So far.
    pub total: u64,
}

#[derive(Default)]
pub(super) struct CellTable {
    cells: HashMap<CellId, CellInfo>,
    samples: Samples,
}

impl CellTable {
    pub fn insert(&mut self, id: CellId, info: CellInfo) {
        self.cells.insert(id, info);
    }

    /// A cell whose teardown is done: its record, and its sample, go.
    pub fn remove(&mut self, id: CellId) -> Option<CellInfo> {
        self.samples.remove(&id);
        self.cells.remove(&id)
    }

    pub fn get(&self, id: CellId) -> Option<&CellInfo> {
        self.cells.get(&id)
    }

    pub fn get_mut(&mut self, id: CellId) -> Option<&mut CellInfo> {
        self.cells.get_mut(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (CellId, &CellInfo)> {
        self.cells.iter().map(|(id, c)| (*id, c))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (CellId, &mut CellInfo)> {
        self.cells.iter_mut().map(|(id, c)| (*id, c))
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The cells whose process is known, for a sample of their trees.
    pub fn handles(&self) -> Vec<(CellId, crate::cell::CellHandle)> {
        self.cells
            .iter()
            .filter_map(|(id, info)| Some((*id, info.handle.clone()?)))
            .collect()
    }

    /// A fresh sample of every cell's tree; (cell, rss bytes, OOM kills)
    /// of each.
    pub fn sampled(&mut self, mut samples: Samples) -> Vec<(CellId, u64, u64)> {
        // A cell torn down while the sample was taken is gone.
        samples.retain(|id, _| self.cells.contains_key(id));
        self.samples = samples;
        self.samples
            .iter()
            .map(|(id, s)| (*id, s.rss_bytes, s.oom_kills))
            .collect()
    }

    /// The cell's process started.
    pub fn spawned(
        &mut self,
        id: CellId,
        handle: crate::cell::CellHandle,
        pid: i32,
        cell_id: &str,
    ) -> Option<&CellInfo> {
        let info = self.cells.get_mut(&id)?;
        info.handle = Some(handle);
        info.pid = Some(pid);
        info.cell_id = Some(cell_id.to_owned());
        Some(info)
    }

    /// The cell answered: its pid the first time it does (a `cell-ready`
    /// is said once per cell), else none.
    pub fn first_ready(&mut self, id: CellId) -> Option<Option<i32>> {
        let info = self.cells.get_mut(&id)?;
        if info.ready_once {
            return None;
        }
        info.ready_once = true;
        Some(info.pid)
    }

    /// The kernel has ended `total` processes of the cell so far: the
    /// news, if some were not seen before (each is counted once).
    pub fn oom_seen(&mut self, id: CellId, total: u64) -> Option<OomNews> {
        let info = self.cells.get_mut(&id)?;
        if total <= info.oom_kills_seen {
            return None;
        }
        let new = total - info.oom_kills_seen;
        info.oom_kills_seen = total;
        Some(OomNews {
            sid: info.sid.clone(),
            pid: info.pid,
            new,
            total,
        })
    }

    /// The cell finished a turn: its pid.
    pub fn turn_served(&mut self, id: CellId) -> Option<Option<i32>> {
        let info = self.cells.get_mut(&id)?;
        info.turns_served += 1;
        Some(info.pid)
    }

    /// A status row per cell the pool shows (`views`), at `now` on the
    /// pool's clock. A cell newer than the last sample is read by
    /// `leader` (its leader alone, one /proc file); that reading is kept
    /// until the next sample unless it caught the leader between fork and
    /// exec (no memory yet: read again next time).
    pub fn rows(
        &mut self,
        views: &[CellView],
        now: u64,
        leader: impl Fn(&CellInfo) -> CellSample,
    ) -> Vec<CellStatus> {
        let mut rows = Vec::with_capacity(views.len());
        for view in views {
            let Some(info) = self.cells.get(&view.id) else {
                continue;
            };
            let sample = match self.samples.get(&view.id) {
                Some(s) => s.clone(),
                None => {
                    let s = leader(info);
                    if info.pid.is_some() && s.rss_bytes > 0 {
                        self.samples.insert(view.id, s.clone());
                    }
                    s
                }
            };
            rows.push(CellStatus {
                sid: info.sid.clone(),
                hive: info.hive.clone(),
                state: view.state,
                pid: info.pid,
                pids: sample.pids,
                rss_bytes: sample.rss_bytes,
                cpu_ms: sample.cpu_ms,
                age_ms: sample.age_ms,
                idle_ms: (view.state == CellState::Idle).then(|| now.saturating_sub(view.since)),
                turns_served: info.turns_served,
                cell_id: info.cell_id.clone(),
                builtins_off: info.builtins_off.clone(),
                history_not_carried: info.history_not_carried,
                model: info.model.clone(),
            });
        }
        rows
    }
}

/// What the askers of a sid hear when its cell is gone for `reason`:
/// evicted (it may come back warm elsewhere) or died.
pub(super) fn gone_pulse(reason: Reason) -> thrum::PulseKind {
    if matches!(
        reason,
        Reason::Evicted | Reason::MemoryPressure | Reason::Reconfigured
    ) {
        thrum::PulseKind::CellEvicted
    } else {
        thrum::PulseKind::CellDied
    }
}

/// A runner's end of a cell record, for tests: its messages are dropped.
#[cfg(test)]
pub(super) fn record(sid: &str) -> CellInfo {
    let (runner, _) = mpsc::unbounded_channel();
    CellInfo {
        sid: sid.into(),
        hive: "sim".into(),
        pid: None,
        cell_id: None,
        handle: None,
        ready_once: false,
        spawned_at: Instant::now(),
        turns_served: 0,
        oom_kills_seen: 0,
        runner,
        serving: Arc::new(Serving::default()),
        tools: None,
        builtins_off: Vec::new(),
        builtin: crate::hive::builtin::BuiltinTools::default(),
        wants_other_builtins: false,
        history_not_carried: false,
        model: None,
        transcripts: Default::default(),
    }
}

#[cfg(test)]
mod tests;
