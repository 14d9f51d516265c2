use super::*;

fn a_worker_status() -> WorkerStatus {
    let mut metrics = WorkerMetrics {
        spawns: 3,
        ..Default::default()
    };
    metrics.turn_seconds.observe_ms(1500);
    metrics.teardowns.insert("evicted/stdin".into(), 2);
    WorkerStatus {
        hive: Some("sim".into()),
        models: vec!["sim".into()],
        containment: Some(Mechanism::Cgroup {
            root: "/sys/fs/cgroup/x".into(),
        }),
        pool: PoolStatus {
            live: 1,
            cap: 8,
            queued: 2,
            bootstrapping: 0,
            max_concurrent_spawns: 2,
            max_pool_rss_bytes: Some(1 << 30),
            max_cell_rss_bytes: None,
        },
        cells: vec![CellStatus {
            sid: "bee \"1\"".into(),
            hive: "sim".into(),
            state: CellState::Idle,
            pid: Some(42),
            pids: vec![42, 43],
            rss_bytes: 1 << 20,
            cpu_ms: 5,
            age_ms: 1000,
            idle_ms: Some(10),
            turns_served: 4,
            cell_id: Some("c-1".into()),
            builtins_off: vec!["Bash".into(), "Read".into()],
            history_not_carried: true,
            model: Some("sim".into()),
        }],
        metrics,
        builtins_off: vec!["Bash".into(), "Read".into()],
    }
}

#[test]
fn a_worker_status_line_is_a_tone_that_reads_back_the_same() {
    let status = a_worker_status();
    let line = status.to_line().unwrap();
    assert_eq!(line.last(), Some(&b'\n'));
    let tone = thrum::Tone::decode(&line[..line.len() - 1]).unwrap();
    assert_eq!(
        (tone.chi(), tone.envelope.from.as_deref()),
        (WORKER_STATUS, Some("worker"))
    );
    let back: WorkerStatus = serde_json::from_slice(&line).unwrap();
    assert_eq!(back, status);
    // The wire keeps its camelCase keys.
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["cells"][0]["rssBytes"], 1 << 20);
    assert_eq!(v["pool"]["maxConcurrentSpawns"], 2);
}

#[test]
fn humds_answer_reads_back_from_its_tone() {
    let answer = DaemonStatus {
        daemon: DaemonInfo {
            version: "0.1.0".into(),
            pid: 7,
            workers: 1,
            askers: 2,
            stats: RouterStats {
                prompts_routed: 5,
                ..Default::default()
            },
            unfinished_lines: Some(LineBudget { bytes: 1, limit: 2 }),
            cluster: Some(crate::reports::ClusterStatus {
                name: "hum".into(),
                node: "a".into(),
                connected: true,
                nodes: vec![crate::reports::NodeView {
                    node: "b".into(),
                    cap: 8,
                    linked: true,
                    heard_ms_ago: 900,
                    ..Default::default()
                }],
                timings: crate::reports::ClusterTimings {
                    forwarded_turns: 2,
                    ..Default::default()
                },
                sids_elsewhere: vec![("s".into(), "b".into())],
                sids_elsewhere_count: 1,
            }),
            usage: Some(UsageStatus {
                day: "2026-11-30".into(),
                spent_today_usd: 1.25,
                spent_today_by_sid: BTreeMap::from([("s".into(), 0.5)]),
                ..Default::default()
            }),
            tools: ToolsStatus {
                foragers: vec![ForagerEntry {
                    conn: 4,
                    name: Some("f".into()),
                    tools: vec!["echo".into()],
                    provides: vec!["fs".into()],
                }],
                conflicts: vec![ToolConflict {
                    tool: "echo".into(),
                    owner: 4,
                    others: vec![5],
                }],
                calls_in_flight: 1,
                parked_turns: 1,
                calls: ToolStats::default(),
                unanswered_permits: BTreeMap::from([("old-bee".into(), 2)]),
                capabilities: vec![CapabilityEntry {
                    name: "fs".into(),
                    builtins: vec!["Read".into()],
                    served: true,
                }],
            },
        },
        workers: vec![WorkerEntry {
            conn: 3,
            hive: "sim".into(),
            models: vec!["sim".into()],
            hives: vec![HiveModels {
                hive: "sim".into(),
                models: vec!["sim".into()],
            }],
            in_flight: 1,
            status: Some(a_worker_status()),
        }],
    };
    let tone = answer.to_tone(Some("r1"));
    assert_eq!((tone.chi(), tone.rid()), (STATUS, Some("r1")));
    assert_eq!(DaemonStatus::from_tone(&tone).unwrap(), answer);
    assert_eq!(
        tone.to_value()["daemon"]["stats"]["prompts_routed"],
        5,
        "snake_case, as always"
    );
    assert_eq!(answer.cells().count(), 1);
    assert_eq!(answer.metrics().map(|m| m.spawns).sum::<u64>(), 3);
}

