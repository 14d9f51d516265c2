//! Many readers, one budget: the total of unfinished lines is bounded, a
//! reader over it loses its line (and says so), and the bytes come back
//! when a line completes or its reader goes away.

use std::sync::Arc;
use thrum::{ByteBudget, Inbound, Rejected, ToneReader};
use tokio::io::{AsyncWriteExt, BufReader};

fn reader(
    budget: &Arc<ByteBudget>,
) -> (
    ToneReader<BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    tokio::io::WriteHalf<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(4 * 1024 * 1024);
    let (read, _) = tokio::io::split(a);
    let (_, write) = tokio::io::split(b);
    let r = ToneReader::new(BufReader::new(read), 8 * 1024 * 1024, Default::default())
        .with_budget(budget.clone());
    (r, write)
}

/// A tone line whose text field makes it `len` bytes long, newline excluded.
fn line(len: usize) -> Vec<u8> {
    let head = br#"{"chi":"x","pad":""#;
    let mut l = head.to_vec();
    l.resize(len - 2, b'a');
    l.extend_from_slice(b"\"}");
    l
}

#[tokio::test]
async fn partial_lines_share_one_budget_and_give_it_back() {
    let budget = Arc::new(ByteBudget::new(1024 * 1024));
    let (mut a, mut a_in) = reader(&budget);
    let (mut b, mut b_in) = reader(&budget);
    let big = line(700 * 1024);
    // A holds most of the budget with an unfinished line.
    a_in.write_all(&big[..600 * 1024]).await.unwrap();
    let a_wait = tokio::spawn(async move {
        let got = a.recv().await.unwrap();
        (a, got)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while budget.used() < 400 * 1024 {
        assert!(std::time::Instant::now() < deadline, "A never charged");
        tokio::task::yield_now().await;
    }
    // B's line does not fit beside it: refused, not buffered.
    b_in.write_all(&big).await.unwrap();
    b_in.write_all(b"\n").await.unwrap();
    match b.recv().await.unwrap() {
        Some(Inbound::Rejected(Rejected::Busy(e))) => assert_eq!(e.limit, 1024 * 1024),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(budget.used() <= budget.limit());
    // A finishes: its bytes come back, and B's next line fits.
    a_in.write_all(&big[600 * 1024..]).await.unwrap();
    a_in.write_all(b"\n").await.unwrap();
    let (a, got) = a_wait.await.unwrap();
    assert!(matches!(got, Some(Inbound::Tone(_))), "{got:?}");
    b_in.write_all(&big).await.unwrap();
    b_in.write_all(b"\n").await.unwrap();
    assert!(matches!(b.recv().await.unwrap(), Some(Inbound::Tone(_))));
    drop(a);
    drop(b);
    assert_eq!(budget.used(), 0, "every byte given back");
}
