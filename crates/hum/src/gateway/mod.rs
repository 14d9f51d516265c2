//! # `hum gateway`: an OpenAI- and Anthropic-compatible HTTP front door
//!
//! A bee of its own rather than a part of humd: it speaks only the public
//! thrum wire (so it proves thrum is enough), a crash of it cannot take the
//! daemon or any cell down, and humd stays small. Each HTTP request becomes
//! one thrum turn under the sid the [affinity] rule picks.
//!
//! Done: `GET /v1/models`, `POST /v1/chat/completions` (plain and
//! streaming), `POST /v1/messages` (Anthropic, plain and streaming),
//! function calling in both (the client's tools, calls ending a response,
//! results continuing the same turn), a bearer token (required off
//! loopback), and `hum up` starts it.
//!
//! - [`affinity`]: which sid an HTTP request belongs to.
//! - [`calls`]: the client's functions, and turns parked while the client
//!   runs them.
//! - [`turn`]: one turn asked of humd, cancelled if dropped early.
//! - [`openai`]: OpenAI's request, response, stream and error shapes.
//! - [`anthropic`]: Anthropic's shapes, the same way.
//! - [`requests`]: both APIs' request bodies, typed.

pub mod affinity;
pub mod anthropic;
pub mod calls;
mod errors;
pub mod functions;
pub mod openai;
mod opening;
mod pressure;
pub mod released;
pub mod requests;
pub mod respond;
pub mod response_ids;
pub mod responses;
pub mod structured;
pub mod turn;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// humd's socket (default: the thrum socket path rules).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Where to listen. Any address but loopback requires a token given
    /// explicitly (--token-file or HUM_GATEWAY_TOKEN).
    #[arg(long, default_value = "127.0.0.1:8199")]
    pub listen: SocketAddr,
    /// The bearer token every request must carry (`Authorization: Bearer …`
    /// or `x-api-key: …`). Prefer --token-file: a value on the command line
    /// is visible to every local user.
    #[arg(long, env = "HUM_GATEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token (default: `gateway.token` in the state dir,
    /// created 0600 with a random token on first start).
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Accept requests without a token. Every local user can then prompt
    /// your agents and continue your sessions; loopback only.
    #[arg(long, conflicts_with_all = ["token", "token_file"])]
    pub no_auth: bool,
    /// hum.json, for its `gateway` section (default: the usual place; none
    /// there: defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How long a turn waiting for the client's tool results keeps its
    /// cell (overrides `gateway.parkedTurnMs`).
    #[arg(long)]
    pub parked_turn_ms: Option<u64>,
}

/// A stream silent this long gets a keep-alive (an SSE comment for OpenAI,
/// `event: ping` for Anthropic). It keeps proxies from cutting an idle
/// stream, and it is how a client that left is noticed while the agent is
/// silent: the write after the client's close fails, within about twice
/// this, and dropping the stream cancels the turn.
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_millis(400);

/// Bytes of randomness in a generated token.
const TOKEN_BYTES: usize = 32;

