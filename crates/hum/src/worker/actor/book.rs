//! The worker's book of turns, from a prompt's arrival to its end, and what
//! becomes of them while humd is away: a plain value with no I/O and no
//! clock (time is passed in). What it decides to stop comes back as turn
//! ids; the actor hands those to the pool as `CancelTurn` events.
//!
//! When the link to humd drops, every asker's connection went with it, so
//! nobody waits for what the worker holds: a turn not yet given a cell is
//! dropped at once (nothing is admitted for an asker who is gone), and a
//! running one is stopped at once, or after humd's grace for gone askers
//! (its breath's `askerGoneGraceMs`), within which a returning asker may
//! claim it through the next humd. When a humd links, it is told the turns
//! still held and how many were given up.

use crate::pool::{CellId, TurnId};
use crate::reports::{HeldTurn, WorkerTurns};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use thrum::Prompt;

/// The longest a worker keeps turns running for askers that may come back
/// after humd went away, whatever humd said (humd's own bound).
pub(super) const MAX_ASKER_GONE_GRACE: Duration =
    Duration::from_millis(crate::reports::MAX_ASKER_GONE_GRACE_MS);

/// One turn, from its prompt's arrival to its end: everything the actor
/// keeps about it, in one place.
#[derive(Debug)]
pub(super) struct Turn {
    pub sid: String,
    pub rid: Option<String>,
    /// When the prompt arrived, on the actor's clock.
    pub arrived: u64,
    /// The prompt, until a cell is given it (then it is written and gone).
    pub prompt: Option<Prompt>,
    /// The cell serving it, once admitted.
    pub cell: Option<CellId>,
    /// Its asker's name as humd gave it, and the model asked for: what
    /// humd files its usage under, told again after humd restarts.
    pub bee: Option<String>,
    pub model: Option<String>,
    /// Its cell was asked to stop it: humd needs not hear of it again.
    pub interrupted: bool,
}

/// A prompt whose sid and rid name a turn this worker runs already (humd
/// forwarded its asker's claim before it heard of the turn): the same
/// turn, not run twice.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SameTurn(pub TurnId);

#[derive(Debug, Default)]
pub(super) struct Turns {
    turns: HashMap<TurnId, Turn>,
    next: TurnId,
    /// humd's word on how long a gone asker's turns wait for it: while
    /// humd is away, every asker is.
    grace: Duration,
    /// While unlinked: when the turns still running are stopped.
    humd_gone_until: Option<Instant>,
    /// Turns given up since humd went away, for the next humd.
    abandoned_unlinked: u64,
}

impl Turns {
    /// Takes humd's grace for gone askers, bounded.
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace.min(MAX_ASKER_GONE_GRACE);
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Books a prompt that arrived at `arrived`; a prompt naming a turn in
    /// flight is that turn.
    pub fn add(&mut self, turn: Turn) -> Result<TurnId, SameTurn> {
        if let Some(rid) = &turn.rid {
            if let Some(same) = self.named(&turn.sid, rid) {
                return Err(SameTurn(same));
            }
        }
        let id = self.next;
        self.next += 1;
        self.turns.insert(id, turn);
        Ok(id)
    }

    /// The oldest turn of `sid` with rid `rid` not being stopped already.
    pub fn named(&self, sid: &str, rid: &str) -> Option<TurnId> {
        self.turns
            .iter()
            .filter(|(_, t)| !t.interrupted && t.sid == sid && t.rid.as_deref() == Some(rid))
            .map(|(id, _)| *id)
            .min()
    }

    pub fn get(&self, turn: TurnId) -> Option<&Turn> {
        self.turns.get(&turn)
    }

    /// The turn's prompt, handed over once, to the cell that serves it.
    pub fn take_prompt(&mut self, turn: TurnId) -> Option<Prompt> {
        self.turns.get_mut(&turn)?.prompt.take()
    }

    /// Records that `cell` serves `turn`; returns the turn's rid.
    pub fn serve(&mut self, turn: TurnId, cell: CellId) -> Option<String> {
        let t = self.turns.get_mut(&turn)?;
        t.cell = Some(cell);
        t.rid.clone()
    }

    /// Its cell was asked to stop it.
    pub fn interrupted(&mut self, turn: TurnId) {
        if let Some(t) = self.turns.get_mut(&turn) {
            t.interrupted = true;
        }
    }

    /// The turn ended.
    pub fn remove(&mut self, turn: TurnId) -> Option<Turn> {
        self.turns.remove(&turn)
    }

    /// Turns given a cell and not being stopped, oldest first.
    pub fn running(&self) -> Vec<TurnId> {
        let mut running: Vec<TurnId> = self
            .turns
            .iter()
            .filter(|(_, t)| t.cell.is_some() && !t.interrupted)
            .map(|(id, _)| *id)
            .collect();
        running.sort_unstable();
        running
    }

    /// When the running turns of a gone humd's askers are stopped.
    pub fn humd_gone_until(&self) -> Option<Instant> {
        self.humd_gone_until
    }

    /// The link to humd dropped at `now`, with `waiting` turns not yet
    /// given a cell: returns the turns to stop now (the waiting ones, and
    /// the running ones too without a grace).
    pub fn humd_gone(&mut self, now: Instant, waiting: Vec<TurnId>) -> Vec<TurnId> {
        let mut stop = waiting;
        if self.grace.is_zero() {
            stop.extend(self.running());
        } else {
            self.humd_gone_until = Some(now + self.grace);
        }
        self.abandoned_unlinked += stop.len() as u64;
        stop
    }

