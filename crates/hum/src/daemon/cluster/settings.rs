//! How this node joins its cluster: the NATS URL, its name, and the
//! credentials, read from a file only this user can read.

use crate::config::{check_name, ClusterConfig, MAX_CLUSTER_NAME, MAX_NODE_NAME};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest credentials file read: a `.creds` file is a JWT and a
/// seed, well under this.
const MAX_CREDENTIALS_BYTES: u64 = 64 * 1024;

/// NATS credentials, as the file gave them.
#[derive(Clone)]
pub enum Credentials {
    None,
    /// A `.creds` file's text (a user JWT and its nkey seed).
    Creds(String),
    /// An nkey seed (`SU…`).
    Nkey(String),
    UserPassword(String, String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself, in a log or a panic.
        f.write_str(match self {
            Credentials::None => "none",
            Credentials::Creds(_) => "creds file",
            Credentials::Nkey(_) => "nkey seed",
            Credentials::UserPassword(..) => "user and password",
        })
    }
}

/// Everything the cluster part of humd runs with.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub url: String,
    pub node: String,
    pub name: String,
    pub credentials: Credentials,
    /// The authority that signed the NATS server's certificate, read
    /// once from a PEM file no other user can change (reconnects trust
    /// what was read, not what the path holds later); TLS is then
    /// required.
    pub ca: Option<super::tls::Authority>,
    pub heartbeat: Duration,
    pub node_timeout: Duration,
}

/// What `hum daemon` / `hum up` were told on the command line (each wins
/// over hum.json's `cluster`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// Join the cluster on this NATS server (`nats://host:port`,
    /// `tls://host:port`).
    #[arg(long = "cluster", value_name = "URL")]
    pub url: Option<String>,
    /// This machine's name in the cluster (default: hum.json's
    /// `cluster.node`, else the hostname).
    #[arg(long)]
    pub node: Option<String>,
    /// The cluster's name (default: hum.json's `cluster.name`, else `hum`).
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// NATS credentials file (a `.creds` file, an nkey seed, or one line
    /// `user:password`); must not be readable by others.
    #[arg(long)]
    pub cluster_credentials: Option<PathBuf>,
    /// PEM certificates of the authority that signed the NATS server's
    /// (default: hum.json's `cluster.caFile`, else the system's roots);
    /// the connection must then be TLS.
    #[arg(long, value_name = "FILE")]
    pub cluster_ca: Option<PathBuf>,
    /// Join without credentials; only with a loopback NATS URL.
    #[arg(long)]
    pub cluster_insecure: bool,
}

impl ClusterArgs {
    /// The arguments that say the same to another hum command.
    pub fn to_argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        let mut push = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                argv.push(format!("--{flag}={v}"));
            }
        };
        push("cluster", self.url.clone());
        push("node", self.node.clone());
        push("cluster-name", self.cluster_name.clone());
        push(
            "cluster-credentials",
            self.cluster_credentials
                .as_ref()
                .map(|p| p.display().to_string()),
        );
        push(
            "cluster-ca",
            self.cluster_ca.as_ref().map(|p| p.display().to_string()),
        );
        if self.cluster_insecure {
            argv.push("--cluster-insecure".into());
        }
        argv
    }
}

