//! Turns let go while they waited for their client's tool results: a
//! parked turn gives its cell back when a prompt is queued for one (oldest
//! first) or after `gateway.parkedTurnMs`, and is cancelled. The calls it
//! ended with are remembered here, so a client that comes back late with
//! their results still gets a correct continuation: a new turn of the same
//! sid (its session resumed, with its transcript, wherever it lands) that
//! hands the agent the results. Pure: no I/O, time passed in.

use super::calls::{Owner, ToolAnswer};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Released turns remembered at most; the oldest is forgotten past this.
pub const MAX_RELEASED: usize = 4096;

/// How long a released turn's calls may still be answered: a client that
/// comes back after an hour is starting over, not continuing.
pub const KEEP_RELEASED: Duration = Duration::from_secs(3600);

/// A turn let go with calls its client had not answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Released {
    pub sid: String,
    /// The conversation whose next request may answer the calls.
    pub owner: Owner,
    pub calls: Vec<thrum::ToolCall>,
    pub at: Instant,
}

/// The turns let go, by the ids of their calls.
#[derive(Debug, Default)]
pub struct ReleasedTurns {
    /// Oldest first.
    turns: VecDeque<(u64, Released)>,
    by_call: HashMap<String, u64>,
    next: u64,
}

/// Why late results could not continue a released turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No released turn has (all of) these calls for this conversation.
    Unknown,
    /// A call of the turn has no result.
    Missing { call_id: String, tool: String },
}

impl ReleasedTurns {
    /// Remembers a turn let go at `now`.
    pub fn add(&mut self, turn: Released) {
        if turn.calls.is_empty() {
            return;
        }
        self.next += 1;
        for c in &turn.calls {
            self.by_call.insert(c.call_id.clone(), self.next);
        }
        self.turns.push_back((self.next, turn));
        while self.turns.len() > MAX_RELEASED {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, t)) = self.turns.pop_front() {
            for c in &t.calls {
                self.by_call.remove(&c.call_id);
            }
        }
    }

    /// Forgets the turns released before `now - KEEP_RELEASED`.
    pub fn expire(&mut self, now: Instant) {
        while self
            .turns
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(t.at) >= KEEP_RELEASED)
        {
            self.pop_oldest();
        }
    }

    pub fn len(&self) -> usize {
        self.turns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// Whether any of `answers` names a call of a released turn.
    pub fn knows(&self, answers: &[ToolAnswer]) -> bool {
        answers
            .iter()
            .any(|a| self.by_call.contains_key(&a.call_id))
    }

    /// Takes the released turn whose calls `answers` answer (all of them,
    /// for a conversation `from` accepts: its sid and owner).
    pub fn take(
        &mut self,
        answers: &[ToolAnswer],
        from: impl Fn(&str, &Owner) -> bool,
    ) -> Result<Released, Refused> {
        let mut id = None;
        for a in answers {
            let found = self.by_call.get(&a.call_id).copied();
            match (found, id) {
                (None, _) => return Err(Refused::Unknown),
                (Some(p), Some(q)) if p != q => return Err(Refused::Unknown),
                (Some(p), _) => id = Some(p),
            }
        }
        let id = id.ok_or(Refused::Unknown)?;
        let i = self
            .turns
            .iter()
            .position(|(t, r)| *t == id && from(&r.sid, &r.owner))
            .ok_or(Refused::Unknown)?;
        if let Some(missing) = self.turns[i]
            .1
            .calls
            .iter()
            .find(|c| !answers.iter().any(|a| a.call_id == c.call_id))
        {
            return Err(Refused::Missing {
                call_id: missing.call_id.clone(),
                tool: missing.tool_name.clone(),
            });
        }
        let (_, turn) = self.turns.remove(i).expect("found");
        for c in &turn.calls {
            self.by_call.remove(&c.call_id);
        }
        Ok(turn)
    }

    /// The sid of the released turn a request with these messages
    /// continues (its client moved on without the results), if any: the
    /// latest such turn.
    pub fn conversation(&self, continues: impl Fn(&Owner) -> bool) -> Option<String> {
        self.turns
            .iter()
            .rev()
            .find(|(_, t)| continues(&t.owner))
            .map(|(_, t)| t.sid.clone())
    }

    /// The calls of the released turns `continues` holds, newest first, at
    /// most `n` of them.
    pub fn calls_of(
        &self,
        continues: impl Fn(&str, &Owner) -> bool,
        n: usize,
    ) -> Vec<Vec<thrum::ToolCall>> {
        self.turns
            .iter()
            .rev()
            .filter(|(_, t)| continues(&t.sid, &t.owner))
            .take(n)
            .map(|(_, t)| t.calls.clone())
            .collect()
    }

    /// Forgets the released turns of `sid` (its client moved on: their
    /// results are no longer a continuation).
    pub fn drop_sid(&mut self, sid: &str) -> usize {
        let before = self.turns.len();
        let mut kept = VecDeque::new();
        for (id, t) in self.turns.drain(..) {
            if t.sid == sid {
                for c in &t.calls {
                    self.by_call.remove(&c.call_id);
                }
            } else {
                kept.push_back((id, t));
            }
        }
        self.turns = kept;
        before - self.turns.len()
    }
}

