//! A live cell: its stdin (closed by a teardown, never blocking one), its
//! stderr tail, its one teardown, and the handles that reach it.

use super::*;

/// A cell's stdin: writes never block a teardown, which closes it.
pub(super) struct CellStdin {
    pipe: tokio::sync::Mutex<Option<ChildStdin>>,
    closed: CancellationToken,
}

impl CellStdin {
    pub(super) fn new(pipe: Option<ChildStdin>) -> CellStdin {
        CellStdin {
            pipe: tokio::sync::Mutex::new(pipe),
            closed: CancellationToken::new(),
        }
    }

    async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "cell stdin is closed");
        tokio::select! {
            biased;
            _ = self.closed.cancelled() => Err(closed()),
            result = async {
                let mut guard = self.pipe.lock().await;
                let pipe = guard.as_mut().ok_or_else(closed)?;
                pipe.write_all(bytes).await?;
                pipe.flush().await
            } => result,
        }
    }
}

impl StdinCloser for CellStdin {
    async fn close(&self) {
        // Cancel first: a write blocked on a full pipe lets go of the lock.
        self.closed.cancel();
        drop(self.pipe.lock().await.take());
    }
}

pub(super) struct CellInner {
    pub(super) tag: CellTag,
    pub(super) tag_entry: Vec<u8>,
    pub(super) pid: i32,
    pub(super) start_time: u64,
    pub(super) leader: Leader,
    pub(super) procs: procs::Procs,
    pub(super) cgroup: Option<CellCgroup>,
    /// Its kernel memory limit, when it has one.
    pub(super) memory: Option<crate::os::memcg::CellMemory>,
    pub(super) stdin: CellStdin,
    pub(super) stdout: Mutex<Option<ChildStdout>>,
    pub(super) stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Cancelled once the cell's stderr reached its end.
    pub(super) stderr_done: CancellationToken,
    pub(super) spawned_at: Instant,
    pub(super) grace: Grace,
    pub(super) ledger: Arc<Ledger>,
    pub(super) teardown: Mutex<Option<Teardowns>>,
    /// The cell layer's teardowns, which its shutdown waits for.
    pub(super) teardowns: TaskTracker,
    /// Orphans no cell can claim, ended with this cell's tree.
    pub(super) unclaimed: Option<super::unclaimed::Unclaimed>,
}

/// A report to come.
type Report = watch::Receiver<Option<Arc<TeardownReport>>>;

/// The two moments of a cell's one teardown: its slot released (its
/// processes gone by the tree's proof), then the teardown done (the scan
/// for escapees from its cgroup, the reaping, the ledger). Without a
/// cgroup they are one moment and one report.
#[derive(Clone)]
pub(super) struct Teardowns {
    released: Report,
    done: Report,
}

/// The report `rx` will hold.
async fn report_of(mut rx: Report) -> Arc<TeardownReport> {
    match rx.wait_for(Option::is_some).await.map(|r| r.clone()) {
        Ok(Some(r)) => r,
        // The teardown task sends the done report (and the released one
        // with it, at the latest) before it drops its senders.
        _ => unreachable!("teardown task ended without a report"),
    }
}

impl CellInner {
    /// Processes of the cell the kernel's OOM killer ended (0 without a
    /// memory limit).
    pub(super) fn oom_kills(&self) -> u64 {
        self.memory.as_ref().map_or(0, |m| m.oom_kills())
    }

    pub(super) fn add_cgroup_members(&self, members: &mut Vec<procs::ProcStat>) {
        if let Some(cg) = &self.cgroup {
            for pid in cg.pids() {
                if !members.iter().any(|m| m.pid == pid) {
                    members.extend(self.procs.stat(pid).filter(|s| !s.exited()));
                }
            }
        }
        if let Some(s) = self
            .procs
            .stat(self.pid)
            .filter(|s| !s.exited() && self.procs.clock().same_start(s.start_time, self.start_time))
        {
            if !members.iter().any(|m| m.pid == s.pid) {
                members.push(s);
            }
        }
    }

