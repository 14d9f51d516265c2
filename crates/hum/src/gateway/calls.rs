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

use super::functions::{with_instruction, Choice, FunctionSpec};
use super::turn::{Failure, Step, Turn};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

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

/// What a request brings to its turn.
pub struct Opening<'a> {
    /// Results of a previous response's calls (the request continues that
    /// turn when there are any).
    pub answers: Vec<ToolAnswer>,
    /// The explicit session header and the body's user id, for affinity.
    pub header: Option<String>,
    /// `x-hum-bee`: whom the turn's usage is filed under.
    pub bee: Option<String>,
    pub user: Option<&'a str>,
    pub messages: &'a [super::affinity::Message],
    pub model: &'a str,
    pub system: Option<String>,
    pub offered: &'a [FunctionSpec],
    pub choice: &'a Choice,
}

/// The turn a request gets: its sid, whether it was parked before, and the
/// conversation it belongs to (whoever may answer the calls it ends with).
pub struct Opened {
    pub sid: String,
    pub turn: Turn,
    pub resumed: bool,
    pub owner: Owner,
}

/// The conversation a request belongs to, as far as tool results go: only
/// a request of the same conversation may answer a parked turn's calls (a
/// client holding the gateway token cannot answer another conversation's
/// calls, even knowing their ids). A conversation is named by its session
/// header or user id when the request gave one, else by its messages: a
/// continuation carries the earlier messages again, unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Named(String),
    History {
        digest: super::affinity::Digest32,
        len: usize,
    },
}

impl Owner {
    /// The conversation of a request with this session header, user id and
    /// messages.
    pub fn of(
        header: Option<&str>,
        user: Option<&str>,
        messages: &[super::affinity::Message],
    ) -> Owner {
        match header.or(user) {
            Some(name) => Owner::Named(name.to_owned()),
            None => Owner::History {
                digest: super::affinity::digest(messages),
                len: messages.len(),
            },
        }
    }

    /// Whether a request (header, user, messages) continues this
    /// conversation: the same name, or messages that begin with the ones
    /// this conversation had.
    pub fn continued_by(
        &self,
        header: Option<&str>,
        user: Option<&str>,
        messages: &[super::affinity::Message],
    ) -> bool {
        match self {
            Owner::Named(name) => header.or(user) == Some(name.as_str()),
            Owner::History { digest, len } => {
                header.or(user).is_none()
                    && messages.len() >= *len
                    && super::affinity::digest(&messages[..*len]) == *digest
            }
        }
    }
}

/// The turn a request continues or starts, the same for both APIs: the
/// parked one its `answers` answer (a wrong id is a `bad_request`), else a
/// new one under the sid affinity picks, once any turn of that sid still
/// waiting for results has been cancelled.
pub async fn open(gw: &super::Gateway, o: Opening<'_>) -> Result<Opened, Failure> {
    let owner = Owner::of(o.header.as_deref(), o.user, o.messages);
    if !o.answers.is_empty() {
        let from = |w: &Owner| w.continued_by(o.header.as_deref(), o.user, o.messages);
        return match gw.parked.resume(o.answers, from).await {
            Ok((sid, turn)) => Ok(Opened {
                sid,
                turn,
                resumed: true,
                owner,
            }),
            Err(NotParked(why)) => Err(Failure {
                code: thrum::ErrorCode::BadRequest,
                message: why,
                retry_after_ms: None,
            }),
        };
    }
    let decision =
        gw.affinity
            .lock()
            .expect("affinity lock")
            .decide(o.header.as_deref(), o.user, o.messages);
    gw.parked.abandon(&decision.sid).await;
    let tools = (!o.offered.is_empty())
        .then(|| Value::Array(o.offered.iter().map(FunctionSpec::asker_tool).collect()));
    let text = with_instruction(&decision.prompt, o.choice.instruction(o.offered));
    let turn = Turn::start(
        &gw.socket,
        &decision.sid,
        &text,
        o.model,
        o.system,
        tools,
        o.bee.as_deref(),
    )
    .await?;
    Ok(Opened {
        sid: decision.sid,
        turn,
        resumed: false,
        owner,
    })
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
}

struct Waiting {
    sid: String,
    /// The conversation whose next request may answer the calls.
    owner: Owner,
    calls: Vec<thrum::ToolCall>,
    resume: oneshot::Sender<Wake>,
}

#[derive(Default)]
struct State {
    next: u64,
    by_call: HashMap<String, u64>,
    waiting: HashMap<u64, Waiting>,
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
        self.forget(id);
        tracing::info!(
            event = "gateway.turn_unparked",
            parked = id,
            outcome = "expired",
            "a parked turn ended without its client"
        );
        drop(turn);
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
        let waiting: Vec<Waiting> = {
            let mut st = self.state.lock().expect("parked lock");
            let ids: Vec<u64> = st
                .waiting
                .iter()
                .filter(|(_, w)| w.sid == sid)
                .map(|(id, _)| *id)
                .collect();
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
        };
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
        from: impl Fn(&Owner) -> bool,
    ) -> Result<(String, Turn), NotParked> {
        let waiting = {
            let mut st = self.state.lock().expect("parked lock");
            let mut id = None;
            for a in &answers {
                let found = st
                    .by_call
                    .get(&a.call_id)
                    .filter(|p| st.waiting.get(p).is_some_and(|w| from(&w.owner)));
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
        Ok((waiting.sid, turn))
    }
}
