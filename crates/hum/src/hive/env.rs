//! The environment a cell starts with: never the worker's whole
//! environment (which may hold `HUM_GATEWAY_TOKEN` or any secret of the
//! shell that started hum), but an allow-list of what an agent CLI needs to
//! run, reach its API and behave like it does in the user's shell, plus the
//! hive's configured `env`, which wins.

use std::ffi::{OsStr, OsString};

/// Variables passed through by exact name.
const INHERITED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "TMPDIR",
    "COLORTERM",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "IS_SANDBOX",
    "MCP_TIMEOUT",
];

/// Variables passed through by prefix: locale, the agent CLI's own settings
/// and credentials (`ANTHROPIC_API_KEY` is the agent's to use), cloud
/// provider settings claude reads for Bedrock and Vertex, the simulator's
/// knobs and the test tag.
const INHERITED_PREFIXES: &[&str] = &[
    "LC_",
    "ANTHROPIC_",
    "CLAUDE_",
    "AWS_",
    "CLOUD_ML_",
    "GOOGLE_",
    "VERTEX_",
    "DISABLE_",
    "HUM_SIM_",
    "HUM_TEST_",
];

/// Never passed, whatever the lists say: hum's own secrets.
const NEVER: &[&str] = &["HUM_GATEWAY_TOKEN"];

/// Whether a variable of the worker's environment reaches cells.
pub fn inherited(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    !NEVER.contains(&name)
        && (INHERITED.contains(&name) || INHERITED_PREFIXES.iter().any(|p| name.starts_with(p)))
}

/// A cell's environment: the allowed part of `worker` (the worker's own
/// environment), then `hive` (the hive's configured `env`) on top.
pub fn cell_env(
    worker: impl IntoIterator<Item = (OsString, OsString)>,
    hive: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> =
        worker.into_iter().filter(|(k, _)| inherited(k)).collect();
    for (k, v) in hive {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn secrets_stay_with_the_worker_and_the_hive_env_wins() {
        let worker = pairs(&[
            ("PATH", "/bin"),
            ("HUM_GATEWAY_TOKEN", "hum-secret"),
            ("GITHUB_TOKEN", "ghp"),
            ("ANTHROPIC_API_KEY", "sk"),
            ("LC_ALL", "C"),
            ("HOME", "/home/u"),
        ]);
        let env = cell_env(worker, &pairs(&[("HOME", "/cells"), ("X_HIVE", "1")]));
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("HUM_GATEWAY_TOKEN"), None);
        assert_eq!(get("GITHUB_TOKEN"), None, "not on the allow-list");
        assert_eq!(get("PATH").as_deref(), Some("/bin"));
        assert_eq!(get("ANTHROPIC_API_KEY").as_deref(), Some("sk"));
        assert_eq!(get("LC_ALL").as_deref(), Some("C"));
        assert_eq!(
            get("HOME").as_deref(),
            Some("/cells"),
            "the hive's env wins"
        );
        assert_eq!(get("X_HIVE").as_deref(), Some("1"));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
    }
}
