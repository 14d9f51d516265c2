//! Turns while humd is away: the book ([`super::book::Turns`]) decides
//! which turns stop and when; here they are stopped (a `CancelTurn` for the
//! pool each), logged, and the next humd is told what is still held.

use super::*;

impl Actor {
    /// The link to humd is gone.
    pub(super) fn humd_gone(&mut self) {
        // Prompts of a batch not decided on yet join the queue first.
        self.flush_prompts();
        let waiting: Vec<TurnId> = self.pool.waiting().into_iter().map(|(t, _)| t).collect();
        tracing::info!(
            event = "worker.humd_gone",
            dropped = waiting.len(),
            running = self.turns.running().len(),
            grace_ms = self.turns.grace().as_millis() as u64,
            "humd went away: queued turns dropped, running ones end after the grace"
        );
        let stop = self.turns.humd_gone(Instant::now(), waiting);
        self.abandon(stop);
    }

    /// Nobody came back for the running turns in time: each is stopped.
    pub(super) fn humd_gone_grace_over(&mut self) {
        let stop = self.turns.grace_over();
        self.abandon(stop);
    }

    /// A humd linked: it hears of every turn still held (and decides), and
    /// how many were given up while there was none.
    pub(super) fn tell_turns_held(&mut self) {
        let (stop, report) = self.turns.humd_linked();
        self.abandon(stop);
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

    /// Ends turns nobody waits for (dropped if queued, interrupted if
    /// running).
    fn abandon(&mut self, turns: Vec<TurnId>) {
        for turn in turns {
            if let Some(t) = self.turns.get(turn) {
                tracing::info!(event = "turn.abandoned", sid = %t.sid, turn, rid = t.rid.as_deref(), why = "humd_gone", "nobody waits for this turn");
            }
            self.event(Event::CancelTurn { turn });
        }
    }
}
