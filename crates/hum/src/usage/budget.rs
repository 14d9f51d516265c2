//! Daily budgets: what was spent today (UTC) overall, per bee and per sid,
//! and whether a prompt may start. Pure: the caller passes the time and
//! the spend, so the rules are tested without a clock or a daemon.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Milliseconds in a UTC day (unix time has no leap seconds).
pub const DAY_MS: i64 = 86_400_000;

/// Sids whose spend today is tracked for `perSidDailyUsd`. Each costs
/// about a hundred bytes; a day of more distinct sids than this keeps
/// the first ones (the database has them all).
const MAX_TRACKED: usize = 200_000;

/// Longer sids are kept by their SHA-256: a day of distinct megabyte sids
/// must not hold megabytes each.
const MAX_KEY: usize = 256;

/// The key a sid or bee is tracked (and recorded) under: itself, or
/// `sha256:<hex>` of it when longer than 256 bytes.
pub fn key(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= MAX_KEY {
        return std::borrow::Cow::Borrowed(name);
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    std::borrow::Cow::Owned(format!("sha256:{hex}"))
}

/// `budgets` in hum.json: daily limits in US dollars, any may be absent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Budgets {
    /// Everything, every bee and sid together.
    pub daily_usd: Option<f64>,
    /// Each bee (an asker, by its hello's name).
    pub per_bee_daily_usd: Option<f64>,
    /// Each sid.
    pub per_sid_daily_usd: Option<f64>,
    /// When a finished turn takes spend past a budget, cancel the turns
    /// still running in its scope at once (else they finish, and only new
    /// prompts are refused).
    pub hard_stop: bool,
}

impl Budgets {
    /// The first key with a value that is not a finite amount ≥ 0.
    pub fn invalid(&self) -> Option<&'static str> {
        [
            ("budgets.dailyUsd", self.daily_usd),
            ("budgets.perBeeDailyUsd", self.per_bee_daily_usd),
            ("budgets.perSidDailyUsd", self.per_sid_daily_usd),
        ]
        .into_iter()
        .find(|(_, v)| v.is_some_and(|v| !v.is_finite() || v < 0.0))
        .map(|(k, _)| k)
    }

    pub fn any(&self) -> bool {
        self.daily_usd.is_some()
            || self.per_bee_daily_usd.is_some()
            || self.per_sid_daily_usd.is_some()
    }
}

/// Which budget a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Daily,
    Bee,
    Sid,
}

impl Scope {
    /// The hum.json key that set it.
    pub fn key(self) -> &'static str {
        match self {
            Scope::Daily => "budgets.dailyUsd",
            Scope::Bee => "budgets.perBeeDailyUsd",
            Scope::Sid => "budgets.perSidDailyUsd",
        }
    }
}

/// A budget that is spent.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub scope: Scope,
    pub limit_usd: f64,
    pub spent_usd: f64,
    /// When the day ends (unix ms).
    pub resets_at_ms: i64,
}

impl Exceeded {
    /// The fields of a `budget_exceeded` error tone (beside its code and
    /// message).
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let resets = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(self.resets_at_ms.max(0) as u64);
        let mut m = serde_json::Map::new();
        m.insert("scope".into(), serde_json::json!(self.scope));
        m.insert("limitUsd".into(), serde_json::json!(self.limit_usd));
        // To the micro-dollar: a float sum's last digits are noise.
        m.insert(
            "spentUsd".into(),
            serde_json::json!((self.spent_usd * 1e6).round() / 1e6),
        );
        m.insert(
            "resetsAt".into(),
            serde_json::json!(humantime::format_rfc3339_seconds(resets).to_string()),
        );
        m
    }

    /// How long until the budget resets, from `now_ms`.
    pub fn retry_after_ms(&self, now_ms: i64) -> u64 {
        self.resets_at_ms.saturating_sub(now_ms).max(0) as u64
    }

    pub fn message(&self) -> String {
        format!(
            "the {} budget is spent: ${:.4} of ${:.4} today (UTC); it resets at midnight UTC",
            self.scope.key(),
            self.spent_usd,
            self.limit_usd
        )
    }
}