#[test]
fn observations_land_in_their_bucket() {
    let mut h = Histogram::new(&[0.01, 0.1]);
    h.observe_ms(5);
    h.observe_ms(10);
    h.observe_ms(50);
    h.observe_ms(5000);
    assert_eq!(h.counts, vec![2, 1, 1]);
    assert_eq!(h.count, 4);
    assert!((h.sum - 5.065).abs() < 1e-9);
}

fn held(i: usize, pad: usize) -> HeldTurn {
    HeldTurn {
        sid: format!("sid-{i}-{}", "x".repeat(pad)),
        rid: format!("rid-{i}"),
        bee: Some("bee".into()),
        model: None,
    }
}

/// Read back as humd reads them: each line a `worker-turns` tone.
fn read_back(lines: &[Vec<u8>]) -> Vec<WorkerTurns> {
    lines
        .iter()
        .map(|l| {
            assert_eq!(l.last(), Some(&b'\n'));
            let tone = thrum::Tone::decode(&l[..l.len() - 1]).unwrap();
            assert_eq!(tone.chi(), WORKER_TURNS);
            serde_json::from_value(tone.to_value()).unwrap()
        })
        .collect()
}

#[test]
fn held_turns_go_in_lines_that_fit_with_the_count_once() {
    let report = WorkerTurns {
        turns: (0..40).map(|i| held(i, 200)).collect(),
        abandoned: 7,
    };
    let lines = report.to_lines(2048);
    assert!(lines.len() > 1, "40 turns of ~250 bytes need several lines");
    assert!(lines.iter().all(|l| l.len() <= 2048));
    let back = read_back(&lines);
    let turns: Vec<HeldTurn> = back.iter().flat_map(|w| w.turns.clone()).collect();
    assert_eq!(turns, report.turns, "every turn, in order");
    assert_eq!(back.iter().map(|w| w.abandoned).sum::<u64>(), 7);
    assert_eq!(back[0].abandoned, 7);
    // All in one line when it fits.
    assert_eq!(report.to_lines(1 << 20).len(), 1);
}

#[test]
fn nothing_to_say_is_no_line_and_a_turn_too_big_is_left_out() {
    assert!(WorkerTurns::default().to_lines(4096).is_empty());
    let counted = WorkerTurns {
        turns: Vec::new(),
        abandoned: 3,
    };
    assert_eq!(read_back(&counted.to_lines(4096))[0].abandoned, 3);
    let report = WorkerTurns {
        turns: vec![held(0, 10), held(1, 10_000), held(2, 10)],
        abandoned: 1,
    };
    let back = read_back(&report.to_lines(4096));
    let sids: Vec<&str> = back
        .iter()
        .flat_map(|w| w.turns.iter().map(|t| t.rid.as_str()))
        .collect();
    assert_eq!(sids, ["rid-0", "rid-2"]);
    assert_eq!(back.iter().map(|w| w.abandoned).sum::<u64>(), 1);
    // A limit below any line: nothing, and no endless loop.
    assert!(report.to_lines(10).is_empty());
}

#[test]
fn a_turns_hive_is_the_one_serving_its_model() {
    let hello: thrum::Hello = serde_json::from_value(serde_json::json!({
        "bee": ["worker"], "hive": "claude-cli", "models": ["sonnet", "sim"],
        "hives": [{"hive": "claude-cli", "models": ["sonnet"]}, {"hive": "sim", "models": ["sim"]}]}))
    .unwrap();
    let hives = HiveModels::of(&hello);
    assert_eq!(
        HiveModels::serving(&hives, Some("sim"), "claude-cli"),
        "sim"
    );
    assert_eq!(
        HiveModels::serving(&hives, Some("sonnet"), "claude-cli"),
        "claude-cli"
    );
    assert_eq!(
        HiveModels::serving(&hives, None, "claude-cli"),
        "claude-cli"
    );
    // An older worker's hello lists no hives: its first hive it is.
    assert_eq!(
        HiveModels::serving(&[], Some("sim"), "claude-cli"),
        "claude-cli"
    );
}

#[test]
fn a_drain_request_reads_as_it_was_written_and_odd_fields_ask_for_a_drain() {
    for off in [true, false] {
        let fields = DrainRequest { off }.fields();
        assert_eq!(DrainRequest::read(&fields), DrainRequest { off });
    }
    let odd: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"off": "yes", "x": 1}"#).unwrap();
    assert_eq!(DrainRequest::read(&odd), DrainRequest { off: false });
    assert_eq!(
        DrainRequest::read(&Default::default()),
        DrainRequest::default()
    );
}
