//! Permission asks: an agent's ask to the asker of its turn, the answer
//! back to the worker, and what happens when nobody answers.

use super::desk::MAX_CALLS_IN_FLIGHT;
use super::*;

/// A permission ask sent to an asker and not yet answered.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Permit {
    pub(super) worker: ConnId,
    pub(super) asker: ConnId,
    pub(super) sid: String,
}

/// The permission asks waiting for their askers, and who let asks lapse:
/// a plain value (unit-tested below); the router sends what it decides.
#[derive(Debug, Default)]
pub(super) struct Permits {
    waiting: HashMap<String, Permit>,
    /// Asks each asker let lapse, by name (status).
    lapsed: std::collections::BTreeMap<String, u64>,
}

/// Where a permission ask goes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum AskRoute {
    /// To this asker, which answers such asks.
    To(ConnId),
    /// Back at once without a decision: the worker's default applies.
    Default(&'static str),
    /// Back at once, denied.
    Deny(&'static str),
}

impl Permits {
    /// A worker's ask `call_id` for `sid`, whose turn's asker is `asker`
    /// (when it answers permission asks).
    pub(super) fn ask(
        &mut self,
        call_id: &str,
        worker: ConnId,
        sid: &str,
        asker: Option<ConnId>,
    ) -> AskRoute {
        let Some(asker) = asker else {
            return AskRoute::Default("the asker does not answer permission asks");
        };
        if self.waiting.len() >= MAX_CALLS_IN_FLIGHT {
            return AskRoute::Deny("too many permission asks in flight");
        }
        self.waiting.insert(
            call_id.to_owned(),
            Permit {
                worker,
                asker,
                sid: sid.to_owned(),
            },
        );
        AskRoute::To(asker)
    }

    /// `from`'s answer to ask `id`: the ask, if it waits for `from`.
    pub(super) fn release(&mut self, from: ConnId, id: &str) -> Result<Permit, String> {
        match self.waiting.get(id) {
            Some(p) if p.asker == from => Ok(self.waiting.remove(id).expect("present")),
            _ => Err(format!("no permission ask {id:?} is waiting for you")),
        }
    }

    /// The worker gave up on ask `call_id` (nobody answered in time): the
    /// ask, counted against its asker's `name`.
    pub(super) fn lapse(
        &mut self,
        worker: ConnId,
        call_id: &str,
        name: impl FnOnce(ConnId) -> String,
    ) -> Option<Permit> {
        if self.waiting.get(call_id).is_none_or(|p| p.worker != worker) {
            return None;
        }
        let p = self.waiting.remove(call_id)?;
        let name = name(p.asker);
        if self.lapsed.len() < MAX_NAMES_KEPT || self.lapsed.contains_key(&name) {
            *self.lapsed.entry(name).or_default() += 1;
        }
        Some(p)
    }

    /// The asks `peer` was asked or was asking, taken.
    pub(super) fn peer_left(&mut self, peer: ConnId) -> Vec<(String, Permit)> {
        let ids: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, p)| p.asker == peer || p.worker == peer)
            .map(|(k, _)| k.clone())
            .collect();
        ids.into_iter()
            .filter_map(|k| self.waiting.remove(&k).map(|p| (k, p)))
            .collect()
    }

    pub(super) fn lapsed(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.lapsed
    }
}

