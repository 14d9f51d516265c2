//! `hum status`: every cell, the pool, who is connected, and how cells are
//! contained — as a table for people or JSON for scripts. Asks humd with a
//! `status` request (a thrum extension chi); humd answers with its own view
//! and each worker's latest `worker-status`.

use crate::cell::Mechanism;
use crate::client::{fetch_status as fetch, fetch_status_json as fetch_json};
use crate::human::{human_bytes, human_ms};
use crate::reports::DaemonStatus;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Print the full JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// humd's socket (default: the thrum socket path rules).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

pub fn run(args: StatusArgs) -> ExitCode {
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    rt.block_on(async move {
        let socket = args.socket.clone().unwrap_or_else(thrum::socket_path);
        let answer = if args.json {
            fetch_json(&socket)
                .await
                .map(|a| serde_json::to_string_pretty(&a).expect("JSON prints") + "\n")
        } else {
            fetch(&socket).await.map(|a| render(&a))
        };
        match answer {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hum status: {e} ({})", socket.display());
                ExitCode::from(3)
            }
        }
    })
}

/// The answer as a table.
pub fn render(answer: &DaemonStatus) -> String {
    let mut out = cells_table(answer);
    out += &workers_lines(answer);
    out += &tools_lines(&answer.daemon.tools);
    let d = &answer.daemon;
    if let Some(c) = &d.cluster {
        out += &cluster_lines(c);
    }
    if let Some(u) = &d.usage {
        out += &usage_line(u);
    }
    out += &format!(
        "humd {} (pid {}): {} worker(s), {} asker(s) connected\n",
        d.version, d.pid, d.workers, d.askers,
    );
    out
}

/// The cluster this humd is a node of: every node, its load, when heard.
/// Sids living on other nodes the table names (the JSON has more).
const SIDS_ELSEWHERE_LINES: usize = 20;

fn cluster_lines(c: &crate::reports::ClusterStatus) -> String {
    let mut out = format!(
        "cluster {} · this node {} · NATS {}\n",
        c.name,
        c.node,
        if c.connected {
            "connected"
        } else {
            "not connected"
        }
    );
    for n in &c.nodes {
        let how = if n.node == c.node {
            "this node".to_owned()
        } else if n.linked {
            format!("heard {} ago", crate::human::human_ms(Some(n.heard_ms_ago)))
        } else {
            format!(
                "heard {} ago, not linked yet",
                crate::human::human_ms(Some(n.heard_ms_ago))
            )
        };
        out += &format!(
            "  node {}: cells {}/{} · turns {} · {}{} · {how}\n",
            n.node,
            n.cells,
            n.cap,
            n.turns,
            crate::human::human_bytes(n.rss_bytes),
            if n.draining { " · draining" } else { "" },
        );
    }
    for (sid, node) in c.sids_elsewhere.iter().take(SIDS_ELSEWHERE_LINES) {
        out += &format!(
            "  sid {} lives on node {}\n",
            crate::logsafe::escape(sid),
            crate::logsafe::escape(node)
        );
    }
    let more = c.sids_elsewhere_count.saturating_sub(SIDS_ELSEWHERE_LINES);
    if more > 0 {
        out += &format!(
            "  … and {more} more sids on other nodes (hum status --json lists up to {})\n",
            crate::reports::MAX_SIDS_SHOWN
        );
    }
    out
}

/// One row per cell, in aligned columns.
fn cells_table(answer: &DaemonStatus) -> String {
    let mut out = String::new();
    let rows: Vec<[String; 9]> = answer
        .cells()
        .map(|c| {
            [
                // (*: its agent began the conversation again.)
                if c.history_not_carried {
                    format!("{}*", c.sid)
                } else {
                    c.sid.clone()
                },
                c.hive.clone(),
                c.state.as_str().replace('_', "-"),
                c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                c.pids.len().to_string(),
                human_bytes(c.rss_bytes),
                human_ms(Some(c.age_ms)),
                human_ms(c.idle_ms),
                c.turns_served.to_string(),
            ]
        })
        .collect();
    let header = [
        "SID", "HIVE", "STATE", "PID", "PROCS", "RSS", "AGE", "IDLE", "TURNS",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut l: String = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}  ", w = *w))
            .collect();
        l.truncate(l.trim_end().len());
        l + "\n"
    };
    out += &line(header.to_vec());
    for r in &rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    if rows.is_empty() {
        out += "(no cells)\n";
    }
    if answer.cells().any(|c| c.history_not_carried) {
        out += "* its agent could not load the sid's session: the conversation began again\n";
    }
    out += "\n";
    out
}

