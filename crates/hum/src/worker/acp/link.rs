//! The ACP connection to one agent process, on the official SDK: its
//! stdout read as bounded lines, its stdin written through the cell, the
//! handshake (`initialize`, then `session/load` or `session/new`), and
//! everything the agent says handed to the cell's runner on one bounded,
//! ordered channel.
//!
//! The SDK queues what it reads without a bound, so `session/update`
//! notifications — the one thing an agent sends in bulk — are taken off
//! the line stream here, before the SDK sees them, and sent on the bounded
//! channel: a runner that waits for humd stops this reading, and the agent
//! then waits on its pipe (backpressure lands on the agent). They are
//! still read in order with the rest, so every update the agent printed
//! before its answer to a prompt is handed over before that answer.
//! Requests (permission asks) and responses go through the SDK.

use crate::cell::Cell;
use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema::{
    ClientCapabilities, ContentBlock, Implementation, InitializeRequest, LoadSessionRequest,
    McpServer, NewSessionRequest, PromptRequest, PromptResponse, RequestPermissionRequest,
    RequestPermissionResponse, SessionId, SessionNotification, SystemPrompt, TextContent,
};
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{Agent, Client, Lines};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use thrum::RawLine;
use tokio::io::BufReader;
use tokio::process::ChildStdout;
use tokio::sync::{mpsc, oneshot};

/// The longest line an agent may print: a message chunk or a tool call's
/// content (a file it read) fits many times over; a longer one is skipped
/// and logged, never buffered whole.
pub const MAX_ACP_LINE: usize = 8 << 20;

/// What the agent said that its runner has not handled yet: enough to keep
/// the agent printing while the runner forwards, few enough that a runner
/// waiting for humd holds little (each at most [`MAX_ACP_LINE`]).
pub const EVENTS_QUEUED: usize = 64;

/// What comes from the agent, in the order it came.
pub enum FromAgent {
    /// The handshake ended: the session, or why there is none.
    Ready(Result<Session, String>),
    Update(SessionNotification),
    Permission(
        RequestPermissionRequest,
        Responder<RequestPermissionResponse>,
    ),
    /// The answer to the prompt numbered so (the runner's count); an
    /// error of `None` when the agent's output ended before its answer.
    Answered(u64, Result<PromptResponse, Option<String>>),
}

/// A session the agent opened (or loaded) for the cell's sid.
#[derive(Clone)]
pub struct Session {
    pub cx: ConnectionTo<Agent>,
    pub id: SessionId,
    /// The sid's earlier turns reached it: loaded, or the sid had none.
    pub history_carried: bool,
    /// It was loaded (the agent may still be replaying its history).
    pub loaded: bool,
    /// The agent takes images in a prompt.
    pub images: bool,
    /// A system prompt the agent could not take with the session: said
    /// before the cell's first prompt instead.
    pub inline_system: Option<String>,
}

/// Which session to open.
pub struct SessionPlan {
    pub cwd: PathBuf,
    pub mcp_servers: Vec<McpServer>,
    /// The session the agent gave the sid before, to load.
    pub earlier: Option<String>,
    /// The prompt's system prompt.
    pub system_prompt: Option<String>,
}

/// The connection's life: dropped (or told) → the SDK finishes, the
/// agent's stdin is no longer written.
pub struct Link {
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Only what tells a notification from the rest of JSON-RPC.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    method: Option<&'a str>,
    #[serde(default)]
    id: Option<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    params: Option<&'a serde_json::value::RawValue>,
}

/// A `session/update` notification in `line`, decoded (an update the
/// schema does not know is dropped: a newer agent's kinds are not
/// forwarded, and never stop the stream).
fn update_in(line: &str) -> Option<Option<SessionNotification>> {
    let probe: Probe<'_> = serde_json::from_str(line).ok()?;
    if probe.method != Some("session/update") || probe.id.is_some() {
        return None;
    }
    Some(
        probe
            .params
            .and_then(|p| serde_json::from_str(p.get()).ok()),
    )
}

