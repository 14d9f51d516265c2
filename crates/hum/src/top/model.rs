//! What `hum top` shows, as a pure function of humd's status answers and
//! the keys pressed: rows (with CPU % from the last two answers), the pool
//! line, the sort key, the selection and the teardown question. No
//! terminal here; `view` draws it, `mod.rs` feeds it.

use crate::human::{human_bytes, human_ms};
use crate::pool::CellState;
use crate::reports::DaemonStatus;
use std::collections::HashMap;

/// What the rows are sorted by; `s` moves to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Sid,
    State,
    Rss,
    Cpu,
    Cost,
    Idle,
    Age,
}

impl SortKey {
    const ALL: [SortKey; 7] = [
        SortKey::Sid,
        SortKey::State,
        SortKey::Rss,
        SortKey::Cpu,
        SortKey::Cost,
        SortKey::Idle,
        SortKey::Age,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Sid => "sid",
            SortKey::State => "state",
            SortKey::Rss => "rss",
            SortKey::Cpu => "cpu",
            SortKey::Cost => "cost",
            SortKey::Idle => "idle",
            SortKey::Age => "age",
        }
    }

    fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }
}

/// A key, as `hum top` understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Up,
    Down,
    Esc,
    Enter,
}

/// What a key asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Tear this sid's cell down (a `cleanup`, the normal path).
    TearDown(String),
}

/// One cell's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub sid: String,
    pub hive: String,
    pub state: CellState,
    pub pid: Option<i32>,
    pub procs: usize,
    pub rss_bytes: u64,
    /// Since the previous answer; none for a cell seen once.
    pub cpu_pct: Option<f64>,
    pub turns: u64,
    pub cost_today: Option<f64>,
    pub idle_ms: Option<u64>,
    pub age_ms: u64,
}

impl Row {
    /// The row's cells as text, in [`HEADER`] order.
    pub fn cells(&self) -> [String; 11] {
        [
            crate::logsafe::escape(&self.sid).into_owned(),
            crate::logsafe::escape(&self.hive).into_owned(),
            self.state.as_str().replace('_', "-"),
            self.pid.map_or("-".into(), |p| p.to_string()),
            self.procs.to_string(),
            human_bytes(self.rss_bytes),
            self.cpu_pct.map_or("-".into(), |c| format!("{c:.1}")),
            self.turns.to_string(),
            self.cost_today.map_or("-".into(), |c| format!("${c:.4}")),
            human_ms(self.idle_ms),
            human_ms(Some(self.age_ms)),
        ]
    }
}

/// The table's column names.
pub const HEADER: [&str; 11] = [
    "SID",
    "HIVE",
    "STATE",
    "PID",
    "PROCS",
    "RSS",
    "CPU%",
    "TURNS",
    "COST TODAY",
    "IDLE",
    "AGE",
];

/// The pool and spend, summed over workers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolLine {
    pub workers: usize,
    pub cells: usize,
    pub cap: usize,
    pub queued: usize,
    pub bootstrapping: usize,
    pub rss_bytes: u64,
    pub max_pool_rss_bytes: Option<u64>,
    pub spent_today: Option<f64>,
    pub daily_budget: Option<f64>,
    pub foragers: usize,
    pub tools: usize,
}

impl PoolLine {
    pub fn text(&self) -> String {
        let rss = match self.max_pool_rss_bytes {
            Some(max) => format!("{} / {}", human_bytes(self.rss_bytes), human_bytes(max)),
            None => human_bytes(self.rss_bytes),
        };
        let spend = match (self.spent_today, self.daily_budget) {
            (Some(s), Some(b)) => format!("${s:.2} / ${b:.2} today"),
            (Some(s), None) => format!("${s:.2} today"),
            _ => "spend unknown".into(),
        };
        let foragers = match self.foragers {
            0 => String::new(),
            n => format!(" · foragers {n} ({} tools)", self.tools),
        };
        let workers = match self.workers {
            1 => String::new(),
            n => format!(" · workers {n}"),
        };
        format!(
            "cells {}/{} · queued {} · bootstrapping {} · rss {} · {}{}{}",
            self.cells, self.cap, self.queued, self.bootstrapping, rss, spend, workers, foragers
        )
    }
}

