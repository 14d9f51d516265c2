//! The router's tool side: foragers and the tools they offer, asker tools,
//! and every call in flight between an agent (through its worker) and the
//! bee that runs the tool.
//!
//! A call is routed by its tool's name: the asker of that sid first (the
//! tools of its last prompt), then the forager that offered the name first.
//! Whatever ends a call (its result, a cancel of the turn, its owner or its
//! worker leaving) ends it once: the agent always gets an answer, the owner
//! is told when the call is no longer wanted.

use super::*;
use crate::reports::{CapabilityEntry, ForagerEntry, ToolConflict, ToolsStatus};
use std::collections::BTreeMap;

/// Tools offered by foragers: each name's offers in the order they came;
/// the first is the owner, the others are conflicts (visible in status)
/// that take over if the owner leaves.
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Each name's offers: who, the spec, and the spec's size as JSON.
    offers: BTreeMap<String, Vec<(ConnId, Value, usize)>>,
    /// The sizes above, summed (kept, not recounted per hello).
    bytes: usize,
    /// The capabilities each forager serves (`provides`), checked.
    provides: BTreeMap<ConnId, Vec<String>>,
}

impl Registry {
    /// Registers `conn`'s tools; returns the names another forager owns.
    /// Specs without a valid name are not registered (the caller has told
    /// the forager which).
    fn offer(&mut self, conn: ConnId, specs: &[Value]) -> Vec<String> {
        let mut conflicts = Vec::new();
        for spec in specs {
            let Some(name) = thrum::tools::tool_name(spec) else {
                continue;
            };
            let offers = self.offers.entry(name.to_owned()).or_default();
            if offers.iter().any(|(c, _, _)| *c == conn) {
                continue;
            }
            if !offers.is_empty() {
                conflicts.push(name.to_owned());
            }
            let len = spec_bytes(spec);
            self.bytes += len;
            offers.push((conn, spec.clone(), len));
        }
        conflicts
    }

    /// Records the capabilities `conn` serves.
    fn provide(&mut self, conn: ConnId, tags: Vec<String>) {
        if tags.is_empty() {
            self.provides.remove(&conn);
        } else {
            self.provides.insert(conn, tags);
        }
    }

    /// Every capability some forager serves, each once, sorted.
    pub(super) fn provided(&self) -> Vec<String> {
        let all: std::collections::BTreeSet<&String> = self.provides.values().flatten().collect();
        all.into_iter().cloned().collect()
    }

    /// The capabilities `conn` serves.
    pub(super) fn provided_by(&self, conn: ConnId) -> Vec<String> {
        self.provides.get(&conn).cloned().unwrap_or_default()
    }

    /// Forgets `conn`'s offers; returns whether what workers are told
    /// changed (it did when `conn` owned a name or served a capability).
    fn withdraw(&mut self, conn: ConnId) -> bool {
        let mut owned = self.provides.remove(&conn).is_some();
        let mut freed = 0;
        for offers in self.offers.values_mut() {
            owned |= offers.first().is_some_and(|(c, _, _)| *c == conn);
            offers.retain(|(c, _, len)| {
                let mine = *c == conn;
                if mine {
                    freed += len;
                }
                !mine
            });
        }
        self.offers.retain(|_, o| !o.is_empty());
        self.bytes -= freed;
        owned
    }

    /// Bytes of every spec offered (owners and conflicts).
    fn bytes(&self) -> usize {
        self.bytes
    }

    fn owner(&self, name: &str) -> Option<ConnId> {
        self.offers.get(name)?.first().map(|(c, _, _)| *c)
    }

    /// Each name's owning spec, by name.
    pub(super) fn catalogue(&self) -> Vec<Value> {
        self.offers
            .values()
            .filter_map(|o| o.first().map(|(_, s, _)| s.clone()))
            .collect()
    }

