//! Connections over real Unix sockets: tones both ways, a slow peer cut off
//! without delaying anyone else, graceful close flushing what was queued.

use std::time::Duration;
use thrum::{Cancel, Connection, Inbound, Limits, SendError, Tone};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::timeout;

mod common;
use common::{chunk, PROMPTLY};

#[tokio::test]
async fn tones_travel_both_ways() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut left = Connection::unix(a, Limits::default(), "left");
    let mut right = Connection::unix(b, Limits::default(), "right");
    left.outbox.try_send(&chunk("s1", "ping")).unwrap();
    right
        .outbox
        .send(&Tone::new(Cancel::default()).with_sid("s2"))
        .await
        .unwrap();
    let got = timeout(PROMPTLY, right.inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Some(Inbound::Tone(chunk("s1", "ping"))));
    let got = timeout(PROMPTLY, left.inbox.recv()).await.unwrap().unwrap();
    assert_eq!(
        got,
        Some(Inbound::Tone(Tone::new(Cancel::default()).with_sid("s2")))
    );
    assert_eq!(left.outbox.stats().snapshot().tones_out, 1);
    assert_eq!(right.inbox.stats().snapshot().tones_in, 1);
}

#[tokio::test]
async fn slow_peer_is_cut_off_without_delaying_a_fast_one() {
    let limits = Limits {
        max_line: 64 * 1024,
        outbox_bytes: 256 * 1024,
    };
    // The daemon side of two peers: one never reads, one reads.
    let (stuck_ours, stuck_theirs) = UnixStream::pair().unwrap();
    let (fast_ours, fast_theirs) = UnixStream::pair().unwrap();
    let stuck = Connection::unix(stuck_ours, limits, "stuck");
    let fast = Connection::unix(fast_ours, limits, "fast");

    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(fast_theirs).lines();
        let mut n = 0;
        while let Some(line) = lines.next_line().await.unwrap() {
            assert!(line.contains("\"sid\":\"fast\""));
            n += 1;
            if n == 2000 {
                break;
            }
        }
        n
    });

    let big = "x".repeat(16 * 1024);
    let mut overflowed_at = None;
    for i in 0..2000 {
        // Each round offers the stuck peer a big chunk and the fast one a small one.
        if overflowed_at.is_none() {
            match stuck.outbox.try_send(&chunk("stuck", &big)) {
                Ok(()) => assert!(stuck.outbox.queued_bytes() <= 256 * 1024),
                Err(SendError::Overflow { queued_limit }) => {
                    assert_eq!(queued_limit, 256 * 1024);
                    overflowed_at = Some(i);
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        fast.outbox.send(&chunk("fast", "tick")).await.unwrap();
    }
    let delivered = timeout(PROMPTLY, reader)
        .await
        .expect("fast peer starved")
        .unwrap();
    assert_eq!(delivered, 2000);

    // The socket buffer plus the 256 KiB queue hold a few dozen 16 KiB lines.
    let at = overflowed_at.expect("the stuck peer's queue never overflowed");
    assert!(at < 200, "overflow came late: {at}");
    assert_eq!(stuck.outbox.stats().snapshot().overflows, 1);
    assert!(matches!(
        stuck.outbox.try_send(&chunk("stuck", "more")),
        Err(SendError::Closed)
    ));
    timeout(PROMPTLY, stuck.outbox.closed())
        .await
        .expect("writer did not stop");

    // The stuck peer, once it reads, finds the end of the stream: the
    // connection really closed. (An abort may cut the last line short; the
    // peer's reader drops such a line as malformed.)
    drop(stuck);
    let mut rest = Vec::new();
    timeout(
        PROMPTLY,
        BufReader::new(stuck_theirs).read_to_end(&mut rest),
    )
    .await
    .unwrap()
    .unwrap();
    let lines: Vec<&[u8]> = rest.split(|b| *b == b'\n').collect();
    assert!(
        rest.len() <= 256 * 1024 + 512 * 1024,
        "more than queue + socket buffer arrived"
    );
    assert!(
        lines[..lines.len() - 1].iter().all(|l| l.ends_with(b"}")),
        "a line in the middle was cut"
    );
}

#[tokio::test]
async fn graceful_close_flushes_everything_queued() {
    let (a, b) = UnixStream::pair().unwrap();
    let conn = Connection::unix(a, Limits::default(), "closing");
    for i in 0..500 {
        conn.outbox.try_send(&chunk("s", &format!("n{i}"))).unwrap();
    }
    conn.outbox.close();
    let mut peer = Connection::unix(b, Limits::default(), "peer");
    for i in 0..500 {
        let got = timeout(PROMPTLY, peer.inbox.recv()).await.unwrap().unwrap();
        assert_eq!(got, Some(Inbound::Tone(chunk("s", &format!("n{i}")))));
    }
    assert_eq!(
        timeout(PROMPTLY, peer.inbox.recv()).await.unwrap().unwrap(),
        None
    );
    timeout(PROMPTLY, conn.outbox.closed()).await.unwrap();
    assert!(matches!(
        conn.outbox.try_send(&chunk("s", "late")),
        Err(SendError::Closed)
    ));
}

#[tokio::test]
async fn send_waits_for_room_instead_of_closing() {
    let limits = Limits {
        max_line: 1024,
        outbox_bytes: 4096,
    };
    let (a, b) = UnixStream::pair().unwrap();
    let conn = Connection::unix(a, limits, "patient");
    let writer = tokio::spawn(async move {
        for i in 0..3000 {
            conn.outbox
                .send(&chunk("s", &format!("{i:0>500}")))
                .await
                .unwrap();
        }
        conn.outbox.stats().snapshot()
    });
    // Let the writer run into a full queue and socket before anyone reads.
    let mut peer = BufReader::new(b);
    let mut first = String::new();
    peer.read_line(&mut first).await.unwrap();
    let mut n = 1;
    let mut line = String::new();
    while n < 3000 {
        line.clear();
        if timeout(PROMPTLY, peer.read_line(&mut line))
            .await
            .unwrap()
            .unwrap()
            == 0
        {
            break;
        }
        n += 1;
    }
    assert_eq!(n, 3000, "every tone arrived");
    let stats = timeout(PROMPTLY, writer).await.unwrap().unwrap();
    assert_eq!((stats.tones_out, stats.overflows), (3000, 0));
}

#[tokio::test]
async fn abort_stops_the_reader_too() {
    let (a, _b) = UnixStream::pair().unwrap();
    let mut conn = Connection::unix(a, Limits::default(), "aborted");
    conn.outbox.abort();
    assert_eq!(
        timeout(PROMPTLY, conn.inbox.recv()).await.unwrap().unwrap(),
        None
    );
}

#[tokio::test]
async fn what_a_peer_wrote_before_it_went_is_read_after_a_write_to_it_fails() {
    use tokio::io::AsyncWriteExt;
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut conn = Connection::unix(ours, Limits::default(), "ours");
    // The peer answers twice and goes at once (an old forager does).
    let mut lines = chunk("s", "first").encode_line(1 << 20).unwrap();
    lines.extend(chunk("s", "last").encode_line(1 << 20).unwrap());
    theirs.write_all(&lines).await.unwrap();
    drop(theirs);
    // Our ack to it fails to write before its answers are read.
    conn.outbox.try_send(&chunk("s", "ack")).unwrap();
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while !conn.outbox.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never failed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut got = Vec::new();
    while let Some(Inbound::Tone(t)) = timeout(PROMPTLY, conn.inbox.recv()).await.unwrap().unwrap()
    {
        got.push(t.to_value()["delta"].clone());
    }
    assert_eq!(got, ["first", "last"]);
}
