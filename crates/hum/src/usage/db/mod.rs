//! The usage database: one SQLite file in the state dir, in WAL mode so
//! `hum usage` reads while humd writes. humd's [`writer`](super::writer)
//! is its only writer; readers open it with [`UsageDb::open_reader`].
//!
//! The schema is versioned by SQLite's `user_version`: each entry of
//! [`MIGRATIONS`] moves it one version up, inside a transaction, so a
//! crash mid-migration leaves the old version whole.

use super::record::{Spent, Tally};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file's name in the state dir.
pub const FILE_NAME: &str = "usage.sqlite3";

/// How long a statement waits for the writer's lock before failing: a
/// reader never holds one in WAL mode, so this is only a crash's stale
/// lock or a second writer.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Schema versions, oldest first: entry `i` takes the database from
/// version `i` to `i + 1`. Never edit one that has shipped; add another.
pub const MIGRATIONS: &[&str] = &[
    // 1: a row per turn, and its per-model breakdown.
    "CREATE TABLE turns (
        id INTEGER PRIMARY KEY,
        ended_at_ms INTEGER NOT NULL,
        sid TEXT NOT NULL,
        bee TEXT NOT NULL,
        hive TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        duration_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX turns_by_end ON turns (ended_at_ms);
    CREATE TABLE turn_models (
        turn_id INTEGER NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL
    );
    CREATE INDEX turn_models_by_turn ON turn_models (turn_id);",
    // 2: each turn's session total as the CLI reported it, so a restarted
    // humd can tell a resumed session's next turn's share.
    // Indexed for humd's start, which reads each sid's last one.
    "ALTER TABLE turns ADD COLUMN session_cost_usd REAL;
    CREATE INDEX turns_session_by_sid ON turns (sid) WHERE session_cost_usd IS NOT NULL;",
];

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("usage database {path}: {source}")]
    Sql {
        path: String,
        source: rusqlite::Error,
    },
    #[error("usage database {path} is at schema version {found}; this hum knows up to {known} (a newer hum wrote it)")]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
}

/// One finished turn, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    /// Unix milliseconds.
    pub ended_at_ms: i64,
    pub sid: String,
    /// The asker's name (its hello's `hid` or `source`).
    pub bee: String,
    pub hive: String,
    pub model: String,
    pub spent: Spent,
    /// Per model; see [`Spent::by_model`].
    pub models: Vec<(String, Tally)>,
    pub duration_ms: u64,
    /// `done`, `cancelled`, or the error code that ended it.
    pub outcome: String,
    /// The session's cost so far, as the CLI reported it.
    pub session_cost_usd: Option<f64>,
}

/// How `hum usage` groups its totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// UTC calendar day.
    Day,
    Sid,
    Bee,
    Model,
    Hive,
}

/// One group's totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    pub key: String,
    pub turns: u64,
    #[serde(flatten)]
    pub tally: Tally,
}

pub struct UsageDb {
    conn: Connection,
    path: String,
}

impl UsageDb {
    /// Opens (creating it if needed) the database for writing, in WAL
    /// mode, migrated to the newest schema.
    pub fn open_writer(path: &Path) -> Result<UsageDb, UsageError> {
        let name = path.display().to_string();
        let sql = |source| UsageError::Sql {
            path: name.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(sql)?;
        // WAL: readers never block the writer nor it them. NORMAL sync is
        // durable across a process crash (the WAL is in the OS), which is
        // what humd dies of; a power cut may lose the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql)?;
        let mut db = UsageDb { conn, path: name };
        db.migrate()?;
        Ok(db)
    }

    /// A database in memory, migrated (a report of turns read elsewhere:
    /// the cluster's usage stream).
    pub fn in_memory() -> Result<UsageDb, UsageError> {
        let name = ":memory:".to_owned();
        let conn = Connection::open_in_memory().map_err(|source| UsageError::Sql {
            path: name.clone(),
            source,
        })?;
        let mut db = UsageDb { conn, path: name };
        db.migrate()?;
        Ok(db)
    }

    /// Opens an existing database for reading only; `None` when there is
    /// no file yet (nothing was ever recorded).
    pub fn open_reader(path: &Path) -> Result<Option<UsageDb>, UsageError> {
        if !path.exists() {
            return Ok(None);
        }
        let name = path.display().to_string();
        let sql = |source| UsageError::Sql {
            path: name.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(sql)?;
        let db = UsageDb { conn, path: name };
        let version = db.version()?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(UsageError::TooNew {
                path: db.path,
                found: version,
                known,
            });
        }
        if version == 0 {
            // Created, never migrated (a writer died at once): nothing in it.
            return Ok(None);
        }
        Ok(Some(db))
    }

    fn sql(&self, source: rusqlite::Error) -> UsageError {
        UsageError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// The schema version the file is at.
    pub fn version(&self) -> Result<i64, UsageError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.sql(e))
    }

