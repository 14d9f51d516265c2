//! The router's accounting: each finished turn's usage recorded (through
//! the usage writer, never waited on), today's spend kept to refuse
//! prompts past a budget, and tokens and dollars counted for `/metrics`.
//! [`Accounting`] decides (a plain value, time passed in: unit-tested in
//! `tests/accounting.rs`); the router's methods at the bottom apply what
//! it decides (refusals sent, records written, turns cancelled).

use super::*;
use crate::reports::{UsageSeries, UsageStatus};
use crate::usage::{Budgets, Exceeded, Scope, Spend, Spent, Tally, TurnRecord, UsageWriter};
use std::collections::BTreeMap;

/// (hive, model) series kept for `/metrics`: claude reports a handful of
/// models; a worker naming more than this is not given more series.
const MAX_SERIES: usize = 256;

/// Sids whose last session total is kept: as many as budgets track.
pub const MAX_SESSIONS: usize = 200_000;

use crate::reports::MAX_BEE_NAME;

pub struct Accounting {
    /// Each sid's last session total as the CLI reported it (keyed as
    /// budgets key sids), from the database at start: what a resumed
    /// session's next total is measured against when the worker could
    /// not tell the turn's share.
    last_session: HashMap<String, f64>,
    writer: Option<UsageWriter>,
    spend: Spend,
    budgets: Budgets,
    since_start: BTreeMap<(String, String), Tally>,
    refused: u64,
    hard_stopped: u64,
}

impl Accounting {
    /// `spend` is today's as the database had it at start, `last_session`
    /// each sid's last reported session total.
    pub fn new(
        writer: Option<UsageWriter>,
        spend: Spend,
        budgets: Budgets,
        last_session: Vec<(String, f64)>,
    ) -> Accounting {
        Accounting {
            last_session: last_session.into_iter().take(MAX_SESSIONS).collect(),
            writer,
            spend,
            budgets,
            since_start: BTreeMap::new(),
            refused: 0,
            hard_stopped: 0,
        }
    }

    /// Writes what is queued (humd is stopping).
    pub fn finish(&mut self) {
        if let Some(w) = self.writer.take() {
            w.finish(Duration::from_secs(5));
        }
    }

    /// Whether a prompt of `bee` for `sid` may start at `now`: the budget
    /// it would start past, if any (counted as a refusal).
    pub fn admit(&mut self, now: i64, bee: &str, sid: &str) -> Option<Exceeded> {
        let exceeded = self.spend.check(now, &self.budgets, bee, sid)?;
        self.refused += 1;
        Some(exceeded)
    }

    /// What another node of the cluster spent: counted against the same
    /// daily budgets as this node's own (today's only).
    pub fn spent_elsewhere(&mut self, now: i64, note: &super::placing::SpentNote) {
        use crate::usage::budget::day_of;
        if day_of(note.ended_at_ms) == day_of(now) {
            self.spend
                .add(now, &note.bee, &note.sid, note.total.cost_usd);
        }
    }

