//! The cluster across machines of their own (issue 28): each node's humd
//! in a network namespace with its own address, NATS reached over a veth
//! pair and a bridge, as on separate hosts. Needs root (`ip netns`); not
//! root, the same steps run on loopback, said on stderr.

use crate::common::cluster::{runtime, turn, turn_when_its_node_dies, wait_linked, Nats, Node};
use crate::common::netns::Hosts;
use crate::common::*;
use serde_json::json;

fn net_ns_of(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap()
}

#[test]
fn three_hosts_share_a_sid_and_one_cut_off_loses_it_to_another_then_drops_its_stale_cell() {
    let sb = Sandbox::new();
    let mut hosts = Hosts::possible().then(Hosts::new);
    if hosts.is_none() {
        eprintln!("cluster_hosts: not root (no ip netns): the nodes share loopback");
    }
    let nats = match &hosts {
        Some(h) => Nats::start_at(&sb, &h.addr(1)),
        None => Nats::start(&sb),
    };
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| match &mut hosts {
            Some(h) => {
                let ns = h.host();
                Node::start_in(&sb, &nats, "hosts", n, &ns)
            }
            None => Node::start(&sb, &nats, "hosts", n, 2, json!({})),
        })
        .collect();
    let rt = runtime();
    wait_linked(&rt, &nodes.iter().collect::<Vec<_>>());
    if hosts.is_some() {
        // Each humd is on a network of its own, none on the test's.
        let nets: Vec<_> = nodes.iter().map(|n| net_ns_of(n.daemon.id())).collect();
        let ours = net_ns_of(std::process::id());
        assert!(nets.iter().all(|n| *n != ours), "{nets:?} vs {ours:?}");
        assert!(nets[0] != nets[1] && nets[1] != nets[2] && nets[0] != nets[2]);
    }
    // One sid through every host in turn: one cell, every answer in order.
    for i in 0..6 {
        let via = &nodes[i % 3];
        let said = format!("turn {i} via {}", via.name);
        let text = rt.block_on(turn(via, "roamer", &said));
        assert!(
            text.starts_with(&format!("SIM-REPLY #{}: you said <{said}>", i + 1)),
            "{text}"
        );
    }
    let cells: Vec<usize> = nodes.iter().map(|n| n.cells_of(&rt, "roamer")).collect();
    assert_eq!(cells.iter().sum::<usize>(), 1, "{cells:?}");
    let Some(hosts) = hosts else {
        for n in nodes {
            n.stop();
        }
        nats.stop();
        sb.assert_no_leaks();
        return;
    };
    // The holder's cable is cut: the others take it for gone (its
    // heartbeats stop) and the sid's next prompt resumes on one of them,
    // from the transcript the cluster kept.
    let k = cells.iter().position(|c| *c == 1).unwrap();
    let other = &nodes[(k + 1) % 3];
    hosts.cable(k, false);
    let gone = |n: &Node| {
        n.status(&rt)
            .daemon
            .cluster
            .is_some_and(|c| c.nodes.iter().all(|v| v.node != nodes[k].name))
    };
    assert!(
        wait_until(PROMPTLY * 2, || gone(other)),
        "{} forgets the cut-off node {}",
        other.name,
        nodes[k].name
    );
    let text = rt.block_on(turn(other, "roamer", "after the cut"));
    assert!(
        text.starts_with("SIM-REPLY #7: you said <after the cut>; before that <turn 5"),
        "the conversation goes on elsewhere: {text}"
    );
    // Mended: the cut-off node hears it lost the sid and drops its stale
    // cell; one cell in the cluster again.
    hosts.cable(k, true);
    assert!(
        wait_until(PROMPTLY * 2, || nodes[k].cells_of(&rt, "roamer") == 0),
        "{}'s stale cell goes once it is back:\n{}",
        nodes[k].name,
        nodes[k].log("daemon")
    );
    wait_linked(&rt, &nodes.iter().collect::<Vec<_>>());
    let total: usize = nodes.iter().map(|n| n.cells_of(&rt, "roamer")).sum();
    assert_eq!(total, 1);
    let text = rt.block_on(turn(&nodes[k], "roamer", "back home"));
    assert!(
        text.starts_with("SIM-REPLY #8: you said <back home>"),
        "{text}"
    );
    for n in nodes {
        n.stop();
    }
    nats.stop();
    drop(hosts);
    sb.assert_no_leaks();
}

#[test]
fn a_host_killed_mid_turn_loses_its_turn_within_6s_and_its_sid_resumes_on_another_host() {
    let sb = Sandbox::new();
    let mut hosts = Hosts::possible().then(Hosts::new);
    if hosts.is_none() {
        eprintln!("cluster_hosts: not root (no ip netns): the nodes share loopback");
    }
    let nats = match &hosts {
        Some(h) => Nats::start_at(&sb, &h.addr(1)),
        None => Nats::start(&sb),
    };
    // While this file is missing, a turn stops after its first delta.
    let go = sb.dir.path().join("go");
    std::fs::write(&go, "").unwrap();
    let sim = json!({"HUM_SIM_HOLD_UNTIL_FILE": go});
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| match &mut hosts {
            Some(h) => {
                let ns = h.host();
                Node::start_in_with(&sb, &nats, "kill", n, &ns, sim.clone())
            }
            None => Node::start(&sb, &nats, "kill", n, 2, sim.clone()),
        })
        .collect();
    let rt = runtime();
    wait_linked(&rt, &nodes.iter().collect::<Vec<_>>());
    // Turn 1 through a lives on a (a tie goes to the asker's node).
    rt.block_on(turn(&nodes[0], "far", "remember the word heron"));
    assert_eq!(nodes[0].cells_of(&rt, "far"), 1, "the sid lives on a");
    assert!(
        wait_until(PROMPTLY, || nodes[0].transcripts_kept("far") > 0),
        "a keeps the transcript in the cluster:\n{}",
        nodes[0].log("daemon")
    );
    // Turn 2 through b runs on a and stops mid-turn; then a's host dies
    // (its humd and worker SIGKILLed; its cells die by containment).
    std::fs::remove_file(&go).unwrap();
    let a = nodes.remove(0);
    let (lost, waited) = turn_when_its_node_dies(&rt, &nodes[0], "far", "turn two", || a.kill());
    let e = lost.expect_err("a turn on a dead host does not finish");
    assert_eq!(e.code, thrum::ErrorCode::WorkerLost, "{e:?}");
    assert!(
        waited < std::time::Duration::from_secs(6),
        "the asker on b heard its turn was lost {waited:?} after a died"
    );
    // Turn 3 through b: the sid resumes on b or c, its history restored.
    std::fs::write(&go, "").unwrap();
    let text = rt.block_on(turn(&nodes[0], "far", "turn three"));
    assert!(
        text.contains("you said <turn three>; before that <remember the word heron>"),
        "the moved session remembers turn 1: {text:?}"
    );
    let cells: usize = nodes.iter().map(|n| n.cells_of(&rt, "far")).sum();
    assert_eq!(cells, 1, "one cell of the sid in the cluster");
    for n in nodes {
        n.stop();
    }
    nats.stop();
    drop(hosts);
    sb.assert_no_leaks();
}