/// Spend of the current UTC day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spend {
    /// Days since the epoch the totals are of.
    day: i64,
    all: f64,
    bees: HashMap<String, f64>,
    sids: HashMap<String, f64>,
}

/// Spend by name as the database gives it, keyed and bounded, summed
/// where two long names share a key.
fn tracked(rows: Vec<(String, f64)>) -> HashMap<String, f64> {
    let mut m: HashMap<String, f64> = HashMap::new();
    for (name, cost) in rows {
        let k = key(&name).into_owned();
        if let Some(v) = m.get_mut(&k) {
            *v += cost;
        } else if m.len() < MAX_TRACKED {
            m.insert(k, cost);
        }
    }
    m
}

/// The UTC day (days since the epoch) of a unix time.
pub fn day_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS)
}

impl Spend {
    /// Today's spend as the database has it.
    pub fn new(now_ms: i64, all: f64, bees: Vec<(String, f64)>, sids: Vec<(String, f64)>) -> Spend {
        Spend {
            day: day_of(now_ms),
            all,
            bees: tracked(bees),
            sids: tracked(sids),
        }
    }

    /// Starts a new day when `now_ms` is in one.
    fn roll(&mut self, now_ms: i64) {
        let today = day_of(now_ms);
        if today != self.day {
            *self = Spend {
                day: today,
                ..Spend::default()
            };
        }
    }

    /// A finished turn's cost.
    pub fn add(&mut self, now_ms: i64, bee: &str, sid: &str, cost: f64) {
        self.roll(now_ms);
        if !(cost.is_finite() && cost > 0.0) {
            return;
        }
        self.all += cost;
        for (map, name) in [(&mut self.bees, bee), (&mut self.sids, sid)] {
            let k = key(name);
            if let Some(v) = map.get_mut(k.as_ref()) {
                *v += cost;
            } else if map.len() < MAX_TRACKED {
                map.insert(k.into_owned(), cost);
            }
        }
    }

    /// Today's spend: all, of `bee`, of `sid`.
    pub fn of(&mut self, now_ms: i64, bee: &str, sid: &str) -> (f64, f64, f64) {
        self.roll(now_ms);
        (
            self.all,
            self.bees.get(key(bee).as_ref()).copied().unwrap_or(0.0),
            self.sids.get(key(sid).as_ref()).copied().unwrap_or(0.0),
        )
    }

    /// Today's spend of `sid`.
    pub fn of_sid(&self, now_ms: i64, sid: &str) -> f64 {
        if day_of(now_ms) != self.day {
            return 0.0;
        }
        self.sids.get(key(sid).as_ref()).copied().unwrap_or(0.0)
    }

    pub fn all(&self, now_ms: i64) -> f64 {
        if day_of(now_ms) != self.day {
            return 0.0;
        }
        self.all
    }

    /// The first budget a prompt of `bee` for `sid` would start past, if
    /// any (the day's, then the bee's, then the sid's). A budget is spent
    /// once spend reaches it: a limit of 0 refuses everything.
    pub fn check(
        &mut self,
        now_ms: i64,
        budgets: &Budgets,
        bee: &str,
        sid: &str,
    ) -> Option<Exceeded> {
        self.exceeded(now_ms, budgets, bee, sid).into_iter().next()
    }

