//! The router's tool calls: asker tools, and every call in flight between
//! an agent (through its worker) and the bee that runs the tool.
//!
//! A call is routed by its tool's name: the asker of that sid first (the
//! tools of its last prompt), then the forager that offered the name first.
//! Whatever ends a call (its result, a cancel of the turn, its owner or its
//! worker leaving) ends it once: the agent always gets an answer, the owner
//! is told when the call is no longer wanted.

use super::desk::{self, Call, CallEnd};
use super::*;

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
        self.desk.lend(sid, names);
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
        // The asker of the turn that made the call: the owner of the tools
        // its prompt lent, and whose share of calls this one counts in.
        let caller = (!from_node)
            .then(|| self.caller_asker(&sid, worker, rid.as_deref()))
            .flatten();
        let ask = desk::CallAsk {
            call_id: call.call_id.clone(),
            tool: call.tool_name.clone(),
            sid: sid.clone(),
            worker,
            turn_known: self.routes.turn(&sid, worker, rid.as_deref()).is_some(),
            rid,
            args: call.args.clone(),
            caller,
            from_node,
        };
        let owner = match self.desk.route(ask, Instant::now()) {
            Ok(owner) => owner,
            Err(refusal) => {
                tracing::info!(event = refusal.event(), sid = %sid, call = %call.call_id, tool = %call.tool_name, outcome = refusal.outcome(), why = ?refusal, "a tool call nobody runs");
                let r = thrum::ToolResult::error(
                    &call.call_id,
                    Some(&call.tool_name),
                    refusal.message(&call.tool_name),
                );
                return self.answer_worker(worker, &sid, r);
            }
        };
        tracing::info!(event = "tool.routed", sid = %sid, call = %call.call_id, tool = %call.tool_name, owner, "tool call sent to its owner");
        let call_id = call.call_id.clone();
        let mut fwd = tone;
        fwd.envelope.from = Some("daemon".into());
        fwd.envelope.sigil = None;
        if !self.send(owner, fwd) {
            self.end_call(&call_id, CallEnd::OwnerGone);
        }
    }

    /// Turns waiting for their own asker's tool results.
    pub(super) fn parked_turns(&self) -> usize {
        self.desk.parked_turns()
    }

    /// The owner answered: the result goes to the agent's worker, and a
    /// `tool_executed` chunk to the sid's asker.
    pub(super) fn tool_result(&mut self, id: ConnId, tone: Tone) {
        let Body::ToolResult(result) = &tone.body else {
            return;
        };
        let answered = self
            .desk
            .answer(&result.call_id, id, result.failed(), Instant::now());
        let call = match answered {
            Ok(call) => call,
            Err(why) => {
                let message = match why {
                    desk::NotAnswerable::NotWaiting => {
                        format!("no tool call {} is waiting for a result", result.call_id)
                    }
                    desk::NotAnswerable::NotYours => {
                        format!("tool call {} is not yours to answer", result.call_id)
                    }
                };
                return self.refuse(id, &tone, thrum::ErrorCode::BadRequest, message);
            }
        };
        let is_error = result.failed();
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
        if self.desk.call(call_id).is_some_and(|c| c.worker == worker) {
            self.end_call(call_id, CallEnd::WorkerGaveUp);
        }
        let peers = &self.peers;
        let lapsed = self.desk.permits.lapse(worker, call_id, |asker| {
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
        for id in self.desk.ids_where(|c| c.sid == sid) {
            self.end_call(&id, CallEnd::TurnCancelled);
        }
    }

    /// A peer left: the calls it owned are answered with an error, the
    /// calls it made (a worker) are cancelled at their owners; a forager's
    /// tools leave the registry at once.
    pub(super) fn tools_peer_left(&mut self, id: ConnId, role: &Role) {
        // Permission asks: an asker gone answers nothing (the default
        // applies); a worker gone is no longer asking.
        for (call, p) in self.desk.permits.peer_left(id) {
            if p.asker == id {
                let msg = "the asker left before answering".to_owned();
                self.answer_permit(p.worker, &p.sid, &call, None, Some(msg));
            } else {
                self.cancel_call_at(p.asker, &p.sid, &call);
            }
        }
        for call in self.desk.ids_where(|c| c.owner == id) {
            self.end_call(&call, CallEnd::OwnerGone);
        }
        if matches!(role, Role::Worker { .. } | Role::Calls) {
            for call in self.desk.ids_where(|c| c.worker == id) {
                self.end_call(&call, CallEnd::WorkerGone);
            }
        }
        if matches!(role, Role::Forager) && self.desk.registry.withdraw(id) {
            self.announce_tools();
        }
    }

    /// Ends a call that got no result: the owner is told (unless it is the
    /// one gone), the agent gets an error result (unless its worker is).
    fn end_call(&mut self, call_id: &str, why: CallEnd) {
        let Some(call) = self.desk.end(call_id, why) else {
            return;
        };
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
