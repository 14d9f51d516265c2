use crate::cell::Reason;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;
/// A turn: one prompt, numbered by the caller in arrival order.
pub type TurnId = u64;
/// A cell slot, numbered by the pool.
pub type CellId = u64;

/// The knobs of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub idle_prune_ms: Millis,
    /// After an interrupt, how long the cell has to end the turn before it
    /// is torn down.
    pub cancel_grace_ms: Millis,
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
            turn_idle_timeout_ms: 600_000,
            max_turn_ms: None,
            eviction_hold_ms: 0,
        }
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
    /// Forget `sid`: cancel its turns, tear down its cell.
    Cleanup { sid: String },
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
}

impl Outcome {
    /// The thrum error code, for outcomes that are errors.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Outcome::Done | Outcome::Cancelled => None,
            Outcome::Overloaded { .. } => Some("overloaded"),
            Outcome::CellTimeout | Outcome::TurnTimeout => Some("cell_timeout"),
            Outcome::CellDied => Some("cell_died"),
            Outcome::SpawnFailed => Some("spawn_failed"),
            Outcome::CleanedUp => Some("cleaned_up"),
            Outcome::ShuttingDown => Some("shutting_down"),
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
}

#[derive(Debug, Clone)]
struct Cell {
    sid: String,
    state: CellState,
    turn: Option<TurnId>,
    /// Whether the current turn's first event was seen.
    first_event: bool,
    since: Millis,
    /// When the current turn last showed output (its start until then).
    last_activity: Millis,
    last_used: Millis,
    /// When an interrupt was sent, for the cancel grace.
    interrupted_at: Option<Millis>,
}

#[derive(Debug, Clone)]
struct Waiting {
    sid: String,
    arrived: Millis,
}

#[derive(Debug, Clone)]
struct InFlight {
    sid: String,
    arrived: Millis,
}

