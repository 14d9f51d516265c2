//! What a cluster node's humd says about the cluster in its status.

use serde::{Deserialize, Serialize};

/// This node and every other node it knows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub name: String,
    /// This node's name.
    pub node: String,
    /// Whether NATS is connected now.
    pub connected: bool,
    pub nodes: Vec<NodeView>,
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
