//! Turns: prompts taken in (refused with a reason, or handed to the pool),
//! their user lines, their ends, and which turn a cell is serving.

use super::book::{SameTurn, Turn};
use super::*;
use crate::reports::{
    BREATH_ASKER_GONE_GRACE as ASKER_GONE_GRACE, PROMPT_ASKER_NAME as ASKER_NAME,
};

impl Actor {
    /// The turn's prompt, handed over once, to the cell that serves it.
    pub(super) fn take_prompt(&mut self, turn: TurnId) -> Option<Prompt> {
        self.turns.take_prompt(turn)
    }

    pub(super) fn inbound(&mut self, tone: Tone) {
        let sid = tone.sid().map(str::to_owned);
        let rid = tone.rid().map(str::to_owned);
        match tone.body {
            Body::Prompt(prompt) => self.prompt(sid, rid, prompt),
            Body::Cancel(_) => match (sid, rid) {
                // humd names the turn by its rid: that turn, no other of
                // its sid (one that ended already: nothing to do).
                (Some(sid), Some(rid)) => match self.turn_named(&sid, &rid) {
                    Some(turn) => self.event(Event::CancelTurn { turn }),
                    None => {
                        tracing::debug!(event = "turn.cancel_unknown", sid = %sid, rid = %rid, "no such turn (over already)")
                    }
                },
                (Some(sid), None) => self.event(Event::Cancel { sid }),
                (None, rid) => self.reject(
                    None,
                    rid.as_deref(),
                    thrum::ErrorCode::BadRequest,
                    "cancel needs a sid".into(),
                ),
            },
            Body::Cleanup(_) => match sid {
                Some(sid) => self.event(Event::Cleanup { sid }),
                None => self.reject(
                    None,
                    rid.as_deref(),
                    thrum::ErrorCode::BadRequest,
                    "cleanup needs a sid".into(),
                ),
            },
            Body::ToolResult(tr) => self.tool_result(sid, rid, tr),
            Body::ReleasePermit(rp) => {
                let id = rp.id().to_owned();
                if !self
                    .bridge
                    .as_ref()
                    .is_some_and(|b| b.answer(&id, Answer::Permit(rp)))
                {
                    self.reject(
                        sid.as_deref(),
                        rid.as_deref(),
                        ErrorCode::BadRequest,
                        format!("no permission ask {id} is waiting"),
                    );
                }
            }
            Body::ToolInfo(info) => {
                if let Some(b) = &self.bridge {
                    b.set_forager_tools(info.tools.unwrap_or_default());
                    self.foragers_provide(info.provides.as_deref().unwrap_or_default());
                }
            }
            Body::Breath(b) => {
                // humd's grace for gone askers: what this worker gives its
                // turns if humd itself goes.
                if let Some(ms) = b.extra.get(ASKER_GONE_GRACE).and_then(Value::as_u64) {
                    self.turns.set_grace(Duration::from_millis(ms));
                }
            }
            Body::Echo(_) => {}
            other => tracing::debug!(
                event = "worker.inbound.ignored",
                chi = other.chi(),
                "tone not for a worker"
            ),
        }
    }

