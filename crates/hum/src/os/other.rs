//! Off Linux (macOS): nothing beyond the portable floor. The types here
//! stand in for Linux's cgroups and pidfds and cannot be built (enums
//! without variants), so every path that would use one is dead code the
//! compiler can see, not a runtime branch that might be taken.

use crate::os::procs::ProcessTable;
use rustix::process::{Pid, Signal, WaitIdOptions, WaitIdStatus};
use std::io;
use std::process::Command;

/// Nothing is added to the portable floor here.
pub const EXTRA_MECHANISMS: &[&str] = &[];

/// No native table: the portable one is the table.
pub fn native_table() -> Option<&'static dyn ProcessTable> {
    None
}

pub fn pidfd_available() -> bool {
    false
}

/// There is no child subreaper: orphans go to launchd (pid 1), where the
/// tag scan still finds them.
pub fn set_subreaper() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "this OS has no child subreaper",
    ))
}

/// There is no PR_SET_PDEATHSIG: the sentinel ends cells of a dead worker.
pub fn die_with_parent(_cmd: &mut Command, _sig: Signal) {}

/// Nice values are per process here, not per thread: the thread keeps the
/// process's priority rather than lowering all of it. (Its one user, the
/// hunt after a cgroup's release, runs only where there are cgroups.)
pub fn lower_this_threads_priority() -> std::io::Result<()> {
    Ok(())
}

/// The system allocator needs no tuning here.
pub fn return_freed_memory() {}

/// No pidfds off Linux.
#[derive(Debug)]
pub enum PidFd {}

impl PidFd {
    pub fn open(_pid: Pid) -> Option<PidFd> {
        None
    }

    pub fn send_signal(&self, _sig: Signal) -> io::Result<()> {
        match *self {}
    }

    pub fn wait(&self, _opts: WaitIdOptions) -> io::Result<Option<WaitIdStatus>> {
        match *self {}
    }
}

impl std::os::fd::AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match *self {}
    }
}

impl std::os::fd::AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match *self {}
    }
}

/// No cgroups off Linux: the same interface as `linux/cgroup.rs`, with
/// types that cannot exist.
pub mod cgroup {
    use rustix::fd::OwnedFd;
    use std::io;
    use std::path::{Path, PathBuf};

    const NONE: &str = "cgroups are a Linux mechanism";

    pub fn own_cgroup_dir() -> Result<PathBuf, String> {
        Err(NONE.to_owned())
    }

    #[derive(Debug)]
    pub enum CgroupRoot {}

    impl CgroupRoot {
        pub fn create(_instance: &str) -> Result<CgroupRoot, String> {
            Err(NONE.to_owned())
        }

        pub fn at(_dir: PathBuf) -> Option<CgroupRoot> {
            None
        }

        pub fn dir(&self) -> &Path {
            match *self {}
        }

        pub fn cell(&self, _cell_id: &str) -> io::Result<CellCgroup> {
            match *self {}
        }

        pub fn cells(&self) -> Vec<CellCgroup> {
            match *self {}
        }

        pub fn kill_all(&self) {
            match *self {}
        }

        pub fn remove(&self) -> bool {
            match *self {}
        }
    }

    #[derive(Debug)]
    pub enum CellCgroup {}

    impl CellCgroup {
        pub fn at(_dir: PathBuf) -> io::Result<CellCgroup> {
            Err(io::Error::new(io::ErrorKind::Unsupported, NONE))
        }

        pub fn dir(&self) -> &Path {
            match *self {}
        }

        pub fn procs_fd(&self) -> &OwnedFd {
            match *self {}
        }

        pub fn pids(&self) -> Vec<i32> {
            match *self {}
        }

        pub fn populated(&self) -> bool {
            match *self {}
        }

        pub fn kill(&self) -> bool {
            match *self {}
        }

        pub fn remove(&self) -> io::Result<()> {
            match *self {}
        }
    }

    pub fn pids_in(_dir: &Path) -> Vec<i32> {
        Vec::new()
    }

    pub fn populated_at(_dir: &Path) -> bool {
        false
    }

    pub fn populated_state(_dir: &Path) -> Option<bool> {
        None
    }
}

/// Kernel memory limits per cell are a cgroup mechanism: none here.
pub mod memcg {
    use rustix::fd::OwnedFd;
    use std::io;
    use std::path::Path;

    pub fn remove_stale(_instance: &str) {}

    pub fn describe() -> Result<String, String> {
        Err("no cgroups on this OS; hum's 1 s sampling enforces memory limits alone".to_owned())
    }

    #[derive(Debug)]
    pub enum MemoryRoot {}

    impl MemoryRoot {
        pub fn create(_instance: &str, _v2_root: &Path) -> Result<MemoryRoot, String> {
            Err("memory limits per cell need cgroups, a Linux mechanism".to_owned())
        }

        pub fn kind(&self) -> &'static str {
            match *self {}
        }

        pub fn cell(&self, _cell_id: &str, _limit: u64) -> io::Result<CellMemory> {
            match *self {}
        }

        pub fn remove(&self) {
            match *self {}
        }
    }

    #[derive(Debug)]
    pub enum CellMemory {}

    impl CellMemory {
        pub fn procs_fd(&self) -> Option<&OwnedFd> {
            match *self {}
        }

        pub fn oom_kills(&self) -> u64 {
            match *self {}
        }

        pub fn remove(&self) {
            match *self {}
        }
    }
}
