//! # `hum gateway`: OpenAI-, Anthropic- and Ollama-compatible HTTP front doors
//!
//! A bee of its own rather than a part of humd: it speaks only the public
//! thrum wire (so it proves thrum is enough), a crash of it cannot take the
//! daemon or any cell down, and humd stays small. Each HTTP request becomes
//! one thrum turn under the sid the [affinity] rule picks.
//!
//! Done: `GET /v1/models`, `POST /v1/chat/completions` (plain and
//! streaming), `POST /v1/responses` (OpenAI's Responses API, its ids naming
//! their conversation, kept ones read back), `POST /v1/messages`
//! (Anthropic), function calling in each (the client's tools, calls ending
//! a response, results continuing the same turn), a bearer token (required
//! on this door; the Ollama door on its own listener lets the user's own
//! processes in without one), and `hum up` starts it.
//!
//! - [`affinity`]: which sid an HTTP request belongs to; [`in_flight`]:
//!   the sids a turn is on (a history's sid only when none is).
//! - [`calls`]: the client's functions, and turns parked while the client
//!   runs them.
//! - [`turn`]: one turn asked of humd, cancelled if dropped early.
//! - [`openai`]: OpenAI's request, response, stream and error shapes.
//! - [`anthropic`]: Anthropic's shapes, the same way.
//! - [`responses`]: OpenAI's Responses shapes; [`response_ids`], [`kept`].
//! - [`ollama`]: Ollama's shapes, its door and listings.
//! - [`requests`]: both APIs' request bodies, typed.

pub mod affinity;
pub mod anthropic;
pub mod calls;
mod errors;
pub mod functions;
pub mod in_flight;
pub mod kept;
pub mod ollama;
pub mod openai;
mod opening;
mod pressure;
pub mod released;
pub mod requests;
pub mod respond;
pub mod response_ids;
pub mod responses;
pub mod structured;
mod token;
pub mod turn;

pub use token::{authorized, default_token_file, load_or_create_token, MIN_TOKEN_CHARS};
use token::{ollama_allowed, resolve_token, token_source};

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
    /// Where the Ollama door listens, or `off` (overrides
    /// `gateway.ollamaAddr`; default Ollama's own 127.0.0.1:11434, skipped
    /// with a warning when another server has it).
    #[arg(long, value_name = "ADDR|off")]
    pub ollama_listen: Option<OllamaListen>,
}

/// `--ollama-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OllamaListen {
    At(SocketAddr),
    Off,
}

impl std::str::FromStr for OllamaListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(OllamaListen::Off);
        }
        s.parse()
            .map(OllamaListen::At)
            .map_err(|e| format!("{s:?} is neither an address (127.0.0.1:11434) nor `off`: {e}"))
    }
}

/// A stream silent this long gets a keep-alive (an SSE comment for OpenAI,
/// `event: ping` for Anthropic). It keeps proxies from cutting an idle
/// stream, and it is how a client that left is noticed while the agent is
/// silent: the write after the client's close fails, within about twice
/// this, and dropping the stream cancels the turn.
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_millis(400);

/// The first line `hum gateway` prints starts so, then the address it
/// listens on and `/v1`.
pub const LISTENING: &str = "hum gateway listening on http://";

/// The third line `hum gateway` prints starts so, then the Ollama door's
/// address (or says it is off, and why).
pub const OLLAMA_LISTENING: &str = "hum gateway's Ollama door on http://";

/// The address in the first line `hum gateway` printed (read from `out`,
/// its stdout), for whoever started it (tests, benches, scripts).
pub fn read_listening_addr(out: impl std::io::Read) -> Option<String> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).ok()?;
    let addr = line.trim().strip_prefix(LISTENING)?.strip_suffix("/v1")?;
    addr.contains(':').then(|| addr.to_owned())
}

/// Both addresses `hum gateway` printed: the OpenAI/Anthropic door's and
/// the Ollama door's (none when it is off).
pub fn read_both_addrs(out: impl std::io::Read) -> Option<(String, Option<String>)> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(out).lines();
    let first = lines.next()?.ok()?;
    let addr = first.trim().strip_prefix(LISTENING)?.strip_suffix("/v1")?;
    let _token = lines.next()?.ok()?;
    let third = lines.next()?.ok()?;
    let ollama = third
        .trim()
        .strip_prefix(OLLAMA_LISTENING)
        .map(str::to_owned);
    Some((addr.to_owned(), ollama))
}

/// Shared by every request.
pub struct Gateway {
    pub socket: PathBuf,
    pub affinity: Mutex<affinity::Affinity>,
    /// The sids this gateway's turns are on.
    pub in_flight: in_flight::InFlight,
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
    /// Responses kept for `GET /v1/responses/{id}`.
    pub kept: Mutex<kept::Kept>,
}

