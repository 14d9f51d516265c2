//! A kernel memory limit per cell, so the OOM killer acts inside the cell
//! that outgrew its limit and nowhere else.
//!
//! Where the cells' cgroup v2 hierarchy can have the memory controller
//! (enabled in the worker's cgroup and the per-instance one), each cell's
//! cgroup gets `memory.max` (and `memory.swap.max` 0: a runaway is killed,
//! not swapped, which would slow the whole machine). On a hybrid machine
//! (cgroup v1 controllers, an empty v2 hierarchy: this kind of CI machine)
//! the cell also joins a cgroup of its own in the v1 memory hierarchy, below
//! the worker's, with `memory.limit_in_bytes`. Either way the kernel counts
//! OOM kills per cell (`memory.events` / `memory.oom_control`: `oom_kill`).

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::io;
use std::path::{Path, PathBuf};

/// Where the cells' memory limits live.
#[derive(Debug)]
pub struct MemoryRoot {
    dir: PathBuf,
    v1: bool,
}

/// One cell's memory cgroup.
#[derive(Debug)]
pub struct CellMemory {
    dir: PathBuf,
    v1: bool,
    /// v1: `cgroup.procs` of its own memory cgroup, written "0" by the
    /// child before exec. v2: none (the cell's cgroup is its memory cgroup).
    procs: Option<OwnedFd>,
}

fn has_memory(controllers_file: &Path) -> bool {
    std::fs::read_to_string(controllers_file)
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
}

/// Enables the memory controller below `dir` (and below its parent, where
/// it must be enabled first); false when the kernel refuses (a parent with
/// processes of its own, a controller not delegated).
fn enable_memory_below(dir: &Path) -> bool {
    let Some(parent) = dir.parent() else {
        return false;
    };
    if !has_memory(&parent.join("cgroup.subtree_control"))
        && std::fs::write(parent.join("cgroup.subtree_control"), b"+memory").is_err()
    {
        return false;
    }
    std::fs::write(dir.join("cgroup.subtree_control"), b"+memory").is_ok()
        || has_memory(&dir.join("cgroup.subtree_control"))
}

/// This process's cgroup in the v1 memory hierarchy, as a directory.
fn own_v1_memory_dir() -> Result<PathBuf, String> {
    let me =
        procfs::process::Process::myself().map_err(|e| format!("cannot read /proc/self: {e}"))?;
    let mount = me
        .mountinfo()
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?
        .into_iter()
        .find(|m| m.fs_type == "cgroup" && m.super_options.contains_key("memory"))
        .ok_or_else(|| "no cgroup v1 memory hierarchy is mounted".to_owned())?;
    let own = me
        .cgroups()
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?
        .into_iter()
        .find(|g| g.controllers.iter().any(|c| c == "memory"))
        .ok_or_else(|| "this process is in no v1 memory cgroup".to_owned())?;
    Ok(mount.mount_point.join(own.pathname.trim_start_matches('/')))
}

/// What a worker started here would get for `nest.maxCellRssMb`, read
/// without changing anything (for `hum doctor`): the kind, or why none.
pub fn describe() -> Result<String, String> {
    let own = crate::os::cgroup::own_cgroup_dir();
    if let Ok(own) = &own {
        if has_memory(&own.join("cgroup.subtree_control")) {
            return Ok(format!(
                "cgroup v2 memory.max per cell (the controller is enabled below {})",
                own.display()
            ));
        }
        if has_memory(&own.join("cgroup.controllers")) {
            return Ok(format!(
                "cgroup v2 memory.max per cell, if {} holds no process of its own when the worker enables the controller",
                own.display()
            ));
        }
    }
    match own_v1_memory_dir() {
        Ok(dir) if dir.is_dir() => Ok(format!(
            "cgroup v1 memory.limit_in_bytes per cell, below {}",
            dir.display()
        )),
        Ok(dir) => Err(format!("{} does not exist", dir.display())),
        Err(e) => Err(format!(
            "no memory controller for the cells' cgroups ({e}); hum's 1 s sampling enforces the limits alone"
        )),
    }
}

impl MemoryRoot {
    /// Sets up memory limits for the cells of `instance`: in its cgroup v2
    /// directory `v2_root` when the memory controller can be had there, else
    /// in the v1 memory hierarchy. The reason when neither works.
    pub fn create(instance: &str, v2_root: &Path) -> Result<MemoryRoot, String> {
        if enable_memory_below(v2_root) {
            return Ok(MemoryRoot {
                dir: v2_root.to_path_buf(),
                v1: false,
            });
        }
        let own = own_v1_memory_dir().map_err(|e| {
            format!("cgroup v2 has no memory controller for the cells here, and {e}")
        })?;
        // (A dead instance's root is removed by the sweep that ends its
        // cells, `remove_stale`: never a sibling's here, which may be a
        // live worker's between making a cell's cgroup and its joining.)
        let dir = own.join(format!("hum-{instance}"));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(MemoryRoot { dir, v1: true })
    }

    /// `cgroup v2 memory.max` or `cgroup v1 memory.limit_in_bytes`.
    pub fn kind(&self) -> &'static str {
        if self.v1 {
            "cgroup v1 memory.limit_in_bytes"
        } else {
            "cgroup v2 memory.max"
        }
    }

    /// The memory cgroup of one cell, limited to `limit` bytes. With v2 the
    /// cell's cgroup (made by `CgroupRoot::cell`) must exist already.
    pub fn cell(&self, cell_id: &str, limit: u64) -> io::Result<CellMemory> {
        let dir = self.dir.join(cell_id);
        if self.v1 {
            std::fs::create_dir(&dir)?;
            let set = || -> io::Result<OwnedFd> {
                std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
                // Memory + swap at the same limit: no swapping past it. Not
                // every kernel accounts swap; the memory limit stands anyway.
                let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
                Ok(rustix::fs::open(
                    dir.join("cgroup.procs"),
                    OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?)
            };
            match set() {
                Ok(fd) => Ok(CellMemory {
                    dir,
                    v1: true,
                    procs: Some(fd),
                }),
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir);
                    Err(e)
                }
            }
        } else {
            std::fs::write(dir.join("memory.max"), limit.to_string())?;
            let _ = std::fs::write(dir.join("memory.swap.max"), b"0");
            Ok(CellMemory {
                dir,
                v1: false,
                procs: None,
            })
        }
    }

    /// Removes the v1 root and its empty cell cgroups (v2: the cgroup root
    /// does it).
    pub fn remove(&self) {
        if self.v1 {
            remove_tree(&self.dir);
        }
    }
}

/// Removes what a dead instance left in the v1 memory hierarchy (its
/// cells are gone: the sweep ended them first). Nothing on cgroup v2,
/// where the cells' own cgroups carried the limits.
pub fn remove_stale(instance: &str) {
    if let Ok(own) = own_v1_memory_dir() {
        let dir = own.join(format!("hum-{instance}"));
        if dir.exists() {
            remove_tree(&dir);
        }
    }
}

/// Removes a cgroup directory and its (empty) children; what still holds
/// processes stays.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl CellMemory {
    /// What the child writes "0" to, to join (v1 only).
    pub fn procs_fd(&self) -> Option<&OwnedFd> {
        self.procs.as_ref()
    }

    /// Processes the kernel's OOM killer ended in this cell.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Removes its v1 cgroup once empty (v2: the cell's cgroup goes with
    /// the cell).
    pub fn remove(&self) {
        if self.v1 {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}
