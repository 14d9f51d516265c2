//! Foragers across nodes: each node says in a key-value bucket what its
//! own foragers serve (tool specs and capabilities); every other node
//! offers those tools to its router through a *tools* link, so its cells
//! call them as they call a forager of their own, and the calls travel to
//! the forager's node and back (its *calls* link, opened on the first).
//!
//! Only a node's own foragers are said (never what it heard from another
//! node), so a call takes one hop and never comes back.

use super::link::Side;
use super::Node;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most bytes of one node's catalogue in the bucket: under NATS's default
/// largest message (1 MiB), with room for the entry's headers. A router
/// keeps 2 MiB of specs; a node whose foragers offer more shares the
/// first tools by name that fit, and says so in its log.
const MAX_SHARED_BYTES: usize = 768 * 1024;

/// What one node's foragers serve.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    pub tools: Vec<Value>,
    pub provides: Vec<String>,
}

impl Catalogue {
    /// The catalogue as shared: the tools in name order that fit in
    /// [`MAX_SHARED_BYTES`], and how many did not.
    pub fn fitted(mut tools: Vec<Value>, provides: Vec<String>) -> (Catalogue, usize) {
        tools.sort_by(|a, b| {
            thrum::tools::tool_name(a)
                .unwrap_or_default()
                .cmp(thrum::tools::tool_name(b).unwrap_or_default())
        });
        let mut bytes = serde_json::to_vec(&provides).map_or(0, |v| v.len()) + 64;
        let total = tools.len();
        let kept: Vec<Value> = tools
            .into_iter()
            .take_while(|t| {
                bytes += serde_json::to_vec(t).map_or(0, |v| v.len()) + 1;
                bytes <= MAX_SHARED_BYTES
            })
            .collect();
        let left = total - kept.len();
        (
            Catalogue {
                tools: kept,
                provides,
            },
            left,
        )
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty() && self.provides.is_empty()
    }

    /// The hello of the tools link that offers these to a router.
    pub fn hello(&self, node: &str) -> thrum::Hello {
        thrum::Hello {
            hid: Some(format!("node:{node}")),
            tools: Some(self.tools.clone()),
            provides: (!self.provides.is_empty()).then(|| self.provides.clone()),
            ..crate::client::Client::forager_hello(super::LINK_SOURCE, &[], &[])
        }
    }
}

/// This node's side of the shared catalogues.
#[derive(Default)]
pub(super) struct SharedTools {
    /// What this node's foragers serve, as the router last said.
    mine: Catalogue,
    /// What each other node's foragers serve, as its bucket entry says.
    theirs: std::collections::BTreeMap<String, Catalogue>,
    /// What each tools link told the router (to re-say only changes).
    said: std::collections::BTreeMap<String, Catalogue>,
}

impl SharedTools {
    /// A node gone: its tools link is gone with its other links.
    pub(super) fn forget_said(&mut self, node: &str) {
        self.said.remove(node);
    }
}

impl Node {
    /// The router says what this node's foragers serve now: into the
    /// bucket (deleted when nothing), for the other nodes.
    pub(super) async fn share_tools(
        &mut self,
        bucket: &kv::Store,
        tools: Vec<Value>,
        provides: Vec<String>,
    ) {
        let (mine, left) = Catalogue::fitted(tools, provides);
        if left > 0 {
            tracing::warn!(
                event = "cluster.catalogue_truncated",
                left,
                "more tools than one bucket entry holds: the other nodes see the first by name"
            );
        }
        self.shared.mine = mine;
        self.put_tools(bucket).await;
    }

