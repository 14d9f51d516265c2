//! The gateway's token: where it comes from (a flag, the environment, or
//! a 0600 file made on first start and checked on its descriptor), when
//! one is required and strong enough, and whether a request carries it.

use super::GatewayArgs;
use axum::http::HeaderMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Bytes of randomness in a generated token.
const TOKEN_BYTES: usize = 32;

/// The default token file: `gateway.token` in hum's state dir.
pub fn default_token_file() -> PathBuf {
    crate::os::paths::default_state_dir().join("gateway.token")
}

/// Reads the token in `path`, creating the file (0600; its directory 0700
/// if it has to be made: an existing one, such as `/tmp`, is left as it
/// is) with a fresh random token when it does not exist. The file is
/// opened without following a symlink and checked on its descriptor: one
/// another user owns, or readable by others, is refused (the token would
/// not be a secret).
pub fn load_or_create_token(path: &std::path::Path) -> Result<String, String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            crate::private_fs::create_private_dir(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    let nofollow = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nofollow)
        .open(path)
    {
        Ok(mut f) => {
            let mut token = String::from("hum-");
            while token.len() < 4 + 2 * TOKEN_BYTES {
                token.push_str(&uuid::Uuid::new_v4().simple().to_string());
            }
            token.truncate(4 + 2 * TOKEN_BYTES);
            f.write_all(format!("{token}\n").as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            tracing::info!(event = "gateway.token_created", path = %path.display(), "a new gateway token was written");
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nofollow)
                .open(path)
                .map_err(|e| {
                    format!("cannot read {} (a symlink is refused): {e}", path.display())
                })?;
            let meta = f
                .metadata()
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let own = thrum::peer::own_uid();
            if meta.uid() != own || !meta.is_file() {
                return Err(format!(
                    "{} belongs to uid {} or is not a plain file: refusing to take a token from it",
                    path.display(),
                    thrum::peer::describe(meta.uid())
                ));
            }
            if meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "{} is readable by other users (mode {:o}); chmod 600 it",
                    path.display(),
                    meta.mode() & 0o777
                ));
            }
            let mut token = String::new();
            Read::by_ref(&mut f)
                .take(64 * 1024)
                .read_to_string(&mut token)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let token = token.trim().to_owned();
            if token.is_empty() {
                return Err(format!("{} is empty", path.display()));
            }
            Ok(token)
        }
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

/// Where the token comes from, said once at start (never the token).
pub(super) fn token_source(args: &GatewayArgs) -> String {
    if args.no_auth {
        return "authentication: OFF (--no-auth): every local user can use this gateway".into();
    }
    if args.token.as_deref().is_some_and(|t| !t.is_empty()) {
        return "token: from --token / HUM_GATEWAY_TOKEN (send it as `Authorization: Bearer …` or `x-api-key: …`)".into();
    }
    let path = args.token_file.clone().unwrap_or_else(default_token_file);
    format!(
        "token: in {} (send it as `Authorization: Bearer …` or `x-api-key: …`; OPENAI_API_KEY=$(cat {0}))",
        path.display()
    )
}

/// The token this gateway requires, or `None` with --no-auth; an error
/// says why it cannot start (exit 2).
pub(super) fn resolve_token(args: &GatewayArgs) -> Result<Option<String>, String> {
    let loopback = args.listen.ip().is_loopback();
    if args.no_auth {
        if !loopback {
            return Err(format!(
                "--no-auth is only allowed on loopback, not on {}",
                args.listen
            ));
        }
        return Ok(None);
    }
    if let Some(t) = args.token.as_deref().filter(|t| !t.is_empty()) {
        return strong_enough(t, loopback).map(|()| Some(t.to_owned()));
    }
    match &args.token_file {
        Some(path) if path.exists() => {
            let t = load_or_create_token(path)?;
            strong_enough(&t, loopback).map(|()| Some(t))
        }
        Some(path) => Err(format!("token file {} does not exist", path.display())),
        None if !loopback => Err(format!(
            "listening on {} (not loopback) needs a token given explicitly: --token-file or HUM_GATEWAY_TOKEN",
            args.listen
        )),
        None => load_or_create_token(&default_token_file()).map(Some),
    }
}

/// The Ollama door may listen off loopback only behind a token a stranger
/// cannot guess (its tokenless same-user rule holds on loopback alone).
pub(super) fn ollama_allowed(addr: SocketAddr, token: Option<&str>) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    match token {
        Some(t) => strong_enough(t, false),
        None => Err(format!(
            "the Ollama door on {addr} (not loopback) needs the gateway's token: --no-auth is loopback only"
        )),
    }
}

/// A user-given token shorter than this is refused off loopback (hum's own
/// are 68 characters, 256 random bits).
pub const MIN_TOKEN_CHARS: usize = 16;

/// Whether a user-given token may guard the gateway: never blank, and off
/// loopback at least [`MIN_TOKEN_CHARS`] characters.
pub(super) fn strong_enough(token: &str, loopback: bool) -> Result<(), String> {
    if token.trim().is_empty() {
        return Err("the gateway token is blank".into());
    }
    if !loopback && token.trim().chars().count() < MIN_TOKEN_CHARS {
        return Err(format!(
            "the gateway token is {} characters: off loopback it must be at least {MIN_TOKEN_CHARS} (hum's own are 68: remove the token file to have one made)",
            token.trim().chars().count()
        ));
    }
    Ok(())
}

/// Whether the request carries the token (always true with --no-auth).
pub fn authorized(gw: &super::Gateway, headers: &HeaderMap) -> bool {
    let Some(token) = &gw.token else { return true };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    // Every byte compared, so timing says nothing about a prefix.
    let same = |v: &str| {
        v.len() == token.len()
            && v.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    };
    bearer.is_some_and(same) || api_key.is_some_and(same)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ollama_door_leaves_loopback_only_behind_a_strong_token() {
        let lo: SocketAddr = "127.0.0.1:11434".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:11434".parse().unwrap();
        assert!(ollama_allowed(lo, None).is_ok());
        assert!(ollama_allowed(any, None).is_err());
        assert!(ollama_allowed(any, Some("short")).is_err());
        assert!(ollama_allowed(any, Some("a-token-of-16-ch")).is_ok());
        assert_eq!(
            "off".parse::<super::super::OllamaListen>(),
            Ok(super::super::OllamaListen::Off)
        );
        assert_eq!(
            "127.0.0.1:0".parse::<super::super::OllamaListen>(),
            Ok(super::super::OllamaListen::At(
                "127.0.0.1:0".parse().unwrap()
            ))
        );
        assert!("localhost".parse::<super::super::OllamaListen>().is_err());
    }

    #[test]
    fn weak_tokens_are_refused_off_loopback_and_blank_ones_everywhere() {
        assert!(strong_enough("   ", true).is_err());
        assert!(strong_enough("", false).is_err());
        assert!(strong_enough("short-token", true).is_ok());
        let e = strong_enough("short-token", false).unwrap_err();
        assert!(e.contains("16"), "{e}");
        assert!(strong_enough("   padded-short   ", false).is_err());
        assert!(strong_enough("a-token-of-16-ch", false).is_ok());
        // hum's own: 68 characters from a random source.
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create_token(&dir.path().join("t")).unwrap();
        assert_eq!(made.len(), 68);
        assert!(strong_enough(&made, false).is_ok());
        let other = load_or_create_token(&dir.path().join("u")).unwrap();
        assert_ne!(made, other);
    }
}
