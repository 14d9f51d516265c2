//! What a cluster node's humd says about the cluster in its status, and
//! how `hum drain` asks it to let its sids go.

use serde::{Deserialize, Serialize};

/// This node and every other node it knows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub name: String,
    /// This node's name.
    pub node: String,
    /// Whether NATS is connected now.
    pub connected: bool,
    pub nodes: Vec<NodeView>,
    pub timings: ClusterTimings,
    /// Sids this node's askers use that live on another node: (sid, node),
    /// at most [`MAX_SIDS_SHOWN`] of them.
    pub sids_elsewhere: Vec<(String, String)>,
    /// How many such sids there are in all.
    pub sids_elsewhere_count: usize,
}

/// The sids living elsewhere a status lists (the count says the rest).
pub const MAX_SIDS_SHOWN: usize = 1000;

/// The most nodes counted by name in [`ClusterTimings::forwarded_by_node`]:
/// a cluster whose nodes come and go under new names (hostnames of
/// short-lived machines) must not grow a long-lived humd's table without
/// end.
pub const MAX_NODES_COUNTED: usize = 256;

impl ClusterTimings {
    /// A turn of this node's askers served on `node`, whose first word
    /// came `took` after its prompt was forwarded.
    pub fn forwarded(&mut self, node: &str, took: std::time::Duration) {
        self.forwarded_turns += 1;
        self.forward_first_event_seconds.observe(took);
        let key = if self.forwarded_by_node.contains_key(node)
            || self.forwarded_by_node.len() < MAX_NODES_COUNTED
        {
            node
        } else {
            "(others)"
        };
        *self.forwarded_by_node.entry(key.to_owned()).or_default() += 1;
    }
}

/// What the cluster adds to a turn, as this node saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterTimings {
    /// Turns of this node's askers served on another node.
    pub forwarded_turns: u64,
    /// Those turns by the node that served them (at most
    /// `MAX_NODES_COUNTED` names; the rest under `(others)`, which no
    /// node's name can be).
    pub forwarded_by_node: std::collections::BTreeMap<String, u64>,
    /// From a forwarded prompt to the first word back from the sid's node.
    pub forward_first_event_seconds: super::Histogram,
    /// From a new sid's first prompt to the cluster's answer where it goes.
    pub placement_seconds: super::Histogram,
}

impl Default for ClusterTimings {
    fn default() -> Self {
        // From a loopback hop (a millisecond) to a node that is failing.
        let bounds = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        ClusterTimings {
            forwarded_turns: 0,
            forwarded_by_node: Default::default(),
            forward_first_event_seconds: super::Histogram::new(&bounds),
            placement_seconds: super::Histogram::new(&bounds),
        }
    }
}

/// One node as last heard.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeView {
    pub node: String,
    pub cap: usize,
    pub cells: usize,
    pub turns: usize,
    pub rss_bytes: u64,
    pub draining: bool,
    /// How long ago its last heartbeat came.
    pub heard_ms_ago: u64,
    /// This node has a working link to it (it can take sids from here);
    /// always true of this node itself.
    pub linked: bool,
}

/// The chi a bee asks a cluster node's humd to drain with (`hum drain`):
/// no new sids here, and its sids move to other nodes (`"off": true` ends
/// it).
pub const DRAIN: &str = "drain";

/// The fields of a [`DRAIN`] request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrainRequest {
    /// Ends a drain: the node takes new sids again.
    pub off: bool,
}

impl DrainRequest {
    /// The request `fields` say; fields that do not read as one ask for
    /// a drain (it is ended only by `"off": true`).
    pub fn read(fields: &serde_json::Map<String, serde_json::Value>) -> DrainRequest {
        serde_json::from_value(serde_json::Value::Object(fields.clone())).unwrap_or_default()
    }

    /// As a drain tone's fields.
    pub fn fields(self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn forwarded_turns_are_counted_by_node_and_past_the_bound_under_others() {
        let mut t = ClusterTimings::default();
        t.forwarded("b", Duration::from_millis(2));
        t.forwarded("b", Duration::from_millis(3));
        assert_eq!(t.forwarded_turns, 2);
        assert_eq!(t.forward_first_event_seconds.count, 2);
        assert_eq!(t.forwarded_by_node.get("b"), Some(&2));
        for i in 0..MAX_NODES_COUNTED + 10 {
            t.forwarded(&format!("n{i}"), Duration::ZERO);
        }
        assert_eq!(t.forwarded_by_node.len(), MAX_NODES_COUNTED + 1);
        assert_eq!(t.forwarded_by_node.get("(others)"), Some(&11));
        // A node already counted keeps its own line.
        t.forwarded("b", Duration::ZERO);
        assert_eq!(t.forwarded_by_node.get("b"), Some(&3));
        assert_eq!(t.forwarded_turns, 2 + MAX_NODES_COUNTED as u64 + 10 + 1);
    }
}