    /// The names `conn` owns.
    pub(super) fn owned_by(&self, conn: ConnId) -> Vec<String> {
        self.offers
            .iter()
            .filter(|(_, o)| o.first().is_some_and(|(c, _, _)| *c == conn))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Names offered by more than one forager: (name, owner, the others).
    pub(super) fn conflicts(&self) -> Vec<(String, ConnId, Vec<ConnId>)> {
        self.offers
            .iter()
            .filter(|(_, o)| o.len() > 1)
            .map(|(n, o)| {
                (
                    n.clone(),
                    o[0].0,
                    o[1..].iter().map(|(c, _, _)| *c).collect(),
                )
            })
            .collect()
    }
}

/// A spec's size as it travels (JSON).
fn spec_bytes(spec: &Value) -> usize {
    serde_json::to_vec(spec).map_or(0, |v| v.len())
}

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

/// A permission ask sent to an asker and not yet answered.
#[derive(Debug, Clone)]
pub(super) struct Permit {
    worker: ConnId,
    asker: ConnId,
    sid: String,
}

impl Router {
    /// The connected asker of the turn that made a call: named by the
    /// call's rid; a call without one (a worker of an older hum) goes to
    /// the sid's latest asker.
    fn caller_asker(&self, sid: &str, worker: ConnId, rid: Option<&str>) -> Option<ConnId> {
        match rid {
            Some(_) => self.turn_asker(sid, worker, rid),
            None => self
                .sid_asker
                .get(sid)
                .copied()
                .filter(|a| self.peers.contains_key(a)),
        }
    }

    /// A worker's agent asks permission to use a tool: to the sid's asker
    /// if it said it answers such asks, else answered at once without a
    /// decision (the worker applies its configured default).
    pub(super) fn permission_ask(&mut self, worker: ConnId, tone: Tone) {
        let Body::PermissionAsk(ask) = &tone.body else {
            return;
        };
        let Some(sid) = tone.sid().map(str::to_owned) else {
            return;
        };
        let asker = self
            .caller_asker(&sid, worker, tone.rid())
            .filter(|a| self.peers.get(a).is_some_and(|p| p.answers_permits));
        let Some(asker) = asker else {
            tracing::info!(event = "permit.no_asker", sid = %sid, call = %ask.call_id, tool = %ask.tool_name, "nobody answers this sid's permission asks; the worker's default applies");
            let msg = "the asker does not answer permission asks".to_owned();
            return self.answer_permit(worker, &sid, &ask.call_id, None, Some(msg));
        };
        if self.permits.len() >= MAX_CALLS_IN_FLIGHT {
            let msg = "too many permission asks in flight".to_owned();
            return self.answer_permit(worker, &sid, &ask.call_id, Some("deny"), Some(msg));
        }
        tracing::info!(event = "permit.asked", sid = %sid, call = %ask.call_id, tool = %ask.tool_name, "permission ask sent to the asker");
        self.permits.insert(
            ask.call_id.clone(),
            Permit {
                worker,
                asker,
                sid: sid.clone(),
            },
        );
        let mut fwd = tone;
        fwd.envelope.from = Some("daemon".into());
        fwd.envelope.sigil = None;
        self.send(asker, fwd);
    }

    /// The asker's answer to a permission ask: to the worker that asked.
    pub(super) fn release_permit(&mut self, id: ConnId, tone: Tone) {
        let Body::ReleasePermit(permit) = &tone.body else {
            return;
        };
        let permit_id = permit.id().to_owned();
        match self.permits.get(&permit_id) {
            Some(p) if p.asker == id => {}
            _ => {
                return self.refuse(
                    id,
                    &tone,
                    thrum::ErrorCode::BadRequest,
                    format!("no permission ask {permit_id:?} is waiting for you"),
                )
            }
        }
        let Some(p) = self.permits.remove(&permit_id) else {
            return;
        };
        tracing::info!(event = "permit.answered", sid = %p.sid, call = %permit_id, decision = permit.decision.as_deref(), "permission ask answered");
        let mut fwd = tone.clone();
        fwd.envelope.sid = Some(p.sid.clone());
        fwd.envelope.from = Some("daemon".into());
        let hive = self.hive_of(p.worker);
        fwd.envelope.sigil = Some(thrum::sigil(&hive, &p.sid));
        self.send(p.worker, fwd);
        self.ack(id, tone.rid(), true);
    }