/// Each worker: its pool and how its cells are contained.
fn workers_lines(answer: &DaemonStatus) -> String {
    let mut out = String::new();
    // (The cluster's links to other nodes are shown as nodes, below.)
    let here = answer
        .workers
        .iter()
        .filter(|w| !crate::daemon::router::placing::is_remote(w.conn));
    for w in here {
        let default = Default::default();
        let s = w.status.as_ref().unwrap_or(&default);
        let containment = match &s.containment {
            Some(Mechanism::Cgroup { root }) => format!("cgroup v2 per cell ({root})"),
            Some(Mechanism::ProcessGroup { why_not_cgroup }) => {
                format!("process group + tag (no cgroup: {why_not_cgroup})")
            }
            Some(Mechanism::Portable { not_used }) if not_used.is_empty() => {
                "portable: process group + tag + sentinel".into()
            }
            Some(Mechanism::Portable { not_used }) => format!(
                "portable: process group + tag + sentinel (not used: {})",
                not_used.join(", ")
            ),
            None => "unknown (no status from this worker yet)".into(),
        };
        out += &format!(
            "worker {} ({}): cells {}/{} · queued {} · bootstrapping {} · in flight {}\n  containment: {containment}\n",
            w.hive,
            w.models.join(", "),
            s.pool.live,
            s.pool.cap,
            s.pool.queued,
            s.pool.bootstrapping,
            w.in_flight,
        );
    }
    out
}

/// Foragers, conflicts, calls, capabilities and lapsed permission asks.
fn tools_lines(t: &crate::reports::ToolsStatus) -> String {
    let mut out = String::new();
    for f in &t.foragers {
        out += &format!(
            "forager {} (conn {}): {}\n",
            f.name.as_deref().unwrap_or("unnamed"),
            f.conn,
            if f.tools.is_empty() {
                "no tools it owns".to_owned()
            } else {
                f.tools.join(", ")
            },
        );
    }
    for c in &t.conflicts {
        let others: Vec<String> = c.others.iter().map(|o| format!("conn {o}")).collect();
        out += &format!(
            "  conflict: {} is offered by conn {} (serving) and {}\n",
            c.tool,
            c.owner,
            others.join(", ")
        );
    }
    if !t.foragers.is_empty() || t.calls_in_flight > 0 {
        out += &format!("tool calls in flight: {}\n", t.calls_in_flight);
    }
    if t.parked_turns > 0 {
        out += &format!(
            "parked turns (waiting for their asker's tool results): {}\n",
            t.parked_turns
        );
    }
    if !t.capabilities.is_empty() {
        out += "capabilities (a forager that provides one turns those tools of the agent off):\n";
    }
    for c in &t.capabilities {
        let by: Vec<String> = t
            .foragers
            .iter()
            .filter(|f| f.provides.contains(&c.name))
            .map(|f| f.name.as_deref().unwrap_or("unnamed").to_owned())
            .collect();
        let builtins = if c.builtins.is_empty() {
            "no tools of the agent".to_owned()
        } else {
            c.builtins.join(", ")
        };
        let name = crate::logsafe::escape(&c.name);
        out += &if c.served {
            let by = by.join(", ");
            let by = crate::logsafe::escape(&by);
            format!("  {name}: served by {by}: off now: {builtins}\n")
        } else {
            format!("  {name}: not served: {builtins} on\n")
        };
    }
    if !t.unanswered_permits.is_empty() {
        let who: Vec<String> = t
            .unanswered_permits
            .iter()
            .map(|(name, n)| format!("{} ×{n}", crate::logsafe::escape(name)))
            .collect();
        out += &format!(
            "permission asks left unanswered (the default applied): {}\n",
            who.join(", ")
        );
    }
    out
}

