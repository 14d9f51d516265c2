//! Property tests of the pool policy over random event sequences: no
//! processes, no clock. After every event: the cap holds, bootstrapping is
//! bounded, one cell per sid, only idle cells are evicted, admission is FIFO,
//! each sid's turns start in order, no turn ends twice, memory never evicts
//! a busy cell (only past twice the per-cell limit, with `cell_oom`), and
//! after memory evictions the pool fits or only busy cells are left. After
//! draining (cells answer, time passes): every turn ended exactly once.

use hum::cell::Reason;
use hum::pool::{CellState, Command, Event, Outcome, Pool, PoolConfig, TurnId};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone)]
enum Action {
    Prompt(u8),
    FirstEvent(u8),
    TurnDone(u8),
    Exit(u8),
    SpawnFail(u8),
    TeardownDone(u8),
    Cancel(u8),
    /// A cancel of one turn by its number (any turn prompted so far).
    CancelTurn(u16),
    Cleanup(u8),
    Advance(u32),
    /// Prompts for these sids arriving together.
    Burst(Vec<u8>),
    /// A memory sample of one cell, in MiB.
    Rss(u8, u16),
    /// The kernel killed a cell at its memory limit.
    OomKilled(u8),
    /// A cell was started otherwise than its sid would start now (or, with
    /// false, matches again).
    Outdated(u8, bool),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0u8..6).prop_map(Action::Prompt),
        3 => any::<u8>().prop_map(Action::FirstEvent),
        3 => any::<u8>().prop_map(Action::TurnDone),
        1 => any::<u8>().prop_map(Action::Exit),
        1 => any::<u8>().prop_map(Action::SpawnFail),
        3 => any::<u8>().prop_map(Action::TeardownDone),
        1 => (0u8..6).prop_map(Action::Cancel),
        1 => any::<u16>().prop_map(Action::CancelTurn),
        1 => (0u8..6).prop_map(Action::Cleanup),
        2 => (0u32..200_000).prop_map(Action::Advance),
        1 => prop::collection::vec(0u8..6, 1..8).prop_map(Action::Burst),
        3 => (any::<u8>(), 0u16..400).prop_map(|(c, mb)| Action::Rss(c, mb)),
        1 => any::<u8>().prop_map(Action::OomKilled),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(c, o)| Action::Outdated(c, o)),
    ]
}

/// The pool's defaults with no eviction hold: each test here decides
/// every event alone (the hold has its own test).
fn instant() -> PoolConfig {
    PoolConfig {
        eviction_hold_ms: 0,
        ..PoolConfig::default()
    }
}

fn config() -> impl Strategy<Value = PoolConfig> {
    (
        1usize..5,
        1usize..4,
        1u64..150_000,
        1usize..12,
        1u64..90_000,
        1u64..400_000,
        1u64..10_000,
        (prop::option::of(1u64..1000), prop::option::of(1u64..200)),
    )
        .prop_map(
            |(cap, spawns, admission, queue, first, idle, cancel, (pool_mb, cell_mb))| PoolConfig {
                max_active_cells: cap,
                max_concurrent_spawns: spawns,
                admission_timeout_ms: admission,
                max_queued_prompts: queue,
                first_event_timeout_ms: first,
                idle_prune_ms: idle,
                cancel_grace_ms: cancel,
                turn_idle_timeout_ms: first + idle / 2,
                max_turn_ms: (cap % 2 == 0).then_some(admission + first),
                eviction_hold_ms: (cancel % 3) * 20,
                max_pool_rss_bytes: pool_mb.map(|m| m << 20),
                max_cell_rss_bytes: cell_mb.map(|m| m << 20),
                ..PoolConfig::default()
            },
        )
}

/// Drives a pool and checks every promise on every step.
struct Harness {
    pool: Pool,
    now: u64,
    next_turn: TurnId,
    prompted: Vec<TurnId>,
    ended: HashMap<TurnId, Outcome>,
    started_per_sid: HashMap<String, Vec<TurnId>>,
    /// Cells last said to be outdated.
    outdated: HashSet<u64>,
}

impl Harness {
    fn new(config: PoolConfig) -> Harness {
        Harness {
            pool: Pool::new(config),
            now: 0,
            next_turn: 0,
            prompted: Vec::new(),
            ended: HashMap::new(),
            started_per_sid: HashMap::new(),
            outdated: HashSet::new(),
        }
    }

