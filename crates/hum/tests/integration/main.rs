//! hum's integration tests, in one binary (but `tests/cells.rs`, below) (one link, one copy of the
//! shared rig, and the test harness runs them all on the machine's cores
//! without gaps between files). Each module is one subject; run one with
//! `cargo test -p hum --test integration -- <module>::`.
//!
//! - [`common`]: the rig: a sandbox per test, the leak check every test
//!   ends with, the simulator driver, the shared daemon/worker/gateway
//!   [`crate::common::stack::Stack`], the mock Messages API for the real CLI.
//! - The agent and its cell: [`sim_protocol`], [`sim_knobs`] (the
//!   simulator matches the real CLI), [`cells_host`] (the cell layer when
//!   its host process dies). The cell layer run in the test process itself
//!   is `tests/cells.rs`, a binary of its own: it makes its process a child
//!   subreaper that reaps every zombie child it does not protect, which
//!   would take the other tests' children from under them.
//! - The pool policy alone: [`pool_props`] (property tests, no processes).
//! - The running system: [`worker`], [`daemon`], [`fault_matrix`],
//!   [`hardening`], [`gateway`], [`ollama`] (the Ollama door), [`up`], [`usage`] (usage, budgets),
//!   [`memory`] (memory pressure, per-cell limits, OOM kills), [`top`]
//!   (`hum top` in tmux),
//!   [`demo`], [`bench_cmd`], [`restart`] (humd restarted under a herd),
//!   [`strangers`] (another local user, part two), and the
//!   real `claude` CLI in [`real_claude`].

mod common;

mod acp;
mod acp_faults;
mod bench_cmd;
mod cells_host;
mod cluster;
mod cluster_hosts;
mod cluster_tls;
mod cluster_tools;
mod cluster_turns;
mod cluster_up;
mod daemon;
mod demo;
mod fault_matrix;
mod frameworks;
mod gateway;
mod hardening;
mod hum_acp;
mod memory;
mod old_wire;
mod ollama;
mod pool_props;
mod provides;
mod real_acp;
mod real_claude;
mod restart;
mod sim_knobs;
mod sim_protocol;
mod strangers;
mod tools;
mod top;
mod up;
mod usage;
mod worker;
