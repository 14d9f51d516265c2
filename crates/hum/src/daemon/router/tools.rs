//! The router's tool calls: asker tools, and every call in flight between
//! an agent (through its worker) and the bee that runs the tool.
//!
//! A call is routed by its tool's name: the asker of that sid first (the
//! tools of its last prompt), then the forager that offered the name first.
//! Whatever ends a call (its result, a cancel of the turn, its owner or its
//! worker leaving) ends it once: the agent always gets an answer, the owner
//! is told when the call is no longer wanted.

use super::*;

/// A call sent to a tool's owner and not yet answered.
#[derive(Debug, Clone)]
pub(super) struct Call {
    worker: ConnId,
    /// The rid of the turn that made it (a worker of an older hum sends
    /// none).
    rid: Option<String>,
    /// The asker of the turn that made it, when connected.
    caller: Option<ConnId>,
    owner: ConnId,
    sid: String,
    tool: String,
    args: Value,
    started: Instant,
}

impl Router {
    /// The connected asker of the turn that made a call: named by the
    /// call's rid; a call without one (a worker of an older hum) goes to
    /// the sid's latest asker.
    pub(super) fn caller_asker(
        &self,
        sid: &str,
        worker: ConnId,
        rid: Option<&str>,
    ) -> Option<ConnId> {
        match rid {
            Some(_) => self.routes.turn_asker(sid, worker, rid),
            None => self.routes.sid_asker(sid),
        }
    }