    fn pick(&self, states: &[CellState], idx: u8) -> Option<u64> {
        let cells: Vec<_> = self
            .pool
            .cells()
            .into_iter()
            .filter(|c| states.contains(&c.state))
            .collect();
        (!cells.is_empty()).then(|| cells[idx as usize % cells.len()].id)
    }

    fn apply(&mut self, action: &Action) -> Result<(), TestCaseError> {
        let event = match *action {
            Action::Prompt(s) => {
                let turn = self.next_turn;
                self.next_turn += 1;
                self.prompted.push(turn);
                Event::Prompt {
                    turn,
                    sid: format!("sid-{s}"),
                }
            }
            Action::FirstEvent(i) => {
                match self.pick(&[CellState::Bootstrapping, CellState::Busy], i) {
                    Some(cell) => Event::FirstEvent { cell },
                    None => return Ok(()),
                }
            }
            Action::TurnDone(i) => match self.pick(&[CellState::Busy], i) {
                Some(cell) => Event::TurnDone { cell },
                None => return Ok(()),
            },
            Action::Exit(i) => match self.pick(
                &[CellState::Bootstrapping, CellState::Busy, CellState::Idle],
                i,
            ) {
                Some(cell) => Event::CellExited { cell },
                None => return Ok(()),
            },
            Action::SpawnFail(i) => match self.pick(&[CellState::Bootstrapping], i) {
                Some(cell) => Event::SpawnFailed { cell },
                None => return Ok(()),
            },
            Action::TeardownDone(i) => match self.pick(&[CellState::TearingDown], i) {
                Some(cell) => Event::TeardownDone { cell },
                None => return Ok(()),
            },
            Action::Rss(i, mb) => match self.pick(CellState::ALL, i) {
                Some(cell) => Event::Rss {
                    cell,
                    bytes: u64::from(mb) << 20,
                },
                None => return Ok(()),
            },
            Action::OomKilled(i) => match self.pick(
                &[CellState::Bootstrapping, CellState::Busy, CellState::Idle],
                i,
            ) {
                Some(cell) => Event::CellOomKilled { cell },
                None => return Ok(()),
            },
            Action::Outdated(i, outdated) => match self.pick(CellState::ALL, i) {
                Some(cell) => {
                    if outdated {
                        self.outdated.insert(cell);
                    } else {
                        self.outdated.remove(&cell);
                    }
                    Event::Outdated { cell, outdated }
                }
                None => return Ok(()),
            },
            Action::Cancel(s) => Event::Cancel {
                sid: format!("sid-{s}"),
            },
            Action::CancelTurn(i) => match self.prompted.len() {
                0 => Event::Tick,
                n => Event::CancelTurn {
                    turn: self.prompted[i as usize % n],
                },
            },
            Action::Cleanup(s) => Event::Cleanup {
                sid: format!("sid-{s}"),
            },
            Action::Advance(ms) => {
                self.now += ms as u64;
                Event::Tick
            }
            Action::Burst(ref sids) => {
                let events = sids
                    .iter()
                    .map(|s| {
                        let turn = self.next_turn;
                        self.next_turn += 1;
                        self.prompted.push(turn);
                        Event::Prompt {
                            turn,
                            sid: format!("sid-{s}"),
                        }
                    })
                    .collect();
                return self.step_all(events);
            }
        };
        self.step(event)
    }

    fn step(&mut self, event: Event) -> Result<(), TestCaseError> {
        self.step_all(vec![event])
    }