/// What a late continuation tells the agent: its calls, each with the
/// arguments it gave and the client's result, in the order it made them.
pub fn continuation(calls: &[thrum::ToolCall], answers: &[ToolAnswer]) -> String {
    let mut out = String::from(
        "(Your previous turn was paused while your tool calls waited for the client. \
         Their results have come; go on from there.)\n",
    );
    for c in calls {
        let Some(a) = answers.iter().find(|a| a.call_id == c.call_id) else {
            continue;
        };
        let what = if a.is_error { "failed" } else { "returned" };
        out.push_str(&format!(
            "- {}({}) {what}: {}\n",
            c.tool_name, c.args, a.output
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(id: &str, tool: &str) -> thrum::ToolCall {
        thrum::ToolCall {
            call_id: id.into(),
            tool_name: tool.into(),
            args: json!({"city": "Oslo"}),
            usage: None,
            extra: Default::default(),
        }
    }

    fn answer(id: &str, output: &str) -> ToolAnswer {
        ToolAnswer {
            call_id: id.into(),
            output: output.into(),
            is_error: false,
        }
    }

    fn released(sid: &str, owner: &str, calls: &[(&str, &str)], at: Instant) -> Released {
        Released {
            sid: sid.into(),
            owner: Owner::Named(owner.into()),
            calls: calls.iter().map(|(i, t)| call(i, t)).collect(),
            at,
        }
    }

    #[test]
    fn late_results_of_every_call_continue_the_released_turn_once() {
        let now = Instant::now();
        let mut r = ReleasedTurns::default();
        r.add(released(
            "s",
            "conv",
            &[("c1", "weather"), ("c2", "time")],
            now,
        ));
        assert!(r.knows(&[answer("c1", "x")]));
        let mine = |_: &str, o: &Owner| *o == Owner::Named("conv".into());
        assert_eq!(
            r.take(&[answer("c1", "sunny")], mine),
            Err(Refused::Missing {
                call_id: "c2".into(),
                tool: "time".into()
            })
        );
        // Another conversation cannot answer them.
        assert_eq!(
            r.take(&[answer("c1", "a"), answer("c2", "b")], |_, _| false),
            Err(Refused::Unknown)
        );
        let t = r
            .take(&[answer("c2", "noon"), answer("c1", "sunny")], mine)
            .unwrap();
        assert_eq!(t.sid, "s");
        assert!(r.is_empty() && !r.knows(&[answer("c1", "x")]));
        let text = continuation(&t.calls, &[answer("c2", "noon"), answer("c1", "sunny")]);
        assert!(
            text.contains(r#"weather({"city":"Oslo"}) returned: sunny"#)
                && text.contains("time(")
                && text.find("weather").unwrap() < text.find("time(").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn released_turns_are_bounded_in_number_and_time_and_go_with_their_sid() {
        let now = Instant::now();
        let mut r = ReleasedTurns::default();
        for i in 0..MAX_RELEASED + 5 {
            r.add(released(
                &format!("s{i}"),
                "o",
                &[(&format!("c{i}"), "t")],
                now,
            ));
        }
        assert_eq!(r.len(), MAX_RELEASED);
        assert!(!r.knows(&[answer("c0", "")]), "the oldest are forgotten");
        assert_eq!(r.drop_sid("s10"), 1);
        assert!(!r.knows(&[answer("c10", "")]));
        r.add(released("late", "o", &[("cl", "t")], now + KEEP_RELEASED));
        r.expire(now + KEEP_RELEASED);
        assert_eq!(r.len(), 1);
        assert_eq!(r.conversation(|_| true), Some("late".into()));
        // A turn with no calls is nothing to continue.
        r.add(released("none", "o", &[], now));
        assert_eq!(r.len(), 1);
    }
}
