//! An outbox whose lines the caller takes ([`Outbox::channel`]): the
//! same queue limits, overflow and closing as one written to a socket.

use thrum::{Limits, Outbox, SendError, Tone};
use tokio::time::timeout;

mod common;
use common::PROMPTLY;

fn chunk(text: &str) -> Tone {
    common::chunk("s", text)
}

fn delta_of(line: &[u8]) -> String {
    assert_eq!(line.last(), Some(&b'\n'), "a line keeps its newline");
    match &Tone::decode(&line[..line.len() - 1]).unwrap().body {
        thrum::Body::Chunk(c) => c.delta.clone().unwrap(),
        other => panic!("not a chunk: {other:?}"),
    }
}

#[tokio::test]
async fn lines_come_in_order_and_free_their_room_once_taken() {
    let (outbox, mut lines) = Outbox::channel(Limits::default(), "in-process");
    for i in 0..5 {
        outbox.try_send(&chunk(&format!("w{i}"))).unwrap();
    }
    assert!(outbox.queued_bytes() > 0);
    let first = timeout(PROMPTLY, lines.recv()).await.unwrap().unwrap();
    assert_eq!(delta_of(&first), "w0");
    let mut rest = Vec::new();
    while let Some(line) = lines.try_recv() {
        rest.push(delta_of(&line));
    }
    assert_eq!(rest, ["w1", "w2", "w3", "w4"]);
    assert_eq!(outbox.queued_bytes(), 0, "taken lines still hold room");
    assert!(lines.try_recv().is_none(), "nothing is queued");
    assert!(!outbox.is_closed());
}

#[tokio::test]
async fn a_graceful_close_gives_every_line_queued_before_it_then_ends() {
    let (outbox, mut lines) = Outbox::channel(Limits::default(), "in-process");
    outbox.try_send(&chunk("last words")).unwrap();
    outbox.close();
    assert!(!outbox.is_closed(), "closed before its lines were taken");
    let line = timeout(PROMPTLY, lines.recv()).await.unwrap().unwrap();
    assert_eq!(delta_of(&line), "last words");
    assert!(timeout(PROMPTLY, lines.recv()).await.unwrap().is_none());
    timeout(PROMPTLY, outbox.closed()).await.unwrap();
    assert!(matches!(
        outbox.try_send(&chunk("late")),
        Err(SendError::Closed)
    ));
}

#[tokio::test]
async fn a_taker_that_does_not_take_overflows_the_queue_and_closes_it() {
    let limits = Limits {
        max_line: 2048,
        outbox_bytes: 4096,
    };
    let (outbox, mut lines) = Outbox::channel(limits, "in-process");
    let big = "x".repeat(1000);
    let mut sent = 0;
    let overflow = loop {
        match outbox.try_send(&chunk(&big)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100, "a 4 KiB queue took {sent} lines of 1 KB");
    };
    assert!(matches!(overflow, SendError::Overflow { .. }), "{overflow}");
    assert!(outbox.is_closed());
    // Closed by overflow: what was queued is dropped, as a socket's would be.
    assert!(timeout(PROMPTLY, lines.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn dropping_the_taker_closes_the_outbox() {
    let (outbox, lines) = Outbox::channel(Limits::default(), "in-process");
    drop(lines);
    assert!(outbox.is_closed());
    timeout(PROMPTLY, outbox.closed()).await.unwrap();
    assert!(matches!(
        outbox.send(&chunk("nobody")).await,
        Err(SendError::Closed)
    ));
}

#[tokio::test]
async fn an_abort_ends_the_taker_at_once() {
    let (outbox, mut lines) = Outbox::channel(Limits::default(), "in-process");
    outbox.try_send(&chunk("dropped")).unwrap();
    outbox.abort();
    assert!(timeout(PROMPTLY, lines.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn the_last_sender_gone_ends_the_taker() {
    let (outbox, mut lines) = Outbox::channel(Limits::default(), "in-process");
    outbox.try_send(&chunk("before")).unwrap();
    drop(outbox);
    let line = timeout(PROMPTLY, lines.recv()).await.unwrap().unwrap();
    assert_eq!(delta_of(&line), "before");
    assert!(timeout(PROMPTLY, lines.recv()).await.unwrap().is_none());
}