    fn step_all(&mut self, events: Vec<Event>) -> Result<(), TestCaseError> {
        let before: HashMap<u64, CellState> = self
            .pool
            .cells()
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect();
        let before_sids: HashMap<u64, String> = self
            .pool
            .cells()
            .into_iter()
            .map(|c| (c.id, c.sid))
            .collect();
        let rss_before: HashMap<u64, u64> = self
            .pool
            .cells()
            .into_iter()
            .map(|c| (c.id, c.rss_bytes))
            .collect();
        let sampled = match events.first() {
            Some(Event::Rss { cell, bytes }) => Some((*cell, *bytes)),
            _ => None,
        };
        let oom_killed = match events.first() {
            Some(Event::CellOomKilled { cell }) => Some(*cell),
            _ => None,
        };
        let done_cell = match events.first() {
            Some(Event::TurnDone { cell }) => Some(*cell),
            _ => None,
        };
        let commands = self.pool.handle_all(self.now, events);
        let cfg = *self.pool.config();
        let cells = self.pool.cells();

        prop_assert!(
            cells.len() <= cfg.max_active_cells,
            "cap exceeded: {} cells",
            cells.len()
        );
        let booting = cells
            .iter()
            .filter(|c| c.state == CellState::Bootstrapping)
            .count();
        prop_assert!(
            booting <= cfg.max_concurrent_spawns,
            "{booting} bootstrapping"
        );
        let mut sids = HashSet::new();
        for c in &cells {
            prop_assert!(sids.insert(c.sid.clone()), "two cells for {}", c.sid);
        }

        let waiting = self.pool.waiting();
        for cmd in &commands {
            match cmd {
                Command::Teardown {
                    cell,
                    reason: Reason::MemoryPressure,
                } => {
                    let was = before.get(cell).copied();
                    prop_assert!(
                        was == Some(CellState::Idle) || done_cell == Some(*cell),
                        "cell {cell} evicted for memory pressure was {was:?}"
                    );
                }
                Command::Teardown {
                    cell,
                    reason: Reason::Memory,
                } => {
                    let was = before.get(cell).copied();
                    let rss = match sampled {
                        Some((c, b)) if c == *cell => b,
                        _ => rss_before.get(cell).copied().unwrap_or(0),
                    };
                    let limit = cfg.max_cell_rss_bytes;
                    let busy = matches!(was, Some(CellState::Busy | CellState::Bootstrapping))
                        && done_cell != Some(*cell);
                    prop_assert!(
                        oom_killed == Some(*cell)
                            || limit.is_some_and(|l| if busy { rss > 2 * l } else { rss > l }),
                        "cell {cell} ({was:?}, {rss} bytes) torn down for memory, limit {limit:?}"
                    );
                }
                Command::Teardown {
                    cell,
                    reason: Reason::Reconfigured,
                } => {
                    // Only an idle outdated cell, for a turn of its sid.
                    let was = before.get(cell).copied();
                    prop_assert!(
                        self.outdated.contains(cell),
                        "cell {cell} replaced, not outdated"
                    );
                    prop_assert!(
                        was == Some(CellState::Idle) || done_cell == Some(*cell),
                        "cell {cell} replaced while {was:?}"
                    );
                    let sid = before_sids.get(cell).cloned().unwrap_or_default();
                    prop_assert!(
                        waiting.iter().any(|(_, w)| *w == sid),
                        "cell {cell} of {sid} replaced with no turn of its sid waiting"
                    );
                }
                Command::Send { cell, turn } if self.outdated.contains(cell) => {
                    prop_assert!(false, "turn {turn} sent to outdated cell {cell}");
                }
                Command::Teardown {
                    cell,
                    reason: Reason::Evicted,
                } => {
                    let was = before.get(cell).copied();
                    prop_assert!(
                        was == Some(CellState::Idle) || done_cell == Some(*cell),
                        "evicted cell {cell} was {was:?}"
                    );
                }
                Command::Spawn { turn, .. } | Command::Send { turn, .. } => {
                    let sid = match cmd {
                        Command::Spawn { sid, .. } => sid.clone(),
                        _ => cells
                            .iter()
                            .find(|c| c.turn == Some(*turn))
                            .map(|c| c.sid.clone())
                            .unwrap_or_default(),
                    };
                    let started = self.started_per_sid.entry(sid.clone()).or_default();
                    prop_assert!(
                        started.last().is_none_or(|last| last < turn),
                        "{sid}: turn {turn} started after {started:?}"
                    );
                    started.push(*turn);
                    if let Command::Spawn { .. } = cmd {
                        // FIFO: no earlier turn still waits for a slot.
                        for (w, wsid) in &waiting {
                            if w < turn {
                                prop_assert!(
                                    self.pool.cell_of(wsid).is_some(),
                                    "turn {turn} got a cell before earlier turn {w} of {wsid}"
                                );
                            }
                        }
                    }
                }
                Command::End { turn, outcome, .. } => {
                    prop_assert!(self.prompted.contains(turn), "end of unknown turn {turn}");
                    prop_assert!(
                        self.ended.insert(*turn, outcome.clone()).is_none(),
                        "turn {turn} ended twice"
                    );
                }
                _ => {}
            }
        }
        self.memory_settled()
    }

