//! Permission asks: an agent's ask to the asker of its turn, the answer
//! back to the worker, and what happens when nobody answers.

use super::tools::MAX_CALLS_IN_FLIGHT;
use super::*;

/// A permission ask sent to an asker and not yet answered.
#[derive(Debug, Clone)]
pub(super) struct Permit {
    pub(super) worker: ConnId,
    pub(super) asker: ConnId,
    pub(super) sid: String,
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
        let Some(asker) = asker else {
            tracing::info!(event = "permit.no_asker", sid = %sid, call = %ask.call_id, tool = %ask.tool_name, "nobody answers this sid's permission asks; the worker's default applies");
            let msg = "the asker does not answer permission asks".to_owned();
            return self.answer_permit(worker, &sid, &ask.call_id, None, Some(msg));
        };
        if self.permits.len() >= MAX_CALLS_IN_FLIGHT {
            let msg = "too many permission asks in flight".to_owned();
            return self.answer_permit(
                worker,
                &sid,
                &ask.call_id,
                Some(thrum::Decision::Deny),
                Some(msg),
            );
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
