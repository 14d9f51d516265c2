//! What the operating system offers hum, behind one interface.
//!
//! hum's containment has a portable floor that every Unix gives: a process
//! group per cell, the environment tag found through the OS process table
//! (`procs/`), the sentinel woken by a pipe's EOF, the ledger with pid
//! and start time, one teardown ladder. Linux adds mechanisms on top: a
//! cgroup v2 per cell, the worker as child subreaper, PR_SET_PDEATHSIG on
//! each leader, pidfds, `/proc` read directly. Those live in `linux/`, the
//! only place they are compiled; `other.rs` stands in for them elsewhere
//! (macOS) with types that cannot be built, so code using a cgroup or a
//! pidfd type-checks everywhere and is simply never reached off Linux.
//!
//! Which file is compiled is decided here, once; nothing else in hum names a
//! target OS. Paths that differ by OS (`paths.rs`) are pure functions of the
//! OS kind, so the macOS ones are tested on Linux too.

pub mod installed;
pub mod paths;
pub mod procs;

#[cfg(target_os = "linux")]
#[path = "linux/mod.rs"]
mod imp;

#[cfg(not(target_os = "linux"))]
#[path = "other.rs"]
mod imp;

pub use imp::{
    cgroup, die_with_parent, lower_this_threads_priority, memcg, native_table, pidfd_available,
    return_freed_memory, set_subreaper, PidFd, EXTRA_MECHANISMS,
};

/// The OS hum was built for.
// The variants are the systems' names ("macOS"), not an `Os` suffix.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    MacOs,
    /// Another Unix: the portable floor and Linux-like paths.
    OtherUnix,
}

/// This build's OS.
pub const HOST: Os = if cfg!(target_os = "linux") {
    Os::Linux
} else if cfg!(target_os = "macos") {
    Os::MacOs
} else {
    Os::OtherUnix
};