    /// After any event, a pool over its memory limit has no idle cell
    /// holding memory left to evict.
    fn memory_settled(&self) -> Result<(), TestCaseError> {
        let cfg = *self.pool.config();
        let Some(limit) = cfg.max_pool_rss_bytes else {
            return Ok(());
        };
        let cells = self.pool.cells();
        let total: u64 = cells
            .iter()
            .filter(|c| c.state != CellState::TearingDown)
            .map(|c| c.rss_bytes)
            .sum();
        if total > limit {
            prop_assert!(
                !cells
                    .iter()
                    .any(|c| c.state == CellState::Idle && c.rss_bytes > 0),
                "{total} bytes over {limit} with an idle cell left: {cells:?}"
            );
        }
        Ok(())
    }

    /// Cells answer everything, teardowns finish, time runs out: every turn
    /// must end.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            let cells = self.pool.cells();
            if cells.iter().all(|c| c.state == CellState::Idle) && self.pool.queued() == 0 {
                break;
            }
            let event = match cells.iter().find(|c| c.state != CellState::Idle) {
                Some(c) => match c.state {
                    CellState::Bootstrapping => Event::FirstEvent { cell: c.id },
                    CellState::Busy => Event::TurnDone { cell: c.id },
                    CellState::TearingDown => Event::TeardownDone { cell: c.id },
                    CellState::Idle => unreachable!(),
                },
                None => {
                    self.now += 1_000;
                    Event::Tick
                }
            };
            self.step(event)?;
        }
        for turn in &self.prompted {
            prop_assert!(self.ended.contains_key(turn), "turn {turn} never ended");
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn the_policy_keeps_every_promise(cfg in config(), actions in prop::collection::vec(action(), 0..120)) {
        let mut h = Harness::new(cfg);
        for a in &actions {
            h.apply(a)?;
        }
        h.drain()?;
    }
}

#[test]
fn a_herd_of_30_is_admitted_in_order_two_at_a_time() {
    let mut h = Harness::new(PoolConfig {
        max_active_cells: 8,
        max_concurrent_spawns: 2,
        ..instant()
    });
    let mut spawned = Vec::new();
    for s in 0..30 {
        let turn = h.next_turn;
        h.next_turn += 1;
        h.prompted.push(turn);
        let cmds = h.pool.handle(
            0,
            Event::Prompt {
                turn,
                sid: format!("bee-{s}"),
            },
        );
        spawned.extend(cmds.into_iter().filter_map(|c| match c {
            Command::Spawn { turn, .. } => Some(turn),
            _ => None,
        }));
    }
    assert_eq!(spawned, vec![0, 1], "two bootstrap at once");
    // As cells come up and answer, the rest follow in arrival order.
    let mut now = 0;
    while h.pool.queued() > 0 || h.pool.cells().iter().any(|c| c.state != CellState::Idle) {
        now += 10;
        let cells = h.pool.cells();
        let ev = match cells.iter().find(|c| c.state != CellState::Idle) {
            Some(c) if c.state == CellState::Bootstrapping => Event::FirstEvent { cell: c.id },
            Some(c) if c.state == CellState::Busy => Event::TurnDone { cell: c.id },
            Some(c) => Event::TeardownDone { cell: c.id },
            None => Event::Tick,
        };
        for c in h.pool.handle(now, ev) {
            if let Command::Spawn { turn, .. } = c {
                spawned.push(turn);
            }
        }
        assert!(h.pool.cells().len() <= 8);
    }
    assert_eq!(
        spawned,
        (0..30).collect::<Vec<_>>(),
        "admitted in arrival order"
    );
}

