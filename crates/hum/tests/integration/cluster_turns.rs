//! A turn asked on one node and run on another ends the ways a local one
//! does (issue 28, item 2): its asker's cancel reaches the cell, and an
//! asker that leaves has its turn cancelled on the other node, which goes
//! on serving the sid with the same cell.

use crate::common::cluster::{runtime, wait_linked, Nats, Node};
use crate::common::*;
use hum::client::{Client, Event};
use serde_json::json;

/// A long answer: 3000 deltas 10 ms apart (half a minute) unless cut.
fn long_answers() -> serde_json::Value {
    json!({"HUM_SIM_CHUNKS": "3000", "HUM_SIM_CHUNK_DELAY_MS": "10"})
}

/// Turns of `node`'s workers that ended with `outcome`.
fn turns_ended(node: &Node, rt: &tokio::runtime::Runtime, outcome: &str) -> u64 {
    node.status(rt)
        .workers
        .iter()
        .filter_map(|w| w.status.as_ref())
        .map(|s| s.metrics.turns.get(outcome).copied().unwrap_or(0))
        .sum()
}

/// Two nodes, and sid `sid` placed on `a` by a first short turn there.
fn two_nodes_with_a_sid_on_a(sb: &Sandbox, nats: &Nats, sid: &str) -> (Node, Node) {
    let a = Node::start(sb, nats, "ends", "a", 2, long_answers());
    let b = Node::start(sb, nats, "ends", "b", 2, long_answers());
    let rt = runtime();
    wait_linked(&rt, &[&a, &b]);
    // Its first words: the cell is up on a (a tie goes to the asker's
    // node); the rest of this long answer is cut by a's cancel.
    let end = rt.block_on(cut_short(&a.sock, sid, "first"));
    assert!(end.end.is_ok(), "{:?}", end.end);
    assert_eq!(a.cells_of(&rt, sid), 1, "the sid lives on a");
    (a, b)
}

/// A turn of `sid` asked through `sock`, cancelled by its asker after
/// its first words: how it ended.
async fn cut_short(sock: &std::path::Path, sid: &str, text: &str) -> hum::client::Answer {
    let mut c = Client::asker(sock, "cluster test").await.unwrap();
    c.prompt(sid, Client::text_prompt(text, Some("sim")))
        .await
        .unwrap();
    first_words(&mut c, sid).await;
    c.cancel(sid).await.unwrap();
    tokio::time::timeout(PROMPTLY, c.answer(sid))
        .await
        .unwrap_or_else(|_| panic!("turn {text:?} of {sid} ends on its cancel"))
        .unwrap()
}

/// Reads `sid`'s events up to its first text.
async fn first_words(c: &mut Client, sid: &str) {
    loop {
        let e = tokio::time::timeout(PROMPTLY, c.event_of(sid))
            .await
            .expect("the turn's first words")
            .unwrap();
        assert!(!e.ends_turn(), "the turn ended early: {e:?}");
        if matches!(e, Event::Text { .. }) {
            return;
        }
    }
}

#[test]
fn a_cancel_asked_on_one_node_ends_the_turn_on_the_other_and_the_cell_stays() {
    let sb = Sandbox::new();
    let nats = Nats::start(&sb);
    let (a, b) = two_nodes_with_a_sid_on_a(&sb, &nats, "far");
    let rt = runtime();
    // The first turn, cut on a by its own cancel.
    assert!(wait_until(PROMPTLY, || turns_ended(&a, &rt, "cancelled") == 1));
    let end = rt.block_on(cut_short(&b.sock, "far", "second"));
    let finish = end.end.expect("a cancelled turn finishes");
    assert_eq!(
        finish.finish_reason,
        Some(thrum::FinishReason::Cancelled),
        "{finish:?}"
    );
    // The cancel reached a's cell (its worker counts a cancelled turn),
    // long before the half minute the answer would have taken.
    assert!(
        wait_until(PROMPTLY, || turns_ended(&a, &rt, "cancelled") == 2),
        "a's worker never counted the cancel: {:?}",
        a.status(&rt).workers
    );
    assert_eq!(b.cells_of(&rt, "far"), 0, "the turn ran on a, not b");
    // The same warm cell on a answers the next turn asked on b.
    let spawns = |n: &Node| -> u64 {
        n.status(&rt)
            .workers
            .iter()
            .filter_map(|w| w.status.as_ref())
            .map(|s| s.metrics.spawns)
            .sum()
    };
    let spawned = spawns(&a);
    assert_eq!(spawned, 1, "one cell on a");
    let third = rt.block_on(cut_short(&b.sock, "far", "third"));
    assert!(third.end.is_ok(), "{:?}", third.end);
    assert_eq!(a.cells_of(&rt, "far"), 1);
    assert_eq!(spawns(&a) + spawns(&b), 1, "no second cell for the sid");
    a.stop();
    b.stop();
    nats.stop();
    sb.assert_no_leaks();
}