/// Today's spend and the budgets.
fn usage_line(u: &crate::reports::UsageStatus) -> String {
    let b = &u.budgets;
    let limits: Vec<String> = [
        ("daily", b.daily_usd),
        ("per bee", b.per_bee_daily_usd),
        ("per sid", b.per_sid_daily_usd),
    ]
    .iter()
    .filter_map(|(name, v)| v.map(|v| format!("{name} {}", crate::human::usd(v))))
    .collect();
    format!(
        "spent ${:.4} today ({} UTC) · budgets: {}{}\n",
        u.spent_today_usd,
        u.day,
        if limits.is_empty() {
            "none".to_owned()
        } else {
            limits.join(", ")
        },
        if b.hard_stop { " (hard stop)" } else { "" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_foragers_their_tools_and_conflicts() {
        let answer: DaemonStatus = serde_json::from_value(json!({
            "daemon": {"version": "0.1.0", "pid": 1, "workers": 0, "askers": 0, "stats": {},
                       "tools": {"foragers": [{"conn": 4, "name": "files", "tools": ["echo", "read"]},
                                              {"conn": 5, "tools": []}],
                                 "conflicts": [{"tool": "echo", "owner": 4, "others": [5]}],
                                 "callsInFlight": 1}},
            "workers": []
        }))
        .unwrap();
        let text = render(&answer);
        assert!(
            text.contains("forager files (conn 4): echo, read"),
            "{text}"
        );
        assert!(
            text.contains("forager unnamed (conn 5): no tools it owns"),
            "{text}"
        );
        assert!(
            text.contains("conflict: echo is offered by conn 4 (serving) and conn 5"),
            "{text}"
        );
        assert!(text.contains("tool calls in flight: 1"), "{text}");
    }

    #[test]
    fn shows_the_capability_table_and_who_serves_what() {
        let answer: DaemonStatus = serde_json::from_value(json!({
            "daemon": {"tools": {
                "foragers": [{"conn": 4, "name": "humfs", "tools": ["read_file"], "provides": ["fs"]}],
                "capabilities": [
                    {"name": "fs", "builtins": ["Bash", "Read"], "served": true},
                    {"name": "session", "builtins": [], "served": false}]}}
        }))
        .unwrap();
        let text = render(&answer);
        assert!(
            text.contains("  fs: served by humfs: off now: Bash, Read"),
            "{text}"
        );
        assert!(
            text.contains("  session: not served: no tools of the agent on"),
            "{text}"
        );
    }

    #[test]
    fn renders_cells_pool_and_containment() {
        let answer = json!({
            "daemon": {"version": "0.1.0", "pid": 7, "workers": 1, "askers": 2},
            "workers": [{"hive": "sim", "models": ["sim"], "inFlight": 1, "status": {
                "containment": {"kind": "cgroup", "root": "/sys/fs/cgroup/x"},
                "pool": {"live": 1, "cap": 8, "queued": 0, "bootstrapping": 0},
                "cells": [{"sid": "bee-1", "hive": "sim", "state": "idle", "pid": 42, "pids": [42, 43],
                           "rssBytes": 10485760, "ageMs": 125000, "idleMs": 3000, "turnsServed": 4}]}}]
        });
        let text = render(&serde_json::from_value(answer).unwrap());
        assert!(
            text.contains("bee-1")
                && text.contains("idle")
                && text.contains("10.0 MiB")
                && text.contains("2m05s"),
            "{text}"
        );
        assert!(
            text.contains("cells 1/8") && text.contains("cgroup v2 per cell"),
            "{text}"
        );
        assert!(text.contains("2 asker(s)"), "{text}");
        assert!(!text.contains("spent"), "no usage, no spend line: {text}");
        assert!(render(&DaemonStatus::default()).contains("(no cells)"));
        assert!(
            !text.contains("cluster"),
            "one machine: no cluster lines: {text}"
        );
        let node = json!({"daemon": {"cluster": {"name": "hum", "node": "a", "connected": true, "nodes": [
            {"node": "a", "cap": 8, "cells": 2, "turns": 1, "linked": true},
            {"node": "b", "cap": 4, "cells": 4, "turns": 4, "heardMsAgo": 900, "linked": true, "draining": true}],
            "sidsElsewhere": [["s-1", "b"], ["s\u{1b}[2J", "b"]], "sidsElsewhereCount": 23}},
            "workers": [{"conn": 4611686018427387905u64, "hive": "node:b", "models": ["sim"], "inFlight": 1}]});
        let text = render(&serde_json::from_value(node).unwrap());
        assert!(
            text.contains("cluster hum · this node a · NATS connected"),
            "{text}"
        );
        assert!(text.contains("node a: cells 2/8 · turns 1"), "{text}");
        assert!(
            text.contains("node b: cells 4/4 · turns 4") && text.contains("draining"),
            "{text}"
        );
        assert!(text.contains("sid s-1 lives on node b"), "{text}");
        assert!(!text.contains('\u{1b}'), "a sid is printed escaped: {text}");
        assert!(text.contains("… and 3 more sids on other nodes"), "{text}");
        assert!(
            !text.contains("worker node:b"),
            "a link is not shown as a worker: {text}"
        );
        let with_usage = json!({"daemon": {"usage": {"day": "2026-11-30", "spentTodayUsd": 1.5,
            "budgets": {"dailyUsd": 10.0, "perSidDailyUsd": 2.0, "perBeeDailyUsd": 0.0003, "hardStop": true}}}});
        let text = render(&serde_json::from_value(with_usage).unwrap());
        assert!(
            text.contains("spent $1.5000 today (2026-11-30 UTC) · budgets: daily $10.00, per bee $0.0003, per sid $2.00 (hard stop)"),
            "{text}"
        );
    }
}