/// The cluster settings from the command line and hum.json; none when
/// neither names a NATS server. An error says what to fix.
pub fn resolve(
    args: &ClusterArgs,
    config: &ClusterConfig,
) -> Result<Option<ClusterSettings>, String> {
    let Some(url) = args.url.clone().or_else(|| config.nats.clone()) else {
        return Ok(None);
    };
    let node = args
        .node
        .clone()
        .or_else(|| config.node.clone())
        .unwrap_or_else(crate::config::default_node_name);
    check_name("the node name", &node, MAX_NODE_NAME)?;
    let name = args
        .cluster_name
        .clone()
        .unwrap_or_else(|| config.name.clone());
    check_name("the cluster name", &name, MAX_CLUSTER_NAME)?;
    let insecure = args.cluster_insecure || config.insecure;
    let file = args
        .cluster_credentials
        .clone()
        .or_else(|| config.credentials_file.clone());
    let credentials = match file {
        Some(path) => read_credentials(&path)?,
        None if insecure && is_loopback_url(&url) => Credentials::None,
        None if insecure => {
            return Err(format!(
                "{url} is not a loopback address: the cluster needs credentials there (--cluster-insecure is for loopback only)"
            ))
        }
        None => {
            return Err(format!(
                "joining the cluster at {url} needs credentials (--cluster-credentials FILE or cluster.credentialsFile); on loopback, --cluster-insecure allows none"
            ))
        }
    };
    let ca = match args.cluster_ca.clone().or_else(|| config.ca_file.clone()) {
        Some(path) => Some(super::tls::check_ca(&path)?),
        None => None,
    };
    Ok(Some(ClusterSettings {
        url,
        node,
        name,
        credentials,
        ca,
        heartbeat: Duration::from_millis(config.heartbeat_ms),
        node_timeout: Duration::from_millis(config.node_timeout_ms),
    }))
}