impl Gateway {
    /// A gateway to humd at `socket`; `token` none means no authentication.
    pub fn new(socket: PathBuf, token: Option<String>) -> Gateway {
        let response_ids = response_ids::ResponseIds::new(token.as_deref());
        Gateway {
            socket,
            affinity: Mutex::new(affinity::Affinity::default()),
            in_flight: Default::default(),
            token,
            parked: Arc::new(calls::Parked::default()),
            parked_turn: std::time::Duration::from_millis(
                crate::config::GatewaySettings::default().parked_turn_ms,
            ),
            builtin_tools: crate::config::GatewaySettings::default().builtin_tools,
            response_ids,
            kept: Mutex::new(kept::Kept::default()),
        }
    }
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
    let ollama_at = match args.ollama_listen {
        Some(OllamaListen::Off) => None,
        Some(OllamaListen::At(a)) => Some((a, true)),
        None => settings
            .ollama_addr
            .map(|a| (a, a.to_string() != ollama::door::DEFAULT_ADDR)),
    };
    if let Some((addr, _)) = ollama_at {
        if let Err(e) = ollama_allowed(addr, token.as_deref()) {
            eprintln!("hum gateway: {e}");
            return ExitCode::from(2);
        }
    }
    let rt = crate::stop::runtime(crate::stop::Threads::PerCore);
    rt.block_on(async move {
        let mut gw = Gateway::new(args.socket.unwrap_or_else(thrum::socket_path), token);
        gw.parked_turn = std::time::Duration::from_millis(parked_ms);
        gw.builtin_tools = settings.builtin_tools;
        let gw = Arc::new(gw);
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                let held = match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        format!(" ({})", crate::http_guard::holder_of(args.listen))
                    }
                    _ => String::new(),
                };
                eprintln!("hum gateway: cannot listen on {}: {e}{held}", args.listen);
                return ExitCode::from(1);
            }
        };
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (ollama, ollama_line) = match bind_ollama(ollama_at).await {
            Ok(bound) => bound,
            Err(code) => return code,
        };
        let bound_addrs = [listener.local_addr().ok(), ollama.as_ref().and_then(|l| l.local_addr().ok())];
        for warning in bound_addrs.into_iter().flatten().filter_map(crate::http_guard::squatter_beside) {
            tracing::warn!(event = "gateway.squatter", warning = %warning, "another user listens beside the gateway");
            eprintln!("hum gateway: WARNING: {warning}");
        }
        // One write, and never a panic if nobody reads stdout any more.
        {
            use std::io::Write;
            let _ = writeln!(
                std::io::stdout(),
                "{LISTENING}{bound}/v1\n{source}\n{ollama_line}"
            );
        }
        let mut stop = crate::stop::StopSignals::install();
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        let door = ollama.map(|l| {
            let mut stopped = stopped.clone();
            tokio::spawn(ollama::door::serve(l, gw.clone(), async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        });
        let served = serve(listener, gw, async move {
            stop.next().await;
            let _ = stopping.send(true);
        })
        .await;
        if let Some(door) = door {
            let _ = door.await;
        }
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hum gateway: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// The Ollama door's listener (none: off, or its default address taken)
/// and the line that says so; an address asked for that cannot be had
/// stops the gateway.
async fn bind_ollama(
    at: Option<(SocketAddr, bool)>,
) -> Result<(Option<tokio::net::TcpListener>, String), ExitCode> {
    let Some((addr, required)) = at else {
        return Ok((None, "hum gateway's Ollama door: off".to_owned()));
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            let at = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            Ok((Some(l), format!("{OLLAMA_LISTENING}{at}")))
        }
        Err(e) => {
            let held = match e.kind() {
                std::io::ErrorKind::AddrInUse => crate::http_guard::holder_of(addr),
                _ => e.to_string(),
            };
            if required {
                eprintln!("hum gateway: cannot listen on {addr} for the Ollama door: {e} ({held})");
                return Err(ExitCode::from(1));
            }
            // Ollama's own port, taken (by Ollama, likely): its clients find
            // that server, and hum's door stays shut.
            tracing::warn!(event = "gateway.ollama_off", addr = %addr, held = %held, "the Ollama door's address is taken: it stays off");
            Ok((
                None,
                format!("hum gateway's Ollama door: off ({addr}: {held})"),
            ))
        }
    }
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
        .route("/v1/responses/{id}", {
            let (get, delete) = (gw.clone(), gw.clone());
            axum::routing::get(
                move |headers: HeaderMap, axum::extract::Path(id): axum::extract::Path<String>| {
                    kept::read(get.clone(), headers, id)
                },
            )
            .delete(
                move |headers: HeaderMap, axum::extract::Path(id): axum::extract::Path<String>| {
                    kept::delete(delete.clone(), headers, id)
                },
            )
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

/// A server-sent-events response of `events`, with `keep_alive` written
/// whenever nothing else was for [`KEEPALIVE`]: a write to a client that
/// left fails, the response is dropped, and so is the channel feeding
/// `events` — which the producer notices (`Sender::closed`) and drops its
/// turn, cancelling it, even while the agent is silent.
pub(crate) fn sse_response(
    events: impl tokio_stream::Stream<Item = sse::Event> + Send + 'static,
    keep_alive: sse::KeepAlive,
    sid: &str,
) -> Response {
    use tokio_stream::StreamExt;
    let resp = sse::Sse::new(events.map(Ok::<_, std::convert::Infallible>))
        .keep_alive(keep_alive.interval(KEEPALIVE))
        .into_response();
    with_session(resp, sid)
}

/// A response of one JSON object per line (Ollama's streams). NDJSON has
/// no comment a client would skip, so nothing keeps a silent stream alive;
/// a client that closes its connection is still noticed at once (the
/// server reads the close and drops the body, and with it the turn), but
/// one that vanished without a close only at the next line written.
pub(crate) fn ndjson_response(
    lines: impl tokio_stream::Stream<Item = axum::body::Bytes> + Send + 'static,
    sid: &str,
) -> Response {
    use tokio_stream::StreamExt;
    let body = axum::body::Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>));
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
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
}
