//! A tree of processes named by what finds its members (group, tag,
//! cgroup), owned, so a scan of the machine for it can run on any thread:
//! a blocking one for the ladder (`teardown.rs`), the hunter's for a hunt
//! (`hunter.rs`).

use super::procs::{self, ProcStat, Procs};
use super::teardown::Proof;

/// A tree's identity, owned, for scanning it on any thread.
#[derive(Debug, Clone)]
pub(super) struct Census {
    pub(super) procs: Procs,
    pub(super) tag: Vec<u8>,
    pub(super) pgid: Option<i32>,
    pub(super) cgroup: Option<std::path::PathBuf>,
    pub(super) own_leader: Option<i32>,
    pub(super) proof: Proof,
    pub(super) unclaimed: Option<super::unclaimed::Unclaimed>,
}

impl Census {
    pub(super) fn members(&self) -> Vec<ProcStat> {
        self.members_in(&self.procs.tagged_scan())
    }

    /// [`Census::members`] as `scan` saw them.
    fn members_in(&self, scan: &[procs::Proc]) -> Vec<ProcStat> {
        let mut found = procs::members_in(scan, &self.tag, self.pgid);
        if let Some(dir) = &self.cgroup {
            for pid in super::cgroup::pids_in(dir) {
                if !found.iter().any(|s| s.pid == pid) {
                    if let Some(s) = self.procs.stat(pid).filter(|s| !s.exited()) {
                        found.push(s);
                    }
                }
            }
        }
        if let Some(unclaimed) = &self.unclaimed {
            for s in unclaimed.among(scan) {
                if !found.iter().any(|f| f.pid == s.pid) {
                    found.push(s);
                }
            }
        }
        if let Some(leader) = self.own_leader {
            found.retain(|s| s.pid != leader);
        }
        found
    }

    /// Nothing left but the leader, whose exit the caller checks. A cgroup
    /// that still holds a process says so for the price of one small
    /// read: the scan of every process on the machine waits until it
    /// does not, and is not made at all on [`Proof::CgroupEmpty`].
    pub(super) fn gone(&self) -> bool {
        self.gone_by(|| self.members())
    }

    /// [`Census::gone`], with `scan` for the scan (one that began after
    /// the caller asked).
    pub(super) fn gone_in(&self, scan: &[procs::Proc]) -> bool {
        self.gone_by(|| self.members_in(scan))
    }

    fn gone_by(&self, members: impl FnOnce() -> Vec<ProcStat>) -> bool {
        let populated = self.cgroup.as_deref().map(super::cgroup::populated_state);
        match (populated, self.proof) {
            (Some(Some(true)), _) => false,
            (Some(Some(false)), Proof::CgroupEmpty) => true,
            // No cgroup, or one that could not be read (which proves
            // nothing): the scan decides.
            _ => members().is_empty(),
        }
    }
}