/// The default token file: `gateway.token` in hum's state dir.
pub fn default_token_file() -> PathBuf {
    crate::cell::default_state_dir().join("gateway.token")
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
fn token_source(args: &GatewayArgs) -> String {
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
fn resolve_token(args: &GatewayArgs) -> Result<Option<String>, String> {
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

/// A user-given token shorter than this is refused off loopback (hum's own
/// are 68 characters, 256 random bits).
pub const MIN_TOKEN_CHARS: usize = 16;

/// Whether a user-given token may guard the gateway: never blank, and off
/// loopback at least [`MIN_TOKEN_CHARS`] characters.
fn strong_enough(token: &str, loopback: bool) -> Result<(), String> {
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

/// The first line `hum gateway` prints starts so, then the address it
/// listens on and `/v1`.
pub const LISTENING: &str = "hum gateway listening on http://";

/// The address in the first line `hum gateway` printed (read from `out`,
/// its stdout), for whoever started it (tests, benches, scripts).
pub fn read_listening_addr(out: impl std::io::Read) -> Option<String> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).ok()?;
    let addr = line.trim().strip_prefix(LISTENING)?.strip_suffix("/v1")?;
    addr.contains(':').then(|| addr.to_owned())
}

/// Shared by every request.
pub struct Gateway {
    pub socket: PathBuf,
    pub affinity: Mutex<affinity::Affinity>,
    pub token: Option<String>,
    /// Turns waiting for their client's tool results.
    pub parked: Arc<calls::Parked>,
    /// How long a parked turn keeps its cell waiting for its client
    /// (`gateway.parkedTurnMs`).
    pub parked_turn: std::time::Duration,
    /// The agent's own tools a cell serving these requests may have
    /// (`gateway.builtinTools`).
    pub builtin_tools: crate::hive::builtin::BuiltinTools,
    /// The Responses API's ids, which name their conversation's sid.
    pub response_ids: response_ids::ResponseIds,
}

impl Gateway {
    /// A gateway to humd at `socket`; `token` none means no authentication.
    pub fn new(socket: PathBuf, token: Option<String>) -> Gateway {
        let response_ids = response_ids::ResponseIds::new(token.as_deref());
        Gateway {
            socket,
            affinity: Mutex::new(affinity::Affinity::default()),
            token,
            parked: Arc::new(calls::Parked::default()),
            parked_turn: std::time::Duration::from_millis(
                crate::config::GatewaySettings::default().parked_turn_ms,
            ),
            builtin_tools: crate::config::GatewaySettings::default().builtin_tools,
            response_ids,
        }
    }
}

/// Whether the request carries the token (always true with --no-auth).
pub fn authorized(gw: &Gateway, headers: &HeaderMap) -> bool {
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

/// The longest bee name the gateway passes on.
const MAX_BEE_HEADER: usize = 128;

/// `x-hum-bee`: the bee a request is for (usage and per-bee budgets); an
/// empty, over-long or non-printable value is ignored.
pub fn bee_header(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-hum-bee")?.to_str().ok()?.trim();
    (!v.is_empty() && v.len() <= MAX_BEE_HEADER && !v.chars().any(char::is_control))
        .then(|| v.to_owned())
}

/// The explicit session header, if the client sent one.
pub fn session_header(headers: &HeaderMap) -> Option<String> {
    ["x-hum-session", "x-claude-code-session-id"]
        .iter()
        .find_map(|h| {
            headers
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
}

pub fn run(args: GatewayArgs) -> ExitCode {
    let token = match resolve_token(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hum gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if token.is_none() {
        tracing::warn!(
            event = "gateway.no_auth",
            listen = %args.listen,
            "AUTHENTICATION IS OFF: every local user can prompt your agents and continue your sessions"
        );
    }
    let settings = match crate::config::Config::load(args.config.as_deref()) {
        Ok(c) => c.gateway,
        Err(e) => {
            eprintln!("hum gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let parked_ms = args.parked_turn_ms.unwrap_or(settings.parked_turn_ms);
    if parked_ms == 0 || parked_ms > crate::config::MAX_TIMEOUT_MS {
        eprintln!(
            "hum gateway: the parked-turn wait must be 1..={} ms, not {parked_ms}",
            crate::config::MAX_TIMEOUT_MS
        );
        return ExitCode::from(2);
    }
    let source = token_source(&args);
    let rt = crate::stop::runtime(crate::stop::Threads::PerCore);
    rt.block_on(async move {
        let mut gw = Gateway::new(args.socket.unwrap_or_else(thrum::socket_path), token);
        gw.parked_turn = std::time::Duration::from_millis(parked_ms);
        gw.builtin_tools = settings.builtin_tools;
        let gw = Arc::new(gw);
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("hum gateway: cannot listen on {}: {e}", args.listen);
                return ExitCode::from(1);
            }
        };
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // One write, and never a panic if nobody reads stdout any more.
        {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{LISTENING}{bound}/v1\n{source}");
        }
        let mut stop = crate::stop::StopSignals::install();
        match serve(listener, gw, async move { stop.next().await }).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hum gateway: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// Serves the HTTP front door on `listener` until `shutdown` resolves, then
/// lets requests in flight finish. Signals are the caller's business.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listening = listener.local_addr()?;
    let pressure = tokio::spawn(pressure::watch(gw.clone()));
    let app = axum::Router::new()
        .route(
            "/v1/models",
            axum::routing::get({
                let gw = gw.clone();
                move |headers: HeaderMap| openai::models(gw.clone(), headers)
            }),
        )
        .route(
            "/v1/chat/completions",
            axum::routing::post({
                let gw = gw.clone();
                move |headers: HeaderMap, body: axum::body::Bytes| {
                    respond::respond::<openai::OpenAi>(gw.clone(), headers, body)
                }
            }),
        )
        .route("/v1/responses", {
            let gw = gw.clone();
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                respond::respond::<responses::Responses>(gw.clone(), headers, body)
            })
        })
        .route("/v1/messages", {
            let gw = gw.clone();
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                respond::respond::<anthropic::Anthropic>(gw.clone(), headers, body)
            })
        })
        .layer(axum::middleware::from_fn_with_state(
            crate::http_guard::Listening(listening),
            crate::http_guard::guard,
        ));
    crate::http_serve::serve(listener, app, crate::http_serve::GATEWAY, shutdown).await;
    pressure.abort();
    Ok(())
}

/// Adds `Retry-After` (whole seconds, at least 1) when humd gave a hint.
pub(crate) fn with_retry_after(mut resp: Response, retry_after_ms: Option<u64>) -> Response {
    if let Some(v) = retry_after_ms
        .and_then(|ms| HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()).ok())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Tells the client which sid served it.
pub(crate) fn with_session(mut resp: Response, sid: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(sid) {
        resp.headers_mut().insert("x-hum-session", v);
    }
    resp
}

/// A server-sent-events response fed by `rx` as events come, with
/// `keep_alive` written whenever nothing else was for [`KEEPALIVE`]: a write
/// to a client that left fails, the response is dropped, and so is `rx` —
/// which the producer notices (`Sender::closed`) and drops its turn,
/// cancelling it, even while the agent is silent.
pub(crate) fn sse_response(
    rx: tokio::sync::mpsc::Receiver<sse::Event>,
    keep_alive: sse::KeepAlive,
    sid: &str,
) -> Response {
    use tokio_stream::StreamExt;
    let events =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    let resp = sse::Sse::new(events)
        .keep_alive(keep_alive.interval(KEEPALIVE))
        .into_response();
    with_session(resp, sid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bee_header_is_a_short_printable_name_or_nothing() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-hum-bee", HeaderValue::from_str(v).unwrap());
            bee_header(&h)
        };
        assert_eq!(with("  build-bee "), Some("build-bee".into()));
        assert_eq!(with(""), None);
        assert_eq!(with(&"b".repeat(MAX_BEE_HEADER + 1)), None);
        assert_eq!(with("tab\there"), None);
        assert_eq!(bee_header(&HeaderMap::new()), None);
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
