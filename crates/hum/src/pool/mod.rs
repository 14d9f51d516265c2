//! # The pool policy: a pure state machine
//!
//! Events in (a prompt arrived, a cell showed its first event, a turn ended,
//! a cell exited, a teardown finished, cancel, cleanup, a tick), commands out
//! (spawn, send, interrupt, tear down, end a turn). No I/O and no clock: the
//! caller passes the time with every event, so the policy is tested with
//! property tests and no processes at all ([`Pool::handle`]).
//!
//! The rules, each one a promise of the brief:
//!
//! - **The cap is on processes, not rows.** Cells in every state —
//!   bootstrapping, busy, idle, tearing down — count against
//!   `max_active_cells`; a slot frees only when its teardown is done.
//! - **One cell per sid.** A sid whose cell is tearing down waits for it to
//!   be gone before a new one is spawned.
//! - **Work in flight is never evicted.** Only idle cells are evicted (least
//!   recently used first), and only as many as waiting prompts can use.
//! - **FIFO admission.** Waiting turns are kept in arrival order; a turn
//!   that needs a new cell never overtakes an earlier one that also does;
//!   turns of one sid run one at a time, in order, on that sid's cell.
//! - At most `max_concurrent_spawns` cells bootstrap at once.
//! - **Nothing is dropped silently.** Every turn ends with exactly one
//!   [`Command::End`]: done, cancelled, or an error (`overloaded` with a
//!   retry hint, `cell_timeout`, `cell_died`, `spawn_failed`, …).

mod admission;
mod policy;
mod types;

pub use policy::*;
pub use types::*;
