//! Memory: a pool over `nest.maxPoolRssMb` evicts idle cells, least
//! recently used first, never a busy one; a cell over `nest.maxCellRssMb`
//! is torn down after its turn (reason `memory`), or at once with
//! `cell_oom` past twice the limit mid-turn; with cgroups the kernel's OOM
//! killer does that inside the cell alone, and hum reports it. The
//! simulator takes memory with `SIM_GROW_MB` (its `--sim-grow-mb` per turn).

use crate::common::forager::wait_until_async;
use crate::common::stack::{cgroups_required, sim_prompt, Stack};
use crate::common::*;
use hum::client::{Client, Event};
use serde_json::{json, Value};

/// A stack whose worker has these `nest` limits; prompts with STALL stall
/// after their first delta (a busy cell, until cancelled).
async fn stack(nest: Value) -> Stack {
    stack_with_ballast(nest, 0).await
}

/// The same, every sim cell holding `ballast_mb` from its start
/// (`--sim-ballast-mb`).
async fn stack_with_ballast(nest: Value, ballast_mb: usize) -> Stack {
    let mut s = Stack::start(Value::Null, &[]);
    let config = json!({"claude": {"enabled": false}, "cwd": s.sb.work(), "nest": nest,
        "sim": {"env": {"HUM_SIM_STALL_AFTER_CHUNKS": "1", "HUM_SIM_FAULT_IF": "STALL",
                        "HUM_SIM_BALLAST_MB": ballast_mb.to_string()}}});
    s.worker = Some(s.worker_with(config, &[]));
    s.wait_worker().await;
    s
}

async fn answered(client: &mut Client, sid: &str, text: &str) {
    client.send(&sim_prompt(sid, text)).await.unwrap();
    let a = tokio::time::timeout(PROMPTLY, client.answer(sid))
        .await
        .expect("the turn ended")
        .unwrap();
    assert!(a.end.is_ok(), "{sid}: {:?}", a.end);
}

/// Starts a turn that stalls mid-way, once its first delta came.
async fn stalled(client: &mut Client, sid: &str, text: &str) {
    client.send(&sim_prompt(sid, text)).await.unwrap();
    loop {
        match tokio::time::timeout(PROMPTLY, client.event_of(sid))
            .await
            .expect("the stalling turn started")
            .unwrap()
        {
            Event::Text { .. } => return,
            Event::Error { error, .. } => panic!("{sid}: {error:?}"),
            _ => {}
        }
    }
}

/// The sids of `cell.memory` log lines with this reason, in log order.
fn memory_teardowns(stack: &Stack, reason: &str) -> Vec<String> {
    stack
        .log("worker.log")
        .lines()
        .filter(|l| l.contains("event=\"cell.memory\"") && l.contains(&format!("reason={reason} ")))
        .filter_map(|l| {
            let at = l.find(" sid=")? + 5;
            Some(l[at..].split_whitespace().next()?.to_owned())
        })
        .collect()
}

