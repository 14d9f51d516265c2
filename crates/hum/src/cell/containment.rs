//! Which containment mechanisms a worker uses, chosen once at start.
//!
//! The portable floor, on every OS: a process group per cell, the
//! environment tag found through the process table, the sentinel, the
//! ledger. On Linux, unless `HUM_CONTAINMENT=portable` (or the config's
//! `containment`) asks for the floor alone: the worker as child subreaper,
//! PR_SET_PDEATHSIG on each cell leader, pidfds, `/proc` read directly, and a
//! cgroup v2 per cell when one can be made. What each OS offers comes from
//! [`crate::os`]; this file only decides.

use super::cgroup::CgroupRoot;
use super::procs::Procs;
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

/// Which backend: everything the OS offers, or the portable floor alone.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ContainmentMode {
    /// Everything this OS offers (on macOS that is the portable floor).
    #[default]
    Auto,
    /// The portable floor only: what macOS has. On Linux it is the
    /// executable stand-in for a Mac.
    Portable,
}

/// The variable that selects the backend; the config's `containment` sets
/// it for the worker.
pub const CONTAINMENT_ENV: &str = "HUM_CONTAINMENT";

impl ContainmentMode {
    /// The mode from `HUM_CONTAINMENT` (`portable`; anything else, or unset,
    /// is auto).
    pub fn from_env() -> ContainmentMode {
        match std::env::var(CONTAINMENT_ENV).map(|v| v.to_ascii_lowercase()) {
            Ok(v) if v == "portable" => ContainmentMode::Portable,
            _ => ContainmentMode::Auto,
        }
    }

    /// The process table this mode uses.
    pub fn procs(self) -> super::Procs {
        match self {
            ContainmentMode::Portable => super::Procs::portable(),
            ContainmentMode::Auto => super::Procs::native(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ContainmentMode::Auto => "auto",
            ContainmentMode::Portable => "portable",
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
    /// The portable floor: process group, environment tag through the
    /// process table, sentinel and ledger; `not_used` names what the OS
    /// offers that it leaves out (empty on macOS, which offers nothing more).
    Portable { not_used: Vec<String> },
}

/// What was found and set up at start.
#[derive(Debug)]
pub struct Containment {
    pub cgroup: Option<CgroupRoot>,
    pub mechanism: Mechanism,
    /// The worker adopts orphaned descendants (PR_SET_CHILD_SUBREAPER).
    pub subreaper: bool,
    /// Cell leaders get SIGKILL when the worker's spawner thread dies.
    pub pdeathsig: bool,
    /// How processes are looked at and signalled (table and pidfds).
    pub procs: Procs,
}

impl Containment {
    /// Detects and sets up containment for worker instance `instance`.
    pub fn establish(instance: &str, mode: ContainmentMode, cgroups: CgroupMode) -> Containment {
        let native = Procs::native();
        // On an OS with nothing beyond the floor, auto is the floor.
        let portable = mode == ContainmentMode::Portable || crate::os::EXTRA_MECHANISMS.is_empty();
        if portable {
            return Containment {
                cgroup: None,
                mechanism: Mechanism::Portable {
                    not_used: crate::os::EXTRA_MECHANISMS
                        .iter()
                        .map(|m| (*m).to_owned())
                        .collect(),
                },
                subreaper: false,
                pdeathsig: false,
                procs: Procs::portable(),
            };
        }
        let subreaper = crate::os::set_subreaper().is_ok();
        let cgroup = match cgroups {
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
            pdeathsig: true,
            procs: native,
        }
    }
}
