//! The one teardown path, for every reason a cell ends.
//!
//! The ladder: close stdin → wait up to `close` for the leader to exit
//! (claude finishes its turn and flushes its transcript), and a moment for
//! the rest of its tree to follow → SIGTERM what is left → wait `term` →
//! SIGKILL the group, `cgroup.kill`, and every process carrying the cell's
//! tag, until nothing is left → reap. A rung is skipped when the tree is
//! already gone. A process counts as gone once it has exited (a zombie has),
//! never because a signal was sent; the leader is reaped last, so its pid and
//! the group's pgid cannot be recycled while the group is still signalled.
//!
//! The same ladder ends cells of a dead worker found in its ledger (without
//! the stdin rung: nobody holds their stdin any more).
//!
//! What counts as gone is the tree's [`Proof`]. A live cell with a cgroup
//! climbs the ladder on the kernel's count (its cgroup empty, which no
//! fork, setsid or double fork leaves) and its slot is released then; a
//! scan of every process on the machine for its group and tag follows,
//! off the slot's path, and ends whatever moved itself out of the cgroup
//! (`release.rs`). Every other tree climbs on that scan from the start.

use super::census::Census;
use super::cgroup::CellCgroup;
use super::leader::{Exit, Leader};
use super::procs::{self, ProcId, ProcStat, Procs};
use rustix::process::Signal;
use serde::Serialize;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

/// Why a cell ends. Every reason takes the same path. One spelling
/// everywhere: [`Reason::as_str`] is what serde, `Display` (logs), `FromStr`
/// and metric labels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Evicted,
    Idle,
    Cancelled,
    Crashed,
    Cleanup,
    Shutdown,
    /// No first event in time.
    Timeout,
    /// Left by a previous worker instance, found at start.
    Swept,
    /// Its handle was dropped without a teardown: a bug, contained anyway.
    Dropped,
    /// Its tree held more memory than `nest.maxCellRssMb` allows, or the
    /// kernel killed it at its cgroup's memory limit.
    Memory,
    /// Idle, and evicted because every cell together held more memory than
    /// `nest.maxPoolRssMb` allows.
    MemoryPressure,
    /// Started otherwise than its sid would start now (a forager's
    /// `provides` changed the agent's own tools): replaced at its next
    /// turn, which resumes the session.
    Reconfigured,
}

/// The rung that ended the tree. Spelled like [`Reason`]: one name, from
/// [`Rung::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rung {
    /// Nothing was running when teardown began.
    AlreadyGone,
    /// It left after its stdin closed.
    Stdin,
    /// It left after SIGTERM.
    Term,
    /// It had to be SIGKILLed.
    Kill,
}

thrum::one_spelling!(Reason {
    Evicted => "evicted",
    Idle => "idle",
    Cancelled => "cancelled",
    Crashed => "crashed",
    Cleanup => "cleanup",
    Shutdown => "shutdown",
    Timeout => "timeout",
    Swept => "swept",
    Dropped => "dropped",
    Memory => "memory",
    MemoryPressure => "memory_pressure",
    Reconfigured => "reconfigured",
});

thrum::one_spelling!(Rung {
    AlreadyGone => "already_gone",
    Stdin => "stdin",
    Term => "term",
    Kill => "kill",
});

/// How long each rung waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// After closing stdin (claude finishes its turn first).
    pub close: Duration,
    /// After SIGTERM.
    pub term: Duration,
    /// After SIGKILL, for processes to actually exit (one in uninterruptible
    /// sleep can take a while); past it the report says `complete: false`.
    pub kill: Duration,
}

impl Default for Grace {
    fn default() -> Self {
        Grace {
            close: Duration::from_secs(2),
            term: Duration::from_secs(2),
            kill: Duration::from_secs(5),
        }
    }
}

/// What a teardown did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TeardownReport {
    pub cell_id: String,
    pub reason: Reason,
    pub rung: Rung,
    /// Pids that were sent SIGTERM or SIGKILL (each once in the list).
    pub signalled: Vec<i32>,
    /// How the leader ended, when it was ours to see.
    pub leader_exit: Option<Exit>,
    pub elapsed_ms: u64,
    /// Whether every process of the tree was seen gone. Only a process
    /// stuck in the kernel beyond `Grace::kill` makes this false.
    pub complete: bool,
}

/// The leader as the ladder sees it.
pub enum LeaderRef<'a> {
    /// Our child: signalled by pidfd, reaped at the end.
    Own(&'a Leader),
    /// Someone else's (a dead worker's), if still the recorded process.
    Foreign(Option<ProcId>),
}

/// What proves a tree gone (besides its leader's exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Its cgroup holds no process: one small read. Only a process that
    /// wrote itself into another cgroup is outside it, and only a scan
    /// finds that one: a ladder on this proof is followed by a hunt
    /// (`release.rs`).
    CgroupEmpty,
    /// No process of its group, tag or cgroup in a scan of the machine.
    Scanned,
}

