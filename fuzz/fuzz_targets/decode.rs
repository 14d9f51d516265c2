//! Fuzzes the decoder with any bytes: framing with a small limit (so the
//! over-long path is exercised too), then decoding each line. Nothing may
//! panic, the framer may never hold more than its limit, and every tone that
//! decodes must encode and decode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thrum::{FrameEvent, LineFramer, Tone};

const LIMIT: usize = 4096;

fn check_line(line: &[u8]) {
    if let Ok(tone) = Tone::decode(line) {
        let encoded = tone
            .encode_line(usize::MAX)
            .expect("a decoded tone encodes");
        assert_eq!(encoded.iter().filter(|b| **b == b'\n').count(), 1);
        let again = Tone::decode(&encoded[..encoded.len() - 1]).expect("an encoded tone decodes");
        assert_eq!(again, tone);
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the input is cut, so chunk boundaries vary.
    let (step, data) = match data.split_first() {
        Some((s, rest)) => (*s as usize % 64 + 1, rest),
        None => return,
    };
    let mut framer = LineFramer::new(LIMIT);
    let mut rest = data;
    while !rest.is_empty() {
        let take = step.min(rest.len());
        let (used, event) = framer.feed(&rest[..take]);
        assert!(used >= 1 && used <= take);
        assert!(framer.buffered() <= LIMIT);
        rest = &rest[used..];
        if event == Some(FrameEvent::Line) {
            check_line(framer.line());
        }
    }
    if framer.finish() == Some(FrameEvent::Line) {
        check_line(framer.line());
    }
    // The whole input as one line, too.
    check_line(data);
});
