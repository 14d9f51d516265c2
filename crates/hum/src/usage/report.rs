//! `hum usage`: totals by day, sid, bee, model or hive over a period, as a
//! table or JSON, read straight from the database (humd need not run).

use super::budget::{day_of, DAY_MS};
use super::db::{GroupBy, UsageDb, UsageRow};
use super::record::Tally;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct UsageArgs {
    /// The period's start: a duration back from now (`7d`, `36h`),
    /// `today` (UTC), or a UTC date (`2026-11-01`).
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// The period's end, read as `--since` is (default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// How to group the totals.
    #[arg(long, value_enum, default_value = "day")]
    pub by: GroupBy,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The database (default: usage.sqlite3 in the state dir).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Every node's turns, read from the cluster's usage stream on NATS
    /// (the server hum.json's `cluster` names, or this URL), not this
    /// machine's database.
    #[arg(long = "cluster", value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub cluster: Option<String>,
    /// The cluster's name (default: hum.json's `cluster.name`).
    #[arg(long, requires = "cluster")]
    pub cluster_name: Option<String>,
    /// NATS credentials file (default: hum.json's `cluster.credentialsFile`).
    #[arg(long, requires = "cluster")]
    pub cluster_credentials: Option<PathBuf>,
    /// The authority that signed the NATS server's certificate (default:
    /// hum.json's `cluster.caFile`).
    #[arg(long, requires = "cluster", value_name = "FILE")]
    pub cluster_ca: Option<PathBuf>,
    /// hum.json to read the cluster's settings from.
    #[arg(long, requires = "cluster")]
    pub config: Option<PathBuf>,
}

/// What `hum usage --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// The period, unix ms and RFC 3339.
    pub since_ms: i64,
    pub since: String,
    pub until_ms: i64,
    pub until: String,
    pub by: GroupBy,
    pub rows: Vec<UsageRow>,
    /// Every turn of the period once (by model, a turn with two models is
    /// in two rows but here once).
    pub total: UsageRow,
}

/// Reads `--since`.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if text == "today" {
        return Ok(day_of(now_ms) * DAY_MS);
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now_ms.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64));
    }
    let stamp = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339(&stamp)
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
        .map_err(|_| {
            format!("--since {text}: not a duration (7d, 36h), `today`, or a date (2026-11-01)")
        })
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The report for a period; an absent database is an empty report.
pub fn report(
    db: Option<&UsageDb>,
    since_ms: i64,
    until_ms: i64,
    by: GroupBy,
) -> Result<UsageReport, super::db::UsageError> {
    let (rows, days) = match db {
        Some(db) => (
            db.totals(since_ms, until_ms, by)?,
            db.totals(since_ms, until_ms, GroupBy::Day)?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let mut total = UsageRow {
        key: "total".into(),
        turns: 0,
        tally: Tally::default(),
    };
    for d in &days {
        total.turns += d.turns;
        total.tally.add(&d.tally);
    }
    Ok(UsageReport {
        since_ms,
        since: rfc3339(since_ms),
        until_ms,
        until: rfc3339(until_ms),
        by,
        rows,
        total,
    })
}

/// The report as a table.
pub fn table(r: &UsageReport) -> String {
    use std::fmt::Write;
    let by = match r.by {
        GroupBy::Day => "DAY",
        GroupBy::Sid => "SID",
        GroupBy::Bee => "BEE",
        GroupBy::Model => "MODEL",
        GroupBy::Hive => "HIVE",
    };
    let width = r
        .rows
        .iter()
        .map(|x| x.key.chars().count())
        .chain([by.len(), 5])
        .max()
        .unwrap_or(5)
        .min(48);
    let mut out = String::new();
    let _ = writeln!(out, "usage from {} to {} (UTC)", r.since, r.until);
    let _ = writeln!(
        out,
        "{by:<width$}  {:>6}  {:>12}  {:>10}  {:>12}  {:>12}  {:>12}",
        "TURNS", "INPUT", "OUTPUT", "CACHE_READ", "CACHE_WRITE", "COST_USD"
    );
    for row in r.rows.iter().chain([&r.total]) {
        let key: String = if std::ptr::eq(row, &r.total) {
            "TOTAL".into()
        } else {
            crate::logsafe::escape(&row.key)
                .chars()
                .take(width)
                .collect()
        };
        let t = &row.tally;
        let _ = writeln!(
            out,
            "{key:<width$}  {:>6}  {:>12}  {:>10}  {:>12}  {:>12}  {:>12.4}",
            row.turns,
            t.input_tokens,
            t.output_tokens,
            t.cache_read_tokens,
            t.cache_creation_tokens,
            t.cost_usd
        );
    }
    if r.rows.is_empty() {
        let _ = writeln!(out, "(no turns recorded in this period)");
    }
    out
}

/// The period `--since` and `--until` name, or what is wrong with them.
pub fn period(args: &UsageArgs) -> Result<(i64, i64), String> {
    let now = super::unix_ms();
    let since = parse_since(&args.since, now)?;
    // A turn that ends while this runs is in or out, never half.
    let until = match args.until.as_deref().map(|u| parse_since(u, now)) {
        None => now.saturating_add(1),
        Some(Ok(u)) if u > since => u,
        Some(Ok(_)) => return Err("--until must be after --since".into()),
        Some(Err(e)) => return Err(e.replace("--since", "--until")),
    };
    Ok((since, until))
}

pub fn run(args: UsageArgs) -> ExitCode {
    let (since, until) = match period(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hum usage: {e}");
            return ExitCode::from(2);
        }
    };
    let path = args.db.clone().unwrap_or_else(super::default_db_path);
    let db = match UsageDb::open_reader(&path) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("hum usage: {e}");
            return ExitCode::from(1);
        }
    };
    let r = match report(db.as_ref(), since, until, args.by) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hum usage: {e}");
            return ExitCode::from(1);
        }
    };
    let code = print(&r, args.json);
    if db.is_none() && !args.json {
        println!("(no usage database yet at {})", path.display());
    }
    code
}

/// Prints a report as a table or JSON.
pub fn print(r: &UsageReport, json: bool) -> ExitCode {
    if json {
        match serde_json::to_string_pretty(r) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("hum usage: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        print!("{}", table(r));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 20_000 * DAY_MS + 3_600_000;

    #[test]
    fn since_reads_durations_today_and_dates() {
        assert_eq!(parse_since("7d", NOW), Ok(NOW - 7 * DAY_MS));
        assert_eq!(parse_since("36h", NOW), Ok(NOW - 36 * 3_600_000));
        assert_eq!(parse_since("today", NOW), Ok(20_000 * DAY_MS));
        assert_eq!(parse_since("2024-10-04", NOW), Ok(20_000 * DAY_MS));
        assert!(parse_since("last tuesday", NOW)
            .unwrap_err()
            .contains("--since"));
    }

    #[test]
    fn no_database_is_an_empty_report_with_a_zero_total() {
        let r = report(None, 0, NOW, GroupBy::Sid).unwrap();
        assert!(r.rows.is_empty());
        assert_eq!(r.total.turns, 0);
        assert!(table(&r).contains("no turns recorded"));
    }
}
