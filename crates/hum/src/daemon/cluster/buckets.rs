//! The cluster's JetStream buckets, opened or made.

use async_nats::jetstream::{self, kv};
use std::time::Duration;
use tokio_stream::StreamExt;

/// A key-value bucket, made if missing. Made as the stream the key-value
/// convention describes (`KV_<bucket>` on `$KV.<bucket>.>`, one value per
/// key, no deletes through the stream API): the client's own bucket
/// creation first asks the account's limits, whose answer from the
/// 2.9 server Debian ships it does not read.
pub(super) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Option<Duration>,
    storage: jetstream::stream::StorageType,
) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        max_age: max_age.unwrap_or_default(),
        storage,
        num_replicas: 1,
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(_) => {}
        // Another node made it first.
        Err(e) if e.to_string().contains("already in use") => {}
        Err(e) => return Err(e.to_string()),
    }
    js.get_key_value(bucket).await.map_err(|e| e.to_string())
}

/// The next entry of a watch; never, while there is none.
pub(super) async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    match watch {
        Some(w) => match w.next().await {
            Some(Ok(e)) => Some(e),
            _ => None,
        },
        None => std::future::pending().await,
    }
}