/// A cluster node's line: each node's cells and cap, this one marked, and
/// how many of this node's askers' sids live elsewhere.
pub fn cluster_line(c: &crate::reports::ClusterStatus) -> String {
    let nodes: Vec<String> = c
        .nodes
        .iter()
        .map(|n| {
            let mark = if n.node == c.node {
                " (here)"
            } else if !n.linked {
                " (not linked)"
            } else {
                ""
            };
            let draining = if n.draining { " draining" } else { "" };
            format!(
                "{}{mark} {}/{}{draining}",
                crate::logsafe::escape(&n.node),
                n.cells,
                n.cap
            )
        })
        .collect();
    let nats = if c.connected { "" } else { " · NATS away" };
    let sids = match c.sids_elsewhere_count {
        1 => "1 sid".to_owned(),
        n => format!("{n} sids"),
    };
    format!(
        "cluster {} · {} · {sids} elsewhere{nats}",
        crate::logsafe::escape(&c.name),
        nodes.join(" · "),
    )
}

/// `hum top`'s whole state.
#[derive(Debug, Clone)]
pub struct Top {
    pub rows: Vec<Row>,
    pub pool: PoolLine,
    /// A cluster node's line: every node's cells and cap as last heard.
    pub cluster: Option<String>,
    pub sort: SortKey,
    /// The selected row's sid (kept across refreshes and re-sorts).
    pub selected: Option<String>,
    /// The sid `d` asked about, waiting for `y`.
    pub confirm: Option<String>,
    /// The last thing said at the bottom (sent cleanup, humd unreachable).
    pub message: Option<String>,
    /// CPU time and when it was read, per cell id, from the last answer.
    prev: HashMap<String, (u64, u64)>,
}

impl Default for Top {
    fn default() -> Self {
        Top {
            rows: Vec::new(),
            pool: PoolLine::default(),
            cluster: None,
            sort: SortKey::Rss,
            selected: None,
            confirm: None,
            message: None,
            prev: HashMap::new(),
        }
    }
}

impl Top {
    /// Takes humd's answer read at `now_ms` (any monotonic clock).
    pub fn update(&mut self, status: &DaemonStatus, now_ms: u64) {
        let usage = status.daemon.usage.as_ref();
        self.cluster = status.daemon.cluster.as_ref().map(cluster_line);
        let mut prev = HashMap::new();
        self.rows = status
            .cells()
            .map(|c| {
                let key = c.cell_id.clone().unwrap_or_else(|| c.sid.clone());
                let cpu_pct = self.prev.get(&key).and_then(|(cpu, at)| {
                    let dt = now_ms.checked_sub(*at).filter(|d| *d > 0)?;
                    Some(c.cpu_ms.saturating_sub(*cpu) as f64 * 100.0 / dt as f64)
                });
                prev.insert(key, (c.cpu_ms, now_ms));
                Row {
                    sid: c.sid.clone(),
                    hive: c.hive.clone(),
                    state: c.state,
                    pid: c.pid,
                    procs: c.pids.len(),
                    rss_bytes: c.rss_bytes,
                    cpu_pct,
                    turns: c.turns_served,
                    cost_today: usage
                        .map(|u| u.spent_today_by_sid.get(&c.sid).copied().unwrap_or(0.0)),
                    idle_ms: c.idle_ms,
                    age_ms: c.age_ms,
                }
            })
            .collect();
        self.prev = prev;
        let mut pool = PoolLine {
            workers: status.daemon.workers,
            spent_today: usage.map(|u| u.spent_today_usd),
            daily_budget: usage.and_then(|u| u.budgets.daily_usd),
            foragers: status.daemon.tools.foragers.len(),
            tools: status
                .daemon
                .tools
                .foragers
                .iter()
                .map(|f| f.tools.len())
                .sum(),
            ..PoolLine::default()
        };
        for w in status.workers.iter().filter_map(|w| w.status.as_ref()) {
            pool.cells += w.pool.live;
            pool.cap += w.pool.cap;
            pool.queued += w.pool.queued;
            pool.bootstrapping += w.pool.bootstrapping;
            pool.rss_bytes += w.cells.iter().map(|c| c.rss_bytes).sum::<u64>();
            if let Some(m) = w.pool.max_pool_rss_bytes {
                *pool.max_pool_rss_bytes.get_or_insert(0) += m;
            }
        }
        self.pool = pool;
        self.sort_rows();
        if self
            .selected
            .as_ref()
            .is_none_or(|s| !self.rows.iter().any(|r| &r.sid == s))
        {
            self.selected = self.rows.first().map(|r| r.sid.clone());
        }
    }

