//! # Usage: what every turn cost, kept; budgets that stop a runaway
//!
//! humd records each finished turn (tokens by kind, cost, per model, the
//! asker, sid, hive, duration, outcome) in an SQLite file in the state dir,
//! keeps today's spend in memory to refuse prompts past a budget, and
//! counts tokens and dollars for `/metrics`. `hum usage` reads the file.
//!
//! - [`record`]: a turn's `finish`/`error` read as numbers.
//! - [`db`]: the database, its versioned schema and its queries.
//! - [`writer`]: the one writer thread, fed without waiting.
//! - [`budget`]: daily budgets, pure.
//! - [`report`]: `hum usage`.
//! - [`shared`]: a turn's usage as a cluster's nodes tell each other.

pub mod budget;
pub mod db;
pub mod record;
pub mod report;
pub mod shared;
pub mod writer;

pub use budget::{Budgets, Exceeded, Scope, Spend};
pub use db::{GroupBy, TurnRecord, UsageDb, UsageRow};
pub use record::{Spent, Tally};
pub use writer::UsageWriter;

/// `usage` in hum.json.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UsageConfig {
    /// Turns older than this many days are forgotten.
    pub retention_days: u32,
}

/// The default retention: a quarter, enough for a monthly bill and its
/// comparison with the month before.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

/// The longest retention a configuration may set (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }
}

impl UsageConfig {
    pub fn retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.retention_days) * 86_400)
    }
}

/// The usage database's default place: the state dir.
pub fn default_db_path() -> std::path::PathBuf {
    crate::os::paths::default_state_dir().join(db::FILE_NAME)
}

/// Now, in unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