#[test]
fn a_herd_arriving_together_reuses_warm_cells_before_evicting_any() {
    let mut pool = Pool::new(PoolConfig {
        max_active_cells: 2,
        max_concurrent_spawns: 2,
        ..instant()
    });
    pool.handle(
        0,
        Event::Prompt {
            turn: 0,
            sid: "warm-a".into(),
        },
    );
    pool.handle(
        0,
        Event::Prompt {
            turn: 1,
            sid: "warm-b".into(),
        },
    );
    for cell in [0, 1] {
        pool.handle(1, Event::FirstEvent { cell });
        pool.handle(2, Event::TurnDone { cell });
    }
    // New sids first, the warm ones after, all in one burst.
    let burst = ["new-x", "new-y", "warm-a", "warm-b"]
        .iter()
        .enumerate()
        .map(|(i, s)| Event::Prompt {
            turn: 10 + i as u64,
            sid: s.to_string(),
        });
    let cmds = pool.handle_all(3, burst);
    assert_eq!(
        cmds,
        vec![
            Command::Send { cell: 0, turn: 12 },
            Command::Send { cell: 1, turn: 13 }
        ],
        "warm cells serve their sids"
    );
}

#[test]
fn a_herd_arriving_a_moment_apart_reaches_warm_cells_within_the_eviction_hold() {
    let mut pool = Pool::new(PoolConfig {
        max_active_cells: 2,
        max_concurrent_spawns: 2,
        eviction_hold_ms: 10,
        ..instant()
    });
    for (turn, sid) in [(0, "warm-a"), (1, "warm-b")] {
        pool.handle(
            0,
            Event::Prompt {
                turn,
                sid: sid.into(),
            },
        );
    }
    for cell in [0, 1] {
        pool.handle(1, Event::FirstEvent { cell });
        pool.handle(2, Event::TurnDone { cell });
    }
    // New sids first, one event each, a few ms apart: nothing is evicted
    // while the hold lasts...
    let cold = pool.handle(
        100,
        Event::Prompt {
            turn: 10,
            sid: "new-x".into(),
        },
    );
    assert_eq!(cold, vec![], "no eviction inside the hold");
    assert_eq!(
        pool.next_deadline(),
        Some(110),
        "a tick is due when it ends"
    );
    let warm = pool.handle(
        104,
        Event::Prompt {
            turn: 11,
            sid: "warm-a".into(),
        },
    );
    assert_eq!(warm, vec![Command::Send { cell: 0, turn: 11 }]);
    // ...and once it is over, the idle cell left is evicted for the cold
    // sid, not the warm one that just got its prompt.
    let after = pool.handle(110, Event::Tick);
    assert_eq!(
        after,
        vec![Command::Teardown {
            cell: 1,
            reason: Reason::Evicted
        }]
    );
    assert!(
        pool.next_deadline().is_some_and(|d| d > 110),
        "no deadline left in the past"
    );
}

#[test]
fn busy_cells_are_never_evicted_the_prompt_waits_then_is_overloaded() {
    let cfg = PoolConfig {
        max_active_cells: 1,
        admission_timeout_ms: 1000,
        ..instant()
    };
    let mut pool = Pool::new(cfg);
    let c = pool.handle(
        0,
        Event::Prompt {
            turn: 0,
            sid: "a".into(),
        },
    );
    assert!(matches!(
        c[..],
        [Command::Spawn {
            cell: 0,
            turn: 0,
            ..
        }]
    ));
    pool.handle(10, Event::FirstEvent { cell: 0 });
    let c = pool.handle(
        20,
        Event::Prompt {
            turn: 1,
            sid: "b".into(),
        },
    );
    assert!(c.is_empty(), "b waits; a's busy cell is not touched: {c:?}");
    let c = pool.handle(1020, Event::Tick);
    assert!(
        matches!(&c[..], [Command::End { turn: 1, outcome: Outcome::Overloaded { retry_after_ms }, .. }] if *retry_after_ms >= 1000),
        "{c:?}"
    );
}

#[test]
fn an_idle_cell_is_evicted_lru_first_and_the_slot_reused_after_teardown() {
    let cfg = PoolConfig {
        max_active_cells: 2,
        ..instant()
    };
    let mut pool = Pool::new(cfg);
    for (t, sid) in [(0, "a"), (1, "b")] {
        pool.handle(
            t,
            Event::Prompt {
                turn: t,
                sid: sid.into(),
            },
        );
    }
    for cell in [0, 1] {
        pool.handle(5, Event::FirstEvent { cell });
    }
    pool.handle(6, Event::TurnDone { cell: 1 }); // b idle first (LRU by use: both used at 0/1)
    pool.handle(7, Event::TurnDone { cell: 0 });
    let c = pool.handle(
        8,
        Event::Prompt {
            turn: 2,
            sid: "c".into(),
        },
    );
    assert_eq!(
        c,
        vec![Command::Teardown {
            cell: 0,
            reason: Reason::Evicted
        }],
        "a was used least recently"
    );
    let c = pool.handle(9, Event::TeardownDone { cell: 0 });
    assert!(
        matches!(&c[..], [Command::Spawn { cell: 2, turn: 2, sid }] if sid == "c"),
        "{c:?}"
    );
    // The next turn of b reuses its warm cell.
    let c = pool.handle(
        10,
        Event::Prompt {
            turn: 3,
            sid: "b".into(),
        },
    );
    assert_eq!(c, vec![Command::Send { cell: 1, turn: 3 }]);
}