    /// Records a turn that ended at `now`: what it cost (a resumed
    /// session's share worked out from its total), today's spend, the
    /// series for `/metrics`; and with `budgets.hardStop`, the budgets this
    /// turn used up, whose running turns are to be cancelled.
    pub fn record(&mut self, now: i64, t: TurnEnded<'_>) -> Recorded {
        let tone = Tone::decode(t.line).ok();
        let fields = tone.as_ref().map_or(Value::Null, Tone::to_value);
        let mut spent = Spent::from_fields(&fields);
        let outcome = outcome_of(t.chi, tone.map(|t| t.body));
        let sid_key = crate::usage::budget::key(t.sid).into_owned();
        if let Some(session) = spent.session_cost {
            if !spent.cost_known {
                // A resumed session the worker had not seen: its share is
                // what the session's total grew by since the last turn
                // recorded (all of it for a sid never seen).
                let last = self.last_session.get(&sid_key).copied().unwrap_or(0.0);
                spent.total.cost_usd = if session >= last {
                    session - last
                } else {
                    session
                };
                // Its model named, its numbers the turn's whole.
                spent.models = spent
                    .models
                    .first()
                    .map(|(name, _)| vec![(name.clone(), spent.total)])
                    .unwrap_or_default();
            }
            if self.last_session.len() < MAX_SESSIONS || self.last_session.contains_key(&sid_key) {
                self.last_session.insert(sid_key.clone(), session);
            }
        }
        let by_model = spent.by_model(t.model);
        for (model, tally) in &by_model {
            let key = (t.hive.clone(), model.clone());
            if self.since_start.len() < MAX_SERIES || self.since_start.contains_key(&key) {
                self.since_start.entry(key).or_default().add(tally);
            }
        }
        let was = self.spend.check(now, &self.budgets, t.bee, t.sid);
        self.spend.add(now, t.bee, t.sid, spent.total.cost_usd);
        // The scopes this turn's cost used up (none already spent before
        // it: their turns were stopped then).
        let stop = if self.budgets.hard_stop && was.is_none() {
            self.spend
                .exceeded(now, &self.budgets, t.bee, t.sid)
                .into_iter()
                .map(|e| e.scope)
                .collect()
        } else {
            Vec::new()
        };
        // Every field bounded (a long sid by its digest, as budgets keep
        // it): the writer's queue holds 4,096 records of about a kilobyte.
        let session_cost_usd = spent.session_cost;
        let record = TurnRecord {
            ended_at_ms: now,
            sid: sid_key,
            bee: t.bee.to_owned(),
            hive: t.hive.chars().take(MAX_BEE_NAME).collect(),
            model: spent.main_model(t.model),
            models: if spent.models.is_empty() {
                Vec::new()
            } else {
                by_model
            },
            spent,
            duration_ms: t.duration_ms,
            outcome,
            session_cost_usd,
        };
        Recorded { record, stop }
    }

    /// Hands a record to the usage writer (never waited on).
    pub fn write(&self, record: TurnRecord) {
        if let Some(w) = &self.writer {
            w.record(record);
        }
    }
}

/// A turn that ended, as the router hands it to [`Accounting::record`].
pub struct TurnEnded<'a> {
    pub sid: &'a str,
    pub bee: &'a str,
    /// The hive that served it.
    pub hive: String,
    /// The model its prompt asked for.
    pub model: Option<&'a str>,
    pub duration_ms: u64,
    /// `finish` or `error`, and the tone's line.
    pub chi: &'a str,
    pub line: &'a [u8],
}

/// What recording a turn decided.
#[derive(Debug)]
pub struct Recorded {
    pub record: TurnRecord,
    /// Budgets this turn used up with `hardStop`: their turns are cancelled.
    pub stop: Vec<Scope>,
}

/// How a turn ended, in the usage database's words: `done`, `cancelled`,
/// or the error code (`error` for one too long to keep).
fn outcome_of(chi: &str, body: Option<Body>) -> String {
    match (chi, body) {
        (_, Some(Body::Finish(f))) if f.finish_reason == Some(thrum::FinishReason::Cancelled) => {
            "cancelled".to_owned()
        }
        ("finish", _) => "done".to_owned(),
        (_, Some(Body::Error(e))) if e.code.as_str().len() <= 64 => e.code.to_string(),
        _ => "error".to_owned(),
    }
}

/// The name a turn is filed under for its asker.
pub(super) fn bee_name(peer: Option<&Peer>) -> String {
    peer.and_then(|p| p.name.as_deref())
        .filter(|n| !n.is_empty())
        .map(|n| n.chars().take(MAX_BEE_NAME).collect())
        .unwrap_or_else(|| "unnamed".to_owned())
}

impl Router {
    /// Keeps usage and enforces budgets from now on.
    pub fn with_accounting(mut self, accounting: Accounting) -> Router {
        self.accounting = Some(accounting);
        self
    }

    /// Stops the usage writer once what it holds is written.
    pub fn finish_accounting(&mut self) {
        if let Some(a) = &mut self.accounting {
            a.finish();
        }
    }