/// The pool policy.
#[derive(Debug, Clone)]
pub struct Pool {
    config: PoolConfig,
    cells: BTreeMap<CellId, Cell>,
    /// The one live cell (any state) of each sid.
    by_sid: HashMap<String, CellId>,
    /// Turns not yet given to a cell, in arrival order.
    waiting: BTreeMap<TurnId, Waiting>,
    /// Turns given to a cell and not yet ended.
    in_flight: HashMap<TurnId, InFlight>,
    next_cell: CellId,
    now: Millis,
    shutting_down: bool,
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
        self.cells
            .iter()
            .map(|(id, c)| CellView {
                id: *id,
                sid: c.sid.clone(),
                state: c.state,
                turn: c.turn,
                since: c.since,
                last_used: c.last_used,
            })
            .collect()
    }

    pub fn cell(&self, id: CellId) -> Option<CellView> {
        self.cells().into_iter().find(|c| c.id == id)
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
            Event::Cleanup { sid } => self.cleanup(&sid, out),
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
    fn retry_after(&self) -> Millis {
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
        self.end(turn, outcome, out);
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
    fn retire(&mut self, id: CellId, outcome: Outcome, out: &mut Vec<Command>) -> Option<bool> {
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
    fn teardown(&mut self, id: CellId, reason: Reason, outcome: Outcome, out: &mut Vec<Command>) {
        if self.retire(id, outcome, out) == Some(false) {
            out.push(Command::Teardown { cell: id, reason });
        }
    }

    /// Timers: admission timeout, first-event timeout, cancel grace, idle
    /// pruning.
    fn expire(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        let c = self.config;
        let late: Vec<TurnId> = self
            .waiting
            .iter()
            .filter(|(_, w)| now >= w.arrived.saturating_add(c.admission_timeout_ms))
            .map(|(t, _)| *t)
            .collect();
        for turn in late {
            let outcome = Outcome::Overloaded {
                retry_after_ms: self.retry_after(),
            };
            self.end_waiting(turn, outcome, out);
        }
        let mut doomed = Vec::new();
        for (id, cell) in &self.cells {
            match cell.state {
                CellState::Bootstrapping | CellState::Busy => {
                    if !cell.first_event
                        && now >= cell.since.saturating_add(c.first_event_timeout_ms)
                    {
                        doomed.push((*id, Reason::Timeout, Outcome::CellTimeout));
                    } else if (cell.first_event
                        && now >= cell.last_activity.saturating_add(c.turn_idle_timeout_ms))
                        || c.max_turn_ms
                            .is_some_and(|m| now >= cell.since.saturating_add(m))
                    {
                        doomed.push((*id, Reason::Timeout, Outcome::TurnTimeout));
                    } else if cell
                        .interrupted_at
                        .is_some_and(|t| now >= t.saturating_add(c.cancel_grace_ms))
                    {
                        doomed.push((*id, Reason::Cancelled, Outcome::Cancelled));
                    }
                }
                CellState::Idle if now >= cell.since.saturating_add(c.idle_prune_ms) => {
                    doomed.push((*id, Reason::Idle, Outcome::Done));
                }
                _ => {}
            }
        }
        for (id, reason, outcome) in doomed {
            if let Some(cell) = self.cells.get_mut(&id) {
                // The timeout wins over a pending cancel: the turn never
                // began, or went silent.
                if matches!(outcome, Outcome::CellTimeout | Outcome::TurnTimeout) {
                    cell.interrupted_at = None;
                }
            }
            self.teardown(id, reason, outcome, out);
        }
    }

    /// Gives waiting turns to cells: reuse, spawn, or evict to make room.
    fn pump(&mut self, out: &mut Vec<Command>) {
        if self.shutting_down {
            return;
        }
        let mut seen_sids: BTreeSet<String> = BTreeSet::new();
        // Distinct sids blocked for want of a slot, in arrival order.
        let mut need_slot: Vec<TurnId> = Vec::new();
        let turns: Vec<TurnId> = self.waiting.keys().copied().collect();
        for turn in turns {
            let sid = self.waiting[&turn].sid.clone();
            if !seen_sids.insert(sid.clone()) {
                continue; // an earlier turn of this sid goes first
            }
            match self.by_sid.get(&sid).map(|id| (*id, self.cells[id].state)) {
                Some((id, CellState::Idle)) => {
                    let w = self.waiting.remove(&turn).expect("waiting turn");
                    let cell = self.cells.get_mut(&id).expect("live cell");
                    cell.state = CellState::Busy;
                    cell.turn = Some(turn);
                    cell.first_event = false;
                    cell.since = self.now;
                    cell.last_activity = self.now;
                    cell.last_used = self.now;
                    self.in_flight.insert(
                        turn,
                        InFlight {
                            sid: w.sid,
                            arrived: w.arrived,
                        },
                    );
                    out.push(Command::Send { cell: id, turn });
                }
                Some(_) => {} // busy, bootstrapping or tearing down: wait for it
                // Whether a slot is free does not depend on the turn, so once
                // one turn waits for a slot every later one does: FIFO.
                None if self.can_spawn() => {
                    let w = self.waiting.remove(&turn).expect("waiting turn");
                    let id = self.next_cell;
                    self.next_cell += 1;
                    self.cells.insert(
                        id,
                        Cell {
                            sid: sid.clone(),
                            state: CellState::Bootstrapping,
                            turn: Some(turn),
                            first_event: false,
                            since: self.now,
                            last_activity: self.now,
                            last_used: self.now,
                            interrupted_at: None,
                        },
                    );
                    self.by_sid.insert(sid.clone(), id);
                    self.in_flight.insert(
                        turn,
                        InFlight {
                            sid: sid.clone(),
                            arrived: w.arrived,
                        },
                    );
                    out.push(Command::Spawn {
                        cell: id,
                        sid,
                        turn,
                    });
                }
                None => {
                    let held_since = self.waiting[&turn].arrived;
                    if self.now.saturating_sub(held_since) >= self.config.eviction_hold_ms {
                        need_slot.push(turn);
                    }
                }
            }
        }
        self.evict_for(need_slot.len(), out);
    }

    fn live(&self) -> usize {
        self.cells.len()
    }

    fn bootstrapping(&self) -> usize {
        self.cells
            .values()
            .filter(|c| c.state == CellState::Bootstrapping)
            .count()
    }

    fn can_spawn(&self) -> bool {
        self.live() < self.config.max_active_cells
            && self.bootstrapping() < self.config.max_concurrent_spawns
    }

    /// Evicts least-recently-used idle cells for `blocked` waiting sids, no
    /// more than can start bootstrapping soon, counting slots already free or
    /// being freed.
    fn evict_for(&mut self, blocked: usize, out: &mut Vec<Command>) {
        if blocked == 0 {
            return;
        }
        let usable = blocked.min(
            self.config
                .max_concurrent_spawns
                .saturating_sub(self.bootstrapping()),
        );
        let free = self.config.max_active_cells.saturating_sub(self.live());
        let freeing = self
            .cells
            .values()
            .filter(|c| c.state == CellState::TearingDown)
            .count();
        let wanted = usable.saturating_sub(free + freeing);
        let mut idle: Vec<(Millis, CellId)> = self
            .cells
            .iter()
            .filter(|(_, c)| c.state == CellState::Idle)
            .map(|(id, c)| (c.last_used, *id))
            .collect();
        idle.sort_unstable();
        for (_, id) in idle.into_iter().take(wanted) {
            self.teardown(id, Reason::Evicted, Outcome::Done, out);
        }
    }

    fn end_waiting(&mut self, turn: TurnId, outcome: Outcome, out: &mut Vec<Command>) {
        if let Some(w) = self.waiting.remove(&turn) {
            out.push(Command::End {
                turn,
                sid: w.sid,
                outcome,
                waited_ms: self.now.saturating_sub(w.arrived),
            });
        }
    }

    fn end(&mut self, turn: TurnId, outcome: Outcome, out: &mut Vec<Command>) {
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
