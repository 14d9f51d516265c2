use super::*;
use serde_json::{json, Value};

#[test]
fn a_workers_cells_are_counted_under_their_own_hive() {
    // The worker's first hive is claude-cli; its sim cells are the sim's.
    let status = json!({
        "daemon": {"workers": 1, "askers": 0, "stats": {}},
        "workers": [{"hive": "claude-cli", "status": {"pool": {"cap": 4}, "cells": [
            {"sid": "a", "hive": "sim", "state": "idle"},
            {"sid": "b", "hive": "sim", "state": "busy"},
            {"sid": "c", "hive": "claude-cli", "state": "idle"}]}}]
    });
    let text = render(&serde_json::from_value(status).expect("a typed status"));
    for series in [
        r#"hum_cells{hive="sim",state="idle"} 1.0"#,
        r#"hum_cells{hive="sim",state="busy"} 1.0"#,
        r#"hum_cells{hive="claude-cli",state="idle"} 1.0"#,
        r#"hum_cells{hive="claude-cli",state="busy"} 0.0"#,
    ] {
        assert!(text.contains(series), "{series}\n{text}");
    }
}

#[test]
fn two_workers_of_one_hive_give_one_series_each_summed() {
    let worker = |cells: Value, cap: u64| {
        json!({"hive": "sim", "status": {"pool": {"cap": cap, "queued": 1}, "cells": cells,
               "metrics": {"spawns": 1}}})
    };
    let status = json!({
        "daemon": {"workers": 2, "askers": 0, "stats": {}},
        "workers": [
            worker(json!([{"sid": "s", "hive": "sim", "state": "idle", "rssBytes": 100}]), 4),
            worker(json!([{"sid": "s", "hive": "sim", "state": "idle", "rssBytes": 50}, {"sid": "s", "hive": "sim", "state": "busy", "rssBytes": 5}]), 8),
        ]
    });
    let text = render(&serde_json::from_value(status).expect("a typed status"));
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let parsed = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).unwrap();
    let mut seen = std::collections::HashSet::new();
    for s in &parsed.samples {
        let key = format!("{}{:?}", s.metric, s.labels);
        assert!(seen.insert(key.clone()), "duplicate series {key}\n{text}");
    }
    assert!(
        text.contains(r#"hum_cells{hive="sim",state="idle"} 2.0"#),
        "{text}"
    );
    assert!(text.contains(r#"hum_cells_cap{hive="sim"} 12.0"#), "{text}");
    assert!(
        text.contains(r#"hum_cell_tree_rss_bytes{hive="sim"} 155.0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hum_cell_spawns_total{hive="sim"} 2"#),
        "{text}"
    );
}

#[test]
fn tool_calls_are_counted_by_outcome_with_their_latency() {
    let status = json!({
        "daemon": {"workers": 0, "askers": 0, "stats": {}, "tools": {
            "foragers": [{"conn": 4, "name": "f", "tools": ["echo"]}],
            "conflicts": [], "callsInFlight": 2, "parkedTurns": 1,
            "calls": {"byOutcome": {"ok": 3, "owner_gone": 1},
                      "seconds": {"bounds": [0.1, 1.0], "counts": [2, 1, 0], "sum": 0.4, "count": 3}}}},
        "workers": []
    });
    let text = render(&serde_json::from_value(status).expect("a typed status"));
    assert!(
        text.contains(r#"hum_tool_calls_total{outcome="ok"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hum_tool_calls_total{outcome="owner_gone"} 1"#),
        "{text}"
    );
    assert!(text.contains("hum_tool_calls_in_flight 2.0"), "{text}");
    assert!(text.contains("hum_parked_turns 1.0"), "{text}");
    assert!(text.contains("hum_foragers 1.0"), "{text}");
    assert!(
        text.contains("hum_tool_call_duration_seconds_count 3"),
        "{text}"
    );
}

#[test]
fn a_snapshot_renders_as_parseable_prometheus_text() {
    let status = json!({
        "daemon": {"workers": 1, "askers": 2, "stats": {"prompts_routed": 5, "no_worker": 1}},
        "workers": [{"hive": "sim", "status": {
            "pool": {"cap": 8, "queued": 0},
            "cells": [{"sid": "s", "hive": "sim", "state": "idle", "rssBytes": 100}, {"sid": "s", "hive": "sim", "state": "busy", "rssBytes": 50}],
            "metrics": {"spawns": 3, "reuses": 2, "orphansSwept": 0, "teardowns": {"evicted/stdin": 1},
                        "turns": {"done": 4, "overloaded": 1},
                        "teardownSeconds": {"bounds": [0.01, 0.1], "counts": [1, 0, 0], "sum": 0.002, "count": 1},
                        "admissionWaitSeconds": {"bounds": [1.0], "counts": [4, 1], "sum": 3.0, "count": 5},
                        "turnSeconds": {"bounds": [1.0], "counts": [4, 0], "sum": 1.0, "count": 4}}}}]
    });
    let text = render(&serde_json::from_value(status).expect("a typed status"));
    assert!(text.contains("hum_prompts_routed_total 5"), "{text}");
    assert!(
        text.contains(r#"hum_cells{hive="sim",state="idle"} 1.0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hum_cell_teardowns_total{hive="sim",reason="evicted",rung="stdin"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hum_admission_wait_seconds_bucket{le="+Inf",hive="sim"} 5"#)
            || text.contains(r#"hum_admission_wait_seconds_bucket{hive="sim",le="+Inf"} 5"#),
        "{text}"
    );
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let parsed =
        prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).expect("valid Prometheus text");
    assert!(parsed
        .samples
        .iter()
        .any(|s| s.metric == "hum_cell_tree_rss_bytes"));
}

#[test]
fn a_cluster_node_reports_every_node_it_heard_by_label() {
    let status = json!({
        "daemon": {"stats": {"placed_remote": 3},
                   "cluster": {"name": "hum", "node": "a", "connected": true, "nodes": [
                       {"node": "a", "cap": 8, "cells": 2, "turns": 1, "linked": true},
                       {"node": "b", "cap": 4, "cells": 4, "turns": 5, "heardMsAgo": 1500}],
                   "timings": {"forwardedTurns": 7, "forwardedByNode": {"b": 5, "c": 2},
                       "forwardFirstEventSeconds": {"bounds": [0.01], "counts": [6, 1], "sum": 0.5, "count": 7}}}}
    });
    let text = render(&serde_json::from_value(status).expect("a typed status"));
    for series in [
        "hum_cluster_nats_connected 1.0",
        r#"hum_cluster_placements_total{placed="remote"} 3"#,
        r#"hum_cluster_node_cells{node="a"} 2.0"#,
        r#"hum_cluster_node_cap{node="b"} 4.0"#,
        r#"hum_cluster_node_turns{node="b"} 5.0"#,
        r#"hum_cluster_node_heard_seconds{node="b"} 1.5"#,
        r#"hum_cluster_node_linked{node="b"} 0.0"#,
        "hum_cluster_forwarded_turns_total 7",
        r#"hum_cluster_node_forwarded_turns_total{node="b"} 5"#,
        r#"hum_cluster_node_forwarded_turns_total{node="c"} 2"#,
        r#"hum_cluster_forward_first_event_seconds_bucket{le="0.01"} 6"#,
        "hum_cluster_forward_first_event_seconds_count 7",
        // None placed: its buckets are there, empty.
        "hum_cluster_placement_seconds_count 0",
    ] {
        assert!(text.contains(series), "{series} in:\n{text}");
    }
    let alone = render(&serde_json::from_value(json!({"daemon": {}})).unwrap());
    assert!(
        !alone.contains("hum_cluster"),
        "one machine has no cluster series"
    );
}