/// Connects to the agent whose stdout is `stdout` and whose stdin `cell`
/// writes, and opens the session `plan` says; what the agent says goes to
/// `events`.
pub fn open(
    cell: Arc<Cell>,
    stdout: ChildStdout,
    events: mpsc::Sender<FromAgent>,
    plan: SessionPlan,
) -> Link {
    let reader = thrum::LineReader::new(BufReader::new(stdout), MAX_ACP_LINE);
    let cell_name = cell.id().to_owned();
    let updates = events.clone();
    let incoming = futures::stream::unfold(reader, move |mut reader| {
        let (updates, cell_name) = (updates.clone(), cell_name.clone());
        async move {
            loop {
                match reader.next_line().await {
                    Ok(Some(RawLine::Line(bytes))) => {
                        let line = String::from_utf8_lossy(bytes).into_owned();
                        match update_in(&line) {
                            Some(Some(n)) => {
                                // Waits while the runner is behind: the agent
                                // then waits on its pipe.
                                if updates.send(FromAgent::Update(n)).await.is_err() {
                                    return None;
                                }
                            }
                            Some(None) => {
                                tracing::debug!(event = "acp.update_unknown", cell = %cell_name, "an update this hum does not know; not forwarded")
                            }
                            None => return Some((Ok(line), reader)),
                        }
                    }
                    Ok(Some(RawLine::TooLong { limit })) => {
                        tracing::warn!(event = "cell.stdout.too_long", cell = %cell_name, limit, "skipped an over-long line of the agent's");
                    }
                    Ok(None) => return None,
                    Err(e) => return Some((Err(e), reader)),
                }
            }
        }
    });
    let outgoing = futures::sink::unfold(cell, |cell, mut line: String| async move {
        line.push('\n');
        cell.write(line.as_bytes()).await?;
        Ok::<_, std::io::Error>(cell)
    });
    let transport = Lines::new(Box::pin(outgoing.sink_map_err(|e| e)), incoming.boxed());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (cx_tx, cx_rx) = oneshot::channel::<ConnectionTo<Agent>>();
    let asks = events.clone();
    let client = Client.v1().name("hum").on_receive_request(
        async move |req: RequestPermissionRequest,
                    responder: Responder<RequestPermissionResponse>,
                    _cx: ConnectionTo<Agent>| {
            // (A runner gone drops the responder: the SDK answers the
            // agent with an error.)
            let _ = asks.send(FromAgent::Permission(req, responder)).await;
            Ok(())
        },
        agent_client_protocol::on_receive_request!(),
    );
    tokio::spawn(async move {
        let ended = client
            .connect_with(transport, async move |cx: ConnectionTo<Agent>| {
                let _ = cx_tx.send(cx.clone());
                tokio::select! {
                    _ = stop_rx => {}
                    _ = cx.incoming_closed() => {}
                }
                Ok(())
            })
            .await;
        if let Err(e) = ended {
            tracing::debug!(event = "acp.connection_ended", error = %e, "the agent's connection ended");
        }
    });
    tokio::spawn(async move {
        let ready = match cx_rx.await {
            Ok(cx) => handshake(cx, plan).await,
            Err(_) => Err("the connection to the agent ended at once".to_owned()),
        };
        let _ = events.send(FromAgent::Ready(ready)).await;
    });
    Link {
        stop: Some(stop_tx),
    }
}

/// `initialize` (hum offers the agent no file system and no terminal of
/// its own: it uses its own tools, inside the cell), then the sid's
/// earlier session loaded when the agent can and one was kept, else a new
/// one.
async fn handshake(cx: ConnectionTo<Agent>, plan: SessionPlan) -> Result<Session, String> {
    let init = cx
        .send_request(
            InitializeRequest::new(ProtocolVersion::V1)
                .client_capabilities(ClientCapabilities::new())
                .client_info(Implementation::new("hum", env!("CARGO_PKG_VERSION"))),
        )
        .block_task()
        .await
        .map_err(|e| format!("the agent refused initialize: {e}"))?;
    let caps = init.agent_capabilities;
    let images = caps.prompt_capabilities.image;
    let takes_system = caps.session_capabilities.system_prompt.is_some();
    let wanted = plan.system_prompt.clone().filter(|t| !t.is_empty());
    let system = wanted
        .clone()
        .filter(|_| takes_system)
        .map(|t| SystemPrompt::new(vec![ContentBlock::Text(TextContent::new(t))]));
    let inline_system = wanted.filter(|_| !takes_system);
    if let Some(earlier) = &plan.earlier {
        if caps.load_session {
            let id = SessionId::new(earlier.as_str());
            let loaded = cx
                .send_request(
                    LoadSessionRequest::new(id.clone(), plan.cwd.clone())
                        .mcp_servers(plan.mcp_servers.clone())
                        .system_prompt(system.clone()),
                )
                .block_task()
                .await;
            match loaded {
                Ok(_) => {
                    return Ok(Session {
                        cx,
                        id,
                        history_carried: true,
                        loaded: true,
                        images,
                        inline_system,
                    })
                }
                Err(e) => {
                    tracing::warn!(event = "acp.load_refused", session = %earlier, error = %e, "the agent did not load the sid's session; a new one starts")
                }
            }
        }
    }
    let opened = cx
        .send_request(
            NewSessionRequest::new(plan.cwd.clone())
                .mcp_servers(plan.mcp_servers)
                .system_prompt(system),
        )
        .block_task()
        .await
        .map_err(|e| format!("the agent refused session/new: {e}"))?;
    Ok(Session {
        cx,
        id: opened.session_id,
        history_carried: plan.earlier.is_none(),
        loaded: false,
        images,
        inline_system,
    })
}

/// Sends prompt number `seq` and hands its answer to `events` (a task of
/// its own: the runner goes on reading the agent meanwhile).
pub fn prompt(
    session: &Session,
    seq: u64,
    blocks: Vec<agent_client_protocol::v1::schema::ContentBlock>,
    events: mpsc::Sender<FromAgent>,
) {
    let cx = session.cx.clone();
    let request = PromptRequest::new(session.id.clone(), blocks);
    tokio::spawn(async move {
        let answer = cx.send_request(request).block_task().await.map_err(|e| {
            (!agent_client_protocol::is_incoming_transport_closed(&e)).then(|| e.to_string())
        });
        let _ = events.send(FromAgent::Answered(seq, answer)).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_session_update_notifications_are_taken_off_the_stream() {
        let update = r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"hi"}}}}"#;
        let n = update_in(update).unwrap().unwrap();
        assert_eq!(n.session_id.to_string(), "s");
        let newer = r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s","update":{"sessionUpdate":"from_the_future"}}}"#;
        assert!(
            update_in(newer).unwrap().is_none(),
            "dropped, not passed on"
        );
        for other in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"stopReason":"end_turn"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"session/request_permission","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"session/update","params":{}}"#,
            "not json",
        ] {
            assert!(update_in(other).is_none(), "{other}");
        }
    }
}
