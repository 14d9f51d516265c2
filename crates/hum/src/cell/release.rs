//! A cell's slot released on its cgroup's count, and the hunt after it.
//!
//! A cgroup holds every process a cell starts, through fork, setsid and
//! double fork: when it is empty and the leader has exited, the cell's
//! processes are gone and its slot can take the next cell. What only a
//! scan of every process on the machine can find, a process that wrote
//! itself into another cgroup, is hunted right after, off the slot's path,
//! and the leader is reaped only then, so the group id the hunt may signal
//! is never a recycled one. The scan is the costliest part of a teardown
//! (a file per process on the machine, at every round of a herd's
//! evictions), which is why it waits for no slot.

use super::teardown::{climb, finish, Climbed, NoStdin, Rung};
use super::teardown::{Grace, LeaderRef, Reason, StdinCloser, TeardownReport, Tree};

/// Runs the ladder on `tree` and reports, leaving an own leader unreaped
/// (its pid, and so its group's, cannot be recycled before the [`hunt`]
/// that must follow when the tree's proof was [`Proof::CgroupEmpty`](super::teardown::Proof::CgroupEmpty)).
pub async fn release<S: StdinCloser>(
    cell_id: &str,
    tree: &Tree<'_>,
    stdin: Option<&S>,
    grace: Grace,
    reason: Reason,
) -> (TeardownReport, Climbed) {
    let climbed = climb(tree, stdin, grace).await;
    let leader_exit = match &tree.leader {
        LeaderRef::Own(l) => l.try_exit(),
        LeaderRef::Foreign(_) => None,
    };
    let report = climbed.report(cell_id, reason, leader_exit);
    tracing::debug!(event = "cell.teardown.released", cell = cell_id, reason = %reason,
        rung = %climbed.rung, elapsed_ms = report.elapsed_ms, "cell's cgroup empty; its slot is free");
    (report, climbed)
}

/// After a [`release`]: the scan of the machine for what of the tree is
/// left outside its cgroup, the ladder (without stdin) for anything it
/// finds, then the reaping, and the whole teardown's report. `tree` is
/// the released one, its proof now [`Proof::Scanned`](super::teardown::Proof::Scanned).
pub async fn hunt(
    tree: &Tree<'_>,
    released: &TeardownReport,
    climbed: Climbed,
    grace: Grace,
) -> TeardownReport {
    // The common case, nothing left, is answered by the hunter's shared
    // scan at nice 19; what it finds gets the ladder, scanning anew. (A
    // leader still running, after a release that ended incomplete, goes
    // to the ladder straight away: the hunter does not look at it.)
    let clear =
        !tree.leader_running() && super::hunter::nothing_left(tree.census()).await == Some(true);
    let mut found = if clear {
        Climbed::gone_already()
    } else {
        climb::<NoStdin>(tree, None, grace).await
    };
    if found.rung != Rung::AlreadyGone {
        tracing::warn!(event = "cell.teardown.escaped", cell = %released.cell_id, rung = %found.rung,
            pids = ?found.run.signalled, complete = found.complete,
            "processes of the cell had left its cgroup; found by a scan and ended");
    }
    found.rung = found.rung.max(climbed.rung);
    found.complete &= climbed.complete;
    found.run.signalled.extend(climbed.run.signalled);
    found.run.adopted.extend(climbed.run.adopted);
    found.started = climbed.started;
    finish(&released.cell_id, tree, released.reason, found)
}
