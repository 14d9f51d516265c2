//! `hum bench` runs its whole-system benchmarks end to end (small sizes)
//! and cleans up after itself.

use crate::common::*;
use serde_json::Value;

fn bench(sb: &Sandbox, args: &[&str]) -> Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    let out = sb.hum(&all).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn herd_routing_and_throughput_benchmarks_report_and_leave_nothing() {
    let sb = Sandbox::new();
    let herd = bench(
        &sb,
        &[
            "herd",
            "--bees=6",
            "--cap=2",
            "--bootstrap-ms=50",
            "--turn-ms=50",
            "--spawns=2",
        ],
    );
    assert_eq!(herd["turns_ok"], 6);
    assert_eq!(herd["spawns"], 6);
    assert!(herd["makespan_s"].as_f64().unwrap() >= herd["ideal_s"].as_f64().unwrap() * 0.9);
    let routing = bench(&sb, &["routing", "--turns=20"]);
    assert!(routing["through_hum_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(routing["direct_pipe_ms"]["p50"].as_f64().unwrap() > 0.0);
    let tp = bench(&sb, &["throughput", "--chunks=20000", "--bees=10"]);
    assert_eq!(tp["one_bee"]["chunks"], 20000);
    assert_eq!(tp["many_bees"]["chunks"], 20000);
    sb.assert_no_leaks();
}

#[test]
fn the_cluster_benchmark_reports_each_herd_and_their_median() {
    let sb = Sandbox::new();
    let c = bench(
        &sb,
        &[
            "cluster",
            "--nodes=2",
            "--turns=3",
            "--bees-per-node=3",
            "--cap=2",
            "--turn-ms=100",
            "--chunks=20",
            "--herds=3",
        ],
    );
    assert!(c.get("error").is_none(), "(it needs nats-server) {c}");
    let size = &c["sizes"][0];
    assert_eq!(size["nodes"], 2, "{c}");
    assert!(size["warm_turn_ms"]["forwarded_p50"].as_f64().unwrap() > 0.0);
    let herd = &size["herd"];
    let runs = herd["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{herd}");
    let mut makespans = Vec::new();
    for r in runs {
        assert_eq!(r["turns_ok"], 6, "{r}");
        let spawned: u64 = r["spawns_per_node"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .sum();
        assert_eq!(spawned, 6, "a cell per sid: {r}");
        makespans.push(r["makespan_s"].as_f64().unwrap());
    }
    makespans.sort_by(f64::total_cmp);
    assert_eq!(
        herd["makespan_s"].as_f64(),
        Some(makespans[1]),
        "the median"
    );
    assert_eq!(herd["turns_ok"], 6);
    sb.assert_no_leaks();
}

/// `hum bench cluster` stopped with ^C leaves nothing behind: its nodes
/// follow their lifelines, and its NATS server its parent.
#[test]
fn a_cluster_benchmark_stopped_with_ctrl_c_leaves_no_process() {
    let sb = Sandbox::new();
    let mut bench = sb
        .hum(&[
            "bench",
            "cluster",
            "--nodes=2",
            "--turns=1000000",
            "--herds=1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let named = |name: &str| {
        sb.live().iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{}/comm", p.pid)).is_ok_and(|c| c.trim() == name)
        })
    };
    // Its NATS server and both nodes (a humd and a worker each) are up.
    assert!(
        wait_until(PROMPTLY, || named("nats-server") && sb.live().len() >= 6),
        "the bench started its NATS server and nodes (it needs nats-server)"
    );
    let pid = rustix::process::Pid::from_raw(bench.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let _ = bench.wait();
    sb.assert_no_leaks();
}