    pub(super) fn prompt(&mut self, sid: Option<String>, rid: Option<String>, prompt: Prompt) {
        let rid = rid.as_deref();
        let Some(sid) = sid.filter(|s| !s.is_empty()) else {
            return self.reject(
                None,
                rid,
                thrum::ErrorCode::BadRequest,
                "prompt needs a sid".into(),
            );
        };
        if prompt.user_text().is_none() && prompt.content.is_none() {
            return self.reject(
                Some(&sid),
                rid,
                thrum::ErrorCode::BadRequest,
                "prompt needs content or text".into(),
            );
        }
        // Whatever goes into argv, cwd or environment must be a C string.
        let argv_fields = [
            ("cwd", prompt.cwd.as_deref()),
            ("systemPrompt", prompt.system_prompt.as_deref()),
            ("modelId", prompt.model_id.as_deref()),
        ];
        let tool_lists = [
            ("allowedTools", prompt.allowed_tools.as_deref()),
            ("disallowedTools", prompt.disallowed_tools.as_deref()),
        ];
        let nul = argv_fields
            .iter()
            .find(|(_, v)| v.is_some_and(|v| v.contains('\0')))
            .map(|(k, _)| *k)
            .or_else(|| {
                tool_lists
                    .iter()
                    .find(|(_, v)| v.is_some_and(|l| l.iter().any(|t| t.contains('\0'))))
                    .map(|(k, _)| *k)
            });
        if let Some(field) = nul {
            return self.reject(
                Some(&sid),
                rid,
                thrum::ErrorCode::BadRequest,
                format!("{field} contains a NUL byte"),
            );
        }
        if let Some(cwd) = prompt.cwd.as_deref() {
            if !std::path::Path::new(cwd).is_dir() {
                return self.reject(
                    Some(&sid),
                    rid,
                    thrum::ErrorCode::BadRequest,
                    format!("cwd {cwd:?} is not a directory on the worker's machine"),
                );
            }
        }
        if let Some(model) = &prompt.model_id {
            if !valid_model_id(model) {
                return self.reject(
                    Some(&sid),
                    rid,
                    thrum::ErrorCode::BadRequest,
                    format!("modelId {model:?} is not a model name"),
                );
            }
            if self.hive_for(Some(model)).is_none() {
                let offered = self.config.models().join(", ");
                return self.reject(
                    Some(&sid),
                    rid,
                    thrum::ErrorCode::NoWorker,
                    format!("model {model} is not served here (offered: {offered})"),
                );
            }
        }
        let hive = self.hive_for(prompt.model_id.as_deref());
        if let Some(why) = builtins_refusal(&prompt, hive) {
            return self.reject(Some(&sid), rid, thrum::ErrorCode::BadRequest, why);
        }
        if let Some(hive) = hive {
            let wanted = crate::hive::launch::builtin_for(&prompt, hive);
            self.builtins_wanted(&sid, &wanted);
        }
        let arrived = self.now();
        let bee = prompt
            .extra
            .get(ASKER_NAME)
            .and_then(Value::as_str)
            .map(|b| b.chars().take(crate::reports::MAX_BEE_NAME).collect());
        let model = prompt.model_id.clone();
        let booked = self.turns.add(Turn {
            sid: sid.clone(),
            rid: rid.map(str::to_owned),
            arrived,
            prompt: Some(prompt),
            cell: None,
            bee,
            model,
            interrupted: false,
        });
        let turn = match booked {
            Ok(turn) => turn,
            Err(SameTurn(_)) => {
                // humd forwarded its asker's claim before it heard of the
                // turn: the same turn, whose output goes to that asker.
                tracing::info!(event = "turn.claimed_again", sid = %sid, rid, "the prompt of a turn in flight came again");
                return;
            }
        };
        tracing::info!(event = "turn.queued", sid = %sid, turn, depth = self.pool.queued() + self.arrived.len() + 1, "prompt accepted");
        self.arrived.push(Event::Prompt { turn, sid });
    }

    /// humd's answer to a call an agent made through the bridge.
    pub(super) fn tool_result(
        &mut self,
        sid: Option<String>,
        rid: Option<String>,
        tr: thrum::ToolResult,
    ) {
        let answer = ToolAnswer {
            output: tr.output().cloned().unwrap_or(Value::Null),
            is_error: tr.failed(),
        };
        let waiting = self
            .bridge
            .as_ref()
            .is_some_and(|b| b.answer(&tr.call_id, Answer::Result(answer)));
        if !waiting {
            self.reject(
                sid.as_deref(),
                rid.as_deref(),
                thrum::ErrorCode::BadRequest,
                format!("no tool call {} is waiting for a result", tr.call_id),
            );
        }
    }

    /// A prompt of `sid` wants its cell to have `wanted` of the agent's own
    /// tools: a cell of the sid started with another set is replaced at
    /// that turn (its session resumes in the new one).
    fn builtins_wanted(&mut self, sid: &str, wanted: &crate::hive::builtin::BuiltinTools) {
        let other: Vec<CellId> = self
            .table
            .iter_mut()
            .filter(|(_, info)| info.sid == sid && info.builtin != *wanted)
            .map(|(cell, info)| {
                info.wants_other_builtins = true;
                tracing::info!(event = "cell.outdated", sid = %sid, pid = info.pid, "the turn asks for other of the agent's own tools: the cell is replaced");
                cell
            })
            .collect();
        for cell in other {
            self.event(Event::Outdated {
                cell,
                outdated: true,
            });
        }
    }