    /// Writes this node's catalogue as it is (on joining, and on changes).
    pub(super) async fn put_tools(&self, bucket: &kv::Store) {
        let me = self.settings.node.clone();
        let put = async {
            if self.shared.mine.is_empty() {
                bucket.delete(&me).await.map_err(|e| e.to_string())
            } else {
                let value = serde_json::to_vec(&self.shared.mine).unwrap_or_default();
                bucket
                    .put(&me, value.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        };
        match tokio::time::timeout(std::time::Duration::from_secs(2), put).await {
            Ok(Ok(())) => {
                tracing::info!(event = "cluster.tools_shared", node = %me, tools = self.shared.mine.tools.len(), "this node's foragers' tools told to the cluster")
            }
            Ok(Err(e)) => {
                tracing::warn!(event = "cluster.tools_not_shared", error = %e, "the other nodes do not hear of this node's tools now")
            }
            Err(_) => tracing::warn!(
                event = "cluster.tools_not_shared",
                "the other nodes do not hear of this node's tools now (timed out)"
            ),
        }
    }

    /// Another node's catalogue changed (or it left): its tools link
    /// follows.
    pub(super) fn heard_tools(&mut self, entry: kv::Entry) {
        if entry.key == self.settings.node {
            return;
        }
        let theirs = match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Catalogue>(&entry.value) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(event = "cluster.catalogue_unreadable", node = %entry.key, error = %e, "a node's tools entry is not a catalogue");
                    Catalogue::default()
                }
            },
            _ => Catalogue::default(),
        };
        self.shared.theirs.insert(entry.key.clone(), theirs);
        self.sync_tools_link(&entry.key);
    }

    /// A node's tools link as its catalogue and liveness say: none for a
    /// node not heard alive or with no tools; a new hello when they change.
    pub(super) fn sync_tools_link(&mut self, node: &str) {
        let want = self
            .shared
            .theirs
            .get(node)
            .filter(|c| !c.is_empty() && self.nodes.knows(node))
            .cloned();
        let key = (node.to_owned(), Side::Tools);
        let Some(want) = want else {
            if self.links.remove(&key).is_some() {
                tracing::info!(event = "cluster.tools_unlinked", node = %node, "a node's tools are no longer offered here");
            }
            self.shared.said.remove(node);
            return;
        };
        if self.shared.said.get(node) == Some(&want) && self.links.contains_key(&key) {
            return;
        }
        let hello = want.hello(node);
        match self.links.get(&key) {
            Some(link) => {
                if !link.say_again(&thrum::Tone::new(hello)) {
                    // Its queue is full: said at the next heartbeat.
                    return;
                }
            }
            None => self.open_link_with(node, Side::Tools, hello),
        }
        tracing::info!(event = "cluster.tools_linked", node = %node, tools = want.tools.len(), "a node's foragers' tools offered to this node's cells");
        self.shared.said.insert(node.to_owned(), want);
    }

    /// Every node's tools link again (nodes came and went).
    pub(super) fn sync_all_tools_links(&mut self) {
        let nodes: Vec<String> = self.shared.theirs.keys().cloned().collect();
        for node in nodes {
            self.sync_tools_link(&node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_catalogue_past_one_entry_keeps_the_first_tools_by_name_that_fit() {
        let big = "x".repeat(100 * 1024);
        let tools: Vec<Value> = (0..12)
            .rev()
            .map(|i| json!({"name": format!("t{i:02}"), "description": big}))
            .collect();
        let (c, left) = Catalogue::fitted(tools, vec!["fs".into()]);
        assert_eq!(c.tools.len(), 7, "7 × 100 KiB fit in 768 KiB");
        assert_eq!(left, 5);
        assert_eq!(c.tools[0]["name"], "t00");
        assert_eq!(c.tools[6]["name"], "t06");
        assert!(serde_json::to_vec(&c).unwrap().len() <= MAX_SHARED_BYTES);
        let (small, left) = Catalogue::fitted(vec![json!({"name": "echo"})], vec![]);
        assert_eq!((small.tools.len(), left), (1, 0));
        assert!(!small.is_empty() && Catalogue::default().is_empty());
    }

    #[test]
    fn a_tools_links_hello_is_a_foragers_with_the_nodes_tools_and_capabilities() {
        let c = Catalogue {
            tools: vec![json!({"name": "echo"})],
            provides: vec!["web".into()],
        };
        let h = c.hello("c");
        assert!(h.bee.as_ref().unwrap().has(&thrum::Role::Forager));
        assert!(!h.bee.as_ref().unwrap().has(&thrum::Role::Worker));
        assert_eq!(h.hid.as_deref(), Some("node:c"));
        assert_eq!(h.tools.unwrap().len(), 1);
        assert_eq!(h.provides.unwrap(), ["web"]);
    }
}