impl Router {
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
        let asker = match self.desk.permits.ask(&ask.call_id, worker, &sid, asker) {
            AskRoute::To(asker) => asker,
            AskRoute::Default(why) => {
                tracing::info!(event = "permit.no_asker", sid = %sid, call = %ask.call_id, tool = %ask.tool_name, "nobody answers this sid's permission asks; the worker's default applies");
                return self.answer_permit(worker, &sid, &ask.call_id, None, Some(why.to_owned()));
            }
            AskRoute::Deny(why) => {
                let decision = Some(thrum::Decision::Deny);
                return self.answer_permit(
                    worker,
                    &sid,
                    &ask.call_id,
                    decision,
                    Some(why.to_owned()),
                );
            }
        };
        tracing::info!(event = "permit.asked", sid = %sid, call = %ask.call_id, tool = %ask.tool_name, "permission ask sent to the asker");
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
        let p = match self.desk.permits.release(id, &permit_id) {
            Ok(p) => p,
            Err(why) => return self.refuse(id, &tone, thrum::ErrorCode::BadRequest, why),
        };
        tracing::info!(event = "permit.answered", sid = %p.sid, call = %permit_id, decision = permit.decision.as_ref().map(thrum::Decision::as_str), "permission ask answered");
        let mut fwd = tone.clone();
        fwd.envelope.sid = Some(p.sid.clone());
        fwd.envelope.from = Some("daemon".into());
        let hive = self.hive_of(p.worker);
        fwd.envelope.sigil = Some(thrum::sigil(&hive, &p.sid));
        self.send(p.worker, fwd);
        self.ack(id, tone.rid(), true);
    }

    pub(super) fn answer_permit(
        &mut self,
        worker: ConnId,
        sid: &str,
        call_id: &str,
        decision: Option<thrum::Decision>,
        message: Option<String>,
    ) {
        let mut t = Tone::new(thrum::ReleasePermit {
            call_id: call_id.to_owned(),
            decision,
            message,
            updated_input: None,
            option_id: None,
            extra: Map::new(),
        })
        .with_sid(sid);
        t.envelope.from = Some("daemon".into());
        let hive = self.hive_of(worker);
        t.envelope.sigil = Some(thrum::sigil(&hive, sid));
        self.send(worker, t);
    }
}

/// Askers whose lapsed permission asks are counted by name (status).
pub(super) const MAX_NAMES_KEPT: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ask_goes_to_an_asker_that_answers_or_back_at_once() {
        let mut p = Permits::default();
        assert_eq!(
            p.ask("c1", 1, "s", None),
            AskRoute::Default("the asker does not answer permission asks")
        );
        assert_eq!(p.ask("c2", 1, "s", Some(5)), AskRoute::To(5));
        // A full table denies, and keeps what it holds.
        for i in 0..MAX_CALLS_IN_FLIGHT {
            p.ask(&format!("x{i}"), 1, "s", Some(5));
        }
        assert!(matches!(p.ask("late", 1, "s", Some(5)), AskRoute::Deny(_)));
        assert!(p.release(5, "c2").is_ok());
    }

    #[test]
    fn only_the_asker_asked_may_answer_and_only_once() {
        let mut p = Permits::default();
        p.ask("c1", 1, "s", Some(5));
        assert!(p.release(6, "c1").is_err(), "another asker");
        let taken = p.release(5, "c1").unwrap();
        assert_eq!((taken.worker, taken.sid.as_str()), (1, "s"));
        assert!(p.release(5, "c1").is_err(), "answered already");
        assert!(p.release(5, "nope").unwrap_err().contains("nope"));
    }

    #[test]
    fn a_lapsed_ask_is_counted_against_its_askers_name() {
        let mut p = Permits::default();
        p.ask("c1", 1, "s", Some(5));
        p.ask("c2", 1, "s", Some(5));
        assert!(
            p.lapse(2, "c1", |_| "bee".into()).is_none(),
            "not that worker's ask"
        );
        assert_eq!(p.lapse(1, "c1", |a| format!("bee{a}")).unwrap().asker, 5);
        p.lapse(1, "c2", |a| format!("bee{a}"));
        assert_eq!(p.lapsed().get("bee5"), Some(&2));
        // Names are bounded; a known name still counts.
        for i in 0..MAX_NAMES_KEPT {
            p.ask(&format!("n{i}"), 1, "s", Some(7));
            p.lapse(1, &format!("n{i}"), |_| format!("name{i}"));
        }
        assert_eq!(p.lapsed().len(), MAX_NAMES_KEPT);
        p.ask("again", 1, "s", Some(5));
        p.lapse(1, "again", |a| format!("bee{a}"));
        assert_eq!(p.lapsed().get("bee5"), Some(&3));
    }

    #[test]
    fn a_peer_that_leaves_takes_the_asks_it_was_asked_or_asking() {
        let mut p = Permits::default();
        p.ask("to-5", 1, "s", Some(5));
        p.ask("from-2", 2, "t", Some(6));
        p.ask("other", 3, "u", Some(7));
        let mut gone: Vec<String> = p.peer_left(5).into_iter().map(|(k, _)| k).collect();
        gone.extend(p.peer_left(2).into_iter().map(|(k, _)| k));
        gone.sort();
        assert_eq!(gone, ["from-2", "to-5"]);
        assert!(p.release(7, "other").is_ok());
    }
}
