//! Turns while humd is away. When the link to humd drops, every asker's
//! connection went with it, so nobody waits for what the worker holds: a
//! turn not yet given a cell is dropped at once (nothing is admitted for an
//! asker who is gone), and a running one is interrupted at once, or after
//! humd's grace for gone askers (its breath's `askerGoneGraceMs`), within
//! which a returning asker may claim it through the next humd. When a humd
//! links, it is told the turns still held and how many were given up; it
//! hands each to its asker coming back, or cancels it.

use super::*;
use crate::reports::{HeldTurn, WorkerTurns};

impl Actor {
    /// The link to humd is gone.
    pub(super) fn humd_gone(&mut self) {
        // Prompts of a batch not decided on yet join the queue first.
        self.flush_prompts();
        let waiting: Vec<TurnId> = self.pool.waiting().into_iter().map(|(t, _)| t).collect();
        tracing::info!(
            event = "worker.humd_gone",
            dropped = waiting.len(),
            running = self.running().len(),
            grace_ms = self.asker_gone_grace.as_millis() as u64,
            "humd went away: queued turns dropped, running ones end after the grace"
        );
        for turn in waiting {
            self.abandon(turn);
        }
        if self.asker_gone_grace.is_zero() {
            self.humd_gone_grace_over();
        } else {
            self.humd_gone_until = Some(Instant::now() + self.asker_gone_grace);
        }
    }

    /// Nobody came back for the running turns in time: each is stopped.
    pub(super) fn humd_gone_grace_over(&mut self) {
        self.humd_gone_until = None;
        for turn in self.running() {
            self.abandon(turn);
        }
    }

    /// A humd linked: it hears of every turn still held (and decides), and
    /// how many were given up while there was none.
    pub(super) fn tell_turns_held(&mut self) {
        self.humd_gone_until = None;
        // A turn without a rid cannot be named to humd: nobody can claim it.
        let nameless: Vec<TurnId> = self
            .turns
            .iter()
            .filter(|(_, t)| !t.interrupted && t.rid.is_none())
            .map(|(id, _)| *id)
            .collect();
        for turn in nameless {
            self.abandon(turn);
        }
        let mut held: Vec<(TurnId, HeldTurn)> = self
            .turns
            .iter()
            .filter(|(_, t)| !t.interrupted)
            .filter_map(|(id, t)| {
                Some((
                    *id,
                    HeldTurn {
                        sid: t.sid.clone(),
                        rid: t.rid.clone()?,
                        bee: t.bee.clone(),
                        model: t.model.clone(),
                    },
                ))
            })
            .collect();
        held.sort_by_key(|(id, _)| *id);
        let report = WorkerTurns {
            turns: held.into_iter().map(|(_, h)| h).collect(),
            abandoned: std::mem::take(&mut self.abandoned_unlinked),
        };
        if !report.turns.is_empty() || report.abandoned > 0 {
            tracing::info!(
                event = "worker.turns_held",
                held = report.turns.len(),
                abandoned = report.abandoned,
                "humd told the turns this worker holds"
            );
        }
        for line in report.to_lines(thrum::DEFAULT_MAX_LINE) {
            self.uplink.push(line);
        }
    }

    /// Turns given a cell and not being stopped.
    fn running(&self) -> Vec<TurnId> {
        self.turns
            .iter()
            .filter(|(_, t)| t.cell.is_some() && !t.interrupted)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Ends a turn nobody waits for (dropped if queued, interrupted if
    /// running), and counts it for the next humd.
    fn abandon(&mut self, turn: TurnId) {
        self.abandoned_unlinked += 1;
        if let Some(t) = self.turns.get(&turn) {
            tracing::info!(event = "turn.abandoned", sid = %t.sid, turn, rid = t.rid.as_deref(), why = "humd_gone", "nobody waits for this turn");
        }
        self.event(Event::CancelTurn { turn });
    }
}