    fn answer_permit(
        &mut self,
        worker: ConnId,
        sid: &str,
        call_id: &str,
        decision: Option<&str>,
        message: Option<String>,
    ) {
        let mut t = Tone::new(thrum::ReleasePermit {
            call_id: call_id.to_owned(),
            decision: decision.map(str::to_owned),
            message,
            updated_input: None,
            extra: Map::new(),
        })
        .with_sid(sid);
        t.envelope.from = Some("daemon".into());
        let hive = self.hive_of(worker);
        t.envelope.sigil = Some(thrum::sigil(&hive, sid));
        self.send(worker, t);
    }

    /// A forager said hello: its tools join the registry (a name someone
    /// else owns is a conflict, said to it and shown in status), and every
    /// worker hears the new catalogue.
    pub(super) fn forager_hello(&mut self, id: ConnId, hello: &thrum::Hello) {
        // Tool specs as sent; a forager that sent only `toolNames` offers
        // those names with no description or schema.
        let specs = hello.tools.clone().unwrap_or_else(|| {
            hello
                .tool_names
                .iter()
                .flatten()
                .map(|n| json!({"name": n}))
                .collect()
        });
        let bytes: usize = specs.iter().map(spec_bytes).sum();
        if specs.len() > MAX_TOOLS_PER_FORAGER || bytes + self.tools.bytes() > MAX_CATALOGUE_BYTES {
            tracing::warn!(
                event = "daemon.forager_refused",
                conn = id,
                tools = specs.len(),
                bytes,
                "a forager offered more tools than humd keeps"
            );
            let mut e = Tone::new(thrum::ErrorTone::new(
                thrum::ErrorCode::BadRequest,
                format!(
                    "too many tools: at most {MAX_TOOLS_PER_FORAGER} per forager and {MAX_CATALOGUE_BYTES} bytes of specs in all; none of these were registered"
                ),
            ));
            e.envelope.from = Some("daemon".into());
            self.send(id, e);
            return;
        }
        let refused: Vec<String> = specs
            .iter()
            .filter(|s| thrum::tools::tool_name(s).is_none())
            .map(|s| match s.get("name") {
                Some(Value::String(n)) => n.chars().take(80).collect(),
                Some(other) => other.to_string().chars().take(80).collect(),
                None => "(no name)".to_owned(),
            })
            .collect();
        if !refused.is_empty() {
            tracing::warn!(event = "daemon.tools_refused", conn = id, tools = ?refused, "a forager offered tools whose names are not tool names");
            let mut e = Tone::new(thrum::ErrorTone::new(
                thrum::ErrorCode::BadRequest,
                format!(
                    "not registered: {refused:?}: a tool's name is 1-64 letters, digits, _ or - (and not {})",
                    thrum::tools::PERMIT_TOOL
                ),
            ));
            e.envelope.from = Some("daemon".into());
            self.send(id, e);
        }
        let conflicts = self.tools.offer(id, &specs);
        let provides = self.checked_provides(id, hello.provides.as_deref().unwrap_or_default());
        tracing::info!(
            event = "daemon.forager",
            conn = id,
            tools = specs.len(),
            conflicts = conflicts.len(),
            provides = ?provides,
            "forager registered its tools"
        );
        self.tools.provide(id, provides);
        if !conflicts.is_empty() {
            tracing::warn!(event = "daemon.tool_conflict", conn = id, tools = ?conflicts, "tools already offered by another forager");
            let mut warn = Tone::new(thrum::Pulse {
                kind: thrum::PulseKind::ToolConflict,
                extra: match json!({
                    "tools": conflicts,
                    "message": "another forager offers these tools already; calls go to it while it is connected",
                }) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
            });
            warn.envelope.from = Some("daemon".into());
            self.send(id, warn);
        }
        self.announce_tools();
    }

