//! The Ollama door: its own listener (`gateway.ollamaAddr`, Ollama's
//! `127.0.0.1:11434` by default, when free), its routes, and who gets in.
//!
//! Ollama's clients send no token unless told to (`OLLAMA_API_KEY`), so a
//! request without one is let in when it comes over loopback from a
//! process of the gateway's own user (or root) — told by the kernel's
//! socket table, as `/status` is — and refused otherwise: another local
//! user needs the token, exactly as on the other door. Where the table
//! cannot be read (not Linux), the token is always needed. The Host and
//! Origin checks of every hum endpoint apply first, so a web page cannot
//! ride on the user's own browser.

use super::meta;
use super::OllamaChat;
use crate::gateway::respond::{self, Dialect};
use crate::gateway::Gateway;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use thrum::ErrorCode;

/// Ollama's own address: where its clients look by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:11434";

#[derive(Clone)]
struct Door {
    gw: Arc<Gateway>,
    bound: SocketAddr,
}

/// Lets in a request with the token, one from the gateway's own user, or
/// any with `--no-auth` (which hum allows on loopback only).
async fn admit(
    State(door): State<Door>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if door.gw.token.is_none() || crate::gateway::authorized(&door.gw, req.headers()) {
        return next.run(req).await;
    }
    // Told once per connection (see `PeerOwner`).
    let owner = req
        .extensions()
        .get::<crate::http_serve::PeerOwner>()
        .cloned()
        .unwrap_or_default();
    let ours = door.bound;
    let own = owner
        .get_or_find(move || crate::http_guard::loopback_peer_uid(peer, ours))
        .await
        .is_some_and(|uid| thrum::peer::allowed(uid, thrum::peer::own_uid()));
    if own {
        return next.run(req).await;
    }
    tracing::warn!(event = "gateway.ollama_refused", peer = %peer, path = %req.uri().path(), "a request without the token from another user (or not over loopback)");
    // Each API's own shape: OpenAI's routes on this door answer as OpenAI.
    if req.uri().path().starts_with("/v1/") {
        use crate::gateway::openai::OpenAi;
        return respond::error::<OpenAi>(&ErrorCode::Unauthorized, OpenAi::UNAUTHORIZED, None);
    }
    respond::error::<OllamaChat>(&ErrorCode::Unauthorized, OllamaChat::UNAUTHORIZED, None)
}

/// `/api/chat` and `/api/generate`: a request that only loads its model is
/// answered at once (once the model is known); any other goes through the
/// pipeline.
async fn answer<const GENERATE: bool>(
    gw: Arc<Gateway>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(model) = super::load_only(&body, GENERATE) {
        return match served(&gw, &model).await {
            Ok(()) => axum::Json(super::Ollama::<GENERATE>::loaded(&model)).into_response(),
            Err(resp) => resp,
        };
    }
    respond::answer::<super::Ollama<GENERATE>>(gw, headers, body).await
}

/// humd's status, or the error an Ollama client reads.
async fn status(gw: &Gateway) -> Result<crate::reports::DaemonStatus, Response> {
    crate::client::fetch_status(&gw.socket)
        .await
        .map_err(|e| respond::error::<OllamaChat>(&ErrorCode::Unavailable, &e, Some(1000)))
}

fn not_found(model: &str) -> Response {
    respond::error::<OllamaChat>(
        &ErrorCode::NotFound,
        &format!("model {:?} not found", crate::logsafe::escape(model)),
        None,
    )
}

/// Whether hum serves `model` (else Ollama's 404).
async fn served(gw: &Gateway, model: &str) -> Result<(), Response> {
    let s = status(gw).await?;
    if meta::models(&s).iter().any(|(m, _)| m == model) {
        Ok(())
    } else {
        Err(not_found(model))
    }
}

async fn tags(State(door): State<Door>) -> Response {
    match status(&door.gw).await {
        Ok(s) => axum::Json(meta::tags(&s, &super::created_at())).into_response(),
        Err(resp) => resp,
    }
}

async fn ps(State(door): State<Door>) -> Response {
    match status(&door.gw).await {
        Ok(s) => axum::Json(meta::ps(&s)).into_response(),
        Err(resp) => resp,
    }
}

async fn show(State(door): State<Door>, body: Bytes) -> Response {
    // `model`, or `name` as older clients send it.
    let asked: Option<String> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("model")
                .or_else(|| v.get("name"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
    let Some(model) = asked else {
        return respond::error::<OllamaChat>(
            &ErrorCode::BadRequest,
            "the body must be JSON naming a `model`",
            None,
        );
    };
    match status(&door.gw).await {
        Ok(s) => match meta::show(&s, &model, &super::created_at()) {
            Some(v) => axum::Json(v).into_response(),
            None => not_found(&model),
        },
        Err(resp) => resp,
    }
}

/// Serves the Ollama door on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    let door = Door {
        gw: gw.clone(),
        bound,
    };
    let chat = {
        let gw = gw.clone();
        move |headers: HeaderMap, body: Bytes| answer::<false>(gw.clone(), headers, body)
    };
    let generate = {
        let gw = gw.clone();
        move |headers: HeaderMap, body: Bytes| answer::<true>(gw.clone(), headers, body)
    };
    let app = axum::Router::new()
        // Clients probe the root to see whether a server is up.
        .route("/", axum::routing::get(|| async { "Ollama is running (hum)" }))
        .route(
            "/api/version",
            axum::routing::get(|| async { axum::Json(json!({"version": meta::API_VERSION})) }),
        )
        .route("/api/tags", axum::routing::get(tags))
        .route("/api/ps", axum::routing::get(ps))
        .route("/api/show", axum::routing::post(show))
        .route("/api/chat", axum::routing::post(chat))
        .route("/api/generate", axum::routing::post(generate))
        // Ollama serves OpenAI's API on its port too: so does this door,
        // under its own rule of who gets in.
        .route("/v1/models", {
            let gw = gw.clone();
            axum::routing::get(move || {
                let gw = gw.clone();
                async move { crate::gateway::openai::model_list(&gw).await }
            })
        })
        .route("/v1/chat/completions", {
            let gw = gw.clone();
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                respond::answer::<crate::gateway::openai::OpenAi>(gw.clone(), headers, body)
            })
        })
        .route("/v1/responses", {
            let gw = gw.clone();
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                respond::answer::<crate::gateway::responses::Responses>(gw.clone(), headers, body)
            })
        })
        .route("/v1/responses/{id}", {
            let (get, delete) = (gw.clone(), gw.clone());
            axum::routing::get(move |axum::extract::Path(id): axum::extract::Path<String>| {
                let gw = get.clone();
                async move { crate::gateway::kept::read_let_in(&gw, &id) }
            })
            .delete(move |axum::extract::Path(id): axum::extract::Path<String>| {
                let gw = delete.clone();
                async move { crate::gateway::kept::delete_let_in(&gw, &id) }
            })
        })
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "hum's Ollama door serves /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/version, and OpenAI's /v1/models, /v1/chat/completions and /v1/responses"})),
            )
        })
        .layer(axum::middleware::from_fn_with_state(door.clone(), admit))
        .layer(axum::middleware::from_fn_with_state(
            crate::http_guard::Listening(bound),
            crate::http_guard::guard,
        ))
        .with_state(door);
    crate::http_serve::serve(listener, app, crate::http_serve::GATEWAY, shutdown).await;
    Ok(())
}