    /// The capabilities connected foragers serve changed: new cells start
    /// without the agent's own tools for them, and each cell started
    /// otherwise is replaced at its next turn (the pool decides when).
    pub(super) fn foragers_provide(&mut self, provided: &[String]) {
        let off = crate::hive::capability::builtins_off(provided);
        if off == self.builtins_off {
            return;
        }
        tracing::info!(event = "worker.builtins_off", provides = ?provided, off = ?off, "foragers' capabilities changed the agent's own tools");
        self.builtins_off = off;
        self.dirty = true;
        let changed: Vec<(CellId, bool)> = self
            .table
            .iter()
            .filter(|(_, info)| info.tools.is_some())
            .map(|(cell, info)| {
                let stale = info.builtins_off != self.builtins_off || info.wants_other_builtins;
                (cell, stale)
            })
            .collect();
        for (cell, outdated) in changed {
            if let Some(info) = self.table.get(cell).filter(|_| outdated) {
                tracing::info!(event = "cell.outdated", sid = %info.sid, pid = info.pid, "the cell's own tools differ from a new cell's: replaced at its next turn");
            }
            self.event(Event::Outdated { cell, outdated });
        }
    }

    pub(super) fn hive_for(&self, model: Option<&str>) -> Option<&Hive> {
        let model = model.or(self.config.default_model.as_deref());
        match model {
            Some(m) => self.hives.iter().find(|h| h.models.iter().any(|x| x == m)),
            None => self.hives.first(),
        }
    }

    /// Hands the prompts of one inbound batch to the pool together.
    pub(super) fn flush_prompts(&mut self) {
        if self.arrived.is_empty() {
            return;
        }
        let now = self.now();
        let events = std::mem::take(&mut self.arrived);
        for cmd in self.pool.handle_all(now, events) {
            self.command(cmd);
        }
    }

    pub(super) fn admitted(&mut self, turn: TurnId, how: &str) {
        if let Some(t) = self.turns.get(turn) {
            let waited_ms = self.now().saturating_sub(t.arrived);
            self.metrics.admission_wait_seconds.observe_ms(waited_ms);
            if how == "reuse" {
                self.metrics.reuses += 1;
            }
            tracing::info!(event = "turn.admitted", sid = %t.sid, turn, waited_ms, how, "turn given to a cell");
        }
    }

    pub(super) fn end(&mut self, turn: TurnId, sid: String, outcome: Outcome, waited_ms: u64) {
        let info = self.turns.remove(turn);
        let outcome_name = match &outcome {
            Outcome::Done => "done".to_owned(),
            Outcome::Cancelled => "cancelled".to_owned(),
            other => other
                .error_code()
                .map_or_else(|| "error".to_owned(), String::from),
        };
        *self.metrics.turns.entry(outcome_name).or_default() += 1;
        if let (Outcome::Done, Some(t)) = (&outcome, &info) {
            self.metrics
                .turn_seconds
                .observe_ms(self.now().saturating_sub(t.arrived));
        }
        // Nothing more of the turn is forwarded from its cell: what is said
        // below is its last word.
        if let Some(cell) = info.as_ref().and_then(|t| t.cell) {
            if let Some(c) = self.table.get(cell) {
                c.serving.end(turn);
            }
        }
        let cell = info.as_ref().and_then(|t| t.cell);
        let rid = info.and_then(|t| t.rid);
        let rid = rid.as_deref();
        match &outcome {
            Outcome::Done => self.transcript_saved(cell, &sid),
            Outcome::Cancelled => {
                tracing::info!(event = "turn.cancelled", sid = %sid, turn, "turn ended by a cancel");
                let finish = Finish {
                    finish_reason: Some(thrum::FinishReason::Cancelled),
                    usage: None,
                    extra: Map::new(),
                };
                self.send_for(finish, &sid, rid);
            }
            Outcome::Overloaded { retry_after_ms } => {
                let mut e = ErrorTone::new(
                    thrum::ErrorCode::Overloaded,
                    format!("no cell free within {waited_ms} ms; retry later"),
                );
                e.retry_after_ms = Some(*retry_after_ms);
                tracing::info!(event = "turn.rejected", sid = %sid, code = ErrorCode::Overloaded.as_str(), waited_ms, "prompt not admitted");
                self.send_for(e, &sid, rid);
            }
            other => {
                let code = other
                    .error_code()
                    .unwrap_or_else(|| ErrorCode::Other("error".into()));
                let message = match other {
                    Outcome::CellTimeout => {
                        "the agent showed no first event in time; it was torn down".to_owned()
                    }
                    Outcome::TurnTimeout => "the agent went silent mid-turn (or ran past the longest turn allowed); it was torn down".to_owned(),
                    Outcome::CellDied => "the agent died during the turn".to_owned(),
                    Outcome::SpawnFailed => match self.spawn_errors.remove(&sid) {
                        Some(why) => format!("the agent could not be started: {why}"),
                        None => "the agent could not be started".to_owned(),
                    },
                    Outcome::CleanedUp => "the session was cleaned up".to_owned(),
                    Outcome::ShuttingDown => "the worker is shutting down".to_owned(),
                    Outcome::CellOom => "the agent's memory went past its limit (twice nest.maxCellRssMb, or its cgroup's memory.max); it was torn down".to_owned(),
                    _ => code.to_string(),
                };
                tracing::info!(event = "turn.failed", sid = %sid, code = code.as_str(), "turn ended with an error");
                self.send_for(ErrorTone::new(code, message), &sid, rid);
            }
        }
    }