    fn sort_rows(&mut self) {
        let key = self.sort;
        // Largest first for amounts, A to Z for names; the sid breaks ties.
        self.rows.sort_by(|a, b| {
            let by = match key {
                SortKey::Sid => std::cmp::Ordering::Equal,
                SortKey::State => a.state.as_str().cmp(b.state.as_str()),
                SortKey::Rss => b.rss_bytes.cmp(&a.rss_bytes),
                SortKey::Cpu => b
                    .cpu_pct
                    .unwrap_or(0.0)
                    .total_cmp(&a.cpu_pct.unwrap_or(0.0)),
                SortKey::Cost => b
                    .cost_today
                    .unwrap_or(0.0)
                    .total_cmp(&a.cost_today.unwrap_or(0.0)),
                SortKey::Idle => b.idle_ms.unwrap_or(0).cmp(&a.idle_ms.unwrap_or(0)),
                SortKey::Age => b.age_ms.cmp(&a.age_ms),
            };
            by.then_with(|| a.sid.cmp(&b.sid))
        });
    }

    /// The selected row's index.
    pub fn selected_index(&self) -> Option<usize> {
        let s = self.selected.as_ref()?;
        self.rows.iter().position(|r| &r.sid == s)
    }

    /// Handles one key.
    pub fn key(&mut self, key: Key) -> Action {
        if let Some(sid) = self.confirm.take() {
            return match key {
                Key::Char('y') | Key::Char('Y') => {
                    self.message = Some(format!("tearing down {}", crate::logsafe::escape(&sid)));
                    Action::TearDown(sid)
                }
                _ => {
                    self.message = Some("kept".into());
                    Action::None
                }
            };
        }
        match key {
            Key::Char('q') | Key::Char('Q') | Key::Esc => Action::Quit,
            Key::Char('s') => {
                self.sort = self.sort.next();
                self.sort_rows();
                Action::None
            }
            Key::Up | Key::Char('k') => {
                self.move_selection(-1);
                Action::None
            }
            Key::Down | Key::Char('j') => {
                self.move_selection(1);
                Action::None
            }
            Key::Char('d') => {
                self.confirm = self.selected.clone();
                Action::None
            }
            _ => Action::None,
        }
    }

    fn move_selection(&mut self, by: isize) {
        if self.rows.is_empty() {
            return;
        }
        let at = self.selected_index().unwrap_or(0) as isize;
        let to = (at + by).clamp(0, self.rows.len() as isize - 1) as usize;
        self.selected = Some(self.rows[to].sid.clone());
    }

