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
