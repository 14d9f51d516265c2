//! `hum usage --cluster`: every node's turns over a period, read from the
//! cluster's usage stream into a database in memory, and reported as
//! `hum usage` reports this machine's.

use super::settings::{resolve, ClusterArgs};
use super::spend;
use crate::usage::report::{period, print, report, UsageArgs};
use crate::usage::shared::SharedTurn;
use crate::usage::UsageDb;
use async_nats::jetstream;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Turns one report reads at most (a month of a busy cluster is well
/// under; memory stays bounded whatever the stream holds).
const MAX_TURNS: usize = 2_000_000;

/// How long the stream may stay silent before what was read is all.
const QUIET: Duration = Duration::from_secs(3);

pub fn run(args: UsageArgs) -> ExitCode {
    let (since, until) = match period(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hum usage: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match crate::config::Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hum usage: {e}");
            return ExitCode::from(2);
        }
    };
    let cluster_args = ClusterArgs {
        url: args.cluster.clone().filter(|u| !u.is_empty()),
        node: None,
        cluster_name: args.cluster_name.clone(),
        cluster_credentials: args.cluster_credentials.clone(),
        cluster_ca: args.cluster_ca.clone(),
        cluster_insecure: false,
    };
    let settings = match resolve(&cluster_args, &config.cluster) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!("hum usage: --cluster needs a NATS server: hum.json's cluster.nats, or --cluster URL");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("hum usage: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    let turns = match rt.block_on(fetch(&settings, since, until)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hum usage: {e}");
            return ExitCode::from(1);
        }
    };
    let mut nodes: BTreeMap<String, u64> = BTreeMap::new();
    for t in &turns {
        *nodes.entry(t.node.clone()).or_default() += 1;
    }
    let records: Vec<_> = turns.iter().map(SharedTurn::record).collect();
    let r = UsageDb::in_memory().and_then(|mut db| {
        db.record(&records)?;
        report(Some(&db), since, until, args.by)
    });
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hum usage: {e}");
            return ExitCode::from(1);
        }
    };
    let code = print(&r, args.json);
    if !args.json {
        let by_node: Vec<String> = nodes
            .iter()
            .map(|(n, c)| format!("{} ({c})", crate::logsafe::escape(n)))
            .collect();
        println!(
            "cluster {}: turns recorded on {}",
            settings.name,
            if by_node.is_empty() {
                "no node".into()
            } else {
                by_node.join(", ")
            }
        );
    }
    code
}

/// Every node's turns in the period, from the cluster's usage stream.
async fn fetch(
    settings: &super::ClusterSettings,
    since: i64,
    until: i64,
) -> Result<Vec<SharedTurn>, String> {
    let client = tokio::time::timeout(Duration::from_secs(10), settings.connect())
        .await
        .map_err(|_| format!("NATS at {} did not answer", settings.url))??;
    let js = jetstream::new(client);
    let (name, _) = spend::usage_stream(&settings.name);
    let mut stream = js.get_stream(&name).await.map_err(|e| {
        format!(
            "cluster {}: no usage stream ({e}); has a node of it recorded a turn?",
            settings.name
        )
    })?;
    let held = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .messages;
    let mut turns = Vec::new();
    if held == 0 {
        return Ok(turns);
    }
    let mut messages = spend::turns_since(&stream, since).await?;
    while turns.len() < MAX_TURNS {
        let Ok(Some(next)) = tokio::time::timeout(QUIET, messages.next()).await else {
            break;
        };
        let m = next.map_err(|e| e.to_string())?;
        let pending = m.info().map(|i| i.pending).unwrap_or(0);
        if let Ok(t) = serde_json::from_slice::<SharedTurn>(&m.payload) {
            if (since..until).contains(&t.ended_at_ms) {
                turns.push(t);
            }
        }
        if pending == 0 {
            break;
        }
    }
    Ok(turns)
}
