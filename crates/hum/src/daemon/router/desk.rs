//! humd's tool desk: the tools foragers offer and asker prompts lend,
//! every call in flight between an agent and the bee that runs its tool,
//! the permission asks, and what the calls came to. A plain value with no
//! I/O and no clock (time is passed in): it decides who runs a call, or
//! why nobody does, and what a result or a leaving peer ends; the router
//! sends the tones.

use super::permits::Permits;
use super::registry::Registry;
use super::ConnId;
use crate::reports::ToolStats;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Instant;

/// A call sent to a tool's owner and not yet answered.
#[derive(Debug, Clone)]
pub(super) struct Call {
    pub worker: ConnId,
    /// The rid of the turn that made it (a worker of an older hum sends
    /// none).
    pub rid: Option<String>,
    /// The asker of the turn that made it, when connected.
    pub caller: Option<ConnId>,
    pub owner: ConnId,
    pub sid: String,
    pub tool: String,
    pub args: Value,
    pub started: Instant,
}

/// A call an agent made, as the router hands it to the desk.
#[derive(Debug, Clone)]
pub(super) struct CallAsk {
    pub call_id: String,
    pub tool: String,
    pub sid: String,
    pub worker: ConnId,
    pub rid: Option<String>,
    pub args: Value,
    /// The asker of the turn that made it, when connected.
    pub caller: Option<ConnId>,
    /// Another node's cell made it: its node checked the turn, and only a
    /// forager here may serve it (never back to a node).
    pub from_node: bool,
    /// Whether that turn is in flight here (a call that names an ended
    /// turn finds nobody waiting for its answer).
    pub turn_known: bool,
}

/// Why a call goes to nobody: the agent is answered with an error at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A call with its id is in flight already.
    Duplicate,
    /// The turn that made it is over.
    TurnOver,
    /// No bee serves the tool.
    Unrouted,
    /// A fair share is full, said as the refusal says it.
    Full(&'static str),
}

impl Refusal {
    /// The outcome the call is counted under.
    pub fn outcome(self) -> &'static str {
        match self {
            Refusal::Duplicate | Refusal::Full(_) => "refused",
            Refusal::TurnOver => "cancelled",
            Refusal::Unrouted => "unrouted",
        }
    }

    /// The log event it is said under.
    pub fn event(self) -> &'static str {
        match self {
            Refusal::Duplicate | Refusal::Full(_) => "tool.refused",
            Refusal::TurnOver => "tool.turn_over",
            Refusal::Unrouted => "tool.unrouted",
        }
    }

    /// What the agent is told.
    pub fn message(self, tool: &str) -> String {
        match self {
            Refusal::Duplicate => "a call with this callId is in flight already".into(),
            Refusal::TurnOver => "the turn that made this call is over".into(),
            Refusal::Unrouted => format!("no bee serves the tool {tool}"),
            Refusal::Full(which) => format!("too many tool calls {which}; try again"),
        }
    }
}

/// Why a result is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotAnswerable {
    /// No call with its id is waiting.
    NotWaiting,
    /// The call waits for another bee.
    NotYours,
}

#[derive(Debug, Default)]
pub(super) struct ToolDesk {
    /// The tools foragers offer, and the capabilities they serve.
    pub registry: Registry,
    /// Each sid's tools lent by its asker's last prompt (their names).
    lent: HashMap<String, Vec<String>>,
    /// Calls in flight, by call id.
    calls: HashMap<String, Call>,
    /// Permission asks waiting for their asker.
    pub permits: Permits,
    /// What calls came to, for status and metrics.
    pub stats: ToolStats,
    /// When the catalogue was last announced to the workers, and when a
    /// held-back announcement is due.
    pub announced_at: Option<Instant>,
    pub announce_due: Option<Instant>,
}

impl ToolDesk {
    /// A prompt for `sid` lends these tool names (none: it lends none).
    pub fn lend(&mut self, sid: &str, names: Vec<String>) {
        if names.is_empty() {
            self.lent.remove(sid);
        } else {
            self.lent.insert(sid.to_owned(), names);
        }
    }

    /// Keeps only the lent tools of the sids `keep` says are still asked.
    pub fn keep_lent(&mut self, keep: impl Fn(&str) -> bool) {
        self.lent.retain(|sid, _| keep(sid));
    }

    /// Who runs `ask` (its call is then in flight), or why nobody does
    /// (counted under the refusal's outcome).
    pub fn route(&mut self, ask: CallAsk, now: Instant) -> Result<ConnId, Refusal> {
        let decided = self.owner_for(&ask);
        match decided {
            Ok(owner) => {
                self.calls.insert(
                    ask.call_id,
                    Call {
                        worker: ask.worker,
                        rid: ask.rid,
                        caller: ask.caller,
                        owner,
                        sid: ask.sid,
                        tool: ask.tool,
                        args: ask.args,
                        started: now,
                    },
                );
            }
            Err(refusal) => self.stats.count(refusal.outcome()),
        }
        decided
    }