    /// Every budget spent that covers `bee` and `sid`, in
    /// [`check`](Spend::check)'s order.
    pub fn exceeded(
        &mut self,
        now_ms: i64,
        budgets: &Budgets,
        bee: &str,
        sid: &str,
    ) -> Vec<Exceeded> {
        let (all, of_bee, of_sid) = self.of(now_ms, bee, sid);
        let resets_at_ms = (day_of(now_ms) + 1) * DAY_MS;
        [
            (Scope::Daily, budgets.daily_usd, all),
            (Scope::Bee, budgets.per_bee_daily_usd, of_bee),
            (Scope::Sid, budgets.per_sid_daily_usd, of_sid),
        ]
        .into_iter()
        .filter_map(|(scope, limit, spent)| {
            let limit = limit?;
            (spent >= limit).then_some(Exceeded {
                scope,
                limit_usd: limit,
                spent_usd: spent,
                resets_at_ms,
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOON: i64 = 20_000 * DAY_MS + DAY_MS / 2;

    fn per_sid(limit: f64) -> Budgets {
        Budgets {
            per_sid_daily_usd: Some(limit),
            ..Budgets::default()
        }
    }

    #[test]
    fn a_spent_sid_is_refused_and_another_is_not() {
        let mut s = Spend::new(NOON, 0.0, vec![], vec![]);
        let b = per_sid(1.0);
        assert_eq!(s.check(NOON, &b, "bee", "a"), None);
        s.add(NOON, "bee", "a", 0.5);
        assert_eq!(s.check(NOON, &b, "bee", "a"), None, "under the limit");
        s.add(NOON, "bee", "a", 0.5);
        let e = s.check(NOON, &b, "bee", "a").expect("spent");
        assert_eq!((e.scope, e.limit_usd, e.spent_usd), (Scope::Sid, 1.0, 1.0));
        assert_eq!(e.resets_at_ms, 20_001 * DAY_MS);
        assert_eq!(
            s.check(NOON, &b, "bee", "b"),
            None,
            "another sid still works"
        );
        let f = e.fields();
        assert_eq!(f["resetsAt"], "2024-10-05T00:00:00Z");
        assert_eq!(e.retry_after_ms(NOON), (DAY_MS / 2) as u64);
    }

    #[test]
    fn the_day_rolls_over_at_midnight_utc() {
        let mut s = Spend::new(
            NOON,
            5.0,
            vec![("bee".into(), 5.0)],
            vec![("a".into(), 5.0)],
        );
        let b = Budgets {
            daily_usd: Some(1.0),
            ..Budgets::default()
        };
        assert_eq!(s.check(NOON, &b, "bee", "a").unwrap().scope, Scope::Daily);
        let tomorrow = 20_001 * DAY_MS;
        assert_eq!(s.check(tomorrow, &b, "bee", "a"), None);
        assert_eq!(s.of(tomorrow, "bee", "a"), (0.0, 0.0, 0.0));
    }

    #[test]
    fn a_megabyte_sid_is_tracked_by_its_digest_and_still_budgeted() {
        let long = "x".repeat(1 << 20);
        let mut s = Spend::new(NOON, 0.0, vec![], vec![(long.clone(), 0.75)]);
        assert_eq!(s.of(NOON, "bee", &long).2, 0.75, "from the database");
        s.add(NOON, "bee", &long, 0.25);
        assert_eq!(s.of_sid(NOON, &long), 1.0);
        assert!(
            s.sids.keys().all(|k| k.len() <= MAX_KEY),
            "no megabyte key kept"
        );
        assert!(s.check(NOON, &per_sid(1.0), "bee", &long).is_some());
        assert_eq!(
            s.of_sid(NOON, &"x".repeat((1 << 20) - 1)),
            0.0,
            "another sid"
        );
    }

    #[test]
    fn bad_budgets_are_named() {
        let b = Budgets {
            per_bee_daily_usd: Some(f64::NAN),
            ..Budgets::default()
        };
        assert_eq!(b.invalid(), Some("budgets.perBeeDailyUsd"));
        assert_eq!(per_sid(-1.0).invalid(), Some("budgets.perSidDailyUsd"));
        assert_eq!(per_sid(0.0).invalid(), None);
    }

    proptest! {
        /// Whatever the order of costs, a prompt is refused exactly when
        /// the day's spend has reached the limit, and the spend is the sum.
        #[test]
        fn refused_exactly_when_spend_reaches_the_limit(
            quarters in proptest::collection::vec(0u32..500, 0..40),
            limit in 0u32..5000,
        ) {
            // Quarter dollars: every sum is exact in binary floating point.
            let b = Budgets { daily_usd: Some(limit as f64 * 0.25), ..Budgets::default() };
            let mut s = Spend::new(NOON, 0.0, vec![], vec![]);
            let mut sum = 0u32;
            for q in quarters {
                let refused = s.check(NOON, &b, "bee", "sid").is_some();
                prop_assert_eq!(refused, sum >= limit);
                s.add(NOON, "bee", "sid", q as f64 * 0.25);
                sum += q;
            }
        }
    }
}
