//! # The HTTP front door (in progress)
//!
//! - [`affinity`]: which sid an HTTP request belongs to.

pub mod affinity;
