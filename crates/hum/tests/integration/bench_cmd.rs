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
