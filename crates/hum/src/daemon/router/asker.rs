//! The router's asker side: hellos, prompts (normalised once, here, and sent
//! to the worker that holds or best serves their sid), cancels, status.

use super::routes::SidCancel;
use super::*;

impl Router {
    pub(super) fn hello(&mut self, id: ConnId, tone: Tone) {
        let Body::Hello(hello) = &tone.body else {
            return;
        };
        if hello
            .proto_version
            .as_deref()
            .is_some_and(|v| v != thrum::PROTO_VERSION)
        {
            tracing::warn!(event = "daemon.proto_mismatch", conn = id, theirs = ?hello.proto_version, ours = thrum::PROTO_VERSION, "protocol version differs");
        }
        let is_worker = hello
            .bee
            .as_ref()
            .is_some_and(|b| b.has(&thrum::Role::Worker));
        let is_forager = hello
            .bee
            .as_ref()
            .is_some_and(|b| b.has(&thrum::Role::Forager));
        let role = if placing::is_remote(id)
            && hello
                .hid
                .as_deref()
                .is_some_and(|h| h.starts_with(placing::CALLS_HID_PREFIX))
        {
            Role::Calls
        } else if is_forager && !is_worker {
            Role::Forager
        } else if is_worker {
            let Some(models) = hello.models.clone().filter(|m| !m.is_empty()) else {
                return self.refuse(
                    id,
                    &tone,
                    thrum::ErrorCode::BadRequest,
                    "a worker's hello needs models".into(),
                );
            };
            Role::Worker {
                hive: hello.hive.clone().unwrap_or_else(|| "unknown".into()),
                models,
                hives: crate::reports::HiveModels::of(hello),
            }
        } else {
            Role::Asker {
                cwd: hello.cwd().map(str::to_owned),
            }
        };
        let probe = hello.source.as_deref() == Some(crate::client::STATUS_SOURCE);
        if probe {
            tracing::debug!(event = "daemon.hello", conn = id, role = ?role, "status probe");
        } else {
            tracing::info!(event = "daemon.hello", conn = id, role = ?role, "peer registered");
        }
        // A forager is one `hid` across connections: a new connection with
        // the hid of a live forager (one that re-dialed without closing)
        // takes its place and its tools, and the old one is told and
        // closed. (Askers may share a hid: hum's gateway and `hum prompt
        // --bee` open a connection per turn under the bee's name.)
        let forager_hid = hello
            .hid
            .as_deref()
            .filter(|h| !h.is_empty() && is_forager && !is_worker);
        if let Some(hid) = forager_hid {
            self.replace_older_forager(id, hid);
        }
        let was = self.peers.get(&id).map(|p| p.role.clone());
        if let Some(p) = self.peers.get_mut(&id) {
            p.role = role.clone();
            p.probe = probe;
            p.name = hello.hid.clone().or_else(|| hello.source.clone());
            p.hid = hello.hid.clone().filter(|h| !h.is_empty());
            p.answers_permits = hello
                .chis
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c == "permission-ask"));
        }
        let mut extra = Map::new();
        extra.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        extra.insert("workers".into(), json!(self.workers()));
        extra.insert("models".into(), json!(self.models()));
        // A worker gives its turns as long should this humd go away.
        extra.insert(
            crate::reports::BREATH_ASKER_GONE_GRACE.into(),
            json!(self.routes.grace().as_millis() as u64),
        );
        let mut breath = Tone::new(thrum::Breath {
            proto_version: Some(thrum::PROTO_VERSION.into()),
            extra,
        });
        breath.envelope.from = Some("daemon".into());
        breath.envelope.rid = tone.rid().map(str::to_owned);
        self.send(id, breath);
        self.ack(id, tone.rid(), true);
        // After the hello is answered: a forager's conflict warning follows it.
        match role {
            // A second hello replaces the first's tools; the calls it
            // holds stay its own to answer (another node's tools link says
            // hello again each time that node's catalogue changes).
            Role::Forager => {
                if was == Some(Role::Forager) {
                    self.desk.registry.withdraw(id);
                }
                self.forager_hello(id, hello);
            }
            // A new worker hears the foragers' tools, if there are any.
            Role::Worker { .. } if !self.desk.registry.catalogue().is_empty() => {
                self.tell_tools(id)
            }
            _ => {}
        }
    }

    /// A forager's new connection `id` with the hid of a live one takes
    /// its place: the old one is told and closed.
    fn replace_older_forager(&mut self, id: ConnId, hid: &str) {
        let older: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(c, p)| **c != id && p.role == Role::Forager && p.hid.as_deref() == Some(hid))
            .map(|(c, _)| *c)
            .collect();
        for old in older {
            tracing::info!(event = "daemon.replaced", conn = old, by = id, hid = %hid, "a new connection of the same bee takes its place");
            self.send(
                old,
                error(
                    thrum::ErrorCode::Replaced,
                    "a new connection with your hid took this one's place",
                    None,
                    None,
                ),
            );
            if let Some(p) = self.peers.get(&old) {
                p.outbox.close();
            }
            self.left(old);
        }
    }

    pub(super) fn asker_tone(&mut self, id: ConnId, role: &Role, tone: Tone) {
        match &tone.body {
            Body::Prompt(_) => self.prompt(id, role, tone),
            Body::Cancel(_) => self.cancel(id, tone),
            Body::Cleanup(_) => {
                let Some(sid) = tone.sid().map(str::to_owned) else {
                    return self.refuse(
                        id,
                        &tone,
                        thrum::ErrorCode::BadRequest,
                        "cleanup needs a sid".into(),
                    );
                };
                // The session's pending tool calls end with it.
                self.cancel_calls_of_sid(&sid);
                match self.routes.worker_of(&sid) {
                    Some(worker) => {
                        let rid = tone.rid().map(str::to_owned);
                        let mut fwd = tone;
                        fwd.envelope.from = Some("daemon".into());
                        let hive = self.hive_of(worker);
                        fwd.envelope.sigil = Some(thrum::sigil(&hive, &sid));
                        let sent = self.send(worker, fwd);
                        self.ack(id, rid.as_deref(), sent);
                    }
                    // Nothing holds the sid: a cleanup has nothing to do.
                    None => self.ack(id, tone.rid(), true),
                }
            }
            Body::Unknown(u) if u.chi == crate::reports::STATUS => self.status(id, tone.rid()),
            Body::Unknown(u) if u.chi == crate::reports::DRAIN && !placing::is_remote(id) => {
                let request = crate::reports::DrainRequest::read(&u.fields);
                self.drain(id, tone.rid(), !request.off)
            }
            _ => self.ack(id, tone.rid(), true),
        }
    }

    /// A bee's `cancel`: "interrupt the current turn of this sid". The
    /// turn it names by its rid, else the sid's oldest turn not cancelled
    /// yet; the worker is told exactly that turn (by its rid), so a turn
    /// queued behind it is not touched.
    pub(super) fn cancel(&mut self, id: ConnId, tone: Tone) {
        let Some(sid) = tone.sid().map(str::to_owned) else {
            return self.refuse(
                id,
                &tone,
                thrum::ErrorCode::BadRequest,
                "cancel needs a sid".into(),
            );
        };
        // The turn's pending tool calls end with it.
        self.cancel_calls_of_sid(&sid);
        let named = tone.rid().map(str::to_owned);
        let worker = match self.routes.cancel(&sid, named.as_deref()) {
            SidCancel::Turns(effects) => {
                let n = self.apply(effects);
                return self.ack(id, named.as_deref(), n > 0);
            }
            // Every turn of the sid is being cancelled already.
            SidCancel::Already => return self.ack(id, named.as_deref(), true),
            SidCancel::Idle(worker) => worker,
        };
        // No turn here (the sid is idle, or its turn is just ending): the
        // worker that holds the sid cancels whatever it runs for it.
        match worker {
            Some(worker) => {
                let mut fwd = Tone::new(thrum::Cancel::default()).with_sid(&sid);
                fwd.envelope.from = Some("daemon".into());
                let hive = self.hive_of(worker);
                fwd.envelope.sigil = Some(thrum::sigil(&hive, &sid));
                let sent = self.send(worker, fwd);
                self.ack(id, named.as_deref(), sent);
            }
            // Its prompts may still wait for the cluster to place it.
            None if self.cancel_held(&sid, named.as_deref()) > 0 => {
                self.ack(id, named.as_deref(), true)
            }
            None => self.refuse(
                id,
                &tone,
                thrum::ErrorCode::BadRequest,
                format!("no worker holds sid {sid}"),
            ),
        }
    }

    /// Answers a `status` request (a thrum extension chi) with the daemon's
    /// view and each worker's latest `worker-status`.
    pub(super) fn status(&mut self, id: ConnId, rid: Option<&str>) {
        let t = self.status_tone(rid);
        self.send(id, t);
    }

    /// The daemon's view and each worker's latest status.
    pub fn snapshot(&self) -> DaemonStatus {
        let workers = self
            .peers
            .iter()
            .filter_map(|(conn, p)| match &p.role {
                Role::Worker {
                    hive,
                    models,
                    hives,
                } => Some(WorkerEntry {
                    conn: *conn,
                    hive: hive.clone(),
                    models: models.clone(),
                    hives: hives.clone(),
                    in_flight: self.load(*conn),
                    // Read from the line as it came, now that someone asks.
                    status: p.status.as_deref().and_then(|l| {
                        serde_json::from_slice(l)
                            .map_err(|e| {
                                tracing::warn!(event = "daemon.worker_status_unreadable", conn, error = %e,
                                    "a worker's status does not read as this humd's (another version?)")
                            })
                            .ok()
                    }),
                }),
                _ => None,
            })
            .collect();
        let mut status = DaemonStatus {
            daemon: DaemonInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                workers: self.workers(),
                askers: self.askers(),
                stats: self.stats,
                unfinished_lines: self.line_budget.as_ref().map(|b| LineBudget {
                    bytes: b.used(),
                    limit: b.limit(),
                }),
                tools: self.tools_status(),
                usage: None,
                cluster: self
                    .cluster_view
                    .clone()
                    .map(|c| crate::reports::ClusterStatus {
                        timings: self.cluster_timings.clone(),
                        ..self.sids_elsewhere(c)
                    }),
            },
            workers,
        };
        let sids: Vec<String> = status.cells().map(|c| c.sid.clone()).collect();
        status.daemon.usage = self.usage_status(sids.iter().map(String::as_str));
        status
    }

    pub(super) fn status_tone(&self, rid: Option<&str>) -> Tone {
        self.snapshot().to_tone(rid)
    }

    /// The hive of `worker` that serves `model` (its first hive when none
    /// names it, or for an older worker that did not list its hives).
    pub(super) fn hive_serving(&self, worker: ConnId, model: Option<&str>) -> String {
        match self.peers.get(&worker).map(|p| &p.role) {
            Some(Role::Worker { hive, hives, .. }) => {
                crate::reports::HiveModels::serving(hives, model, hive).to_owned()
            }
            _ => "unknown".into(),
        }
    }

    pub(super) fn hive_of(&self, worker: ConnId) -> String {
        match self.peers.get(&worker).map(|p| &p.role) {
            Some(Role::Worker { hive, .. }) => hive.clone(),
            _ => "unknown".into(),
        }
    }

    pub(super) fn serves(&self, worker: ConnId, model: Option<&str>) -> bool {
        match self.peers.get(&worker).map(|p| &p.role) {
            Some(Role::Worker { models, hive, .. }) => match model {
                Some(m) => models.iter().any(|x| x == m),
                None => self.default_hive.as_deref().is_none_or(|h| h == hive),
            },
            _ => false,
        }
    }

    pub(super) fn load(&self, worker: ConnId) -> usize {
        self.routes.load(worker)
    }

    pub(super) fn prompt(&mut self, id: ConnId, role: &Role, mut tone: Tone) {
        // Only humd says where a moved session's transcript is (it adds it
        // when the cluster places the sid here).
        if let Body::Prompt(p) = &mut tone.body {
            p.extra.remove(crate::reports::PROMPT_RESTORE_TRANSCRIPT);
        }
        self.route_prompt(id, role, tone, None)
    }

    /// A prompt, routed; `placement` is the cluster's answer for a prompt
    /// that waited for it (none: first time here).
    pub(super) fn route_prompt(
        &mut self,
        id: ConnId,
        role: &Role,
        mut tone: Tone,
        placement: Option<&placing::Placement>,
    ) {
        let Some(sid) = tone.sid().filter(|s| !s.is_empty()).map(str::to_owned) else {
            return self.refuse(
                id,
                &tone,
                thrum::ErrorCode::BadRequest,
                "prompt needs a sid".into(),
            );
        };
        let Body::Prompt(prompt) = &mut tone.body else {
            return;
        };
        let prompt_tools = prompt.tools.clone();
        let model = prompt.model_id.clone();
        let bee = match self.complete(id, role, prompt) {
            Ok(bee) => bee,
            Err(why) => return self.refuse(id, &tone, thrum::ErrorCode::BadRequest, why.into()),
        };
        let asked_rid = tone.rid().map(str::to_owned);
        if let Some(rid) = &asked_rid {
            if self.bounced(id, &sid, rid, model.as_deref(), &tone) {
                return;
            }
            // The rid of a turn in flight: the bee is waiting for that turn
            // (it came back after losing its connection), not asking anew.
            if self.reclaimed(id, &sid, rid, prompt_tools.as_ref()) {
                return;
            }
        }
        if self.over_budget(id, &tone, &sid) {
            return;
        }
        let Some((worker, back)) =
            self.worker_for(id, role, &sid, model.as_deref(), tone, placement)
        else {
            // It waits for the cluster (or was refused).
            return;
        };
        tone = back;
        let Some(worker) = worker else {
            self.stats.no_worker += 1;
            let message = self.no_worker_for(model.as_deref());
            return self.refuse(id, &tone, thrum::ErrorCode::NoWorker, message);
        };
        let hive = self.hive_of(worker);
        tone.envelope.sigil = Some(thrum::sigil(&hive, &sid));
        tone.envelope.from = Some("daemon".into());
        // Every turn has a rid: what the worker says about it carries it,
        // and that is how its output finds its asker and no other.
        let rid = asked_rid.clone().unwrap_or_else(fresh_rid);
        tone.envelope.rid = Some(rid.clone());
        // A prompt too big to forward is the asker's problem, not a lost
        // worker.
        if let Err(thrum::EncodeError::TooLong { len, limit }) =
            tone.encode_line(thrum::DEFAULT_MAX_LINE)
        {
            return self.refuse(
                id,
                &tone,
                thrum::ErrorCode::BadRequest,
                format!(
                    "the prompt is {len} bytes once forwarded, over the {limit}-byte line limit"
                ),
            );
        }
        // A prompt this node was sent on an old route (its cell here went),
        // placed on the node it came from: sent back, and no turn of it is
        // kept here (its answer goes from there to its asker).
        if self.same_node(id, worker) {
            return self.send_back(id, worker, &sid, &rid, tone);
        }
        // The bee moved on: from any turn of this sid it waited to take
        // over, and what it left running for the sid ends first.
        self.routes.moved_on(id, &sid);
        let superseded = self.routes.supersede(&sid);
        self.apply(superseded);
        if !self.send(worker, tone) {
            self.stats.worker_lost += 1;
            self.send(
                id,
                error(
                    thrum::ErrorCode::WorkerLost,
                    "the worker could not take the prompt",
                    Some(&sid),
                    asked_rid.as_deref(),
                ),
            );
            return;
        }
        self.stats.prompts_routed += 1;
        self.asker_tools(&sid, prompt_tools.as_ref());
        let turn = Turn {
            asker: Some(id),
            worker,
            rid,
            cancel_sent: false,
            running: false,
            bee,
            model,
            started: Instant::now(),
        };
        self.routes.routed(&sid, worker, turn);
        self.ack(id, asked_rid.as_deref(), true);
    }

    /// Fills in what a prompt leaves to humd: `content` from `text` (the
    /// workers read both), the asker's cwd, and the asker's name (which the
    /// worker tells again should humd restart while the turn runs).
    /// Returns that name; a prompt with neither content nor text is refused.
    fn complete(
        &self,
        id: ConnId,
        role: &Role,
        prompt: &mut thrum::Prompt,
    ) -> Result<String, &'static str> {
        if prompt.content.is_none() {
            match &prompt.text {
                // A copy of a big text would double the line (and could take
                // it over the limit); workers read `text` as well.
                Some(text) if text.len() > FILL_CONTENT_UP_TO => {}
                Some(text) => prompt.content = Some(Value::String(text.clone())),
                None => return Err("prompt needs content or text"),
            }
        }
        if prompt.cwd.is_none() {
            let cwd = match role {
                Role::Asker { cwd: Some(c) } => c.clone(),
                _ => self.cwd.clone(),
            };
            prompt.cwd = Some(cwd);
        }
        let bee = accounting::bee_name(self.peers.get(&id));
        // A prompt another node forwarded keeps the name its asker has
        // there (the link's own name is no bee's).
        if placing::is_remote(id) {
            if let Some(Value::String(name)) = prompt.extra.get(crate::reports::PROMPT_ASKER_NAME) {
                return Ok(name.clone());
            }
        }
        prompt.extra.insert(
            crate::reports::PROMPT_ASKER_NAME.into(),
            Value::String(bee.clone()),
        );
        Ok(bee)
    }

    /// Why no worker takes a prompt for `model`, with the models on offer.
    fn no_worker_for(&self, model: Option<&str>) -> String {
        let offered = self.models();
        match model {
            Some(m) => format!(
                "no worker serves model {m}; models on offer: {}",
                if offered.is_empty() {
                    "none".into()
                } else {
                    offered.join(", ")
                }
            ),
            None => "no worker is connected".into(),
        }
    }
}

/// A rid for a prompt that came without one: unique among every humd's,
/// not only this one's (a time and a counter alone are not: two nodes of a
/// cluster forwarding to a third make them in the same millisecond).
fn fresh_rid() -> String {
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let process = PROCESS.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_owned());
    format!("{}-{process}", thrum::rid())
}
