//! In-process wire costs: decoding and encoding tones, framing a stream.
//! `cargo bench -p thrum --bench wire`

use thrum::{Chunk, ChunkType, FrameEvent, LineFramer, Tone};

fn main() {
    divan::main();
}

fn chunk_line() -> Vec<u8> {
    let tone = Tone::new(Chunk {
        chunk_type: ChunkType::TextDelta,
        block_idx: Some(0),
        delta: Some(" hello".into()),
        partial_json: None,
        usage: None,
        extra: Default::default(),
    })
    .with_sid("bee-07")
    .with_rid("mik5tpmo-11");
    let mut line = tone.encode_line(usize::MAX).unwrap();
    line.pop();
    line
}

#[divan::bench]
fn decode_chunk(bencher: divan::Bencher) {
    let line = chunk_line();
    bencher.bench(|| Tone::decode(divan::black_box(&line)).unwrap());
}

#[divan::bench]
fn encode_chunk(bencher: divan::Bencher) {
    let tone = Tone::decode(&chunk_line()).unwrap();
    bencher.bench(|| {
        divan::black_box(&tone)
            .encode_line(thrum::DEFAULT_MAX_LINE)
            .unwrap()
    });
}

#[divan::bench]
fn frame_1000_lines(bencher: divan::Bencher) {
    let mut stream = Vec::new();
    for _ in 0..1000 {
        stream.extend(chunk_line());
        stream.push(b'\n');
    }
    bencher
        .counter(divan::counter::BytesCount::new(stream.len()))
        .bench(|| {
            let mut framer = LineFramer::new(thrum::DEFAULT_MAX_LINE);
            let mut rest = &stream[..];
            let mut lines = 0;
            while !rest.is_empty() {
                let (used, ev) = framer.feed(&rest[..rest.len().min(8192)]);
                rest = &rest[used..];
                if ev == Some(FrameEvent::Line) {
                    lines += 1;
                }
            }
            lines
        });
}
