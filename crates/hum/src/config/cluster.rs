//! `cluster`: this machine as a node of a hum cluster on NATS (issue 28).
//! Absent (or without `nats`), hum is one machine exactly as before.

use serde::Deserialize;
use std::path::PathBuf;

/// Longest a cluster name may be: it is part of every subject and bucket
/// name, which NATS keeps short.
pub const MAX_CLUSTER_NAME: usize = 32;

/// Longest a node name may be (a hostname label is at most 63).
pub const MAX_NODE_NAME: usize = 64;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ClusterConfig {
    /// The NATS server (`nats://host:port`, `tls://host:port`); none: no
    /// cluster.
    pub nats: Option<String>,
    /// This machine's name in the cluster; default: the hostname.
    pub node: Option<String>,
    /// The cluster's name: every subject and bucket is scoped to it, so
    /// two clusters on one NATS server never see each other.
    pub name: String,
    /// NATS credentials: a `.creds` file, an nkey seed, or one line
    /// `user:password`. Must be the user's own and not readable by others.
    pub credentials_file: Option<PathBuf>,
    /// PEM certificates of the authority that signed the NATS server's
    /// (a private CA); given, the connection must be TLS. None: the
    /// system's roots, for a `tls://` URL.
    pub ca_file: Option<PathBuf>,
    /// Allows no credentials, and only with a loopback NATS URL.
    pub insecure: bool,
    /// How often this node says it is alive and reports its load.
    pub heartbeat_ms: u64,
    /// A node not heard from for this long is gone: its turns end with
    /// `worker_lost` and its sids move on their next prompt.
    pub node_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats: None,
            node: None,
            name: "hum".into(),
            credentials_file: None,
            ca_file: None,
            insecure: false,
            heartbeat_ms: 1000,
            node_timeout_ms: 5000,
        }
    }
}

/// A cluster or node name: it goes into NATS subjects and bucket names,
/// so only letters, digits, `-` and `_`.
pub fn check_name(what: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!(
            "{what} must be 1 to {max} characters, not {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{what} {name:?} has {c:?}: only letters, digits, '-' and '_' (it names NATS subjects)"
        ));
    }
    Ok(())
}

/// This machine's default node name: its hostname, with what a subject
/// cannot hold turned into `-`.
pub fn default_node_name() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NODE_NAME)
        .collect();
    if name.is_empty() {
        "node".into()
    } else {
        name
    }
}

impl ClusterConfig {
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        check_name("the cluster name", &self.name, MAX_CLUSTER_NAME)
            .map_err(|m| ("cluster.name".into(), m))?;
        if let Some(node) = &self.node {
            check_name("the node name", node, MAX_NODE_NAME)
                .map_err(|m| ("cluster.node".into(), m))?;
        }
        for (key, ms) in [
            ("cluster.heartbeatMs", self.heartbeat_ms),
            ("cluster.nodeTimeoutMs", self.node_timeout_ms),
        ] {
            if !(100..=super::MAX_TIMEOUT_MS).contains(&ms) {
                return Err((
                    key.into(),
                    format!("must be 100 to {} ms", super::MAX_TIMEOUT_MS),
                ));
            }
        }
        if self.node_timeout_ms < 2 * self.heartbeat_ms {
            return Err((
                "cluster.nodeTimeoutMs".into(),
                "must be at least twice cluster.heartbeatMs (one lost heartbeat must not end a node)".into(),
            ));
        }
        Ok(())
    }
}
