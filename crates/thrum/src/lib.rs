//! # thrum — the wire hum speaks
//!
//! One UTF-8 JSON object per line over a Unix stream socket (protocol 0.7.0).
//! Any Rust bee can depend on this crate alone.
//!
//! Map of the crate, one concern per file:
//!
//! - [`tone`]: the [`Tone`] type — an envelope plus a typed body per known `chi`,
//!   with unknown chis and unknown fields kept so they survive forwarding.
//! - [`bodies`]: the typed bodies (`hello`, `prompt`, `chunk`, …).
//! - [`frame`]: sans-I/O NDJSON framing with a hard line-length limit.
//! - [`codec`]: async line and tone readers/writers built on [`frame`].
//! - [`connection`]: a socket split into an [`Inbox`] and a cloneable
//!   [`Outbox`] with a bounded outbound queue.
//! - [`budget`]: a byte budget shared by many readers (bounded totals).
//! - [`stats`]: counters every reader and connection keeps.
//! - [`socket`]: where the daemon's socket lives.
//! - [`ids`]: `sigil` and `rid`, exactly as specified.
//! - [`vocab`]: the wire's words (error codes, pulse and chunk kinds,
//!   roles), each spelled once.
//! - [`usage`]: what a turn used and cost, read one way.
//! - [`tools`]: what a tool's name may be, and the reserved permit tool.

pub mod bodies;
pub mod budget;
pub mod codec;
pub mod connection;
pub mod frame;
pub mod ids;
pub mod peer;
pub mod socket;
pub mod stats;
pub mod tone;
pub mod tools;
pub mod usage;
pub mod vocab;

pub use bodies::*;
pub use budget::{BudgetExceeded, ByteBudget};
pub use codec::{Inbound, InboundRaw, LineReader, RawLine, Rejected, ToneReader, ToneWriter};
pub use connection::{Connection, Inbox, Limits, Lines, Offer, Outbox, SendError};
pub use frame::{each_line, FrameEvent, LineFramer, DEFAULT_MAX_LINE};
pub use ids::{rid, sigil};
pub use socket::{
    connect, connect_unchecked, socket_path, socket_path_for, socket_path_from, RuntimeDirs,
};
pub use stats::WireStats;
pub use tone::{
    members_at_most, Body, DecodeError, EncodeError, Envelope, Head, RawTone, Tone, MAX_MEMBERS,
};
pub use usage::{Billing, ModelUsage, Usage};
pub use vocab::{ChunkType, Decision, ErrorCode, FinishReason, PulseKind, Role};

/// The protocol version this crate speaks. A peer announcing another version
/// gets a warning, not an error.
pub const PROTO_VERSION: &str = "0.7.0";