/// Everything that identifies one tree of processes.
pub struct Tree<'a> {
    pub leader: LeaderRef<'a>,
    /// The process group to signal. Only set while the leader is known to
    /// be unreaped (ours) or verified alive (foreign), so it is never a
    /// recycled group.
    pub pgid: Option<i32>,
    pub cgroup: Option<&'a CellCgroup>,
    /// The environ entry every member carries.
    pub tag: &'a [u8],
    /// How members are found and signalled.
    pub procs: Procs,
    /// What counts as gone. [`Proof::CgroupEmpty`] without a cgroup is
    /// taken as [`Proof::Scanned`].
    pub proof: Proof,
    /// Orphans of any cell no scan names, counted members too.
    pub(super) unclaimed: Option<&'a super::unclaimed::Unclaimed>,
}

impl Tree<'_> {
    pub(super) fn leader_running(&self) -> bool {
        match &self.leader {
            LeaderRef::Own(l) => l.try_exit().is_none(),
            LeaderRef::Foreign(Some(id)) => self.procs.running(*id),
            LeaderRef::Foreign(None) => false,
        }
    }

    /// What a scan of the tree needs, owned: it runs off the async threads.
    pub(super) fn census(&self) -> Census {
        Census {
            procs: self.procs,
            tag: self.tag.to_vec(),
            pgid: self.pgid,
            cgroup: self.cgroup.map(|c| c.dir().to_path_buf()),
            own_leader: match &self.leader {
                LeaderRef::Own(l) => Some(l.pid().as_raw_nonzero().get()),
                LeaderRef::Foreign(_) => None,
            },
            proof: self.proof,
            unclaimed: self.unclaimed.cloned(),
        }
    }

    /// Running members other than an own leader: by group, tag and cgroup.
    /// A /proc scan reads a file per process on the machine, so it runs on
    /// a blocking thread (the worker's runtime has one thread, and routes
    /// every cell's output on it).
    async fn members(&self) -> Vec<ProcStat> {
        let census = self.census();
        let again = census.clone();
        match tokio::task::spawn_blocking(move || census.members()).await {
            Ok(found) => found,
            // Never "none left" for want of a thread: scan here instead.
            Err(_) => again.members(),
        }
    }

    async fn gone(&self) -> bool {
        if self.leader_running() {
            return false;
        }
        let census = self.census();
        let again = census.clone();
        match tokio::task::spawn_blocking(move || census.gone()).await {
            Ok(gone) => gone,
            Err(_) => again.gone(),
        }
    }
}

/// Closes a cell's stdin; the ladder's first rung.
pub trait StdinCloser {
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// Runs the ladder on `tree`, reaps, and reports.
pub async fn ladder<S: StdinCloser>(
    cell_id: &str,
    tree: &Tree<'_>,
    stdin: Option<&S>,
    grace: Grace,
    reason: Reason,
) -> TeardownReport {
    let climbed = climb(tree, stdin, grace).await;
    finish(cell_id, tree, reason, climbed)
}

/// No stdin to close: a dead worker's cells, and a hunt.
pub struct NoStdin;

impl StdinCloser for NoStdin {
    async fn close(&self) {}
}

/// Where a climb of the ladder ended.
pub struct Climbed {
    pub(super) started: Instant,
    pub(super) rung: Rung,
    pub(super) complete: bool,
    pub(super) run: Run,
}

impl Climbed {
    /// A climb that found nothing to do.
    pub(super) fn gone_already() -> Climbed {
        Climbed {
            started: Instant::now(),
            rung: Rung::AlreadyGone,
            complete: true,
            run: Run::default(),
        }
    }

    /// What the climb did, as a report: `leader_exit` is the caller's to
    /// read (reaping, or not yet).
    pub(super) fn report(
        &self,
        cell_id: &str,
        reason: Reason,
        leader_exit: Option<Exit>,
    ) -> TeardownReport {
        TeardownReport {
            cell_id: cell_id.to_owned(),
            reason,
            rung: self.rung,
            signalled: self.run.signalled.iter().copied().collect(),
            leader_exit,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            complete: self.complete,
        }
    }
}

/// The rungs, from the top until the tree is gone by its proof.
pub(super) async fn climb<S: StdinCloser>(
    tree: &Tree<'_>,
    stdin: Option<&S>,
    grace: Grace,
) -> Climbed {
    let started = Instant::now();
    let mut run = Run {
        signalled: BTreeSet::new(),
        adopted: BTreeSet::new(),
    };
    let rung = 'ladder: {
        let was_running = !tree.gone().await;
        if let Some(stdin) = stdin {
            stdin.close().await;
        }
        if !was_running {
            break 'ladder Rung::AlreadyGone;
        }
        // The leader gets `close` to finish its turn and exit. Once it has,
        // what is left of its tree is given a moment to follow it (stdio MCP
        // servers leave on their stdin's EOF) and then goes straight to
        // SIGTERM: a setsid'ed child that ignores stdin will not answer a
        // closed pipe, however long we wait.
        // A leader that left the moment its stdin closed (before we looked)
        // left on this rung too.
        if stdin.is_some()
            && (!tree.leader_running() || wait_leader(tree, grace.close).await)
            && wait_gone(tree, FOLLOW_LEADER).await
        {
            break 'ladder Rung::Stdin;
        }
        run.signal(tree, Signal::TERM).await;
        if wait_gone(tree, grace.term).await {
            break 'ladder Rung::Term;
        }
        Rung::Kill
    };
    let mut complete = true;
    if rung == Rung::Kill {
        let deadline = Instant::now() + grace.kill;
        loop {
            run.signal(tree, Signal::KILL).await;
            if wait_gone(tree, Duration::from_millis(50)).await {
                break;
            }
            if Instant::now() >= deadline {
                complete = false;
                break;
            }
        }
    }
    Climbed {
        started,
        rung,
        complete,
        run,
    }
}