    /// The capability tags of a forager's hello that humd keeps: valid ones,
    /// each once, at most [`MAX_PROVIDES`](crate::hive::capability::MAX_PROVIDES);
    /// the forager is told which were not kept.
    fn checked_provides(&mut self, id: ConnId, tags: &[String]) -> Vec<String> {
        use crate::hive::capability::{valid_tag, MAX_PROVIDES};
        let mut kept: Vec<String> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        for tag in tags {
            if !valid_tag(tag) || kept.len() >= MAX_PROVIDES {
                refused.push(tag.chars().take(80).collect());
            } else if !kept.contains(tag) {
                kept.push(tag.clone());
            }
        }
        if !refused.is_empty() {
            tracing::warn!(event = "daemon.provides_refused", conn = id, tags = ?refused, "a forager named capabilities humd does not keep");
            let mut e = Tone::new(thrum::ErrorTone::new(
                thrum::ErrorCode::BadRequest,
                format!(
                    "provides: not kept: {refused:?}: at most {MAX_PROVIDES} tags of 1-{} printable characters",
                    crate::hive::capability::MAX_TAG_CHARS
                ),
            ));
            e.envelope.from = Some("daemon".into());
            self.send(id, e);
        }
        kept
    }

    /// Tells every worker the foragers' catalogue: at once, unless it was
    /// told less than [`ANNOUNCE_EVERY`] ago; then once when that has
    /// passed, with the catalogue as it is by then. A herd of foragers
    /// coming and going makes a few announcements, not one each, so the
    /// (up to 2 MiB) catalogue cannot pile up in a worker's link.
    pub(super) fn announce_tools(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.announced_at {
            if now < last + ANNOUNCE_EVERY {
                self.announce_due.get_or_insert(last + ANNOUNCE_EVERY);
                return;
            }
        }
        self.announced_at = Some(now);
        self.announce_due = None;
        let workers: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.role, Role::Worker { .. }))
            .map(|(c, _)| *c)
            .collect();
        for w in workers {
            self.tell_tools(w);
        }
    }

    pub(super) fn tell_tools(&mut self, worker: ConnId) {
        let mut t = Tone::new(thrum::ToolInfo {
            tools: Some(self.tools.catalogue()),
            provides: Some(self.tools.provided()),
            extra: Map::new(),
        });
        t.envelope.from = Some("daemon".into());
        self.send(worker, t);
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
        if rid.is_some() && self.turn_index(&sid, worker, rid.as_deref()).is_none() {
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
        let caller = self.caller_asker(&sid, worker, rid.as_deref());
        let asker = self
            .sid_tools
            .get(&sid)
            .filter(|names| names.contains(&call.tool_name))
            .and(caller);
        let Some(owner) = asker.or_else(|| self.tools.owner(&call.tool_name)) else {
            self.tool_stats.count("unrouted");
            tracing::info!(event = "tool.unrouted", sid = %sid, call = %call.call_id, tool = %call.tool_name, "no bee serves this tool");
            let r = thrum::ToolResult::error(
                &call.call_id,
                Some(&call.tool_name),
                format!("no bee serves the tool {}", call.tool_name),
            );
            return self.answer_worker(worker, &sid, r);
        };
        // Fair shares: one owner that never answers, one sid or one bee
        // that calls without end fills its own share, not everyone's.
        let (mut of_owner, mut of_sid, mut of_caller) = (0, 0, 0);
        for c in self.calls.values() {
            of_owner += usize::from(c.owner == owner);
            of_sid += usize::from(c.sid == sid);
            of_caller += usize::from(caller.is_some() && c.caller == caller);
        }
        let full = if self.calls.len() >= MAX_CALLS_IN_FLIGHT {
            Some("in flight")
        } else if of_owner >= MAX_CALLS_PER_OWNER {
            Some("waiting for the bee that serves this tool")
        } else if of_sid >= MAX_CALLS_PER_SID {
            Some("in flight for this session")
        } else if of_caller >= MAX_CALLS_PER_OWNER {
            Some("in flight for this session's bee")
        } else {
            None
        };
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
        if self
            .permits
            .get(call_id)
            .is_some_and(|p| p.worker == worker)
        {
            if let Some(p) = self.permits.remove(call_id) {
                let name = accounting::bee_name(self.peers.get(&p.asker));
                tracing::warn!(event = "permission.unanswered", conn = p.asker, asker = %name, sid = %p.sid, call = %call_id,
                    "an asker that answers permission asks let one lapse; the hive's default applied");
                let lapsed = &mut self.unanswered_permits;
                if lapsed.len() < MAX_NAMES_KEPT || lapsed.contains_key(&name) {
                    *lapsed.entry(name).or_default() += 1;
                }
                self.cancel_call_at(p.asker, &p.sid, call_id);
            }
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
        let asked: Vec<(String, Permit)> = self
            .permits
            .iter()
            .filter(|(_, p)| p.asker == id || p.worker == id)
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        for (call, p) in asked {
            self.permits.remove(&call);
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
        if matches!(role, Role::Worker { .. }) {
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
    fn cancel_call_at(&mut self, peer: ConnId, sid: &str, call_id: &str) {
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
            self.turn_index(&call.sid, call.worker, None)
                .and_then(|i| self.turns.get(&call.sid).map(|q| q[i].rid.clone()))
        });
        let mut extra = Map::new();
        extra.insert("callId".into(), json!(result.call_id));
        extra.insert("toolName".into(), json!(call.tool));
        extra.insert("arguments".into(), call.args.clone());
        extra.insert(
            "output".into(),
            result.output().cloned().unwrap_or(Value::Null),
        );
        extra.insert("isError".into(), json!(result.failed()));
        let mut t = Tone::new(thrum::Chunk {
            chunk_type: thrum::ChunkType::ToolExecuted,
            block_idx: None,
            delta: None,
            partial_json: None,
            extra,
        })
        .with_sid(&call.sid);
        t.envelope.rid = rid;
        t.envelope.from = Some("daemon".into());
        self.send(asker, t);
    }

    /// Foragers, their tools, conflicts and calls, for status.
    pub(super) fn tools_status(&self) -> ToolsStatus {
        let foragers = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.role, Role::Forager))
            .map(|(conn, p)| ForagerEntry {
                conn: *conn,
                name: p.name.clone(),
                tools: self.tools.owned_by(*conn),
                provides: self.tools.provided_by(*conn),
            })
            .collect();
        let provided = self.tools.provided();
        let capabilities = crate::hive::capability::CAPABILITIES
            .iter()
            .map(|c| CapabilityEntry {
                name: c.name.to_owned(),
                builtins: c.builtins.iter().map(|b| (*b).to_owned()).collect(),
                served: provided.iter().any(|p| p == c.name),
            })
            .chain(
                provided
                    .iter()
                    .filter(|p| crate::hive::capability::find(p).is_none())
                    .map(|p| CapabilityEntry {
                        name: p.clone(),
                        builtins: Vec::new(),
                        served: true,
                    }),
            )
            .collect();
        let conflicts = self
            .tools
            .conflicts()
            .into_iter()
            .map(|(tool, owner, others)| ToolConflict {
                tool,
                owner,
                others,
            })
            .collect();
        ToolsStatus {
            foragers,
            conflicts,
            calls_in_flight: self.calls.len(),
            calls: self.tool_stats.clone(),
            unanswered_permits: self.unanswered_permits.clone(),
            capabilities,
        }
    }
}

/// How often, at most, humd sends its workers the foragers' catalogue.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);

/// Tools one forager may offer: more than any real tool server has, few
/// enough that every cell's catalogue stays small.
const MAX_TOOLS_PER_FORAGER: usize = 512;

/// Bytes of tool specs humd keeps across foragers: the catalogue goes to
/// every worker in one `tool-info` line, which must stay well under the
/// line limit.
const MAX_CATALOGUE_BYTES: usize = 2 * 1024 * 1024;

/// Tool calls in flight across every agent: past this, a call is answered
/// at once with an error rather than remembered (bounded state).
const MAX_CALLS_IN_FLIGHT: usize = 10_000;

/// Tool calls waiting for one owner (a forager, an asker lending tools),
/// and made for one bee's turns: a tenth of all, so one that never
/// answers, or calls without end, leaves the rest to the others.
pub(super) const MAX_CALLS_PER_OWNER: usize = 1_000;

/// Askers whose lapsed permission asks are counted by name (status).
const MAX_NAMES_KEPT: usize = 256;

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