    fn owner_for(&self, ask: &CallAsk) -> Result<ConnId, Refusal> {
        if self.calls.contains_key(&ask.call_id) {
            return Err(Refusal::Duplicate);
        }
        if !ask.from_node && ask.rid.is_some() && !ask.turn_known {
            return Err(Refusal::TurnOver);
        }
        let owner = owner_of(
            &ask.tool,
            self.lent.get(&ask.sid).map(Vec::as_slice),
            ask.caller,
            ask.from_node,
            |t| self.registry.local_owner(t),
            |t| self.registry.owner(t),
        )
        .ok_or(Refusal::Unrouted)?;
        match full_share(self.calls.values(), owner, &ask.sid, ask.caller) {
            Some(which) => Err(Refusal::Full(which)),
            None => Ok(owner),
        }
    }

    /// `from` answered `call_id` at `now`: the call, no longer in flight
    /// (counted as `ok` or `error`, with its time).
    pub fn answer(
        &mut self,
        call_id: &str,
        from: ConnId,
        is_error: bool,
        now: Instant,
    ) -> Result<Call, NotAnswerable> {
        match self.calls.get(call_id) {
            None => return Err(NotAnswerable::NotWaiting),
            Some(c) if c.owner != from => return Err(NotAnswerable::NotYours),
            Some(_) => {}
        }
        let call = self
            .calls
            .remove(call_id)
            .ok_or(NotAnswerable::NotWaiting)?;
        self.stats.count(if is_error { "error" } else { "ok" });
        let took = now.saturating_duration_since(call.started);
        self.stats.seconds.observe_ms(took.as_millis() as u64);
        Ok(call)
    }

    /// Ends a call without a result (counted under `why`).
    pub fn end(&mut self, call_id: &str, why: CallEnd) -> Option<Call> {
        let call = self.calls.remove(call_id)?;
        self.stats.count(why.as_str());
        Some(call)
    }

    /// The ids of the calls in flight that match.
    pub fn ids_where(&self, pred: impl Fn(&Call) -> bool) -> Vec<String> {
        self.calls
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn call(&self, call_id: &str) -> Option<&Call> {
        self.calls.get(call_id)
    }

    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Turns waiting for their own asker's tool results: the distinct
    /// turns of calls whose owner is the caller.
    pub fn parked_turns(&self) -> usize {
        let turns: std::collections::HashSet<(&str, Option<&str>)> = self
            .calls
            .values()
            .filter(|c| c.caller == Some(c.owner))
            .map(|c| (c.sid.as_str(), c.rid.as_deref()))
            .collect();
        turns.len()
    }
}

/// Tool calls in flight across every agent: past this, a call is answered
/// at once with an error rather than remembered (bounded state).
pub(super) const MAX_CALLS_IN_FLIGHT: usize = 10_000;

/// Who runs a call of `tool`: the asker of the turn (`caller`) when its
/// prompt lent that name (`lent`), else the forager that offered it first
/// (`any_forager`: here or on another node). A call another node sent
/// (`from_node`) only ever goes to a forager here (`local_forager`): never
/// to an asker, never on to a third node.
pub(super) fn owner_of(
    tool: &str,
    lent: Option<&[String]>,
    caller: Option<ConnId>,
    from_node: bool,
    local_forager: impl Fn(&str) -> Option<ConnId>,
    any_forager: impl Fn(&str) -> Option<ConnId>,
) -> Option<ConnId> {
    if from_node {
        return local_forager(tool);
    }
    lent.filter(|names| names.iter().any(|n| n == tool))
        .and(caller)
        .or_else(|| any_forager(tool))
}

/// Whose share of the calls in flight a new call of `owner`'s tool, for
/// `sid`, made by `caller`'s turn, would go past, said as the refusal
/// says it. Fair shares: one owner that never answers, one sid or one bee
/// that calls without end fills its own share, not everyone's.
pub(super) fn full_share<'a>(
    calls: impl ExactSizeIterator<Item = &'a Call>,
    owner: ConnId,
    sid: &str,
    caller: Option<ConnId>,
) -> Option<&'static str> {
    if calls.len() >= MAX_CALLS_IN_FLIGHT {
        return Some("in flight");
    }
    let (mut of_owner, mut of_sid, mut of_caller) = (0, 0, 0);
    for c in calls {
        of_owner += usize::from(c.owner == owner);
        of_sid += usize::from(c.sid == sid);
        of_caller += usize::from(caller.is_some() && c.caller == caller);
    }
    if of_owner >= MAX_CALLS_PER_OWNER {
        Some("waiting for the bee that serves this tool")
    } else if of_sid >= MAX_CALLS_PER_SID {
        Some("in flight for this session")
    } else if of_caller >= MAX_CALLS_PER_OWNER {
        Some("in flight for this session's bee")
    } else {
        None
    }
}

/// Tool calls waiting for one owner (a forager, an asker lending tools),
/// and made for one bee's turns: a tenth of all, so one that never
/// answers, or calls without end, leaves the rest to the others.
pub(super) const MAX_CALLS_PER_OWNER: usize = 1_000;

/// Tool calls in flight for one sid: far more than an agent makes at once.
pub(super) const MAX_CALLS_PER_SID: usize = 256;

/// Why a call ended without its owner's result.
#[derive(Debug, Clone, Copy)]
pub(super) enum CallEnd {
    OwnerGone,
    WorkerGone,
    WorkerGaveUp,
    TurnCancelled,
}

impl CallEnd {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            CallEnd::OwnerGone => "owner_gone",
            CallEnd::WorkerGone => "worker_gone",
            CallEnd::WorkerGaveUp => "timed_out",
            CallEnd::TurnCancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests;