/// Reaps the leader and the adopted members, logs and reports.
pub(super) fn finish(
    cell_id: &str,
    tree: &Tree<'_>,
    reason: Reason,
    mut climbed: Climbed,
) -> TeardownReport {
    let leader_exit = match &tree.leader {
        LeaderRef::Own(l) => l.reap(),
        LeaderRef::Foreign(_) => None,
    };
    climbed.run.reap_adopted();
    let report = climbed.report(cell_id, reason, leader_exit);
    let (complete, rung) = (climbed.complete, climbed.rung);
    if complete {
        tracing::info!(event = "cell.teardown.done", cell = cell_id, reason = %reason, rung = %rung,
            signalled = ?report.signalled, elapsed_ms = report.elapsed_ms, "cell torn down");
    } else {
        tracing::error!(event = "cell.teardown.incomplete", cell = cell_id, reason = %reason,
            signalled = ?report.signalled, "processes survived SIGKILL past the deadline");
    }
    report
}

#[derive(Default)]
pub(super) struct Run {
    pub(super) signalled: BTreeSet<i32>,
    /// Members that were our children (orphans adopted as subreaper), to reap.
    pub(super) adopted: BTreeSet<i32>,
}

impl Run {
    /// Sends `sig` to the whole tree: leader, group, cgroup (SIGKILL only)
    /// and every tagged process, each through a pidfd checked to still name
    /// the process that was scanned.
    async fn signal(&mut self, tree: &Tree<'_>, sig: Signal) {
        // Who is there before anything is sent: those reached through the
        // group or the cgroup are reported as signalled too.
        let members = tree.members().await;
        match &tree.leader {
            LeaderRef::Own(l) => {
                if l.try_exit().is_none() && l.signal(sig).is_ok() {
                    self.signalled.insert(l.pid().as_raw_nonzero().get());
                }
            }
            LeaderRef::Foreign(Some(id)) => {
                if tree.procs.signal_exact(*id, sig) {
                    self.signalled.insert(id.pid);
                }
            }
            LeaderRef::Foreign(None) => {}
        }
        if let Some(pgid) = tree.pgid.and_then(procs::pid) {
            let _ = rustix::process::kill_process_group(pgid, sig);
        }
        if sig == Signal::KILL {
            if let Some(cg) = tree.cgroup {
                cg.kill();
            }
        }
        let me = std::process::id() as i32;
        for member in members {
            if member.ppid == me {
                self.adopted.insert(member.pid);
            }
            // Members outside the group (setsid escapees) are reached here.
            tree.procs.signal_exact(member.id(), sig);
            self.signalled.insert(member.pid);
        }
    }

    /// Reaps the orphans of the tree that came to us.
    fn reap_adopted(&mut self) {
        for pid in std::mem::take(&mut self.adopted) {
            if let Some(p) = procs::pid(pid) {
                let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
            }
        }
    }
}

/// After the leader left on its stdin's EOF, how long the rest of its tree
/// gets to leave with it before SIGTERM.
const FOLLOW_LEADER: Duration = Duration::from_millis(25);

/// Waits until the leader has exited or `within` passes; returns whether it
/// did. (Only an own leader can be waited on; a foreign one counts as done.)
async fn wait_leader(tree: &Tree<'_>, within: Duration) -> bool {
    match &tree.leader {
        LeaderRef::Own(l) => tokio::time::timeout(within, l.exited()).await.is_ok(),
        LeaderRef::Foreign(_) => wait_gone(tree, within).await,
    }
}

/// Waits until the tree is gone or `within` passes; returns whether it went.
async fn wait_gone(tree: &Tree<'_>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    if let LeaderRef::Own(l) = &tree.leader {
        // The leader's exit is an event; no polling for it.
        if tokio::time::timeout_at(deadline.into(), l.exited())
            .await
            .is_err()
        {
            return false;
        }
    }
    // Its group, tag and cgroup are polled, briefly at first.
    let mut pause = Duration::from_millis(2);
    loop {
        if tree.gone().await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_rungs_have_one_spelling_in_serde_display_and_from_str() {
        for r in Reason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(r.to_string(), r.as_str());
            assert_eq!(r.as_str().parse::<Reason>(), Ok(*r));
            assert_eq!(
                serde_json::from_value::<Reason>(r.as_str().into()).unwrap(),
                *r
            );
        }
        for r in Rung::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(r.as_str().parse::<Rung>(), Ok(*r));
        }
        assert!(
            "Cleanup".parse::<Reason>().is_err(),
            "Debug's spelling is not one"
        );
    }
}