    /// Starts the teardown once; every caller gets the same reports.
    pub(super) fn begin_teardown(self: &Arc<Self>, reason: Reason) -> Teardowns {
        let mut slot = self.teardown.lock().expect("teardown lock");
        if let Some(t) = &*slot {
            return t.clone();
        }
        let (released_tx, released) = watch::channel(None);
        let (done_tx, done) = watch::channel(None);
        *slot = Some(Teardowns {
            released: released.clone(),
            done: done.clone(),
        });
        let inner = self.clone();
        // Its own task: one cell's slow teardown never holds up another's,
        // and a caller that stops waiting does not stop the teardown.
        self.teardowns.spawn(async move {
            let report = Arc::new(inner.run_teardown(reason, &released_tx).await);
            // Without a cgroup the slot is released only now.
            released_tx.send_if_modified(|r| {
                let unsent = r.is_none();
                if unsent {
                    *r = Some(report.clone());
                }
                unsent
            });
            let _ = done_tx.send(Some(report));
        });
        Teardowns { released, done }
    }

    /// The ladder, and what a cell leaves to clean after it. With a cgroup
    /// the slot is `released` on the cgroup's count, before the scan.
    pub(super) async fn run_teardown(
        &self,
        reason: Reason,
        released: &watch::Sender<Option<Arc<TeardownReport>>>,
    ) -> TeardownReport {
        let mut tree = Tree {
            leader: LeaderRef::Own(&self.leader),
            // The leader stays unreaped until the ladder ends: the pgid is ours.
            pgid: Some(self.pid),
            cgroup: self.cgroup.as_ref(),
            tag: &self.tag_entry,
            procs: self.procs,
            proof: Proof::Scanned,
            unclaimed: self.unclaimed.as_ref(),
        };
        let id = &self.tag.cell_id;
        let report = if self.cgroup.is_some() {
            tree.proof = Proof::CgroupEmpty;
            let (report, climbed) =
                release::release(id, &tree, Some(&self.stdin), self.grace, reason).await;
            let _ = released.send(Some(Arc::new(report.clone())));
            tree.proof = Proof::Scanned;
            release::hunt(&tree, &report, climbed, self.grace).await
        } else {
            teardown::ladder(id, &tree, Some(&self.stdin), self.grace, reason).await
        };
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.remove() {
                tracing::warn!(event = "cell.cgroup.remove_failed", cell = %self.tag.cell_id, dir = %cg.dir().display(), error = %e, "cell cgroup left behind");
            }
        }
        if let Some(m) = &self.memory {
            m.remove();
        }
        if self.leader.is_reaped() {
            protected()
                .lock()
                .expect("protected lock")
                .remove(&self.pid);
        }
        if report.complete {
            if let Err(e) = self.ledger.gone(&self.tag.cell_id) {
                tracing::error!(event = "cell.ledger.write_failed", cell = %self.tag.cell_id, error = %e, "ledger write failed");
            }
        }
        report
    }
}

/// A live cell. Dropping it without a teardown still tears it down (and
/// logs it as a bug).
pub struct Cell {
    pub(super) inner: Arc<CellInner>,
}

impl Cell {
    pub fn id(&self) -> &str {
        &self.inner.tag.cell_id
    }

    /// The leader's pid.
    pub fn pid(&self) -> i32 {
        self.inner.pid
    }

    pub fn start_time(&self) -> u64 {
        self.inner.start_time
    }

    pub fn cgroup_dir(&self) -> Option<&Path> {
        self.inner.cgroup.as_ref().map(|c| c.dir())
    }

    /// Processes of this cell the kernel's OOM killer ended, at its memory
    /// limit (0 without one).
    pub fn oom_kills(&self) -> u64 {
        self.inner.oom_kills()
    }

