//! Budgets that are the cluster's: every turn's cost, told to every node.

use super::*;

impl Node {
    /// What a turn asked here cost, told to every node (each counts the
    /// whole cluster's spend against its budgets).
    pub(super) async fn share_spend(&self, note: &crate::daemon::router::placing::SpentNote) {
        let subject = format!("hum.{}.spent.{}", self.settings.name, self.settings.node);
        if let Ok(bytes) = serde_json::to_vec(note) {
            if let Err(e) = self.client.publish(subject, bytes.into()).await {
                tracing::warn!(event = "cluster.spend_not_shared", error = %e, "the other nodes do not hear of this turn's cost");
            }
        }
    }

    /// Another node's turn's cost: to the router's budgets.
    pub(super) async fn spent_elsewhere(&self, msg: async_nats::Message) {
        let from = msg.subject.as_str().rsplit('.').next().unwrap_or_default();
        if from == self.settings.node {
            return;
        }
        let Ok(note) = serde_json::from_slice(&msg.payload) else {
            return;
        };
        let _ = self.router.send(RouterMsg::SpentElsewhere(note)).await;
    }
}
