//! Which nodes this node can send sids to now.

use std::collections::HashSet;

/// The nodes whose worker link the router greeted: they can take sids.
/// Shared with placement tasks, which wait briefly for a link to a node
/// that is alive but not linked yet.
#[derive(Clone, Default)]
pub(super) struct Ready(std::sync::Arc<std::sync::Mutex<HashSet<String>>>);

impl Ready {
    pub(super) fn set(&self, node: &str, ready: bool) {
        if let Ok(mut set) = self.0.lock() {
            if ready {
                set.insert(node.to_owned());
            } else {
                set.remove(node);
            }
        }
    }

    pub(super) fn has(&self, node: &str) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(node))
    }

    pub(super) fn all(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }
}