#[test]
fn a_second_prompt_for_a_busy_sid_waits_for_the_same_cell() {
    let mut pool = Pool::new(instant());
    pool.handle(
        0,
        Event::Prompt {
            turn: 0,
            sid: "a".into(),
        },
    );
    let c = pool.handle(
        1,
        Event::Prompt {
            turn: 1,
            sid: "a".into(),
        },
    );
    assert!(c.is_empty(), "no second process for a: {c:?}");
    pool.handle(2, Event::FirstEvent { cell: 0 });
    let c = pool.handle(3, Event::TurnDone { cell: 0 });
    assert_eq!(
        c[0],
        Command::End {
            turn: 0,
            sid: "a".into(),
            outcome: Outcome::Done,
            waited_ms: 3
        }
    );
    assert_eq!(c[1], Command::Send { cell: 0, turn: 1 });
}

#[test]
fn an_outdated_cell_finishes_its_turn_and_is_replaced_at_its_sids_next() {
    let mut pool = Pool::new(instant());
    let prompt = |turn, sid: &str| Event::Prompt {
        turn,
        sid: sid.into(),
    };
    pool.handle(0, prompt(0, "a"));
    pool.handle(1, Event::FirstEvent { cell: 0 });
    // Outdated mid-turn: the turn is not touched.
    let c = pool.handle(
        2,
        Event::Outdated {
            cell: 0,
            outdated: true,
        },
    );
    assert!(c.is_empty(), "{c:?}");
    let c = pool.handle(3, Event::TurnDone { cell: 0 });
    assert_eq!(c.len(), 1, "its turn ends, nothing else: {c:?}");
    // Idle and outdated, with no turn: it stays warm.
    assert!(pool.handle(4, Event::Tick).is_empty());
    // The next turn of its sid: torn down, then a new cell for the turn.
    let c = pool.handle(5, prompt(1, "a"));
    assert_eq!(
        c,
        [Command::Teardown {
            cell: 0,
            reason: Reason::Reconfigured
        }]
    );
    assert!(pool.handle(6, Event::Tick).is_empty(), "waits for the slot");
    let c = pool.handle(7, Event::TeardownDone { cell: 0 });
    assert_eq!(
        c,
        [Command::Spawn {
            cell: 1,
            sid: "a".into(),
            turn: 1
        }]
    );
}

#[test]
fn a_cell_that_matches_again_is_reused() {
    let mut pool = Pool::new(instant());
    pool.handle(
        0,
        Event::Prompt {
            turn: 0,
            sid: "a".into(),
        },
    );
    pool.handle(1, Event::FirstEvent { cell: 0 });
    pool.handle(2, Event::TurnDone { cell: 0 });
    pool.handle(
        3,
        Event::Outdated {
            cell: 0,
            outdated: true,
        },
    );
    pool.handle(
        4,
        Event::Outdated {
            cell: 0,
            outdated: false,
        },
    );
    let c = pool.handle(
        5,
        Event::Prompt {
            turn: 1,
            sid: "a".into(),
        },
    );
    assert_eq!(c, [Command::Send { cell: 0, turn: 1 }]);
}

#[test]
fn a_cell_without_first_event_times_out_and_its_turn_says_so() {
    let cfg = PoolConfig {
        first_event_timeout_ms: 100,
        ..instant()
    };
    let mut pool = Pool::new(cfg);
    pool.handle(
        0,
        Event::Prompt {
            turn: 0,
            sid: "a".into(),
        },
    );
    let c = pool.handle(100, Event::Tick);
    assert!(
        c.contains(&Command::Teardown {
            cell: 0,
            reason: Reason::Timeout
        }),
        "{c:?}"
    );
    assert!(c.iter().any(|c| matches!(
        c,
        Command::End {
            turn: 0,
            outcome: Outcome::CellTimeout,
            ..
        }
    )));
    assert_eq!(pool.next_deadline(), None);
}

