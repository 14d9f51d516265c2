use super::types::*;
use crate::cell::Reason;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone)]
pub(super) struct Cell {
    pub(super) sid: String,
    pub(super) state: CellState,
    pub(super) turn: Option<TurnId>,
    /// Whether the current turn's first event was seen.
    pub(super) first_event: bool,
    pub(super) since: Millis,
    /// When the current turn last showed output (its start until then).
    pub(super) last_activity: Millis,
    pub(super) last_used: Millis,
    /// When an interrupt was sent, for the cancel grace.
    pub(super) interrupted_at: Option<Millis>,
    /// Its tree's resident memory as last sampled.
    pub(super) rss: u64,
    /// Over `max_cell_rss_bytes`: torn down when its turn ends.
    pub(super) over_memory: bool,
    /// Started differently from how its sid would start now: replaced at
    /// its sid's next turn.
    pub(super) outdated: bool,
}

impl Cell {
    fn view(&self, id: CellId) -> CellView {
        CellView {
            id,
            sid: self.sid.clone(),
            state: self.state,
            turn: self.turn,
            since: self.since,
            last_used: self.last_used,
            rss_bytes: self.rss,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Waiting {
    pub(super) sid: String,
    pub(super) arrived: Millis,
}

#[derive(Debug, Clone)]
pub(super) struct InFlight {
    pub(super) sid: String,
    pub(super) arrived: Millis,
}

/// The pool policy.
#[derive(Debug, Clone)]
pub struct Pool {
    pub(super) config: PoolConfig,
    pub(super) cells: BTreeMap<CellId, Cell>,
    /// The one live cell (any state) of each sid.
    pub(super) by_sid: HashMap<String, CellId>,
    /// Turns not yet given to a cell, in arrival order.
    pub(super) waiting: BTreeMap<TurnId, Waiting>,
    /// Turns given to a cell and not yet ended.
    pub(super) in_flight: HashMap<TurnId, InFlight>,
    pub(super) next_cell: CellId,
    pub(super) now: Millis,
    pub(super) shutting_down: bool,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Pool {
        Pool {
            config: PoolConfig {
                max_active_cells: config.max_active_cells.max(1),
                max_concurrent_spawns: config.max_concurrent_spawns.max(1),
                ..config
            },
            cells: BTreeMap::new(),
            by_sid: HashMap::new(),
            waiting: BTreeMap::new(),
            in_flight: HashMap::new(),
            next_cell: 0,
            now: 0,
            shutting_down: false,
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Cells in every state.
    pub fn cells(&self) -> Vec<CellView> {
        self.cells.iter().map(|(id, c)| c.view(*id)).collect()
    }

    /// One cell, looked up (not a scan of all of them: the worker asks for
    /// every chunk's cell).
    pub fn cell(&self, id: CellId) -> Option<CellView> {
        self.cells.get(&id).map(|c| c.view(id))
    }

    /// The live cell of `sid`, if any.
    pub fn cell_of(&self, sid: &str) -> Option<CellId> {
        self.by_sid.get(sid).copied()
    }

    /// Turns waiting for a cell, in arrival order, with their sid.
    pub fn waiting(&self) -> Vec<(TurnId, String)> {
        self.waiting
            .iter()
            .map(|(t, w)| (*t, w.sid.clone()))
            .collect()
    }

    /// Turns waiting for a cell.
    pub fn queued(&self) -> usize {
        self.waiting.len()
    }

    /// The earliest moment a timer of the policy expires, for the caller to
    /// send a `Tick` then.
    pub fn next_deadline(&self) -> Option<Millis> {
        let c = &self.config;
        let waiting = self
            .waiting
            .values()
            .map(|w| w.arrived.saturating_add(c.admission_timeout_ms));
        // The end of a hold, while it is ahead (a past one would be due
        // forever).
        let holds = self
            .waiting
            .values()
            .map(|w| w.arrived.saturating_add(c.eviction_hold_ms))
            .filter(|at| *at > self.now);
        let cells = self.cells.values().filter_map(|cell| match cell.state {
            CellState::Bootstrapping | CellState::Busy => {
                let first = (!cell.first_event)
                    .then_some(cell.since.saturating_add(c.first_event_timeout_ms));
                let silent = (cell.first_event)
                    .then_some(cell.last_activity.saturating_add(c.turn_idle_timeout_ms));
                let longest = c.max_turn_ms.map(|m| cell.since.saturating_add(m));
                let cancel = cell
                    .interrupted_at
                    .map(|t| t.saturating_add(c.cancel_grace_ms));
                first
                    .into_iter()
                    .chain(silent)
                    .chain(longest)
                    .chain(cancel)
                    .min()
            }
            CellState::Idle => Some(cell.since.saturating_add(c.idle_prune_ms)),
            CellState::TearingDown => None,
        });
        waiting.chain(holds).chain(cells).min()
    }

    /// Applies one event at time `now`; returns what to do, in order.
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Command> {
        self.handle_all(now, [event])
    }

    /// Applies events that arrived together, then decides once: a herd of
    /// prompts is seen whole, so a sid with a warm cell is served by it
    /// before any idle cell is evicted for the others.
    pub fn handle_all(
        &mut self,
        now: Millis,
        events: impl IntoIterator<Item = Event>,
    ) -> Vec<Command> {
        self.now = self.now.max(now);
        let mut out = Vec::new();
        for event in events {
            self.apply(event, &mut out);
        }
        self.expire(&mut out);
        self.memory(&mut out);
        self.pump(&mut out);
        out
    }

    fn apply(&mut self, event: Event, out: &mut Vec<Command>) {
        match event {
            Event::Prompt { turn, sid } => self.prompt(turn, sid, out),
            Event::FirstEvent { cell } => {
                if let Some(c) = self.cells.get_mut(&cell) {
                    if matches!(c.state, CellState::Bootstrapping | CellState::Busy) {
                        c.first_event = true;
                        c.state = CellState::Busy;
                        c.last_activity = self.now;
                    }
                }
            }
            Event::Activity { cell } => {
                if let Some(c) = self.cells.get_mut(&cell) {
                    c.last_activity = self.now;
                }
            }
            Event::TurnDone { cell } => self.turn_done(cell, out),
            Event::CellExited { cell } => self.cell_exited(cell, Outcome::CellDied, out),
            Event::SpawnFailed { cell } => self.cell_exited(cell, Outcome::SpawnFailed, out),
            Event::TeardownDone { cell } => {
                if let Some(c) = self.cells.remove(&cell) {
                    if let Some(turn) = c.turn {
                        self.end(turn, Outcome::CellDied, out);
                    }
                    if self.by_sid.get(&c.sid) == Some(&cell) {
                        self.by_sid.remove(&c.sid);
                    }
                }
            }
            Event::Cancel { sid } => self.cancel(&sid, out),
            Event::CancelTurn { turn } => self.cancel_turn(turn, out),
            Event::Cleanup { sid } => self.cleanup(&sid, out),
            Event::Rss { cell, bytes } => {
                if let Some(c) = self.cells.get_mut(&cell) {
                    c.rss = bytes;
                    // Judged again on each sample: a tree that shrank back
                    // under the limit (a tool's child exited) may stay.
                    c.over_memory = false;
                }
            }
            Event::CellOomKilled { cell } => {
                if self.retire(cell, Outcome::CellOom, out) == Some(false) {
                    out.push(Command::Teardown {
                        cell,
                        reason: Reason::Memory,
                    });
                }
            }
            Event::Outdated { cell, outdated } => {
                if let Some(c) = self.cells.get_mut(&cell) {
                    c.outdated = outdated;
                }
            }
            Event::Tick => {}
            Event::Shutdown => self.shutdown(out),
        }
    }

    fn prompt(&mut self, turn: TurnId, sid: String, out: &mut Vec<Command>) {
        if self.shutting_down {
            out.push(Command::End {
                turn,
                sid,
                outcome: Outcome::ShuttingDown,
                waited_ms: 0,
            });
            return;
        }
        if self.waiting.len() >= self.config.max_queued_prompts {
            let outcome = Outcome::Overloaded {
                retry_after_ms: self.retry_after(),
            };
            out.push(Command::End {
                turn,
                sid,
                outcome,
                waited_ms: 0,
            });
            return;
        }
        self.waiting.insert(
            turn,
            Waiting {
                sid,
                arrived: self.now,
            },
        );
    }

    /// A hint for `retryAfterMs`: about how long the queue ahead takes to
    /// drain at one second per turn per cell, within [1 s, 60 s].
    pub(super) fn retry_after(&self) -> Millis {
        let per_cell = self.waiting.len() as Millis * 1000 / self.config.max_active_cells as Millis;
        per_cell.clamp(1000, 60_000)
    }

    fn turn_done(&mut self, cell: CellId, out: &mut Vec<Command>) {
        let Some(c) = self.cells.get_mut(&cell) else {
            return;
        };
        let Some(turn) = c.turn.take() else { return };
        let outcome = if c.interrupted_at.take().is_some() {
            Outcome::Cancelled
        } else {
            Outcome::Done
        };
        if c.state != CellState::TearingDown {
            c.state = CellState::Idle;
            c.since = self.now;
        }
        c.first_event = false;
        let over_memory = c.over_memory && c.state != CellState::TearingDown;
        self.end(turn, outcome, out);
        if over_memory {
            self.teardown(cell, Reason::Memory, Outcome::Done, out);
        }
    }

    fn cell_exited(&mut self, cell: CellId, outcome: Outcome, out: &mut Vec<Command>) {
        if self.retire(cell, outcome, out) == Some(false) {
            // Its children may still run: the teardown path cleans them.
            out.push(Command::Teardown {
                cell,
                reason: Reason::Crashed,
            });
        }
    }

    /// Marks a cell as tearing down and ends the turn it served with
    /// `outcome` (a pending cancel wins). Returns whether it was tearing down
    /// already, `None` for an unknown cell.
    pub(super) fn retire(
        &mut self,
        id: CellId,
        outcome: Outcome,
        out: &mut Vec<Command>,
    ) -> Option<bool> {
        let now = self.now;
        let c = self.cells.get_mut(&id)?;
        let already = c.state == CellState::TearingDown;
        if !already {
            c.state = CellState::TearingDown;
            c.since = now;
        }
        let turn = c.turn.take();
        let cancelled = c.interrupted_at.take().is_some();
        if let Some(turn) = turn {
            self.end(
                turn,
                if cancelled {
                    Outcome::Cancelled
                } else {
                    outcome
                },
                out,
            );
        }
        Some(already)
    }

    fn cancel(&mut self, sid: &str, out: &mut Vec<Command>) {
        // A cell serving the sid: interrupt, with a grace to finish.
        if let Some(&id) = self.by_sid.get(sid) {
            let now = self.now;
            if let Some(c) = self.cells.get_mut(&id) {
                if let (Some(turn), None) = (c.turn, c.interrupted_at) {
                    if matches!(c.state, CellState::Busy | CellState::Bootstrapping) {
                        c.interrupted_at = Some(now);
                        out.push(Command::Interrupt { cell: id, turn });
                        return;
                    }
                }
            }
        }
        // Else the sid's earliest waiting turn.
        let first = self
            .waiting
            .iter()
            .find(|(_, w)| w.sid == sid)
            .map(|(t, _)| *t);
        if let Some(turn) = first {
            self.end_waiting(turn, Outcome::Cancelled, out);
        }
    }

    fn cancel_turn(&mut self, turn: TurnId, out: &mut Vec<Command>) {
        if self.waiting.contains_key(&turn) {
            return self.end_waiting(turn, Outcome::Cancelled, out);
        }
        let now = self.now;
        let serving = self
            .cells
            .iter_mut()
            .find(|(_, c)| c.turn == Some(turn) && c.interrupted_at.is_none());
        if let Some((&id, c)) = serving {
            if matches!(c.state, CellState::Busy | CellState::Bootstrapping) {
                c.interrupted_at = Some(now);
                out.push(Command::Interrupt { cell: id, turn });
            }
        }
    }

    fn cleanup(&mut self, sid: &str, out: &mut Vec<Command>) {
        let turns: Vec<TurnId> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.sid == sid)
            .map(|(t, _)| *t)
            .collect();
        for turn in turns {
            self.end_waiting(turn, Outcome::CleanedUp, out);
        }
        if let Some(&id) = self.by_sid.get(sid) {
            self.teardown(id, Reason::Cleanup, Outcome::CleanedUp, out);
        }
    }

    fn shutdown(&mut self, out: &mut Vec<Command>) {
        self.shutting_down = true;
        let turns: Vec<TurnId> = self.waiting.keys().copied().collect();
        for turn in turns {
            self.end_waiting(turn, Outcome::ShuttingDown, out);
        }
        let ids: Vec<CellId> = self.cells.keys().copied().collect();
        for id in ids {
            self.teardown(id, Reason::Shutdown, Outcome::ShuttingDown, out);
        }
    }

    /// Starts a teardown; a turn in flight ends with `outcome`.
    pub(super) fn teardown(
        &mut self,
        id: CellId,
        reason: Reason,
        outcome: Outcome,
        out: &mut Vec<Command>,
    ) {
        if self.retire(id, outcome, out) == Some(false) {
            out.push(Command::Teardown { cell: id, reason });
        }
    }

    pub(super) fn end_waiting(&mut self, turn: TurnId, outcome: Outcome, out: &mut Vec<Command>) {
        if let Some(w) = self.waiting.remove(&turn) {
            out.push(Command::End {
                turn,
                sid: w.sid,
                outcome,
                waited_ms: self.now.saturating_sub(w.arrived),
            });
        }
    }

    pub(super) fn end(&mut self, turn: TurnId, outcome: Outcome, out: &mut Vec<Command>) {
        if let Some(f) = self.in_flight.remove(&turn) {
            out.push(Command::End {
                turn,
                sid: f.sid,
                outcome,
                waited_ms: self.now.saturating_sub(f.arrived),
            });
        }
    }
}