    /// Refuses a prompt that would start past a budget; true when it did.
    pub(super) fn over_budget(&mut self, id: ConnId, tone: &Tone, sid: &str) -> bool {
        // The node that forwarded it checked its asker's budgets.
        if super::placing::is_remote(id) {
            return false;
        }
        let bee = bee_name(self.peers.get(&id));
        let Some(a) = &mut self.accounting else {
            return false;
        };
        let now = crate::usage::unix_ms();
        let Some(exceeded) = a.admit(now, &bee, sid) else {
            return false;
        };
        tracing::info!(event = "budget.refused", conn = id, sid = %sid, bee = %bee, scope = exceeded.scope.key(),
            limit_usd = exceeded.limit_usd, spent_usd = exceeded.spent_usd, "prompt refused: budget spent");
        let mut e = ErrorTone::new(thrum::ErrorCode::BudgetExceeded, exceeded.message());
        e.retry_after_ms = Some(exceeded.retry_after_ms(now));
        e.extra = exceeded.fields();
        let mut t = Tone::new(e);
        t.envelope.sid = Some(sid.to_owned());
        t.envelope.rid = tone.rid().map(str::to_owned);
        t.envelope.from = Some("daemon".into());
        self.send(id, t);
        self.ack(id, tone.rid(), false);
        true
    }

    /// What another node of the cluster spent: counted against the same
    /// daily budgets as this node's own (today's only).
    pub(super) fn spent_elsewhere(&mut self, note: super::placing::SpentNote) {
        if let Some(a) = &mut self.accounting {
            a.spent_elsewhere(crate::usage::unix_ms(), &note);
        }
    }

    /// A turn ended with `line` (its `finish` or `error`): record what it
    /// cost, and with `budgets.hardStop`, cancel the turns a budget it
    /// used up covers.
    pub(super) fn account(&mut self, sid: &str, turn: &Turn, chi: &str, line: &[u8]) {
        if self.accounting.is_none() {
            return;
        }
        // A turn another node forwarded is recorded there, where its asker
        // is (and its budgets are checked): once in the cluster.
        if turn.asker.is_some_and(super::placing::is_remote) {
            return;
        }
        let hive = self.hive_serving(turn.worker, turn.model.as_deref());
        let Some(a) = &mut self.accounting else {
            return;
        };
        let Recorded { record, stop } = a.record(
            crate::usage::unix_ms(),
            TurnEnded {
                sid,
                bee: &turn.bee,
                hive,
                model: turn.model.as_deref(),
                duration_ms: turn.started.elapsed().as_millis() as u64,
                chi,
                line,
            },
        );
        // The cluster's other nodes count it against the same budgets,
        // and its usage stream keeps it for `hum usage --cluster`.
        if let Some(placing) = &self.placing {
            placing.spent(super::placing::SpentNote::of(&record));
        }
        a.write(record);
        let bee = turn.bee.clone();
        for scope in stop {
            let effects = self.routes.cancel_where(
                |s, t| match scope {
                    Scope::Daily => true,
                    Scope::Bee => t.bee == bee,
                    Scope::Sid => s == sid,
                },
                Abandoned::BudgetSpent,
            );
            let n = self.apply(effects);
            if let Some(a) = &mut self.accounting {
                a.hard_stopped += n as u64;
            }
            tracing::warn!(event = "budget.hard_stop", sid = %sid, bee = %bee, scope = scope.key(), cancelled = n,
                "a budget was used up: its running turns are cancelled");
        }
    }

    /// Spend and budgets for status; `sids` are those with a cell now.
    pub(super) fn usage_status<'a>(
        &self,
        sids: impl Iterator<Item = &'a str>,
    ) -> Option<UsageStatus> {
        let a = self.accounting.as_ref()?;
        let now = crate::usage::unix_ms();
        let day = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(now.max(0) as u64),
        )
        .to_string();
        let (recorded, dropped) = a.writer.as_ref().map_or((0, 0), |w| {
            (
                w.stats.written.load(std::sync::atomic::Ordering::Relaxed),
                w.stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        Some(UsageStatus {
            day: day[..10].to_owned(),
            spent_today_usd: a.spend.all(now),
            budgets: a.budgets.clone(),
            spent_today_by_sid: sids
                .map(|s| (s.to_owned(), a.spend.of_sid(now, s)))
                .collect(),
            since_start: a
                .since_start
                .iter()
                .map(|((hive, model), tally)| UsageSeries {
                    hive: hive.clone(),
                    model: model.clone(),
                    tally: *tally,
                })
                .collect(),
            recorded,
            dropped,
            refused: a.refused,
            hard_stopped: a.hard_stopped,
        })
    }
}