#[test]
fn cancel_interrupts_then_tears_down_after_the_grace() {
    let cfg = PoolConfig {
        cancel_grace_ms: 50,
        ..instant()
    };
    let mut pool = Pool::new(cfg);
    pool.handle(
        0,
        Event::Prompt {
            turn: 0,
            sid: "a".into(),
        },
    );
    pool.handle(1, Event::FirstEvent { cell: 0 });
    let c = pool.handle(2, Event::Cancel { sid: "a".into() });
    assert_eq!(c, vec![Command::Interrupt { cell: 0, turn: 0 }]);
    assert_eq!(pool.next_deadline(), Some(52));
    let c = pool.handle(52, Event::Tick);
    assert!(c.contains(&Command::Teardown {
        cell: 0,
        reason: Reason::Cancelled
    }));
    assert!(c.iter().any(|c| matches!(
        c,
        Command::End {
            turn: 0,
            outcome: Outcome::Cancelled,
            ..
        }
    )));
}

#[test]
fn a_full_queue_rejects_at_once_and_idle_cells_are_pruned() {
    let cfg = PoolConfig {
        max_active_cells: 1,
        max_queued_prompts: 1,
        idle_prune_ms: 500,
        ..instant()
    };
    let mut pool = Pool::new(cfg);
    pool.handle(
        0,
        Event::Prompt {
            turn: 0,
            sid: "a".into(),
        },
    );
    pool.handle(
        0,
        Event::Prompt {
            turn: 1,
            sid: "b".into(),
        },
    );
    let c = pool.handle(
        0,
        Event::Prompt {
            turn: 2,
            sid: "c".into(),
        },
    );
    assert!(
        matches!(
            &c[..],
            [Command::End {
                turn: 2,
                outcome: Outcome::Overloaded { .. },
                ..
            }]
        ),
        "{c:?}"
    );
    pool.handle(1, Event::FirstEvent { cell: 0 });
    pool.handle(2, Event::TurnDone { cell: 0 });
    // b takes a's slot by eviction; then b's cell idles past the threshold.
    pool.handle(3, Event::TeardownDone { cell: 0 });
    pool.handle(4, Event::FirstEvent { cell: 1 });
    pool.handle(5, Event::TurnDone { cell: 1 });
    let c = pool.handle(505, Event::Tick);
    assert_eq!(
        c,
        vec![Command::Teardown {
            cell: 1,
            reason: Reason::Idle
        }]
    );
}

#[test]
fn timeouts_of_u64_max_never_fire_instead_of_wrapping_to_now() {
    let cfg = PoolConfig {
        first_event_timeout_ms: u64::MAX,
        admission_timeout_ms: u64::MAX,
        idle_prune_ms: u64::MAX,
        cancel_grace_ms: u64::MAX,
        max_active_cells: 1,
        ..instant()
    };
    let mut pool = Pool::new(cfg);
    let now = 5_000;
    let mut cmds = pool.handle(
        now,
        Event::Prompt {
            turn: 0,
            sid: "a".into(),
        },
    );
    // A second sid waits for the one slot.
    cmds.extend(pool.handle(
        now,
        Event::Prompt {
            turn: 1,
            sid: "b".into(),
        },
    ));
    cmds.extend(pool.handle(now + 1, Event::Tick));
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::End { .. } | Command::Teardown { .. })),
        "a wrapped deadline fired: {cmds:?}"
    );
    assert_eq!(pool.next_deadline(), Some(u64::MAX));
    // The first cell answers and goes idle: it is not reaped at once either.
    let cmds = pool.handle(now + 2, Event::FirstEvent { cell: 0 });
    assert!(!cmds.iter().any(|c| matches!(c, Command::Teardown { .. })));
    let cmds = pool.handle(now + 3, Event::Cancel { sid: "a".into() });
    let later = pool.handle(now + 4, Event::Tick);
    assert!(
        !later.iter().any(|c| matches!(c, Command::Teardown { .. })),
        "cancel grace wrapped: {cmds:?} then {later:?}"
    );
}

