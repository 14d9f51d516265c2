//! `hum demo` runs its three waves and reports zero processes left.

use crate::common::*;

#[test]
fn the_demo_absorbs_three_waves_and_leaves_nothing() {
    let sb = Sandbox::new();
    let out = sb
        .hum(&[
            "demo",
            "--bees=12",
            "--cap=4",
            "--waves=3",
            "--bootstrap-ms=100",
            "--turn-ms=100",
            "--children=1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("processes left after shutdown: 0"), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("wave  turns ok"))
        .skip(1)
        .take_while(|l| !l.starts_with("processes left"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    for r in &rows {
        assert_eq!((r[1], r[2]), ("12", "0"), "turns ok / errors: {text}");
        let peak_cells: usize = r[7].parse().unwrap();
        assert!(peak_cells <= 4, "cap exceeded: {text}");
        // Each cell is at least its agent: a count below the cells' means
        // the demo's process scan cannot see them (and neither could its
        // "processes left" line).
        let peak_procs: usize = r[8].parse().unwrap();
        assert!(
            peak_cells > 0 && peak_procs >= peak_cells,
            "the demo's scan misses cells: {text}"
        );
    }
    let num = |r: &[&str], i: usize| -> usize { r[i].parse().unwrap() };
    assert_eq!(rows[0][3], "12", "wave 1 spawns one cell per bee: {text}");
    assert_eq!(num(&rows[0], 6), 8, "wave 1 ends with 4 warm cells: {text}");
    // Which of wave 2's bees find their cell warm depends on the order
    // their prompts reach the pool (a cold bee first takes an idle cell),
    // which a loaded machine reorders; the accounting does not depend on
    // it: every turn is a reuse or a spawn, at most the 4 warm cells are
    // reused, and every spawn evicts one cell (the pool starts and ends
    // full).
    for (w, r) in rows.iter().enumerate().skip(1) {
        let (spawns, reuses) = (num(r, 3), num(r, 4));
        assert_eq!(
            spawns + reuses,
            12,
            "wave {}: a reuse or a spawn per turn: {text}",
            w + 1
        );
        assert!(
            reuses <= 4,
            "wave {}: more reuses than warm cells: {text}",
            w + 1
        );
        assert_eq!(
            num(r, 6),
            spawns,
            "wave {}: a spawn evicts a cell: {text}",
            w + 1
        );
    }
    assert!(text.contains("SIGKILL humd"), "{text}");
    sb.assert_no_leaks();
}
