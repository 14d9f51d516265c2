//! In-process cost of the pool policy: a herd of prompts admitted, served
//! and ended. `cargo bench -p hum --bench pool`

use hum::pool::{CellState, Command, Event, Pool, PoolConfig};

fn main() {
    divan::main();
}

/// 30 sids through a pool of 8, each cell answering as soon as it can.
#[divan::bench(args = [30, 300])]
fn herd_through_the_policy(bees: usize) -> usize {
    let mut pool = Pool::new(PoolConfig::default());
    let mut now = 0;
    let mut ended = 0;
    let prompts: Vec<Event> = (0..bees)
        .map(|i| Event::Prompt {
            turn: i as u64,
            sid: format!("bee-{i}"),
        })
        .collect();
    let count = |cmds: Vec<Command>| {
        cmds.iter()
            .filter(|c| matches!(c, Command::End { .. }))
            .count()
    };
    ended += count(pool.handle_all(now, prompts));
    while ended < bees {
        now += 1;
        let cells = pool.cells();
        let ev = match cells.iter().find(|c| c.state != CellState::Idle) {
            Some(c) if c.state == CellState::Bootstrapping => Event::FirstEvent { cell: c.id },
            Some(c) if c.state == CellState::Busy => Event::TurnDone { cell: c.id },
            Some(c) => Event::TeardownDone { cell: c.id },
            None => Event::Tick,
        };
        ended += count(pool.handle(now, ev));
    }
    ended
}

/// A pool of `cells` idle cells (all sampled), for the memory benches.
fn idle_pool(cells: usize, limit_mb: Option<u64>) -> Pool {
    let mut pool = Pool::new(PoolConfig {
        max_active_cells: cells,
        max_concurrent_spawns: cells,
        max_pool_rss_bytes: limit_mb.map(|m| m << 20),
        ..PoolConfig::default()
    });
    let prompts: Vec<Event> = (0..cells)
        .map(|i| Event::Prompt {
            turn: i as u64,
            sid: format!("bee-{i}"),
        })
        .collect();
    pool.handle_all(0, prompts);
    for c in pool.cells() {
        pool.handle(1, Event::FirstEvent { cell: c.id });
        pool.handle(2, Event::TurnDone { cell: c.id });
    }
    pool
}

/// The baseline of the sample bench: the same pool deciding on a tick.
#[divan::bench(args = [8, 64])]
fn tick_on_an_idle_pool(bencher: divan::Bencher, cells: usize) {
    bencher
        .with_inputs(|| idle_pool(cells, Some(1 << 20)))
        .bench_local_values(|mut pool| pool.handle(3, Event::Tick).len());
}

/// One memory sample of every cell, weighed against maxPoolRssMb (which
/// they fit): what the worker adds to its pool every second.
#[divan::bench(args = [8, 64])]
fn memory_samples_of_every_cell(bencher: divan::Bencher, cells: usize) {
    bencher
        .with_inputs(|| {
            let pool = idle_pool(cells, Some(1 << 20));
            let samples: Vec<Event> = pool
                .cells()
                .iter()
                .map(|c| Event::Rss {
                    cell: c.id,
                    bytes: 200 << 20,
                })
                .collect();
            (pool, samples)
        })
        .bench_local_values(|(mut pool, samples)| pool.handle_all(3, samples).len());
}

/// A claude-shaped `finish` read into tokens, cost and models: humd does
/// it once per turn.
#[divan::bench]
fn a_finish_read_for_usage(bencher: divan::Bencher) {
    let line = br#"{"chi":"finish","sid":"s","finishReason":"end_turn","usage":{"input_tokens":20412,"cache_creation_input_tokens":8812,"cache_read_input_tokens":190221,"output_tokens":1822,"service_tier":"standard"},"costUsd":0.4127,"durationMs":5210,"modelUsage":{"claude-sonnet-4-5":{"inputTokens":20000,"outputTokens":1800,"cacheReadInputTokens":190221,"cacheCreationInputTokens":8812,"webSearchRequests":0,"costUSD":0.41,"contextWindow":200000,"maxOutputTokens":32000},"claude-haiku-4-5":{"inputTokens":412,"outputTokens":22,"costUSD":0.0027}}}"#;
    bencher.bench(|| {
        let v: serde_json::Value = serde_json::from_slice(divan::black_box(line)).unwrap();
        hum::usage::Spent::from_fields(&v).models.len()
    });
}

/// 256 turns written in one transaction (the writer's batch), to a WAL
/// database on disk.
#[divan::bench(sample_count = 20)]
fn usage_batch_of_256_turns_written(bencher: divan::Bencher) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = hum::usage::UsageDb::open_writer(&dir.path().join("usage.sqlite3")).unwrap();
    let turn = |i: i64| hum::usage::TurnRecord {
        ended_at_ms: 1_796_000_000_000 + i,
        sid: format!("bee-{}", i % 30),
        bee: "bench".into(),
        hive: "claude-cli".into(),
        model: "claude-sonnet-4-5".into(),
        spent: hum::usage::Spent::default(),
        models: vec![("claude-sonnet-4-5".into(), hum::usage::Tally::default())],
        duration_ms: 5000,
        outcome: "done".into(),
        session_cost_usd: Some(1.25),
    };
    let batch: Vec<_> = (0..256).map(turn).collect();
    bencher.bench_local(|| db.record(divan::black_box(&batch)).unwrap());
}
