//! # The cell layer: agent CLI processes whose whole tree lives and dies
//! together.
//!
//! A *cell* is one agent CLI process and every process it starts. This layer
//! spawns cells into containment, lets the pool talk to them, says when one
//! died, and tears them down through one path (`teardown.rs`) that leaves nothing.
//!
//! ## Containment, layer by layer
//!
//! - **Process group**: each cell leads its own group; SIGTERM and SIGKILL go
//!   to the group. Misses processes that call `setsid` (claude's Bash tool).
//! - **Environment tag** (`tag.rs`): `HUM_CELL=<cell id>` and
//!   `HUM_WORKER_INSTANCE=<instance>` on the leader, inherited by every
//!   descendant, setsid escapees included; a /proc scan finds them wherever
//!   they were reparented, and teardown kills them by pid through a pidfd
//!   checked against the scanned start time.
//! - **Child subreaper**: the worker adopts orphaned descendants, so escapees
//!   come back to it (to be reaped) instead of to PID 1; a child that
//!   left every other mark of its cell goes with the next teardown
//!   (`unclaimed.rs`).
//! - **cgroup v2** (`cgroup.rs`), when the worker can create one: a cgroup per
//!   cell catches everything and `cgroup.kill` ends it atomically. The child
//!   joins it between fork and exec, before it can start anything.
//!   `HUM_CGROUPS=off` forces the fallback; [`Mechanism`] says which is on.
//!   With one, a cell's slot is released when its cgroup is empty, and the
//!   machine-wide scan for what left the cgroup follows (`release.rs`),
//!   one scan for every hunt gathered meanwhile, at nice 19
//!   (`hunter.rs`).
//! - **PR_SET_PDEATHSIG** on the leader, set between fork and exec from the
//!   spawner thread (`spawner.rs`) that lives as long as the worker (tokio's blocking
//!   threads do not), with the parent re-checked after setting it.
//! - **The sentinel** (`sentinel.rs`): a small process per worker that ends
//!   every cell within moments of the worker dying, SIGKILL included.
//! - **The ledger** (`ledger.rs`) and the start-up sweep (`sweep.rs`): what a crashed
//!   instance left is found (pid and start time, or tag, never by command
//!   line) and ended by the next one.
//!
//! The leader is watched through a pidfd (`leader.rs`) and is reaped only
//! after the rest of its tree is gone, so its pid and its group's pgid cannot
//! be recycled under a signal. No shell anywhere: argv is a vector.

// The mechanisms, one per file, are the layer's own; everything outside
// reaches them through `Cells`, `Cell` and the types re-exported below.
pub(crate) use crate::os::cgroup;
mod census;
pub(crate) mod containment;
mod hunter;
pub(crate) mod leader;
pub(crate) mod ledger;
mod live;
pub(crate) mod observe;
mod release;
pub(crate) use crate::os::procs;
pub(crate) mod sentinel;
pub(crate) mod spawner;
pub(crate) mod sweep;
pub(crate) mod tag;
pub(crate) mod teardown;
mod unclaimed;

use live::{collect_stderr, CellInner, CellStdin};
pub use live::{Cell, CellHandle};

pub use cgroup::own_cgroup_dir;
pub use containment::{CgroupMode, Containment, ContainmentMode, Mechanism, CONTAINMENT_ENV};
pub use leader::Exit;
pub use ledger::{read as read_ledger, CellRecord, ReadLedger, WorkerRecord};
pub use observe::CellSample;
pub use procs::{ProcStat, Procs, StartClock};
pub use sweep::SweepReport;
pub use teardown::{Grace, Reason, Rung, TeardownReport};

use cgroup::CellCgroup;
use leader::Leader;
use ledger::Ledger;
use rustix::fd::AsRawFd;
use sentinel::Sentinel;
use spawner::Spawner;
use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tag::CellTag;
use teardown::{LeaderRef, Proof, StdinCloser, Tree};
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Lines of a cell's stderr kept for its crash report.
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept (the rest is cut).
const STDERR_LINE_MAX: usize = 4096;

/// How the cell layer is set up.
#[derive(Debug, Clone)]
pub struct CellConfig {
    pub grace: Grace,
    /// Everything the OS offers, or the portable floor alone.
    pub containment: ContainmentMode,
    /// Whether Linux containment uses cgroups (ignored when portable).
    pub cgroups: CgroupMode,
    /// Where ledgers live (by default `$HUM_STATE_DIR`, else the OS's state
    /// directory for hum).
    pub state_dir: PathBuf,
    /// The `hum` binary, for the sentinel.
    pub hum_bin: PathBuf,
    /// A kernel memory limit for each cell's tree, in bytes, where cells
    /// have cgroups with a memory controller (v2, or v1 on hybrid
    /// machines); none: no kernel limit.
    pub memory_limit: Option<u64>,
    /// This process starts no children but cells: any other child is an
    /// orphan of a cell, ended with the next teardown (`unclaimed.rs`).
    pub end_unclaimed_children: bool,
}