    /// Tells humd where the sid's transcript is now that a turn of it
    /// ended well (a cluster node keeps a copy of it).
    fn transcript_saved(&mut self, cell: Option<crate::pool::CellId>, sid: &str) {
        let Some(c) = cell.and_then(|c| self.table.get(c)) else {
            return;
        };
        let (config_dir, cwd) = &c.transcripts;
        let path = crate::hive::session::transcript_path(
            config_dir,
            &cwd.to_string_lossy(),
            &crate::hive::session::session_id(sid),
        );
        if !path.is_file() {
            return;
        }
        let mut extra = Map::new();
        extra.insert(
            "path".into(),
            Value::String(path.to_string_lossy().into_owned()),
        );
        let tone = Tone::new(thrum::Unknown {
            chi: crate::reports::TRANSCRIPT_SAVED.into(),
            fields: extra,
        })
        .with_sid(sid);
        self.send(tone);
    }

    /// How often a runner tells the pool its cell is printing: a quarter
    /// of the idle timeout, at most a second.
    pub(super) fn activity_every(&self) -> Duration {
        Duration::from_millis((self.pool.config().turn_idle_timeout_ms / 4).clamp(1, 1000))
    }

    /// Records that `cell` serves `turn`; returns the turn's rid.
    pub(super) fn serve_turn(&mut self, turn: TurnId, cell: CellId) -> Option<String> {
        self.turns.serve(turn, cell)
    }

    /// The oldest turn of `sid` with rid `rid` not being stopped already.
    pub(super) fn turn_named(&self, sid: &str, rid: &str) -> Option<TurnId> {
        self.turns.named(sid, rid)
    }

    /// The turn a cell serves right now, if its output is still wanted.
    pub(super) fn serving(&self, cell: CellId) -> Option<(TurnId, String, Option<String>)> {
        let turn = self.pool.cell(cell)?.turn?;
        let info = self.turns.get(turn)?;
        Some((turn, info.sid.clone(), info.rid.clone()))
    }
}

/// Why a prompt's `builtinTools` is refused: not a set of tools, or
/// fewer than an ACP hive's agent has (they cannot be taken away, and a
/// prompt that must not have them, a gateway caller's, is never served
/// with the server's files in reach).
fn builtins_refusal(prompt: &thrum::Prompt, hive: Option<&crate::hive::Hive>) -> Option<String> {
    use crate::hive::builtin::BuiltinTools;
    if let Some(v) = &prompt.builtin_tools {
        if let Err(why) = BuiltinTools::read(v) {
            return Some(format!("builtinTools: {why}"));
        }
    }
    let hive = hive.filter(|h| h.protocol == crate::hive::Protocol::Acp)?;
    (crate::hive::launch::builtin_for(prompt, hive) != BuiltinTools::Default).then(|| {
        format!(
            "builtinTools: the ACP hive {} cannot narrow its agent's own tools (ACP has no way to); ask for \"default\" (for the gateway: gateway.builtinTools)",
            hive.name
        )
    })
}
