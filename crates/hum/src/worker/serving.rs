//! The turn a cell serves right now, shared by the actor (which starts,
//! interrupts and ends turns) and the cell's runner (which forwards the
//! cell's output for that turn straight to the [`Uplink`]).
//!
//! Whether a line is still wanted and sending it happen under one lock, so
//! once the actor has ended a turn (and said so to humd) no line of that
//! turn can follow its end.

use super::uplink::Uplink;
use crate::pool::TurnId;
use std::sync::{Mutex, MutexGuard};
use thrum::{Body, Tone};

/// Who a turn's output is for.
#[derive(Debug, Clone)]
pub struct ServedTurn {
    pub turn: TurnId,
    pub sid: String,
    pub rid: Option<String>,
    /// The agent was asked to stop: its output is no longer forwarded, the
    /// worker's own `cancelled` finish ends the turn.
    pub interrupted: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Serving(Mutex<Option<ServedTurn>>);

/// What [`Serving::forward`] did with a line.
#[derive(Debug)]
pub enum Forwarded {
    /// Sent (or dropped because the turn is over: nobody wants it).
    Done,
    /// Too much is held for humd: the line, to try again after a drain.
    Wait(Vec<u8>),
}

impl Serving {
    fn slot(&self) -> MutexGuard<'_, Option<ServedTurn>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cell was given `turn`.
    pub fn start(&self, turn: TurnId, sid: &str, rid: Option<&str>) {
        *self.slot() = Some(ServedTurn {
            turn,
            sid: sid.to_owned(),
            rid: rid.map(str::to_owned),
            interrupted: false,
        });
    }

    /// Stops forwarding `turn`'s output (it is being interrupted).
    pub fn interrupt(&self, turn: TurnId) {
        if let Some(t) = self.slot().as_mut().filter(|t| t.turn == turn) {
            t.interrupted = true;
        }
    }

    /// `turn` is over; nothing more of it is forwarded.
    pub fn end(&self, turn: TurnId) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|t| t.turn == turn) {
            *slot = None;
        }
    }

    /// `body` as a line for the turn whose output is wanted now, if any:
    /// the turn's sid and rid attached once, here.
    pub fn line_for(&self, body: Body) -> Option<(TurnId, Vec<u8>)> {
        let slot = self.slot();
        let t = slot.as_ref().filter(|t| !t.interrupted)?;
        Some((t.turn, encode(t, body)?))
    }

    /// Sends the turn's first event (never waits; one line per turn).
    pub fn start_event(&self, uplink: &Uplink, body: Body) {
        let slot = self.slot();
        if let Some(line) = slot
            .as_ref()
            .filter(|t| !t.interrupted)
            .and_then(|t| encode(t, body))
        {
            uplink.push(line);
        }
    }

    /// The cell said its turn is over: the turn, which ends here, and its
    /// last event as a line (none when the turn was interrupted). The
    /// actor sends that line together with the cell's new state, so whoever
    /// reads the end and asks for status at once sees the cell idle.
    pub fn finish(&self, body: Body) -> Option<(ServedTurn, Option<Vec<u8>>)> {
        let turn = self.slot().take()?;
        let line = (!turn.interrupted).then(|| encode(&turn, body)).flatten();
        Some((turn, line))
    }

    /// Sends `line` for `turn` if that turn's output is still wanted.
    pub fn forward(&self, uplink: &Uplink, turn: TurnId, line: Vec<u8>) -> Forwarded {
        let slot = self.slot();
        if !slot
            .as_ref()
            .is_some_and(|t| t.turn == turn && !t.interrupted)
        {
            return Forwarded::Done;
        }
        match uplink.try_push(line) {
            Ok(()) => Forwarded::Done,
            Err(line) => Forwarded::Wait(line),
        }
    }
}

fn encode(t: &ServedTurn, body: Body) -> Option<Vec<u8>> {
    let mut tone = Tone::new(body).with_sid(&t.sid);
    tone.envelope.rid = t.rid.clone();
    tone.envelope.from = Some("worker".into());
    match tone.encode_line(thrum::DEFAULT_MAX_LINE) {
        Ok(line) => Some(line),
        Err(e) => {
            tracing::warn!(event = "worker.send_failed", error = %e, chi = tone.chi(), sid = %t.sid, "tone not sent");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrum::{Chunk, Finish};

    fn chunk() -> Body {
        Chunk {
            chunk_type: thrum::ChunkType::TextDelta,
            block_idx: None,
            delta: Some("hi".into()),
            partial_json: None,
            usage: None,
            extra: Default::default(),
        }
        .into()
    }

    /// What an unlinked uplink was asked to send (it drops and counts).
    fn sent(uplink: &Uplink) -> u64 {
        crate::worker::uplink::dropped_so_far(uplink)
    }

    #[test]
    fn output_of_a_turn_the_worker_ended_is_not_forwarded() {
        let (uplink, serving) = (Uplink::new(), Serving::default());
        serving.start(7, "s", Some("r"));
        let (turn, line) = serving.line_for(chunk()).expect("wanted");
        assert_eq!(turn, 7);
        // A chunk read before the worker ended the turn, sent after it.
        serving.end(7);
        assert!(matches!(
            serving.forward(&uplink, turn, line),
            Forwarded::Done
        ));
        assert!(serving.line_for(chunk()).is_none());
        assert!(serving.finish(Finish::default().into()).is_none());
        assert_eq!(sent(&uplink), 0, "nothing of an ended turn goes out");
    }

    #[test]
    fn an_interrupted_turn_forwards_nothing_but_still_finishes() {
        let (uplink, serving) = (Uplink::new(), Serving::default());
        serving.start(1, "s", None);
        let (turn, line) = serving.line_for(chunk()).unwrap();
        serving.interrupt(1);
        assert!(matches!(
            serving.forward(&uplink, turn, line),
            Forwarded::Done
        ));
        serving.start_event(&uplink, chunk());
        let ended = serving.finish(Finish::default().into());
        assert!(ended.is_some_and(|(t, line)| t.turn == 1 && t.interrupted && line.is_none()));
        assert_eq!(sent(&uplink), 0);
    }

    #[test]
    fn a_served_turn_gets_its_sid_and_rid_on_every_line() {
        let (uplink, serving) = (Uplink::new(), Serving::default());
        serving.start(3, "sid-a", Some("rid-a"));
        let (_, line) = serving.line_for(chunk()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            (v["sid"].as_str(), v["rid"].as_str()),
            (Some("sid-a"), Some("rid-a"))
        );
        assert_eq!(v["from"], "worker");
        assert!(matches!(serving.forward(&uplink, 3, line), Forwarded::Done));
        serving.start_event(&uplink, chunk());
        let (_, line) = serving.finish(Finish::default().into()).unwrap();
        uplink.push(line.expect("the last event of a served turn"));
        // An interrupt of an older turn does not touch the next one.
        serving.start(4, "sid-a", None);
        serving.interrupt(3);
        assert!(serving.line_for(chunk()).is_some());
        assert_eq!(sent(&uplink), 3);
    }
}