impl CellConfig {
    /// Defaults for this process: the backend from `HUM_CONTAINMENT`, cgroup
    /// mode from `HUM_CGROUPS`, the state dir from the environment, this
    /// executable as `hum`.
    pub fn from_env() -> io::Result<CellConfig> {
        Ok(CellConfig {
            grace: Grace::default(),
            containment: ContainmentMode::from_env(),
            cgroups: CgroupMode::from_env(),
            state_dir: crate::os::paths::default_state_dir(),
            hum_bin: std::env::current_exe()?,
            memory_limit: None,
            end_unclaimed_children: true,
        })
    }
}

/// What to run in a cell. No shell: `program` is executed with `args`.
#[derive(Debug, Clone, Default)]
pub struct CellSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Added to the worker's own environment, or the whole environment
    /// with `clean_env`.
    pub env: Vec<(OsString, OsString)>,
    /// Start from an empty environment: only `env` and the cell's tag.
    pub clean_env: bool,
    pub cwd: Option<PathBuf>,
}

/// The cell layer of one worker instance.
pub struct Cells {
    instance: String,
    config: CellConfig,
    containment: Containment,
    ledger: Arc<Ledger>,
    sentinel: Mutex<Option<Sentinel>>,
    counter: AtomicU64,
    sweep: Vec<SweepReport>,
    /// Where each cell's kernel memory limit is set, when there is one.
    memory: Option<crate::os::memcg::MemoryRoot>,
    /// Every cell's teardown, finished before the layer shuts down.
    teardowns: TaskTracker,
}

/// Children this process keeps unreaped on purpose (cell leaders until their
/// tree is gone) or reaps itself (sentinels): the orphan reaper leaves them
/// be. Process-wide, because reaping is.
fn protected() -> &'static Mutex<HashSet<i32>> {
    static PROTECTED: std::sync::OnceLock<Mutex<HashSet<i32>>> = std::sync::OnceLock::new();
    PROTECTED.get_or_init(Default::default)
}

impl std::fmt::Debug for Cells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cells")
            .field("instance", &self.instance)
            .field("mechanism", &self.containment.mechanism)
            .finish()
    }
}

