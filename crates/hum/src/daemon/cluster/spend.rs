//! Budgets that are the cluster's: every turn's cost told to every node,
//! through a JetStream stream that keeps them (`hum-<name>-usage`), so a
//! node that starts mid-day counts the day's spend of the others too, and
//! `hum usage --cluster` can report every node's turns.

use super::*;
use crate::usage::shared::SharedTurn;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream;

/// How long the cluster keeps every node's turns: a month of reports.
pub(super) const USAGE_KEPT: Duration = Duration::from_secs(35 * 24 * 3600);

/// The most turns kept; the oldest go first past it (a turn is about 400
/// bytes: under a GiB). A byte limit would be reserved from the server's
/// JetStream store up front, which a small server refuses.
const USAGE_TURNS: i64 = 2_000_000;

/// The usage stream's name and the subjects it keeps.
pub(super) fn usage_stream(cluster: &str) -> (String, String) {
    (
        format!("hum-{cluster}-usage"),
        format!("hum.{cluster}.spent.*"),
    )
}

/// The cluster's usage stream, made if missing.
pub(super) async fn open_usage(
    js: &jetstream::Context,
    cluster: &str,
) -> Result<stream::Stream, String> {
    let (name, subjects) = usage_stream(cluster);
    if let Ok(s) = js.get_stream(&name).await {
        return Ok(s);
    }
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![subjects],
        max_age: USAGE_KEPT,
        max_messages: USAGE_TURNS,
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(s) => Ok(s),
        // Another node made it first.
        Err(e) if e.to_string().contains("already in use") => {
            js.get_stream(&name).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Every turn the stream kept from `since_ms` on, then each new one as it
/// comes (an ordered consumer: it starts again where it was if NATS goes).
pub(super) async fn turns_since(
    usage: &stream::Stream,
    since_ms: i64,
) -> Result<pull::Ordered, String> {
    let start = std::time::UNIX_EPOCH + Duration::from_millis(since_ms.max(0) as u64);
    let start = humantime::format_rfc3339_millis(start).to_string();
    let start_time = async_nats::datetime::parse_rfc3339(&start).map_err(|e| e.to_string())?;
    let consumer = usage
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    consumer.messages().await.map_err(|e| e.to_string())
}

/// The next turn of another node from the usage stream; never, when there
/// is no stream to read.
pub(super) async fn next_turn(turns: &mut Option<pull::Ordered>) -> Option<(String, Vec<u8>)> {
    match turns {
        Some(t) => match t.next().await {
            Some(Ok(m)) => Some((m.subject.to_string(), m.payload.to_vec())),
            Some(Err(e)) => {
                tracing::debug!(event = "cluster.usage_read_failed", error = %e, "a turn of the usage stream was not read");
                Some((String::new(), Vec::new()))
            }
            None => {
                *turns = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

impl Node {
    /// What a turn asked here cost, told to every node (each counts the
    /// whole cluster's spend against its budgets) and kept in the stream.
    pub(super) async fn share_spend(&self, note: &SharedTurn) {
        let subject = format!("hum.{}.spent.{}", self.settings.name, self.settings.node);
        let note = SharedTurn {
            node: self.settings.node.clone(),
            ..note.clone()
        };
        if let Ok(bytes) = serde_json::to_vec(&note) {
            if let Err(e) = self.client.publish(subject, bytes.into()).await {
                tracing::warn!(event = "cluster.spend_not_shared", error = %e, "the other nodes do not hear of this turn's cost");
            }
        }
    }

    /// Another node's turn's cost: to the router's budgets (this node's
    /// own are counted where they were recorded).
    pub(super) async fn spent_elsewhere(&self, subject: &str, payload: &[u8]) {
        let from = subject.rsplit('.').next().unwrap_or_default();
        if from.is_empty() || from == self.settings.node {
            return;
        }
        let Ok(note) = serde_json::from_slice::<SharedTurn>(payload) else {
            return;
        };
        let _ = self.router.send(RouterMsg::SpentElsewhere(note)).await;
    }
}
