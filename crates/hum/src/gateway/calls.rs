//! Function calling through the front door: the client's functions become
//! the turn's asker tools; when the agent calls them the HTTP response ends
//! with the calls while the cell's MCP calls stay pending, and the turn is
//! *parked* here until the client's next request brings the results, which
//! continue the same turn in the same cell.
//!
//! A parked turn is owned by one task that also watches it: the results
//! arrive (the turn goes back to the request that brought them), the turn
//! moves on without the client (the worker answered a call with an error
//! after `tools.callTimeoutMs`, and the turn ends), or the gateway's own wait
//! runs out (the turn is dropped, which cancels it).

pub use super::affinity::Owner;
use super::released::{self, Released, ReleasedTurns};
use super::turn::{Step, Turn};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

pub use super::opening::{follow_up, open, Opened, Opening};

/// How long after one call the agent's further calls are still counted as
/// made together with it (one response): claude sends the MCP calls of one
/// message within milliseconds of each other.
pub const CALLS_TOGETHER: Duration = Duration::from_millis(150);

/// The most calls one response returns: far past what a model makes in one
/// message. Calls past it reach the parked turn's task, which tells the
/// agent to make them again, so nothing gathers without bound.
pub const MAX_CALLS_TOGETHER: usize = 128;

/// The most turns parked at once; a request that would park one more ends
/// its turn with an error instead (each holds a connection to humd).
pub const MAX_PARKED: usize = 1024;

/// The client's answer to one call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolAnswer {
    pub call_id: String,
    pub output: String,
    pub is_error: bool,
}

/// How long an abandoned turn gets to end (its cancel answered) before
/// the new message goes ahead anyway: the worker's default cancel grace
/// with room.
pub const ABANDON_WAIT: Duration = Duration::from_secs(10);

/// What a request that brings results gets back: the turn, ready to go on.
struct Resume {
    answers: Vec<ToolAnswer>,
    back: oneshot::Sender<Turn>,
}

/// What wakes a parked turn's task.
enum Wake {
    Resume(Resume),
    /// Cancel the turn, and say when it has ended.
    Abandon(oneshot::Sender<()>),
    /// Cancel the turn: it gives its cell back (its calls are remembered
    /// as released already).
    Release,
}

pub struct Waiting {
    sid: String,
    /// The conversation whose next request may answer the calls.
    owner: Owner,
    calls: Vec<thrum::ToolCall>,
    resume: oneshot::Sender<Wake>,
    since: tokio::time::Instant,
}

#[derive(Default)]
struct State {
    next: u64,
    by_call: HashMap<String, u64>,
    waiting: HashMap<u64, Waiting>,
    /// Turns let go before their results came.
    released: ReleasedTurns,
}

/// What results continue: a parked turn (ready to go on in its cell), or
/// one that gave its cell back (a new turn of its sid is started).
pub enum Resumed {
    Parked(String, Box<Turn>),
    Late(Released),
}

/// Removes `sid`'s turns that wait for results and its released ones
/// (their results are no continuation any more); the waiting turns come
/// back to be cancelled.
fn take_sid(st: &mut State, sid: &str) -> Vec<Waiting> {
    let ids: Vec<u64> = st
        .waiting
        .iter()
        .filter(|(_, w)| w.sid == sid)
        .map(|(id, _)| *id)
        .collect();
    st.released.drop_sid(sid);
    let mut taken = Vec::new();
    for id in ids {
        if let Some(w) = st.waiting.remove(&id) {
            for c in &w.calls {
                st.by_call.remove(&c.call_id);
            }
            taken.push(w);
        }
    }
    taken
}

/// Turns waiting for their client's tool results.
#[derive(Default)]
pub struct Parked {
    state: Mutex<State>,
}

/// Why results could not continue a turn (a 400 in the API's shape).
#[derive(Debug, Clone, PartialEq)]
pub struct NotParked(pub String);