/// Whether a NATS URL's host is a loopback address (or `localhost`).
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    // Credentials in the URL (`user:pass@host`) are not the host.
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split_once(']').map_or(v6, |(h, _)| h)
    } else {
        rest.split([':', '/']).next().unwrap_or(rest)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a credentials file that must be this user's own, a regular file
/// (no symlink followed), and not readable or writable by anyone else.
pub fn read_credentials(path: &Path) -> Result<Credentials, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot open the cluster credentials {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the cluster credentials {shown}: {e}"))?;
    let uid = rustix::process::getuid().as_raw();
    if !meta.is_file() {
        return Err(format!(
            "the cluster credentials {shown} are not a regular file"
        ));
    }
    if meta.uid() != uid {
        return Err(format!(
            "the cluster credentials {shown} belong to uid {}, not to this user ({uid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the cluster credentials {shown} are open to others (mode {:o}); chmod 600 it",
            meta.mode() & 0o777
        ));
    }
    let mut text = String::new();
    file.take(MAX_CREDENTIALS_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the cluster credentials {shown}: {e}"))?;
    parse_credentials(&text).map_err(|why| format!("the cluster credentials {shown}: {why}"))
}

/// What a credentials file's text is.
pub fn parse_credentials(text: &str) -> Result<Credentials, String> {
    let trimmed = text.trim();
    if trimmed.contains("-----BEGIN NATS USER JWT-----") {
        return Ok(Credentials::Creds(text.to_owned()));
    }
    if trimmed.starts_with("SU") && !trimmed.contains(char::is_whitespace) {
        return Ok(Credentials::Nkey(trimmed.to_owned()));
    }
    match trimmed.split_once(':') {
        Some((user, password))
            if !user.is_empty() && !password.is_empty() && !trimmed.contains('\n') =>
        {
            Ok(Credentials::UserPassword(
                user.to_owned(),
                password.to_owned(),
            ))
        }
        _ => Err("neither a .creds file, an nkey seed (SU…) nor one line user:password".into()),
    }
}

/// Why a connection to NATS failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    pub message: String,
    /// The server answered and said no, or its TLS is not what these
    /// settings trust: trying again will not help (a server not there,
    /// or not yet answering, is not refused).
    pub refused: bool,
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ConnectFailure> for String {
    fn from(f: ConnectFailure) -> String {
        f.message
    }
}

impl ClusterSettings {
    /// Connects to NATS as these settings say, once (an error says why,
    /// and whether trying again could help); once connected, the client
    /// reconnects for ever on its own (NATS down is survived, see the
    /// cluster module).
    pub async fn connect(&self) -> Result<async_nats::Client, ConnectFailure> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("hum {}/{}", self.name, self.node))
            .connection_timeout(Duration::from_secs(5))
            .ping_interval(Duration::from_secs(5))
            .max_reconnects(None);
        opts = match &self.credentials {
            Credentials::None => opts,
            Credentials::Creds(text) => opts.credentials(text).map_err(|e| ConnectFailure {
                message: format!("the cluster credentials do not read: {e}"),
                refused: true,
            })?,
            Credentials::Nkey(seed) => opts.nkey(seed.clone()),
            Credentials::UserPassword(u, p) => opts.user_and_password(u.clone(), p.clone()),
        };
        if let Some(ca) = &self.ca {
            opts =
                opts.tls_client_config(ca.client_config().map_err(|message| ConnectFailure {
                    message,
                    refused: true,
                })?);
        }
        if self.url.starts_with("tls://") || self.ca.is_some() {
            opts = opts.require_tls(true);
        }
        opts.connect(self.url.as_str())
            .await
            .map_err(|e| {
                let why = super::tls::refusal(&e);
                let hint = match why {
                    Some(super::tls::Refusal::Tls) => " (TLS failed: the server has no TLS, or its certificate is not signed by an authority this node trusts: --cluster-ca)",
                    _ => "",
                };
                ConnectFailure {
                    message: format!(
                        "cannot connect to the cluster's NATS at {}: {e}{hint}",
                        self.url
                    ),
                    refused: why.is_some(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_told_from_others() {
        for u in [
            "nats://127.0.0.1:4222",
            "nats://localhost:4222",
            "nats://[::1]:4222",
            "127.0.0.2",
            "nats://u:p@127.0.0.1:1",
        ] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in [
            "nats://10.0.0.1:4222",
            "tls://nats.example:4222",
            "nats://127.0.0.1.evil:1",
            "nats://localhost@10.0.0.1:1",
        ] {
            assert!(!is_loopback_url(u), "{u}");
        }
    }

    #[test]
    fn credentials_read_as_what_they_are() {
        assert!(
            matches!(parse_credentials("alice:s3cret\n"), Ok(Credentials::UserPassword(u, p)) if u == "alice" && p == "s3cret")
        );
        assert!(matches!(
            parse_credentials("SUAB\n"),
            Ok(Credentials::Nkey(_))
        ));
        assert!(matches!(
            parse_credentials("-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n"),
            Ok(Credentials::Creds(_))
        ));
        assert!(parse_credentials("").is_err());
        assert!(parse_credentials("alice:\n").is_err());
        assert!(parse_credentials("a:b\nc:d").is_err());
        assert_eq!(
            format!(
                "{:?}",
                Credentials::UserPassword("u".into(), "secret".into())
            ),
            "user and password"
        );
    }

    #[test]
    fn a_cluster_without_credentials_is_refused_unless_insecure_on_loopback() {
        let config = ClusterConfig::default();
        let args = |url: &str, insecure: bool| ClusterArgs {
            url: Some(url.into()),
            node: Some("a".into()),
            cluster_insecure: insecure,
            ..Default::default()
        };
        assert!(resolve(&ClusterArgs::default(), &config).unwrap().is_none());
        let e = resolve(&args("nats://127.0.0.1:4222", false), &config).unwrap_err();
        assert!(e.contains("needs credentials"), "{e}");
        let e = resolve(&args("nats://10.1.1.1:4222", true), &config).unwrap_err();
        assert!(e.contains("not a loopback"), "{e}");
        let s = resolve(&args("nats://127.0.0.1:4222", true), &config)
            .unwrap()
            .unwrap();
        assert!(matches!(s.credentials, Credentials::None));
        let e = resolve(
            &ClusterArgs {
                node: Some("a.b".into()),
                ..args("nats://127.0.0.1:4222", true)
            },
            &config,
        )
        .unwrap_err();
        assert!(e.contains("only letters"), "{e}");
    }

    #[test]
    fn credentials_open_to_others_or_behind_a_symlink_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds");
        std::fs::write(&f, "alice:pw").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_credentials(&f).unwrap_err();
        assert!(e.contains("open to others"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_credentials(&f),
            Ok(Credentials::UserPassword(..))
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(
            read_credentials(&link).is_err(),
            "a symlink is not followed"
        );
    }
}
