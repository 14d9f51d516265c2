//! Deciding who gets a cell: waiting turns given to warm cells, new cells
//! spawned within the cap and the spawn limit, idle cells evicted (least
//! recently used first, after the eviction hold) for turns that need a
//! slot, and the deadlines that expire turns and cells.

use super::policy::{Cell, InFlight, Pool};
use super::types::*;
use crate::cell::Reason;
use std::collections::BTreeSet;

impl Pool {
    /// Timers: admission timeout, first-event timeout, cancel grace, idle
    /// pruning.
    pub(super) fn expire(&mut self, out: &mut Vec<Command>) {
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
    pub(super) fn pump(&mut self, out: &mut Vec<Command>) {
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
                Some((id, CellState::Idle)) if self.cells[&id].outdated => {
                    // Its next turn goes to a new cell started as the sid
                    // would start now; the turn waits for the slot.
                    self.teardown(id, Reason::Reconfigured, Outcome::Done, out);
                }
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
                            rss: 0,
                            over_memory: false,
                            outdated: false,
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

    /// Memory: a cell over `max_cell_rss_bytes` goes when idle (at once)
    /// or when its turn ends, or at once past twice the limit mid-turn;
    /// while every cell together is over `max_pool_rss_bytes`, idle cells
    /// go, least recently used first, until the rest fit. A busy cell is
    /// never evicted for the pool's sake (as for the cap).
    pub(super) fn memory(&mut self, out: &mut Vec<Command>) {
        if let Some(limit) = self.config.max_cell_rss_bytes {
            let mut doomed = Vec::new();
            for (id, c) in self.cells.iter_mut() {
                if c.rss <= limit {
                    continue;
                }
                match c.state {
                    CellState::Idle => doomed.push((*id, Outcome::Done)),
                    CellState::Busy | CellState::Bootstrapping
                        if c.rss > limit.saturating_mul(2) =>
                    {
                        // The cell_oom wins over a pending cancel.
                        c.interrupted_at = None;
                        doomed.push((*id, Outcome::CellOom));
                    }
                    CellState::Busy | CellState::Bootstrapping => c.over_memory = true,
                    CellState::TearingDown => {}
                }
            }
            for (id, outcome) in doomed {
                self.teardown(id, Reason::Memory, outcome, out);
            }
        }
        if let Some(limit) = self.config.max_pool_rss_bytes {
            let mut total: u64 = self
                .cells
                .values()
                .filter(|c| c.state != CellState::TearingDown)
                .map(|c| c.rss)
                .sum();
            if total <= limit {
                return;
            }
            let mut idle: Vec<(Millis, CellId, u64)> = self
                .cells
                .iter()
                .filter(|(_, c)| c.state == CellState::Idle && c.rss > 0)
                .map(|(id, c)| (c.last_used, *id, c.rss))
                .collect();
            idle.sort_unstable();
            for (_, id, rss) in idle {
                if total <= limit {
                    break;
                }
                total = total.saturating_sub(rss);
                self.teardown(id, Reason::MemoryPressure, Outcome::Done, out);
            }
        }
    }

    pub(super) fn live(&self) -> usize {
        self.cells.len()
    }

    pub(super) fn bootstrapping(&self) -> usize {
        self.cells
            .values()
            .filter(|c| c.state == CellState::Bootstrapping)
            .count()
    }

    pub(super) fn can_spawn(&self) -> bool {
        self.live() < self.config.max_active_cells
            && self.bootstrapping() < self.config.max_concurrent_spawns
    }

    /// Evicts least-recently-used idle cells for `blocked` waiting sids, no
    /// more than can start bootstrapping soon, counting slots already free or
    /// being freed.
    pub(super) fn evict_for(&mut self, blocked: usize, out: &mut Vec<Command>) {
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
}
