//! The cell table alone: no processes, no runners, no clock.

use super::*;
use crate::pool::CellState;

fn view(id: CellId, state: CellState, since: u64) -> CellView {
    CellView {
        id,
        sid: format!("s{id}"),
        state,
        turn: None,
        since,
        last_used: since,
        rss_bytes: 0,
    }
}

fn sample(rss: u64) -> CellSample {
    CellSample {
        cell_id: "c".into(),
        pids: vec![42],
        rss_bytes: rss,
        cpu_ms: 7,
        age_ms: 9,
        oom_kills: 0,
    }
}

#[test]
fn oom_kills_are_news_once_each() {
    let mut t = CellTable::default();
    t.insert(1, record("s"));
    assert_eq!(t.oom_seen(1, 0), None);
    let news = t.oom_seen(1, 2).unwrap();
    assert_eq!((news.sid.as_str(), news.new, news.total), ("s", 2, 2));
    assert_eq!(t.oom_seen(1, 2), None, "the same kills again");
    assert_eq!(t.oom_seen(1, 3).unwrap().new, 1);
    assert_eq!(t.oom_seen(9, 5), None, "no such cell");
}

#[test]
fn a_cell_is_ready_once_and_counts_its_turns() {
    let mut t = CellTable::default();
    t.insert(1, record("s"));
    assert_eq!(t.first_ready(1), Some(None), "no pid yet");
    assert_eq!(t.first_ready(1), None, "said once");
    assert_eq!(t.turn_served(1), Some(None));
    assert_eq!(t.turn_served(1), Some(None));
    assert_eq!(t.get(1).unwrap().turns_served, 2);
    assert!(t.remove(1).is_some());
    assert!(t.is_empty() && t.first_ready(1).is_none());
}

#[test]
fn rows_follow_the_pools_cells_with_the_last_sample_or_the_leader_read_now() {
    let mut t = CellTable::default();
    let mut idle = record("s1");
    idle.pid = Some(42);
    t.insert(1, idle);
    let mut fresh = record("s2");
    fresh.pid = Some(43);
    t.insert(2, fresh);
    t.insert(3, record("s3"));
    t.sampled([(1, sample(100))].into_iter().collect());
    let views = [
        view(1, CellState::Idle, 1_000),
        view(2, CellState::Busy, 1_000),
        view(3, CellState::Bootstrapping, 0),
        view(4, CellState::Idle, 0),
    ];
    let rows = t.rows(&views, 1_500, |info| {
        sample(if info.pid == Some(43) { 55 } else { 0 })
    });
    // Only the cells the table knows; idle time only for an idle one.
    assert_eq!(rows.len(), 3);
    assert_eq!((rows[0].rss_bytes, rows[0].idle_ms), (100, Some(500)));
    assert_eq!((rows[1].rss_bytes, rows[1].idle_ms), (55, None));
    assert_eq!(rows[2].rss_bytes, 0);
    // The leader read is kept until the next sample; a read that caught
    // no memory (between fork and exec) or no pid is read again.
    let again = t.rows(&views, 1_500, |_| sample(1));
    assert_eq!(again[1].rss_bytes, 55);
    assert_eq!(again[2].rss_bytes, 1);
    // A removed cell's sample goes with it.
    t.remove(1);
    let rows = t.rows(&views, 1_500, |_| sample(3));
    assert_eq!(rows.len(), 2);
}

#[test]
fn a_cell_gone_for_eviction_pressure_or_a_new_setup_is_evicted_else_it_died() {
    for reason in [
        Reason::Evicted,
        Reason::MemoryPressure,
        Reason::Reconfigured,
    ] {
        assert_eq!(
            gone_pulse(reason),
            thrum::PulseKind::CellEvicted,
            "{reason}"
        );
    }
    for reason in [Reason::Crashed, Reason::Timeout, Reason::Memory] {
        assert_eq!(gone_pulse(reason), thrum::PulseKind::CellDied, "{reason}");
    }
}

#[test]
fn a_sample_of_a_cell_gone_meanwhile_is_not_kept() {
    let mut t = CellTable::default();
    t.insert(1, record("s"));
    let seen = t.sampled([(1, sample(10)), (2, sample(20))].into_iter().collect());
    assert_eq!(seen, [(1, 10, 0)]);
}
