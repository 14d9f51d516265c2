//! Which containment mechanisms this machine offers, chosen once at start.
//!
//! Always on (Linux): a process group per cell, the environment tag, the
//! worker as child subreaper, PR_SET_PDEATHSIG on each cell leader, and the
//! sentinel. Added when possible: a cgroup v2 per cell. pidfds are used for
//! the leader when the kernel has them.

use super::cgroup::CgroupRoot;
use serde::Serialize;

/// Whether to use cgroups: `HUM_CGROUPS=off` (or the config) forces the
/// fallback, which tests use to prove the fallback alone keeps every promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    #[default]
    Auto,
    Off,
}

impl CgroupMode {
    /// The mode from `HUM_CGROUPS` (`off`, `0`, `false`, `no` mean off).
    pub fn from_env() -> CgroupMode {
        match std::env::var("HUM_CGROUPS").map(|v| v.to_ascii_lowercase()) {
            Ok(v) if ["off", "0", "false", "no"].contains(&v.as_str()) => CgroupMode::Off,
            _ => CgroupMode::Auto,
        }
    }
}

/// The mechanism that bounds a cell's tree, as status output shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mechanism {
    /// A cgroup per cell under `root`, plus everything below.
    Cgroup { root: String },
    /// Process group, environment tag and subreaper only.
    ProcessGroup { why_not_cgroup: String },
}

/// What was found and set up at start.
#[derive(Debug)]
pub struct Containment {
    pub cgroup: Option<CgroupRoot>,
    pub mechanism: Mechanism,
    /// The worker adopts orphaned descendants (PR_SET_CHILD_SUBREAPER).
    pub subreaper: bool,
    /// The kernel offers pidfds.
    pub pidfd: bool,
}

impl Containment {
    /// Detects and sets up containment for worker instance `instance`.
    pub fn establish(instance: &str, mode: CgroupMode) -> Containment {
        let subreaper =
            rustix::process::set_child_subreaper(Some(rustix::process::getpid())).is_ok();
        let cgroup = match mode {
            CgroupMode::Off => Err("disabled (HUM_CGROUPS=off)".to_owned()),
            CgroupMode::Auto => CgroupRoot::create(instance),
        };
        let (cgroup, mechanism) = match cgroup {
            Ok(root) => {
                let mechanism = Mechanism::Cgroup {
                    root: root.dir().display().to_string(),
                };
                (Some(root), mechanism)
            }
            Err(why_not_cgroup) => (None, Mechanism::ProcessGroup { why_not_cgroup }),
        };
        Containment {
            cgroup,
            mechanism,
            subreaper,
            pidfd: pidfd_available(),
        }
    }
}

/// Whether `pidfd_open` works here (Linux 5.3+).
pub fn pidfd_available() -> bool {
    rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .is_ok()
}