impl Cells {
    /// Sets up containment, sweeps what previous instances left, opens this
    /// instance's ledger and starts its sentinel.
    pub async fn start(config: CellConfig) -> io::Result<Cells> {
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let containment = Containment::establish(&instance, config.containment, config.cgroups);
        let procs = containment.procs;
        tracing::info!(event = "cell.containment", instance = %instance, mechanism = ?containment.mechanism,
            subreaper = containment.subreaper, pdeathsig = containment.pdeathsig,
            pidfd = procs.uses_pidfd(), table = procs.table_name(), "containment chosen");
        let sweep = sweep::sweep_previous(&config.state_dir, &instance, config.grace, procs).await;
        let me = procs
            .stat(std::process::id() as i32)
            .ok_or_else(|| io::Error::other("cannot read this process in the process table"))?;
        let ledger = Ledger::create(
            &config.state_dir,
            WorkerRecord {
                instance: instance.clone(),
                pid: me.pid,
                start_time: me.start_time,
                clock: procs.clock(),
                cgroup_root: containment
                    .cgroup
                    .as_ref()
                    .map(|c| c.dir().display().to_string()),
            },
        )?;
        let sentinel = unclaimed::fork_protected(
            || {
                Sentinel::start(
                    &config.hum_bin,
                    &instance,
                    ledger.path(),
                    containment.cgroup.as_ref().map(|c| c.dir()),
                    config.containment,
                )
            },
            Sentinel::pid,
        )?;
        let memory = match (config.memory_limit, &containment.cgroup) {
            (Some(limit), Some(root)) => {
                match crate::os::memcg::MemoryRoot::create(&instance, root.dir()) {
                    Ok(m) => {
                        tracing::info!(
                            event = "cell.memory_limit",
                            limit_bytes = limit,
                            kind = m.kind(),
                            "each cell's memory is limited by the kernel"
                        );
                        Some(m)
                    }
                    Err(why) => {
                        tracing::warn!(event = "cell.memory_limit_unavailable", limit_bytes = limit, why = %why, "no kernel memory limit per cell; hum's own sampling enforces the limit");
                        None
                    }
                }
            }
            (Some(limit), None) => {
                tracing::warn!(
                    event = "cell.memory_limit_unavailable",
                    limit_bytes = limit,
                    why = "cells have no cgroups",
                    "no kernel memory limit per cell; hum's own sampling enforces the limit"
                );
                None
            }
            (None, _) => None,
        };
        Ok(Cells {
            instance,
            config,
            containment,
            ledger: Arc::new(ledger),
            sentinel: Mutex::new(Some(sentinel)),
            counter: AtomicU64::new(0),
            sweep,
            memory,
            teardowns: TaskTracker::new(),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn mechanism(&self) -> &Mechanism {
        &self.containment.mechanism
    }

    /// How this layer looks at and signals processes.
    pub fn procs(&self) -> Procs {
        self.containment.procs
    }

    pub fn containment(&self) -> &Containment {
        &self.containment
    }

    /// What the start-up sweep found.
    pub fn sweep_reports(&self) -> &[SweepReport] {
        &self.sweep
    }

    /// Where this cell layer keeps its state (ledgers, and what the worker
    /// keeps beside them).
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    pub fn ledger_path(&self) -> &Path {
        self.ledger.path()
    }

    pub fn sentinel_pid(&self) -> Option<u32> {
        self.sentinel
            .lock()
            .expect("sentinel lock")
            .as_ref()
            .map(Sentinel::pid)
    }

    /// Spawns a cell. Its stdin, stdout and stderr are pipes to us.
    pub async fn spawn(&self, spec: CellSpec) -> io::Result<Cell> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tag = CellTag {
            cell_id: format!("{}-{n}", &self.instance[..8]),
            instance: self.instance.clone(),
        };
        let (cgroup, memory) = self.containers(&tag.cell_id);
        let cmd = self.command(&spec, &tag, cgroup.as_ref(), memory.as_ref());
        let mut child = match Spawner::get().spawn(cmd).await {
            Ok(child) => child,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    let _ = cg.remove();
                }
                if let Some(m) = &memory {
                    m.remove();
                }
                return Err(e);
            }
        };
        let pid = child.id() as i32;
        let procs = self.containment.procs;
        let start_time = procs.stat(pid).map(|s| s.start_time).unwrap_or(0);
        let leader = Leader::new(procs::pid(pid).expect("a child pid is positive"), procs);
        protected().lock().expect("protected lock").insert(pid);
        let record = CellRecord {
            cell_id: tag.cell_id.clone(),
            pid,
            pgid: pid,
            start_time,
            instance: self.instance.clone(),
            cgroup: cgroup.as_ref().map(|c| c.dir().display().to_string()),
        };
        if let Err(e) = self.ledger.live(record) {
            tracing::error!(event = "cell.ledger.write_failed", cell = %tag.cell_id, error = %e, "ledger write failed");
        }
        let stdin = child.stdin.take().map(ChildStdin::from_std).transpose()?;
        let stdout = child.stdout.take().map(ChildStdout::from_std).transpose()?;
        let stderr = child
            .stderr
            .take()
            .map(tokio::process::ChildStderr::from_std)
            .transpose()?;
        // `child` is dropped without waiting: the leader is reaped by the
        // teardown, through its pidfd, once its tree is gone.
        drop(child);

        let inner = Arc::new(CellInner {
            tag_entry: tag.cell_entry(),
            tag,
            pid,
            start_time,
            leader,
            procs,
            cgroup,
            memory,
            stdin: CellStdin::new(stdin),
            stdout: Mutex::new(stdout),
            stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
            stderr_done: CancellationToken::new(),
            spawned_at: Instant::now(),
            grace: self.config.grace,
            ledger: self.ledger.clone(),
            teardown: Mutex::new(None),
            teardowns: self.teardowns.clone(),
            unclaimed: unclaimed::Unclaimed::of(
                self.config.end_unclaimed_children,
                &self.containment,
            ),
        });
        if let Some(stderr) = stderr {
            tokio::spawn(collect_stderr(
                stderr,
                inner.tag.cell_id.clone(),
                inner.stderr_tail.clone(),
                inner.stderr_done.clone(),
            ));
        }
        tracing::info!(event = "cell.spawned", cell = %inner.tag.cell_id, pid, "cell spawned");
        Ok(Cell { inner })
    }