#[test]
fn an_asker_that_leaves_mid_turn_has_its_turn_on_another_node_cancelled() {
    let sb = Sandbox::new();
    let nats = Nats::start(&sb);
    let (a, b) = two_nodes_with_a_sid_on_a(&sb, &nats, "left");
    let rt = runtime();
    assert!(wait_until(PROMPTLY, || turns_ended(&a, &rt, "cancelled") == 1));
    rt.block_on(async {
        let mut c = Client::asker(&b.sock, "cluster test").await.unwrap();
        c.prompt("left", Client::text_prompt("second", Some("sim")))
            .await
            .unwrap();
        first_words(&mut c, "left").await;
        // The asker goes away mid-answer: its connection closes.
        drop(c);
    });
    // B's router cancels the gone asker's turn, and the cancel reaches a.
    assert!(
        wait_until(PROMPTLY, || b
            .status(&rt)
            .daemon
            .stats
            .cancelled_gone_askers
            == 1),
        "b never cancelled its gone asker's turn: {:?}",
        b.status(&rt).daemon.stats
    );
    assert!(
        wait_until(PROMPTLY, || turns_ended(&a, &rt, "cancelled") == 2),
        "the gone asker's turn ran on at a: {:?}",
        a.status(&rt).workers
    );
    // The sid is served again, by the same cell on a: a short third
    // turn, cut by its own cancel after its first words.
    let end = rt.block_on(cut_short(&b.sock, "left", "third"));
    assert!(end.end.is_ok(), "{:?}", end.end);
    assert_eq!(a.cells_of(&rt, "left"), 1);
    assert_eq!(b.cells_of(&rt, "left"), 0);
    a.stop();
    b.stop();
    nats.stop();
    sb.assert_no_leaks();
}

#[test]
fn hum_status_and_hum_top_on_a_node_show_the_cluster_and_where_a_sid_lives() {
    let sb = Sandbox::new();
    let nats = Nats::start(&sb);
    let a = Node::start(&sb, &nats, "seen", "a", 2, json!({}));
    let b = Node::start(&sb, &nats, "seen", "b", 2, json!({}));
    let rt = runtime();
    wait_linked(&rt, &[&a, &b]);
    // A sid living on a (equal room: a tie goes to the asker's node),
    // used by an asker on b.
    rt.block_on(crate::common::cluster::turn(&a, "yonder", "one"));
    rt.block_on(crate::common::cluster::turn(&b, "yonder", "two"));
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--socket", b.sock.to_str().unwrap()]);
        let out = b.worker_cmd(&all).output().unwrap();
        assert!(out.status.success(), "hum {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Node a's load is heard by b with its next report: within a beat.
    let mut status = String::new();
    assert!(
        wait_until(PROMPTLY, || {
            status = run(&["status"]);
            status.contains("node a: cells 1/2")
        }),
        "{status}"
    );
    for line in [
        "cluster seen · this node b · NATS connected",
        "node b: cells 0/2",
        "sid yonder lives on node a",
    ] {
        assert!(status.contains(line), "{line} in:\n{status}");
    }
    let top = run(&["top", "--iterations", "1", "--interval-ms", "100"]);
    assert!(
        top.contains("| cluster seen · a 1/2 · b (here) 0/2 · 1 sid elsewhere"),
        "{top}"
    );
    a.stop();
    b.stop();
    nats.stop();
    sb.assert_no_leaks();
}