    /// One line for a refresh when stdout is not a terminal.
    pub fn plain_line(&self) -> String {
        let mut line = self.pool.text();
        if let Some(c) = &self.cluster {
            line.push_str(" | ");
            line.push_str(c);
        }
        for r in &self.rows {
            let c = r.cells();
            line.push_str(&format!(
                " | {} {} pid={} procs={} rss={} cpu={} turns={} cost={} idle={} age={}",
                c[0], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]
            ));
        }
        line
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::reports::*;

    fn cell(sid: &str, state: CellState, rss_mb: u64, cpu_ms: u64) -> CellStatus {
        CellStatus {
            sid: sid.into(),
            hive: "sim".into(),
            state,
            pid: Some(100 + rss_mb as i32),
            pids: vec![1, 2],
            rss_bytes: rss_mb << 20,
            cpu_ms,
            age_ms: 65_000,
            idle_ms: (state == CellState::Idle).then_some(4_000),
            turns_served: 3,
            cell_id: Some(format!("cell-{sid}")),
            builtins_off: Vec::new(),
            history_not_carried: false,
            model: None,
        }
    }

    /// A known status: two cells, one worker, spend and a budget.
    pub(crate) fn known(cpu_b: u64) -> DaemonStatus {
        DaemonStatus {
            daemon: DaemonInfo {
                workers: 1,
                usage: Some(UsageStatus {
                    spent_today_usd: 1.5,
                    budgets: crate::usage::Budgets {
                        daily_usd: Some(10.0),
                        ..Default::default()
                    },
                    spent_today_by_sid: [("alpha".to_string(), 0.25), ("beta".to_string(), 1.25)]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            workers: vec![WorkerEntry {
                status: Some(WorkerStatus {
                    pool: PoolStatus {
                        live: 2,
                        cap: 8,
                        queued: 1,
                        max_pool_rss_bytes: Some(1024 << 20),
                        ..Default::default()
                    },
                    cells: vec![
                        cell("alpha", CellState::Idle, 100, 500),
                        cell("beta", CellState::Busy, 300, cpu_b),
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn rows_carry_cost_and_cpu_from_two_answers() {
        let mut top = Top::default();
        top.update(&known(1_000), 0);
        assert_eq!(top.rows[0].sid, "beta", "largest memory first");
        assert_eq!(top.rows[0].cpu_pct, None, "one answer: no rate yet");
        top.update(&known(1_500), 1_000);
        assert_eq!(top.rows[0].cpu_pct, Some(50.0));
        assert_eq!(top.rows[0].cost_today, Some(1.25));
        assert_eq!(top.rows[1].cells()[8], "$0.2500");
        assert_eq!(
            top.pool.text(),
            "cells 2/8 · queued 1 · bootstrapping 0 · rss 400.0 MiB / 1.0 GiB · $1.50 / $10.00 today"
        );
    }

    #[test]
    fn s_cycles_the_sort_and_the_selection_follows_its_sid() {
        let mut top = Top::default();
        top.update(&known(0), 0);
        assert_eq!(top.selected.as_deref(), Some("beta"));
        top.key(Key::Down);
        assert_eq!(top.selected.as_deref(), Some("alpha"));
        // rss → cpu → cost → idle: alpha is the only idle one, first.
        for _ in 0..3 {
            top.key(Key::Char('s'));
        }
        assert_eq!(top.sort, SortKey::Idle);
        assert_eq!(top.rows[0].sid, "alpha");
        assert_eq!(top.selected_index(), Some(0));
    }

    #[test]
    fn d_asks_first_and_only_y_tears_down() {
        let mut top = Top::default();
        top.update(&known(0), 0);
        assert_eq!(top.key(Key::Char('d')), Action::None);
        assert_eq!(top.confirm.as_deref(), Some("beta"));
        assert_eq!(top.key(Key::Char('n')), Action::None);
        assert_eq!(top.confirm, None);
        top.key(Key::Char('d'));
        assert_eq!(top.key(Key::Char('y')), Action::TearDown("beta".into()));
        assert_eq!(top.key(Key::Char('q')), Action::Quit);
    }
}
