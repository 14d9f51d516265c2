//! A cluster node's series: where new sids went and how long placing them
//! took, forwarded turns and how soon they answered, and every node's load
//! as this node last heard it (one `node` label per node).

use super::{l, Snapshot};
use crate::reports::{ClusterStatus, RouterStats};

pub(super) fn read_cluster(m: &mut Snapshot, c: &ClusterStatus, stats: &RouterStats) {
    m.gauge(
        "hum_cluster_nats_connected",
        "1 when this node is connected to the cluster's NATS server.",
        Vec::new(),
        if c.connected { 1.0 } else { 0.0 },
    );
    for (placed, n) in [
        ("remote", stats.placed_remote),
        ("here_unasked", stats.placed_here_unasked),
    ] {
        m.counter(
            "hum_cluster_placements_total",
            "Prompts of new sids sent to another node (remote), or served here because the cluster could not be asked.",
            l(&[("placed", placed)]),
            n,
        );
    }
    m.counter(
        "hum_cluster_forwarded_turns_total",
        "Turns of this node's askers served on another node.",
        Vec::new(),
        c.timings.forwarded_turns,
    );
    for (node, n) in &c.timings.forwarded_by_node {
        m.counter(
            "hum_cluster_node_forwarded_turns_total",
            "Turns of this node's askers served on that node.",
            l(&[("node", node)]),
            *n,
        );
    }
    m.histogram(
        "hum_cluster_forward_first_event_seconds",
        "From a prompt forwarded to another node to the first word back from it.",
        Vec::new(),
        &c.timings.forward_first_event_seconds,
    );
    m.histogram(
        "hum_cluster_placement_seconds",
        "From a new sid's first prompt to the cluster's answer where it goes.",
        Vec::new(),
        &c.timings.placement_seconds,
    );
    for n in &c.nodes {
        let labels = l(&[("node", &n.node)]);
        for (name, help, v) in [
            (
                "hum_cluster_node_cells",
                "Cells alive on a node of the cluster.",
                n.cells as f64,
            ),
            (
                "hum_cluster_node_cap",
                "Cells a node of the cluster may keep.",
                n.cap as f64,
            ),
            (
                "hum_cluster_node_turns",
                "Turns a node of the cluster holds.",
                n.turns as f64,
            ),
            (
                "hum_cluster_node_heard_seconds",
                "How long ago a node of the cluster was last heard.",
                n.heard_ms_ago as f64 / 1000.0,
            ),
            (
                "hum_cluster_node_linked",
                "1 when this node has a working link to that node.",
                if n.linked { 1.0 } else { 0.0 },
            ),
        ] {
            m.gauge(name, help, labels.clone(), v);
        }
    }
}