    /// The grace ran out with no humd back: the running turns to stop.
    pub fn grace_over(&mut self) -> Vec<TurnId> {
        self.humd_gone_until = None;
        let stop = self.running();
        self.abandoned_unlinked += stop.len() as u64;
        stop
    }

    /// A humd linked: the turns to stop (a turn without a rid cannot be
    /// named to humd, so nobody can claim it), and the report humd hears
    /// of every other turn still held and of how many were given up.
    pub fn humd_linked(&mut self) -> (Vec<TurnId>, WorkerTurns) {
        self.humd_gone_until = None;
        let mut nameless: Vec<TurnId> = self
            .turns
            .iter()
            .filter(|(_, t)| !t.interrupted && t.rid.is_none())
            .map(|(id, _)| *id)
            .collect();
        nameless.sort_unstable();
        self.abandoned_unlinked += nameless.len() as u64;
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
        (nameless, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(sid: &str, rid: Option<&str>) -> Turn {
        Turn {
            sid: sid.into(),
            rid: rid.map(str::to_owned),
            arrived: 0,
            prompt: None,
            cell: None,
            bee: Some("bee".into()),
            model: Some("m".into()),
            interrupted: false,
        }
    }

    #[test]
    fn a_prompt_naming_a_turn_in_flight_is_that_turn_until_it_is_being_stopped() {
        let mut t = Turns::default();
        let first = t.add(turn("s", Some("r"))).unwrap();
        assert_eq!(t.add(turn("s", Some("r"))), Err(SameTurn(first)));
        // Another sid, or no rid, is another turn.
        assert!(t.add(turn("other", Some("r"))).is_ok());
        assert!(t.add(turn("s", None)).is_ok());
        assert!(t.add(turn("s", None)).is_ok());
        t.interrupted(first);
        assert_eq!(t.named("s", "r"), None);
        let again = t.add(turn("s", Some("r"))).unwrap();
        assert_ne!(again, first);
    }

    #[test]
    fn a_turns_prompt_is_handed_over_once_and_its_rid_told_to_its_cell() {
        let mut t = Turns::default();
        let mut b = turn("s", Some("r"));
        b.prompt = Some(Prompt::default());
        let id = t.add(b).unwrap();
        assert!(t.take_prompt(id).is_some());
        assert!(t.take_prompt(id).is_none());
        assert_eq!(t.serve(id, 7), Some("r".into()));
        assert_eq!(t.running(), [id]);
        assert_eq!(t.remove(id).map(|x| x.cell), Some(Some(7)));
        assert!(t.running().is_empty());
    }

    #[test]
    fn when_humd_goes_waiting_turns_stop_at_once_and_running_ones_after_the_grace() {
        let now = Instant::now();
        let mut t = Turns::default();
        t.set_grace(Duration::from_secs(30));
        let running = t.add(turn("a", Some("ra"))).unwrap();
        t.serve(running, 1);
        let waiting = t.add(turn("b", Some("rb"))).unwrap();
        assert_eq!(t.humd_gone(now, vec![waiting]), [waiting]);
        assert_eq!(t.humd_gone_until(), Some(now + Duration::from_secs(30)));
        assert_eq!(t.grace_over(), [running]);
        assert_eq!(t.humd_gone_until(), None);
        // The next humd hears that two were given up.
        t.interrupted(running);
        t.remove(waiting);
        let (stop, report) = t.humd_linked();
        assert!(stop.is_empty());
        assert_eq!((report.turns.len(), report.abandoned), (0, 2));
        // And the count is told once.
        assert_eq!(t.humd_linked().1.abandoned, 0);
    }

    #[test]
    fn without_a_grace_running_turns_stop_with_the_waiting_ones() {
        let now = Instant::now();
        let mut t = Turns::default();
        let running = t.add(turn("a", Some("ra"))).unwrap();
        t.serve(running, 1);
        let waiting = t.add(turn("b", Some("rb"))).unwrap();
        assert_eq!(t.humd_gone(now, vec![waiting]), [waiting, running]);
        assert_eq!(t.humd_gone_until(), None);
    }

    #[test]
    fn a_humd_back_within_the_grace_hears_each_turn_held_and_the_nameless_ones_stop() {
        let now = Instant::now();
        let mut t = Turns::default();
        t.set_grace(Duration::from_secs(30));
        let named = t.add(turn("a", Some("ra"))).unwrap();
        t.serve(named, 1);
        let nameless = t.add(turn("b", None)).unwrap();
        t.serve(nameless, 2);
        let stopping = t.add(turn("c", Some("rc"))).unwrap();
        t.interrupted(stopping);
        assert!(t.humd_gone(now, vec![]).is_empty());
        let (stop, report) = t.humd_linked();
        assert_eq!(stop, [nameless]);
        assert_eq!(t.humd_gone_until(), None, "the grace timer stops");
        assert_eq!(
            report.turns,
            [HeldTurn {
                sid: "a".into(),
                rid: "ra".into(),
                bee: Some("bee".into()),
                model: Some("m".into())
            }]
        );
        assert_eq!(report.abandoned, 1);
    }

    #[test]
    fn humds_grace_is_bounded() {
        let mut t = Turns::default();
        t.set_grace(Duration::from_secs(u64::MAX / 4));
        assert_eq!(t.grace(), MAX_ASKER_GONE_GRACE);
    }
}
