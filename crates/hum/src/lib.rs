//! # hum
//!
//! A bounded pool of agent CLI processes ("cells") shared by many long-lived
//! agent sessions ("bees"), which never leaks a process. The wire lives in
//! the `thrum` crate; this crate holds everything else.
//!
//! Map of the crate:
//!
//! - [`cli`]: the `hum` command line and its subcommands.
//! - [`sim`]: `hum sim-agent`, a faithful stand-in for the `claude` CLI with
//!   knobs for every failure hum must survive.
//!
//! Still to come, one layer each: `cell` (containment, teardown, ledger),
//! `pool` (pure policy: events in, commands out), `hive` adapters, `worker`,
//! `daemon`.

pub mod cli;
pub mod sim;
