//! cgroup v2: one cgroup per cell, under a per-worker-instance directory in
//! the worker's own cgroup. A cgroup catches every descendant, setsid
//! escapees included, and `cgroup.kill` ends them all in one atomic write.
//!
//! Where it lives: the cgroup2 mount comes from /proc/self/mountinfo (on this
//! kind of machine `/sys/fs/cgroup/unified`, on a laptop `/sys/fs/cgroup`),
//! the worker's own cgroup from the `0::` line of /proc/self/cgroup. No
//! controllers are enabled, so the "no internal processes" rule never stands
//! in the way; all hum needs is `cgroup.procs`, `cgroup.events` and
//! `cgroup.kill` (Linux 5.14+).

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::io;
use std::path::{Path, PathBuf};

/// The directory of the cgroup this process is in, on the cgroup2 mount.
pub fn own_cgroup_dir() -> Result<PathBuf, String> {
    let me =
        procfs::process::Process::myself().map_err(|e| format!("cannot read /proc/self: {e}"))?;
    let mounts = me
        .mountinfo()
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mount = mounts
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .ok_or_else(|| "no cgroup2 filesystem is mounted".to_owned())?;
    let groups = me
        .cgroups()
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let own = groups
        .into_iter()
        .find(|g| g.hierarchy == 0)
        .ok_or_else(|| "/proc/self/cgroup has no cgroup2 (0::) line".to_owned())?;
    let rel = own.pathname.trim_start_matches('/');
    Ok(mount.mount_point.join(rel))
}

/// The per-instance directory holding one cgroup per cell.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
}

impl CgroupRoot {
    /// Creates `<own cgroup>/hum-<instance>`; fails with a reason when the
    /// hierarchy is missing, not writable, or too old for `cgroup.kill`.
    pub fn create(instance: &str) -> Result<CgroupRoot, String> {
        let own = own_cgroup_dir()?;
        let dir = own.join(format!("hum-{instance}"));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if !dir.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&dir);
            return Err("cgroup.kill is missing (Linux 5.14 or later is needed)".to_owned());
        }
        Ok(CgroupRoot { dir })
    }

    /// An existing directory, as recorded in a ledger (always one here;
    /// `None` only where the OS has no cgroups).
    pub fn at(dir: PathBuf) -> Option<CgroupRoot> {
        Some(CgroupRoot { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the cgroup of one cell.
    pub fn cell(&self, cell_id: &str) -> io::Result<CellCgroup> {
        let dir = self.dir.join(cell_id);
        std::fs::create_dir(&dir)?;
        CellCgroup::open(dir)
    }

    /// Every cell cgroup below this root.
    pub fn cells(&self) -> Vec<CellCgroup> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| CellCgroup::open(e.path()).ok())
            .collect()
    }

    /// Kills every cell below, then removes what is empty.
    pub fn kill_all(&self) {
        for cell in self.cells() {
            cell.kill();
        }
    }

    /// Removes the root and its empty cell cgroups; returns whether it is gone.
    pub fn remove(&self) -> bool {
        for cell in self.cells() {
            let _ = cell.remove();
        }
        std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists()
    }
}

/// One cell's cgroup.
#[derive(Debug)]
pub struct CellCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened before the fork so the child can join with a
    /// single write of "0" and no allocation.
    procs: OwnedFd,
}

impl CellCgroup {
    /// An existing cell cgroup, as recorded in a ledger.
    pub fn at(dir: PathBuf) -> io::Result<CellCgroup> {
        CellCgroup::open(dir)
    }

    fn open(dir: PathBuf) -> io::Result<CellCgroup> {
        let procs = rustix::fs::open(
            dir.join("cgroup.procs"),
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(CellCgroup { dir, procs })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The descriptor a forked child writes "0" to, to move itself in.
    pub fn procs_fd(&self) -> &OwnedFd {
        &self.procs
    }

    /// Pids in the cgroup (exited processes leave it at once).
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.dir)
    }

    /// Whether any process is still in the cgroup (or below it).
    pub fn populated(&self) -> bool {
        populated_at(&self.dir)
    }

    /// SIGKILLs everything in the cgroup, atomically.
    pub fn kill(&self) -> bool {
        std::fs::write(self.dir.join("cgroup.kill"), b"1").is_ok()
    }

    /// Removes the (empty) cgroup; gone already counts as removed.
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The processes directly in the cgroup at `dir`.
pub fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether any process is in the cgroup at `dir` (or below it).
pub fn populated_at(dir: &Path) -> bool {
    populated_state(dir).unwrap_or(false)
}

/// What `cgroup.events` says of the cgroup at `dir`: `None` when it could
/// not be read (no descriptor left, the directory gone), which proves
/// nothing either way.
pub fn populated_state(dir: &Path) -> Option<bool> {
    let events = std::fs::read_to_string(dir.join("cgroup.events")).ok()?;
    let line = events
        .lines()
        .find_map(|l| l.trim().strip_prefix("populated "))?;
    Some(line == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_whose_events_cannot_be_read_is_neither_empty_nor_populated() {
        let gone = Path::new("/sys/fs/cgroup/hum-no-such-cgroup-here");
        assert_eq!(populated_state(gone), None);
        // The old reading, kept for sampling, where absent means empty.
        assert!(!populated_at(gone));
    }
}