    /// The cell's cgroup and kernel memory limit, where there are any (a
    /// cell whose own could not be made runs without, said in the log).
    fn containers(
        &self,
        cell_id: &str,
    ) -> (Option<CellCgroup>, Option<crate::os::memcg::CellMemory>) {
        let cgroup = match &self.containment.cgroup {
            Some(root) => match root.cell(cell_id) {
                Ok(cg) => Some(cg),
                Err(e) => {
                    tracing::warn!(event = "cell.cgroup.failed", cell = %cell_id, error = %e, "cell runs without a cgroup");
                    None
                }
            },
            None => None,
        };

        let memory = match (&self.memory, &cgroup, self.config.memory_limit) {
            (Some(root), Some(_), Some(limit)) => match root.cell(cell_id, limit) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(event = "cell.memory_limit_failed", cell = %cell_id, error = %e, "cell runs without a kernel memory limit");
                    None
                }
            },
            _ => None,
        };

        (cgroup, memory)
    }

    /// The leader's command: the spec's program, args and environment with
    /// the tag, in a group of its own, joining its cgroups before exec.
    fn command(
        &self,
        spec: &CellSpec,
        tag: &CellTag,
        cgroup: Option<&CellCgroup>,
        memory: Option<&crate::os::memcg::CellMemory>,
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(&spec.program);
        if spec.clean_env {
            cmd.env_clear();
        }
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .envs(tag.vars())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        if let Some(fd) = memory.and_then(|m| m.procs_fd()).map(|fd| fd.as_raw_fd()) {
            // SAFETY: as below: one raw write to an fd number captured by
            // copy, kept open by the caller's `memory` until the spawn returns.
            unsafe {
                cmd.pre_exec(move || {
                    // Join the v1 memory cgroup before anything can allocate
                    // much or fork.
                    rustix::io::write(rustix::fd::BorrowedFd::borrow_raw(fd), b"0")?;
                    Ok(())
                });
            }
        }
        if let Some(fd) = cgroup.map(|c| c.procs_fd().as_raw_fd()) {
            // SAFETY: runs in the child between fork and exec, where only
            // async-signal-safe calls are allowed: one raw write through
            // rustix to an fd number captured by copy (kept open by the caller's
            // `cgroup` until after the spawn returns). No allocation, no lock.
            unsafe {
                cmd.pre_exec(move || {
                    // Join the cell's cgroup before anything else can fork.
                    rustix::io::write(rustix::fd::BorrowedFd::borrow_raw(fd), b"0")?;
                    Ok(())
                });
            }
        }
        if self.containment.pdeathsig {
            crate::os::die_with_parent(&mut cmd, rustix::process::Signal::KILL);
        }
        crate::private_fs::restore_umask_in_child(&mut cmd);
        cmd
    }

    /// Reaps zombie children that are neither cell leaders nor sentinels:
    /// orphans adopted as subreaper that exited on their own. A process
    /// hosting cells must not have other children it waits for itself.
    /// Returns the pids reaped.
    pub fn reap_orphans(&self) -> Vec<i32> {
        let protected = protected().lock().expect("protected lock").clone();
        let mut reaped = Vec::new();
        for pid in self.containment.procs.zombie_children() {
            if protected.contains(&pid) {
                continue;
            }
            if let Some(p) = procs::pid(pid) {
                if let Ok(Some(_)) =
                    rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG)
                {
                    reaped.push(pid);
                }
            }
        }
        reaped
    }

    /// Samples many cells with one /proc scan (plus their cgroups). It reads
    /// a file per process on the machine: call it off the async threads
    /// (`spawn_blocking`).
    pub fn sample_all<'a>(
        &self,
        cells: impl IntoIterator<Item = &'a CellHandle>,
    ) -> Vec<CellSample> {
        let mut by_cell = procs::by_tag(&self.containment.procs.tagged_scan(), tag::CELL_VAR);
        cells
            .into_iter()
            .map(|c| {
                let mut members = by_cell.remove(&c.inner.tag.cell_id).unwrap_or_default();
                c.inner.add_cgroup_members(&mut members);
                let mut s = observe::summarize(
                    &c.inner.tag.cell_id,
                    c.inner.pid,
                    members,
                    c.inner.spawned_at.elapsed(),
                );
                s.oom_kills = c.inner.oom_kills();
                s
            })
            .collect()
    }

    /// Clean shutdown of the layer itself (cells are torn down by their
    /// owners first): stops the sentinel, removes the cgroup root and the
    /// ledger when no cell is left in it.
    pub async fn shutdown(&self) {
        // Teardowns whose slots were released may still be scanning for
        // escapees: the sentinel stays up until they are done.
        self.end_unclaimed().await;
        self.teardowns.close();
        self.teardowns.wait().await;
        let sentinel = self.sentinel.lock().expect("sentinel lock").take();
        if let Some(s) = sentinel {
            let pid = s.pid() as i32;
            let _ = tokio::task::spawn_blocking(move || s.stop()).await;
            protected().lock().expect("protected lock").remove(&pid);
        }
        if let Some(root) = &self.containment.cgroup {
            root.remove();
        }
        if let Some(m) = &self.memory {
            m.remove();
        }
        if self.ledger.live_cells().is_empty() {
            let _ = self.ledger.remove();
        }
        self.reap_orphans();
    }
}