    /// Writes to the cell's stdin. Fails once teardown has begun.
    pub async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.inner.stdin.write(bytes).await
    }

    /// The cell's stdout, for the one reader that parses it.
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        self.inner.stdout.lock().expect("stdout lock").take()
    }

    /// Resolves when the leader has exited (a crash, or the end of a
    /// teardown). The tree may still need tearing down.
    pub async fn exited(&self) -> Exit {
        self.inner.leader.exited().await
    }

    pub fn try_exit(&self) -> Option<Exit> {
        self.inner.leader.try_exit()
    }

    /// Resolves once the cell's stderr has reached its end (all its writers,
    /// the leader and its children, are gone or closed it).
    pub async fn stderr_closed(&self) {
        self.inner.stderr_done.cancelled().await
    }

    /// The last lines the cell wrote to stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.inner
            .stderr_tail
            .lock()
            .expect("stderr lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Tears the cell down (the one ladder, `teardown.rs`). Idempotent and safe to call
    /// concurrently: the first call picks the reason, every call gets the
    /// same report.
    /// A handle that can tear this cell down (or wait for the teardown
    /// already under way) after the `Cell` itself is gone, e.g. dropped by
    /// a task that panicked.
    pub fn handle(&self) -> CellHandle {
        CellHandle {
            inner: self.inner.clone(),
        }
    }

    pub async fn teardown(&self, reason: Reason) -> Arc<TeardownReport> {
        report_of(self.inner.begin_teardown(reason).done).await
    }

    /// Tears the cell down like [`Cell::teardown`], and reports as soon as
    /// its slot may be used again: when its cgroup (if it has one) holds
    /// no process. The scan of the machine for what left the cgroup
    /// follows, off the slot's path; `Cells::shutdown` waits for it.
    pub async fn release(&self, reason: Reason) -> Arc<TeardownReport> {
        report_of(self.inner.begin_teardown(reason).released).await
    }

    /// Processes, memory, CPU and age of this cell now.
    pub fn sample(&self) -> CellSample {
        let mut members = self.inner.procs.scan_members(&self.inner.tag_entry, None);
        self.inner.add_cgroup_members(&mut members);
        observe::summarize(
            self.id(),
            self.inner.pid,
            members,
            self.inner.spawned_at.elapsed(),
        )
    }
}

/// See [`Cell::handle`]. Holding one does not keep the cell alive.
#[derive(Clone)]
pub struct CellHandle {
    pub(super) inner: Arc<CellInner>,
}

impl std::fmt::Debug for CellHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellHandle")
            .field("cell", &self.inner.tag.cell_id)
            .finish()
    }
}

impl CellHandle {
    /// Tears the cell down with `reason`, or waits for the teardown already
    /// begun (by a drop, say), and reports it.
    pub async fn teardown(&self, reason: Reason) -> Arc<TeardownReport> {
        report_of(self.inner.begin_teardown(reason).done).await
    }

    /// See [`Cell::release`].
    pub async fn release(&self, reason: Reason) -> Arc<TeardownReport> {
        report_of(self.inner.begin_teardown(reason).released).await
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        let started = self.inner.teardown.lock().expect("teardown lock").is_some();
        if started {
            return;
        }
        tracing::error!(event = "cell.dropped", cell = %self.inner.tag.cell_id, pid = self.inner.pid,
            "cell handle dropped without a teardown; tearing it down");
        if tokio::runtime::Handle::try_current().is_ok() {
            self.inner.begin_teardown(Reason::Dropped);
        }
    }
}

pub(super) async fn collect_stderr(
    stderr: tokio::process::ChildStderr,
    cell_id: String,
    tail: Arc<Mutex<VecDeque<String>>>,
    done: CancellationToken,
) {
    // Whoever waits for the whole of stderr learns when it has all of it.
    let _done = done.drop_guard();
    let mut lines = thrum::LineReader::new(tokio::io::BufReader::new(stderr), STDERR_LINE_MAX);
    while let Ok(Some(line)) = lines.next_line().await {
        let text = match line {
            thrum::RawLine::Line(l) => String::from_utf8_lossy(l).into_owned(),
            thrum::RawLine::TooLong { limit } => format!("<stderr line over {limit} bytes cut>"),
        };
        tracing::debug!(event = "cell.stderr", cell = %cell_id, line = %text);
        let mut t = tail.lock().expect("stderr lock");
        if t.len() == STDERR_TAIL_LINES {
            t.pop_front();
        }
        t.push_back(text);
    }
}
