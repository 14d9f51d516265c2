//! What the connection tests share.

use std::time::Duration;
use thrum::{Chunk, ChunkType, Tone};

/// Generous bound for things that should happen at once; only a broken
/// implementation ever waits this long.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// A text delta of `sid`.
pub fn chunk(sid: &str, text: &str) -> Tone {
    Tone::new(Chunk {
        chunk_type: ChunkType::TextDelta,
        block_idx: Some(0),
        delta: Some(text.to_owned()),
        partial_json: None,
        usage: None,
        extra: Default::default(),
    })
    .with_sid(sid)
}