    /// A prompt's `tools`: that sid's calls of those names go to its asker.
    pub(super) fn asker_tools(&mut self, sid: &str, tools: Option<&Value>) {
        let names: Vec<String> = match tools {
            Some(Value::Array(specs)) => specs
                .iter()
                .filter_map(thrum::tools::tool_name)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        if names.is_empty() {
            self.sid_tools.remove(sid);
        } else {
            self.sid_tools.insert(sid.to_owned(), names);
        }
    }

    /// A worker's agent called a tool: to its owner, or answered at once
    /// with an error when nobody serves it.
    pub(super) fn tool_call(&mut self, worker: ConnId, tone: Tone) {
        let Body::ToolCall(call) = &tone.body else {
            return;
        };
        let Some(sid) = tone.sid().map(str::to_owned) else {
            return;
        };
        let rid = tone.rid().map(str::to_owned);
        // Another node's cell: its node checked the turn and keeps its
        // asker; only a forager here may serve it (never back to a node).
        let from_node = matches!(self.peers.get(&worker).map(|p| &p.role), Some(Role::Calls));
        if self.calls.contains_key(&call.call_id) {
            self.tool_stats.count("refused");
            let r = thrum::ToolResult::error(
                &call.call_id,
                Some(&call.tool_name),
                "a call with this callId is in flight already",
            );
            return self.answer_worker(worker, &sid, r);
        }
        if !from_node && rid.is_some() && self.routes.turn(&sid, worker, rid.as_deref()).is_none() {
            // Its turn is over (or was never this humd's): nobody waits
            // for what the call would find.
            self.tool_stats.count("cancelled");
            tracing::info!(event = "tool.turn_over", sid = %sid, call = %call.call_id, tool = %call.tool_name, "a call of a turn that is over");
            let r = thrum::ToolResult::error(
                &call.call_id,
                Some(&call.tool_name),
                "the turn that made this call is over",
            );
            return self.answer_worker(worker, &sid, r);
        }
        // The asker of the turn that made the call: the owner of the tools
        // its prompt lent, and whose share of calls this one counts in.
        let caller = (!from_node)
            .then(|| self.caller_asker(&sid, worker, rid.as_deref()))
            .flatten();
        let owner = owner_of(
            &call.tool_name,
            self.sid_tools.get(&sid).map(Vec::as_slice),
            caller,
            from_node,
            |t| self.tools.local_owner(t),
            |t| self.tools.owner(t),
        );
        let Some(owner) = owner else {
            self.tool_stats.count("unrouted");
            tracing::info!(event = "tool.unrouted", sid = %sid, call = %call.call_id, tool = %call.tool_name, "no bee serves this tool");
            let r = thrum::ToolResult::error(
                &call.call_id,
                Some(&call.tool_name),
                format!("no bee serves the tool {}", call.tool_name),
            );
            return self.answer_worker(worker, &sid, r);
        };
        let full = full_share(self.calls.values(), owner, &sid, caller);
        if let Some(which) = full {
            self.tool_stats.count("refused");
            tracing::info!(event = "tool.refused", sid = %sid, call = %call.call_id, tool = %call.tool_name, owner, which, "too many tool calls");
            let r = thrum::ToolResult::error(
                &call.call_id,
                Some(&call.tool_name),
                format!("too many tool calls {which}; try again"),
            );
            return self.answer_worker(worker, &sid, r);
        }
        self.calls.insert(
            call.call_id.clone(),
            Call {
                worker,
                rid,
                caller,
                owner,
                sid: sid.clone(),
                tool: call.tool_name.clone(),
                args: call.args.clone(),
                started: Instant::now(),
            },
        );
        tracing::info!(event = "tool.routed", sid = %sid, call = %call.call_id, tool = %call.tool_name, owner, "tool call sent to its owner");
        let call_id = call.call_id.clone();
        let mut fwd = tone;
        fwd.envelope.from = Some("daemon".into());
        fwd.envelope.sigil = None;
        if !self.send(owner, fwd) {
            self.end_call(&call_id, CallEnd::OwnerGone);
        }
    }

    /// Turns waiting for their own asker's tool results: the distinct
    /// turns of calls whose owner is the caller.
    pub(super) fn parked_turns(&self) -> usize {
        let turns: std::collections::HashSet<(&str, Option<&str>)> = self
            .calls
            .values()
            .filter(|c| c.caller == Some(c.owner))
            .map(|c| (c.sid.as_str(), c.rid.as_deref()))
            .collect();
        turns.len()
    }

    /// The owner answered: the result goes to the agent's worker, and a
    /// `tool_executed` chunk to the sid's asker.
    pub(super) fn tool_result(&mut self, id: ConnId, tone: Tone) {
        let Body::ToolResult(result) = &tone.body else {
            return;
        };
        let Some(call) = self.calls.get(&result.call_id).cloned() else {
            return self.refuse(
                id,
                &tone,
                thrum::ErrorCode::BadRequest,
                format!("no tool call {} is waiting for a result", result.call_id),
            );
        };
        if call.owner != id {
            return self.refuse(
                id,
                &tone,
                thrum::ErrorCode::BadRequest,
                format!("tool call {} is not yours to answer", result.call_id),
            );
        }
        self.calls.remove(&result.call_id);
        let is_error = result.failed();
        self.tool_stats.count(if is_error { "error" } else { "ok" });
        self.tool_stats
            .seconds
            .observe_ms(call.started.elapsed().as_millis() as u64);
        tracing::info!(event = "tool.answered", sid = %call.sid, call = %result.call_id, tool = %call.tool, is_error, ms = call.started.elapsed().as_millis() as u64, "tool result back to the agent");
        let mut r = result.clone();
        r.tool_name.get_or_insert(call.tool.clone());
        self.mirror(&call, &r);
        self.answer_worker(call.worker, &call.sid, r);
        self.ack(id, tone.rid(), true);
    }

    /// The worker gave up on a call (its timeout, or the agent went away):
    /// its owner is told to cancel it.
    pub(super) fn call_cancelled_by_worker(&mut self, worker: ConnId, call_id: &str) {
        if self.calls.get(call_id).is_some_and(|c| c.worker == worker) {
            self.end_call(call_id, CallEnd::WorkerGaveUp);
        }
        let peers = &self.peers;
        let lapsed = self.permits.lapse(worker, call_id, |asker| {
            accounting::bee_name(peers.get(&asker))
        });
        if let Some(p) = lapsed {
            let name = accounting::bee_name(self.peers.get(&p.asker));
            tracing::warn!(event = "permission.unanswered", conn = p.asker, asker = %name, sid = %p.sid, call = %call_id,
                "an asker that answers permission asks let one lapse; the hive's default applied");
            self.cancel_call_at(p.asker, &p.sid, call_id);
        }
    }

    /// A cancel of `sid`'s turn: each of its pending calls is cancelled at
    /// its owner and answered to the agent with an error.
    pub(super) fn cancel_calls_of_sid(&mut self, sid: &str) {
        for id in self.calls_where(|c| c.sid == sid) {
            self.end_call(&id, CallEnd::TurnCancelled);
        }
    }

    /// A peer left: the calls it owned are answered with an error, the
    /// calls it made (a worker) are cancelled at their owners; a forager's
    /// tools leave the registry at once.
    pub(super) fn tools_peer_left(&mut self, id: ConnId, role: &Role) {
        // Permission asks: an asker gone answers nothing (the default
        // applies); a worker gone is no longer asking.
        for (call, p) in self.permits.peer_left(id) {
            if p.asker == id {
                let msg = "the asker left before answering".to_owned();
                self.answer_permit(p.worker, &p.sid, &call, None, Some(msg));
            } else {
                self.cancel_call_at(p.asker, &p.sid, &call);
            }
        }
        for call in self.calls_where(|c| c.owner == id) {
            self.end_call(&call, CallEnd::OwnerGone);
        }
        if matches!(role, Role::Worker { .. } | Role::Calls) {
            for call in self.calls_where(|c| c.worker == id) {
                self.end_call(&call, CallEnd::WorkerGone);
            }
        }
        if matches!(role, Role::Forager) && self.tools.withdraw(id) {
            self.announce_tools();
        }
    }

    /// The ids of the calls in flight that match.
    fn calls_where(&self, pred: impl Fn(&Call) -> bool) -> Vec<String> {
        self.calls
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Ends a call that got no result: the owner is told (unless it is the
    /// one gone), the agent gets an error result (unless its worker is).
    fn end_call(&mut self, call_id: &str, why: CallEnd) {
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        self.tool_stats.count(why.as_str());
        tracing::info!(event = "tool.ended", sid = %call.sid, call = %call_id, tool = %call.tool, outcome = why.as_str(), "tool call ended without a result");
        if !matches!(why, CallEnd::OwnerGone) {
            self.cancel_call_at(call.owner, &call.sid, call_id);
        }
        if !matches!(why, CallEnd::WorkerGone | CallEnd::WorkerGaveUp) {
            let message = match why {
                CallEnd::OwnerGone => {
                    format!("the bee serving {} left before answering", call.tool)
                }
                _ => format!("the call to {} was cancelled with its turn", call.tool),
            };
            let r = thrum::ToolResult::error(call_id, Some(&call.tool), message);
            self.mirror(&call, &r);
            self.answer_worker(call.worker, &call.sid, r);
        }
    }

    /// Tells `peer` (a tool's owner, or an asker asked for permission)
    /// that the call `call_id` of `sid` is no longer wanted.
    pub(super) fn cancel_call_at(&mut self, peer: ConnId, sid: &str, call_id: &str) {
        let mut cancel = Tone::new(thrum::Cancel {
            call_id: Some(call_id.to_owned()),
            extra: Map::new(),
        })
        .with_sid(sid);
        cancel.envelope.from = Some("daemon".into());
        self.send(peer, cancel);
    }

    fn answer_worker(&mut self, worker: ConnId, sid: &str, result: thrum::ToolResult) {
        let mut t = Tone::new(result).with_sid(sid);
        t.envelope.from = Some("daemon".into());
        let hive = self.hive_of(worker);
        t.envelope.sigil = Some(thrum::sigil(&hive, sid));
        self.send(worker, t);
    }

    /// Shows the asker of the call's sid what was executed (as the system
    /// hum replaces did): a `chunk` of type `tool_executed`.
    fn mirror(&mut self, call: &Call, result: &thrum::ToolResult) {
        let Some(asker) = self.caller_asker(&call.sid, call.worker, call.rid.as_deref()) else {
            return;
        };
        // (A call of an older worker has no rid: its turn's, if known.)
        let rid = call.rid.clone().or_else(|| {
            self.routes
                .turn(&call.sid, call.worker, None)
                .map(|t| t.rid.clone())
        });
        let done = thrum::tools::ToolExecuted {
            call_id: result.call_id.clone(),
            tool_name: call.tool.clone(),
            arguments: call.args.clone(),
            output: result.output().cloned().unwrap_or(Value::Null),
            is_error: result.failed(),
        };
        let mut t = Tone::new(done.to_chunk()).with_sid(&call.sid);
        t.envelope.rid = rid;
        t.envelope.from = Some("daemon".into());
        self.send(asker, t);
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
enum CallEnd {
    OwnerGone,
    WorkerGone,
    WorkerGaveUp,
    TurnCancelled,
}

impl CallEnd {
    fn as_str(self) -> &'static str {
        match self {
            CallEnd::OwnerGone => "owner_gone",
            CallEnd::WorkerGone => "worker_gone",
            CallEnd::WorkerGaveUp => "timed_out",
            CallEnd::TurnCancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod shares {
    use super::*;

    #[test]
    fn a_call_goes_to_the_asker_that_lent_the_tool_else_its_forager() {
        let lent = ["mine".to_owned()];
        let forager = |t: &str| (t != "nobodys").then_some(9);
        let local = |t: &str| (t == "here").then_some(8);
        let owner = |tool, lent: Option<&[String]>, caller, from_node| {
            owner_of(tool, lent, caller, from_node, local, forager)
        };
        assert_eq!(
            owner("mine", Some(&lent), Some(3), false),
            Some(3),
            "the asker's own"
        );
        assert_eq!(
            owner("other", Some(&lent), Some(3), false),
            Some(9),
            "not lent: the forager"
        );
        assert_eq!(
            owner("mine", Some(&lent), None, false),
            Some(9),
            "its asker is gone"
        );
        assert_eq!(
            owner("mine", None, Some(3), false),
            Some(9),
            "no tools lent"
        );
        assert_eq!(owner("nobodys", Some(&lent), Some(3), false), None);
        // From another node: a forager here, or nobody.
        assert_eq!(owner("mine", Some(&lent), Some(3), true), None);
        assert_eq!(owner("here", None, None, true), Some(8));
    }

    fn call(owner: ConnId, sid: &str, caller: Option<ConnId>) -> Call {
        Call {
            worker: 1,
            rid: None,
            caller,
            owner,
            sid: sid.into(),
            tool: "t".into(),
            args: Value::Null,
            started: Instant::now(),
        }
    }

    fn full(
        calls: &[Call],
        owner: ConnId,
        sid: &str,
        caller: Option<ConnId>,
    ) -> Option<&'static str> {
        full_share(calls.iter(), owner, sid, caller)
    }

    #[test]
    fn an_owner_that_never_answers_fills_its_own_share_only() {
        let calls: Vec<Call> = (0..MAX_CALLS_PER_OWNER)
            .map(|i| call(7, &format!("s{}", i % 100), None))
            .collect();
        assert_eq!(
            full(&calls, 7, "new", None),
            Some("waiting for the bee that serves this tool")
        );
        assert_eq!(
            full(&calls, 8, "new", None),
            None,
            "another owner's tools are served"
        );
    }

    #[test]
    fn one_sid_or_one_bee_calling_without_end_fills_its_own_share_only() {
        let by_sid: Vec<Call> = (0..MAX_CALLS_PER_SID)
            .map(|i| call(10 + i as ConnId, "loud", None))
            .collect();
        assert_eq!(
            full(&by_sid, 9_999, "loud", None),
            Some("in flight for this session")
        );
        assert_eq!(full(&by_sid, 9_999, "quiet", None), None);
        let by_bee: Vec<Call> = (0..MAX_CALLS_PER_OWNER)
            .map(|i| call(10 + i as ConnId, &format!("s{i}"), Some(3)))
            .collect();
        assert_eq!(
            full(&by_bee, 9_999, "fresh", Some(3)),
            Some("in flight for this session's bee")
        );
        assert_eq!(full(&by_bee, 9_999, "fresh", Some(4)), None, "another bee");
        assert_eq!(
            full(&by_bee, 9_999, "fresh", None),
            None,
            "no caller counts as none"
        );
    }

    #[test]
    fn the_whole_table_has_a_ceiling() {
        let calls: Vec<Call> = (0..MAX_CALLS_IN_FLIGHT)
            .map(|i| call(i as ConnId, &format!("s{i}"), None))
            .collect();
        assert_eq!(full(&calls, ConnId::MAX, "x", None), Some("in flight"));
    }
}