#[test]
fn a_turn_silent_past_its_idle_timeout_ends_with_cell_timeout_but_activity_keeps_it() {
    let cfg = PoolConfig {
        turn_idle_timeout_ms: 1_000,
        max_turn_ms: Some(10_000),
        ..instant()
    };
    let mut pool = Pool::new(cfg);
    pool.handle(
        0,
        Event::Prompt {
            turn: 0,
            sid: "a".into(),
        },
    );
    pool.handle(100, Event::FirstEvent { cell: 0 });
    assert_eq!(pool.next_deadline(), Some(1_100));
    // Output every 900 ms keeps the turn alive past several idle timeouts.
    for t in [1_000, 1_900, 2_800, 3_700] {
        let c = pool.handle(t, Event::Activity { cell: 0 });
        assert!(c.is_empty(), "at {t}: {c:?}");
    }
    assert!(pool.handle(4_599, Event::Tick).is_empty());
    let c = pool.handle(4_700, Event::Tick);
    assert!(
        c.contains(&Command::Teardown {
            cell: 0,
            reason: Reason::Timeout
        }),
        "{c:?}"
    );
    assert!(c.iter().any(|c| matches!(
        c,
        Command::End {
            turn: 0,
            outcome: Outcome::TurnTimeout,
            ..
        }
    )));
    assert_eq!(
        Outcome::TurnTimeout.error_code(),
        Some(thrum::ErrorCode::CellTimeout)
    );
}

#[test]
fn a_turn_past_max_turn_ms_ends_even_while_it_streams() {
    let cfg = PoolConfig {
        max_turn_ms: Some(2_000),
        ..instant()
    };
    let mut pool = Pool::new(cfg);
    pool.handle(
        0,
        Event::Prompt {
            turn: 0,
            sid: "a".into(),
        },
    );
    pool.handle(10, Event::FirstEvent { cell: 0 });
    assert!(pool.handle(1_500, Event::Activity { cell: 0 }).is_empty());
    let c = pool.handle(2_000, Event::Activity { cell: 0 });
    assert!(
        c.iter().any(|c| matches!(
            c,
            Command::End {
                outcome: Outcome::TurnTimeout,
                ..
            }
        )),
        "{c:?}"
    );
}

/// A cancel of one turn by its id ends that turn and no other of its sid:
/// a waiting one at once, a running one through an interrupt of its cell.
#[test]
fn a_cancel_of_one_turn_leaves_the_other_turns_of_its_sid_alone() {
    let mut pool = Pool::new(PoolConfig {
        max_active_cells: 1,
        ..instant()
    });
    let sid = || "s".to_owned();
    pool.handle(
        0,
        Event::Prompt {
            turn: 0,
            sid: sid(),
        },
    );
    pool.handle(
        0,
        Event::Prompt {
            turn: 1,
            sid: sid(),
        },
    );
    pool.handle(
        0,
        Event::Prompt {
            turn: 2,
            sid: sid(),
        },
    );
    pool.handle(1, Event::FirstEvent { cell: 0 });
    // The waiting middle turn: ended at once, the others untouched.
    let cmds = pool.handle(2, Event::CancelTurn { turn: 1 });
    assert_eq!(
        cmds,
        vec![Command::End {
            turn: 1,
            sid: sid(),
            outcome: Outcome::Cancelled,
            waited_ms: 2
        }]
    );
    assert_eq!(pool.waiting(), vec![(2, sid())]);
    // The running one: its cell is interrupted (once), the last still waits.
    let cmds = pool.handle(3, Event::CancelTurn { turn: 0 });
    assert_eq!(cmds, vec![Command::Interrupt { cell: 0, turn: 0 }]);
    assert!(pool.handle(4, Event::CancelTurn { turn: 0 }).is_empty());
    // A turn that already ended, or never was: nothing.
    assert!(pool.handle(5, Event::CancelTurn { turn: 1 }).is_empty());
    assert!(pool.handle(5, Event::CancelTurn { turn: 99 }).is_empty());
    let cmds = pool.handle(6, Event::TurnDone { cell: 0 });
    assert_eq!(
        cmds,
        vec![
            Command::End {
                turn: 0,
                sid: sid(),
                outcome: Outcome::Cancelled,
                waited_ms: 6
            },
            Command::Send { cell: 0, turn: 2 }
        ]
    );
}