impl Parked {
    /// Parks `turn` until its client answers `calls`, for `wait` at most.
    /// `false` when too many are parked: the turn is then dropped, which
    /// cancels it.
    #[must_use]
    pub fn park(
        self: &Arc<Self>,
        turn: Turn,
        sid: &str,
        owner: Owner,
        calls: Vec<thrum::ToolCall>,
        wait: Duration,
    ) -> bool {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.state.lock().expect("parked lock");
            if st.waiting.len() >= MAX_PARKED {
                tracing::warn!(
                    event = "gateway.park_refused",
                    sid,
                    "too many turns wait for tool results; this one is cancelled"
                );
                return false;
            }
            st.next += 1;
            let id = st.next;
            for c in &calls {
                st.by_call.insert(c.call_id.clone(), id);
            }
            st.waiting.insert(
                id,
                Waiting {
                    sid: sid.to_owned(),
                    owner,
                    calls,
                    resume: tx,
                    since: tokio::time::Instant::now(),
                },
            );
            id
        };
        tracing::info!(
            event = "gateway.turn_parked",
            sid,
            parked = id,
            "the turn waits for the client's tool results"
        );
        tokio::spawn(self.clone().watch(id, turn, rx, wait));
        true
    }

    /// The task that owns a parked turn.
    async fn watch(
        self: Arc<Self>,
        id: u64,
        mut turn: Turn,
        mut rx: oneshot::Receiver<Wake>,
        wait: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                wake = &mut rx => {
                    match wake {
                        Ok(Wake::Resume(Resume { answers, back })) => {
                            for a in answers {
                                turn.answer(&a).await;
                            }
                            let _ = back.send(turn);
                        }
                        Ok(Wake::Abandon(done)) => {
                            turn.cancel_and_wait(ABANDON_WAIT).await;
                            let _ = done.send(());
                        }
                        Ok(Wake::Release) => turn.cancel_and_wait(ABANDON_WAIT).await,
                        Err(_) => {}
                    }
                    return;
                }
                step = turn.next() => match step {
                    // A call after the response went out: the client never
                    // saw it. The agent is told, and may call again.
                    Step::ToolCall(call) => {
                        turn.answer(&ToolAnswer {
                            call_id: call.call_id,
                            output: "this call came after the others had been returned to the client; call it again".into(),
                            is_error: true,
                        }).await;
                    }
                    // The turn went on without the client (a call timed
                    // out in the worker): nobody is left to read it.
                    _ => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Let go (its wait ran out, or it ended without its client): its
        // calls may still be answered late, by a new turn of its sid.
        self.release(id, "expired");
        turn.cancel_and_wait(ABANDON_WAIT).await;
    }

    /// Moves a parked turn to the released ones (its results, when they
    /// come, start a new turn of its sid); its task cancels it.
    fn release(&self, id: u64, why: &'static str) -> Option<oneshot::Sender<Wake>> {
        let w = self.forget(id)?;
        tracing::info!(
            event = "gateway.turn_unparked",
            sid = %w.sid,
            parked = id,
            outcome = why,
            calls = w.calls.len(),
            "a parked turn gives its cell back; late results will continue its session"
        );
        let mut st = self.state.lock().expect("parked lock");
        st.released.expire(std::time::Instant::now());
        st.released.add(Released {
            sid: w.sid,
            owner: w.owner,
            calls: w.calls,
            at: std::time::Instant::now(),
        });
        Some(w.resume)
    }

    /// Lets the `n` oldest parked turns give their cells back (a prompt
    /// waits for one); returns how many did.
    pub fn release_oldest(&self, n: usize) -> usize {
        let oldest: Vec<u64> = {
            let st = self.state.lock().expect("parked lock");
            let mut all: Vec<(tokio::time::Instant, u64)> =
                st.waiting.iter().map(|(id, w)| (w.since, *id)).collect();
            all.sort();
            all.into_iter().take(n).map(|(_, id)| id).collect()
        };
        let mut released = 0;
        for id in oldest {
            if let Some(wake) = self.release(id, "preempted") {
                let _ = wake.send(Wake::Release);
                released += 1;
            }
        }
        released
    }

    /// Turns parked now.
    pub fn count(&self) -> usize {
        self.state.lock().expect("parked lock").waiting.len()
    }

    /// Takes the conversation a request with these messages goes on (a
    /// later message of one whose turn is parked or was let go), if any:
    /// its sid, and its turns that waited for results, which the caller
    /// cancels ([`Parked::cancel`]). Taken at once, so of two such messages
    /// sent together only one goes on the conversation's sid.
    pub fn take_conversation(
        &self,
        header: Option<&str>,
        user: Option<&str>,
        messages: &[super::affinity::Message],
    ) -> Option<(String, Vec<Waiting>)> {
        {
            let st = self.state.lock().expect("parked lock");
            if st.waiting.is_empty() && st.released.is_empty() {
                return None;
            }
        }
        // The request hashed once, not once per conversation it is
        // compared with (up to every parked and released one).
        let prefixes = super::affinity::prefix_digests(messages);
        let mut st = self.state.lock().expect("parked lock");
        let extends = |o: &Owner| o.extended_by(header, user, &prefixes);
        let sid = st
            .waiting
            .values()
            .filter(|w| extends(&w.owner))
            .max_by_key(|w| w.since)
            .map(|w| w.sid.clone())
            .or_else(|| st.released.conversation(extends))?;
        let waiting = take_sid(&mut st, &sid);
        Some((sid, waiting))
    }

    /// The calls a request's results answer when its API names no call
    /// (Ollama's tool messages carry only a tool's name): those of the
    /// one turn of the request's conversation (`from`) that waits for
    /// results, or else that gave its cell back. Two that could be it
    /// (conversations that began alike, without a session header) are
    /// refused: results given to the wrong one would continue another
    /// client's turn.
    pub fn calls_continued_by(
        &self,
        from: impl Fn(&str, &Owner) -> bool,
    ) -> Result<Vec<thrum::ToolCall>, NotParked> {
        let st = self.state.lock().expect("parked lock");
        // Two are enough to know it is not one.
        let mut waiting: Vec<Vec<thrum::ToolCall>> = st
            .waiting
            .values()
            .filter(|w| from(&w.sid, &w.owner))
            .take(2)
            .map(|w| w.calls.clone())
            .collect();
        if waiting.is_empty() {
            waiting = st.released.calls_of(&from, 2);
        }
        match waiting.len() {
            0 => Err(NotParked(
                "no call of this conversation is waiting for a result (unknown, already answered or expired)".into(),
            )),
            1 => Ok(waiting.remove(0)),
            _ => Err(NotParked(
                "more than one conversation that began like this one waits for tool results: send an x-hum-session header to tell them apart".into(),
            )),
        }
    }

    fn forget(&self, id: u64) -> Option<Waiting> {
        let mut st = self.state.lock().expect("parked lock");
        let w = st.waiting.remove(&id)?;
        for c in &w.calls {
            st.by_call.remove(&c.call_id);
        }
        Some(w)
    }

    /// Ends the turns of `sid` that wait for results, because its client
    /// moved on with a new message (which would otherwise queue behind them
    /// until the worker's call timeout): each is cancelled, and this
    /// returns once they have ended (or [`ABANDON_WAIT`] passed), so the
    /// new turn's connection never receives the old turn's end.
    pub async fn abandon(&self, sid: &str) -> usize {
        let waiting = take_sid(&mut self.state.lock().expect("parked lock"), sid);
        self.cancel(sid, waiting).await
    }

    /// Ends turns taken from the table (a new message without results
    /// cancels the turns of its sid that waited for them); how many.
    pub async fn cancel(&self, sid: &str, waiting: Vec<Waiting>) -> usize {
        for w in &waiting {
            tracing::info!(
                event = "gateway.turn_unparked",
                sid,
                outcome = "abandoned",
                calls = w.calls.len(),
                "a new message without results cancels the turn that waited for them"
            );
        }
        let count = waiting.len();
        for w in waiting {
            let (done, ended) = oneshot::channel();
            if w.resume.send(Wake::Abandon(done)).is_ok() {
                let _ = ended.await;
            }
        }
        count
    }

    /// Continues the parked turn whose calls `answers` answer (all of them,
    /// and only them): sends the results and returns the turn and its sid.
    /// A call of another conversation is answered as an unknown one is:
    /// `from` says whether the request continues a parked turn's
    /// conversation.
    pub async fn resume(
        &self,
        answers: Vec<ToolAnswer>,
        from: impl Fn(&str, &Owner) -> bool,
    ) -> Result<Resumed, NotParked> {
        let waiting = {
            let mut st = self.state.lock().expect("parked lock");
            if !answers.iter().any(|a| st.by_call.contains_key(&a.call_id))
                && st.released.knows(&answers)
            {
                st.released.expire(std::time::Instant::now());
                return match st.released.take(&answers, &from) {
                    Ok(late) => {
                        tracing::info!(event = "gateway.turn_continued", sid = %late.sid, calls = late.calls.len(),
                            "late results continue a turn that gave its cell back");
                        Ok(Resumed::Late(late))
                    }
                    Err(released::Refused::Missing { call_id, tool }) => Err(NotParked(format!(
                        "the result of call {call_id:?} ({tool}) is missing"
                    ))),
                    Err(released::Refused::Unknown) => Err(NotParked(format!(
                        "no call {:?} is waiting for a result (unknown, already answered or expired)",
                        answers[0].call_id
                    ))),
                };
            }
            let mut id = None;
            for a in &answers {
                let found = st
                    .by_call
                    .get(&a.call_id)
                    .filter(|p| st.waiting.get(p).is_some_and(|w| from(&w.sid, &w.owner)));
                match (found, id) {
                    (None, _) => {
                        return Err(NotParked(format!(
                            "no call {:?} is waiting for a result (unknown, already answered or expired)",
                            a.call_id
                        )))
                    }
                    (Some(p), Some(q)) if *p != q => {
                        return Err(NotParked(
                            "the results answer calls of different turns".into(),
                        ))
                    }
                    (Some(p), _) => id = Some(*p),
                }
            }
            let Some(id) = id else {
                return Err(NotParked("no tool results to continue with".into()));
            };
            let w = &st.waiting[&id];
            if let Some(missing) = w
                .calls
                .iter()
                .find(|c| !answers.iter().any(|a| a.call_id == c.call_id))
            {
                return Err(NotParked(format!(
                    "the result of call {:?} ({}) is missing",
                    missing.call_id, missing.tool_name
                )));
            }
            let w = st.waiting.remove(&id).expect("present");
            for c in &w.calls {
                st.by_call.remove(&c.call_id);
            }
            w
        };
        let (back, turn) = oneshot::channel();
        if waiting
            .resume
            .send(Wake::Resume(Resume { answers, back }))
            .is_err()
        {
            return Err(NotParked("the turn has ended meanwhile".into()));
        }
        let turn = turn
            .await
            .map_err(|_| NotParked("the turn has ended meanwhile".into()))?;
        tracing::info!(event = "gateway.turn_unparked", sid = %waiting.sid, outcome = "resumed", "the client's tool results continue the turn");
        Ok(Resumed::Parked(waiting.sid, Box::new(turn)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::affinity::Message;
    use super::*;

    #[tokio::test]
    async fn a_waiting_conversation_is_taken_by_one_new_message_only() {
        let parked = Parked::default();
        let asked = [Message::new("user", "call a tool")];
        let (resume, _woken) = oneshot::channel();
        parked.state.lock().unwrap().waiting.insert(
            1,
            Waiting {
                sid: "conv-1".into(),
                owner: Owner::of(None, None, &asked),
                calls: Vec::new(),
                resume,
                since: tokio::time::Instant::now(),
            },
        );
        let next = [
            Message::new("user", "call a tool"),
            Message::new("assistant", ""),
            Message::new("user", "never mind"),
        ];
        let other = [Message::new("user", "something else")];
        assert!(parked.take_conversation(None, None, &other).is_none());
        let taken = parked.take_conversation(None, None, &next);
        assert_eq!(
            taken.map(|(sid, waiting)| (sid, waiting.len())),
            Some(("conv-1".to_owned(), 1))
        );
        // The same message again (a retry sent at once) goes elsewhere.
        assert!(parked.take_conversation(None, None, &next).is_none());
    }
}