async fn cell_sids(stack: &Stack) -> Vec<String> {
    let s = hum::client::fetch_status(&stack.sock).await.unwrap();
    let mut sids: Vec<String> = s.cells().map(|c| c.sid.clone()).collect();
    sids.sort();
    sids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_memory_pressure_evicts_idle_cells_lru_first_never_a_busy_one() {
    // Every cell holds 150 MiB of ballast + its base; the busy one grows
    // 400 MiB more, the largest. With any base from 10 to 60 MiB: four
    // cells fit in 850 MiB; once the busy one grows, evicting one idle
    // cell is not enough and evicting two is.
    let stack = stack_with_ballast(json!({"maxPoolRssMb": 850, "maxActiveCells": 8}), 150).await;
    let mut bee = Client::asker(&stack.sock, "memory").await.unwrap();
    for sid in ["a", "b", "c"] {
        answered(&mut bee, sid, "hello").await;
    }
    // It fits: nothing goes.
    assert_eq!(cell_sids(&stack).await, ["a", "b", "c"]);
    stalled(&mut bee, "d", "SIM_GROW_MB 400 STALL").await;
    // a, then b go (least recently used first); then it fits.
    assert!(
        wait_until(PROMPTLY, || memory_teardowns(&stack, "memory_pressure")
            .len()
            >= 2),
        "no evictions for memory: {}",
        stack.log("worker.log")
    );
    assert!(
        wait_until_async(PROMPTLY, || async { cell_sids(&stack).await == ["c", "d"] }).await,
        "left: {:?}",
        cell_sids(&stack).await
    );
    assert_eq!(memory_teardowns(&stack, "memory_pressure"), ["a", "b"]);
    // The busy cell, largest of all, was never touched: it still serves.
    // (Its growth may have been sampled half-way; the next sample has it.)
    let d_grown = || async {
        let status = hum::client::fetch_status(&stack.sock).await.unwrap();
        let d = status.cells().find(|c| c.sid == "d").cloned();
        d.filter(|d| d.rss_bytes > 550 << 20)
    };
    assert!(
        wait_until_async(PROMPTLY, || async { d_grown().await.is_some() }).await,
        "d never showed its growth"
    );
    let d = d_grown().await.unwrap();
    assert_eq!(d.state, hum::pool::CellState::Busy);
    assert_eq!(
        cell_sids(&stack).await,
        ["c", "d"],
        "c was not evicted for d's growth"
    );
    let base = d.rss_bytes - (550 << 20);
    assert!(
        base < 60 << 20,
        "the sim's own memory is {base} bytes: the test's sums assume less"
    );
    bee.cancel("d").await.unwrap();
    let end = tokio::time::timeout(PROMPTLY, bee.answer("d"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        end.end.unwrap().finish_reason,
        Some(thrum::FinishReason::Cancelled)
    );
    // Metrics name the reason.
    let addr = std::fs::read_to_string(stack.sock.with_file_name("metrics.addr")).unwrap();
    let m = scrape_metrics(&addr);
    assert_eq!(
        metric(
            &m,
            "hum_cell_teardowns_total",
            &[("reason", "memory_pressure")]
        ),
        2.0
    );
    bee.close();
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_over_its_limit_is_torn_down_after_its_turn_with_reason_memory() {
    let stack = stack(json!({"maxCellRssMb": 150})).await;
    let mut bee = Client::asker(&stack.sock, "memory").await.unwrap();
    answered(&mut bee, "small", "hello").await;
    // Over the limit, under twice it: the turn finishes, then the cell goes.
    answered(&mut bee, "grower", "SIM_GROW_MB 60").await;
    answered(&mut bee, "grower", "SIM_GROW_MB 60").await;
    answered(&mut bee, "grower", "SIM_GROW_MB 60").await;
    assert!(
        wait_until(PROMPTLY, || memory_teardowns(&stack, "memory")
            == ["grower"]),
        "{}",
        stack.log("worker.log")
    );
    assert!(
        wait_until(PROMPTLY, || stack.torn_down("grower", "memory")),
        "{}",
        stack.log("worker.log")
    );
    // The small one stays; the grower's next turn starts a fresh cell.
    // (humd hears of the teardown a moment after the worker logs it.)
    assert!(
        wait_until_async(PROMPTLY, || async { cell_sids(&stack).await == ["small"] }).await,
        "{:?}",
        cell_sids(&stack).await
    );
    answered(&mut bee, "grower", "again").await;
    bee.close();
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_past_twice_its_limit_mid_turn_ends_with_cell_oom_and_only_it() {
    let stack = stack(json!({"maxCellRssMb": 100})).await;
    let status = hum::client::fetch_status(&stack.sock).await.unwrap();
    let cgroups = matches!(
        status.workers[0].status.as_ref().unwrap().containment,
        Some(hum::cell::Mechanism::Cgroup { .. })
    );
    if cgroups_required() {
        assert!(cgroups, "cells have no cgroups: {status:?}");
    }
    let mut bee = Client::asker(&stack.sock, "memory").await.unwrap();
    // A neighbour mid-turn when the other blows up.
    stalled(&mut bee, "neighbour", "STALL").await;
    // 400 MiB in one go, past twice the limit (200 MiB): with cgroups the
    // kernel kills it at memory.max; without, hum's next sample does.
    bee.send(&sim_prompt("hog", "SIM_GROW_MB 400 STALL"))
        .await
        .unwrap();
    let a = tokio::time::timeout(PROMPTLY, bee.answer("hog"))
        .await
        .expect("the hog's turn ended")
        .unwrap();
    let e = a.end.expect_err("an error");
    assert_eq!(e.code, thrum::ErrorCode::CellOom, "{e:?}");
    assert!(
        wait_until(PROMPTLY, || stack.torn_down("hog", "memory")),
        "{}",
        stack.log("worker.log")
    );
    let addr = std::fs::read_to_string(stack.sock.with_file_name("metrics.addr")).unwrap();
    if cgroups {
        // The kernel did it, inside the hog's cgroup, and hum said so.
        assert!(
            wait_until(PROMPTLY, || stack
                .log("worker.log")
                .contains("event=\"cell.oom_killed\"")),
            "{}",
            stack.log("worker.log")
        );
        assert!(
            wait_until(PROMPTLY, || metric(
                &scrape_metrics(&addr),
                "hum_cell_oom_kills_total",
                &[]
            ) >= 1.0),
            "no OOM kill counted"
        );
    }
    // The neighbour was untouched: still busy, and it finishes on cancel.
    let status = hum::client::fetch_status(&stack.sock).await.unwrap();
    assert_eq!(
        status
            .cells()
            .find(|c| c.sid == "neighbour")
            .map(|c| c.state),
        Some(hum::pool::CellState::Busy)
    );
    bee.cancel("neighbour").await.unwrap();
    let end = tokio::time::timeout(PROMPTLY, bee.answer("neighbour"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        end.end.unwrap().finish_reason,
        Some(thrum::FinishReason::Cancelled)
    );
    answered(&mut bee, "neighbour", "still here").await;
    bee.close();
    stack.stop();
}

/// This process's cgroup in the v1 memory hierarchy (the workers it starts
/// are in it too), if the machine has one.
fn own_v1_memory_dir() -> Option<std::path::PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    })?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let (head, tail) = l.split_once(" - ")?;
        let mut t = tail.split_whitespace();
        let (fs, _, opts) = (t.next()?, t.next()?, t.next()?);
        (fs == "cgroup" && opts.split(',').any(|o| o == "memory"))
            .then(|| head.split_whitespace().nth(4).map(str::to_owned))?
    })?;
    Some(std::path::Path::new(&mount).join(path.trim_start_matches('/')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_memory_cgroups_go_with_the_next_workers_sweep() {
    let mut stack = stack(json!({"maxCellRssMb": 100})).await;
    let log = stack.log("worker.log");
    let v1 = log.contains("kind=\"cgroup v1 memory.limit_in_bytes\"");
    if cgroups_required() {
        assert!(log.contains("event=\"cell.memory_limit\""), "{log}");
    }
    let mut bee = Client::asker(&stack.sock, "memory").await.unwrap();
    answered(&mut bee, "kept", "hello").await;
    let instance = log
        .split("instance=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();
    let dir = own_v1_memory_dir().map(|d| d.join(format!("hum-{instance}")));
    if v1 {
        let dir = dir.as_ref().expect("a v1 memory hierarchy");
        assert!(dir.is_dir(), "{} while the worker runs", dir.display());
        // Its cell's own memory cgroup holds the cell's leader.
        let cell_pid = hum::client::fetch_status(&stack.sock)
            .await
            .unwrap()
            .cells()
            .next()
            .unwrap()
            .pid
            .unwrap();
        let held = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .any(|e| {
                std::fs::read_to_string(e.path().join("cgroup.procs"))
                    .is_ok_and(|p| p.lines().any(|l| l.trim() == cell_pid.to_string()))
            });
        assert!(held, "the cell's leader is not in its memory cgroup");
    }
    // SIGKILL: no shutdown of its own; the sentinel ends the cells, the
    // next worker's sweep removes the rest.
    let mut worker = stack.worker.take().unwrap();
    signal(worker.id() as i32, rustix::process::Signal::KILL);
    worker.wait().unwrap();
    stack.worker = Some(stack.spawn_worker(json!({})));
    stack.wait_worker().await;
    if let (true, Some(dir)) = (v1, &dir) {
        assert!(
            wait_until(PROMPTLY, || !dir.exists()),
            "{} left after the sweep",
            dir.display()
        );
    }
    bee.close();
    stack.stop();
}