    fn migrate(&mut self) -> Result<(), UsageError> {
        let found = self.version()?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(UsageError::TooNew {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.transaction().map_err(|e| UsageError::Sql {
                path: self.path.clone(),
                source: e,
            })?;
            tx.execute_batch(step)
                .and_then(|()| tx.pragma_update(None, "user_version", i as i64 + 1))
                .and_then(|()| tx.commit())
                .map_err(|e| UsageError::Sql {
                    path: self.path.clone(),
                    source: e,
                })?;
            tracing::info!(event = "usage.migrated", version = i + 1, path = %self.path, "usage database schema updated");
        }
        Ok(())
    }

    /// Records turns, all or none (one transaction).
    pub fn record(&mut self, turns: &[TurnRecord]) -> Result<(), UsageError> {
        let path = self.path.clone();
        let sql = |source| UsageError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut turn = tx
                .prepare_cached(
                    "INSERT INTO turns (ended_at_ms, sid, bee, hive, model, input_tokens,
                     output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd,
                     duration_ms, outcome, session_cost_usd)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .map_err(sql)?;
            let mut model = tx
                .prepare_cached(
                    "INSERT INTO turn_models (turn_id, model, input_tokens, output_tokens,
                     cache_read_tokens, cache_creation_tokens, cost_usd)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql)?;
            for t in turns {
                let s = &t.spent.total;
                turn.execute(params![
                    t.ended_at_ms,
                    t.sid,
                    t.bee,
                    t.hive,
                    t.model,
                    s.input_tokens as i64,
                    s.output_tokens as i64,
                    s.cache_read_tokens as i64,
                    s.cache_creation_tokens as i64,
                    s.cost_usd,
                    t.duration_ms as i64,
                    t.outcome,
                    t.session_cost_usd,
                ])
                .map_err(sql)?;
                let id = tx.last_insert_rowid();
                for (name, m) in &t.models {
                    model
                        .execute(params![
                            id,
                            name,
                            m.input_tokens as i64,
                            m.output_tokens as i64,
                            m.cache_read_tokens as i64,
                            m.cache_creation_tokens as i64,
                            m.cost_usd,
                        ])
                        .map_err(sql)?;
                }
            }
        }
        tx.commit().map_err(sql)
    }

    /// Forgets turns that ended before `before_ms`; returns how many.
    pub fn prune(&mut self, before_ms: i64) -> Result<usize, UsageError> {
        self.conn
            .execute("DELETE FROM turns WHERE ended_at_ms < ?1", [before_ms])
            .map_err(|e| self.sql(e))
    }

    /// Totals of the turns that ended in [since_ms, until_ms), grouped,
    /// largest cost first.
    pub fn totals(
        &self,
        since_ms: i64,
        until_ms: i64,
        by: GroupBy,
    ) -> Result<Vec<UsageRow>, UsageError> {
        const SUMS: &str = "count(*), total(input_tokens), total(output_tokens),
            total(cache_read_tokens), total(cache_creation_tokens), total(cost_usd)";
        let query = match by {
            GroupBy::Model => format!(
                "SELECT key, {SUMS} FROM (
                   SELECT m.model AS key, m.input_tokens, m.output_tokens, m.cache_read_tokens,
                          m.cache_creation_tokens, m.cost_usd
                   FROM turn_models m JOIN turns t ON t.id = m.turn_id
                   WHERE t.ended_at_ms >= ?1 AND t.ended_at_ms < ?2
                   UNION ALL
                   SELECT t.model, t.input_tokens, t.output_tokens, t.cache_read_tokens,
                          t.cache_creation_tokens, t.cost_usd
                   FROM turns t
                   WHERE t.ended_at_ms >= ?1 AND t.ended_at_ms < ?2
                     AND NOT EXISTS (SELECT 1 FROM turn_models m WHERE m.turn_id = t.id))
                 GROUP BY key ORDER BY total(cost_usd) DESC, key"
            ),
            _ => {
                let key = match by {
                    GroupBy::Day => "date(ended_at_ms / 1000, 'unixepoch')",
                    GroupBy::Sid => "sid",
                    GroupBy::Bee => "bee",
                    GroupBy::Hive => "hive",
                    GroupBy::Model => unreachable!("handled above"),
                };
                let order = if by == GroupBy::Day {
                    "key"
                } else {
                    "total(cost_usd) DESC, key"
                };
                format!(
                    "SELECT {key} AS key, {SUMS} FROM turns
                     WHERE ended_at_ms >= ?1 AND ended_at_ms < ?2
                     GROUP BY key ORDER BY {order}"
                )
            }
        };
        let mut stmt = self.conn.prepare(&query).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([since_ms, until_ms], |r| {
                // total() is a float; token sums stay exact below 2^53.
                let n = |i| r.get::<_, f64>(i).map(|f| f as u64);
                Ok(UsageRow {
                    key: r.get(0)?,
                    turns: r.get::<_, i64>(1)? as u64,
                    tally: Tally {
                        input_tokens: n(2)?,
                        output_tokens: n(3)?,
                        cache_read_tokens: n(4)?,
                        cache_creation_tokens: n(5)?,
                        cost_usd: r.get(6)?,
                    },
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// Spend per bee and per sid since `since_ms` (today's, for budgets),
    /// and the whole.
    pub fn spend_since(&self, since_ms: i64) -> Result<SpendRows, UsageError> {
        let far = i64::MAX;
        let by = |g| -> Result<Vec<(String, f64)>, UsageError> {
            Ok(self
                .totals(since_ms, far, g)?
                .into_iter()
                .map(|r| (r.key, r.tally.cost_usd))
                .collect())
        };
        let all: Option<f64> = self
            .conn
            .query_row(
                "SELECT total(cost_usd) FROM turns WHERE ended_at_ms >= ?1",
                [since_ms],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(SpendRows {
            all: all.unwrap_or(0.0),
            bees: by(GroupBy::Bee)?,
            sids: by(GroupBy::Sid)?,
        })
    }
}

impl UsageDb {
    /// Each sid's last reported session total, most recent sids first, at
    /// most `limit` of them.
    pub fn last_session_costs(&self, limit: usize) -> Result<Vec<(String, f64)>, UsageError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sid, session_cost_usd FROM turns WHERE id IN
                   (SELECT max(id) FROM turns WHERE session_cost_usd IS NOT NULL GROUP BY sid)
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }
}

/// What [`UsageDb::spend_since`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpendRows {
    pub all: f64,
    pub bees: Vec<(String, f64)>,
    pub sids: Vec<(String, f64)>,
}

#[cfg(test)]
mod tests;
