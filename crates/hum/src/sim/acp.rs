//! `hum sim-agent --acp`: the simulator behind the Agent Client Protocol,
//! built the way the real adapters put claude behind ACP: an ACP agent on
//! stdin/stdout (the official SDK's agent side) that runs the stream-json
//! simulator as its child, one per session, with every flag and knob it
//! was given, and maps both ways. So every directive (`CALL_TOOL` through
//! the session's MCP servers, stalls, children, `setsid` escapees) and the
//! usage numbers work for ACP cells exactly as for stream-json ones.
//!
//! - `session/new` → a child with `--session-id <new uuid>` and the
//!   session's stdio MCP servers as `--mcp-config`; `session/load` → a
//!   child with `--resume` (an unknown session is refused, as the
//!   simulator refuses it), its last prompt (what the simulator
//!   remembers) replayed as a `user_message_chunk`.
//! - `session/prompt` → a user line; text and thinking deltas →
//!   `agent_message_chunk` / `agent_thought_chunk`; a `tool_use` →
//!   `tool_call`, its `tool_result` → `tool_call_update`; the result → the
//!   stop reason, with the turn's usage and cost (the child reports its
//!   process's so far: the difference is the turn's) in `_meta`.
//! - `session/cancel` → the child's interrupt; `ASK_PERMISSION <tool>` →
//!   `session/request_permission`, the chosen option said in the answer.
//! - The child gone (a crash knob) → this agent exits 1, as a crashed agent
//!   does.

use super::args::SimArgs;
use crate::hive::stream_json::{Delta, Line, StreamEvent};
use agent_client_protocol::v1::schema::{
    AgentCapabilities, CancelNotification, ContentBlock, ContentChunk, InitializeRequest,
    InitializeResponse, LoadSessionRequest, LoadSessionResponse, McpServer, NewSessionRequest,
    NewSessionResponse, PermissionOption, PermissionOptionKind, PromptCapabilities, PromptRequest,
    PromptResponse, RequestPermissionOutcome, RequestPermissionRequest, SessionId,
    SessionNotification, SessionUpdate, StopReason, TextContent, ToolCall, ToolCallStatus,
    ToolCallUpdate, ToolCallUpdateFields, ToolKind,
};
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{Agent, Client, Lines};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use thrum::RawLine;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Mutex;

/// The simulator's flags that are this wrapper's, not its child's.
const OWN_FLAGS: [&str; 3] = ["--acp", "--sim-acp-no-load", "--sim-acp-late-replay"];

/// One session: its simulator child and what it reported so far.
struct Inner {
    _child: Child,
    stdin: ChildStdin,
    stdout: thrum::LineReader<BufReader<ChildStdout>>,
    /// The child's cost so far (it reports its process's total).
    cost_so_far: f64,
}

#[derive(Default, Clone)]
struct Sessions {
    open: Arc<Mutex<HashMap<String, Arc<Mutex<Inner>>>>>,
    /// --sim-acp-late-replay.
    late_replay: bool,
    /// Bumped by `session/cancel`, per session.
    cancels: Arc<std::sync::Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>>,
}

pub fn serve(args: SimArgs) -> ExitCode {
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    let loads = !args.sim_acp_no_load;
    let late = args.sim_acp_late_replay;
    match rt.block_on(agent(loads, late)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hum sim-agent --acp: {e}");
            ExitCode::from(1)
        }
    }
}

async fn agent(loads: bool, late_replay: bool) -> Result<(), agent_client_protocol::Error> {
    let sessions = Sessions {
        late_replay,
        ..Sessions::default()
    };
    let (s_new, s_load, s_prompt, s_cancel) = (
        sessions.clone(),
        sessions.clone(),
        sessions.clone(),
        sessions.clone(),
    );
    let stdin = thrum::LineReader::new(BufReader::new(tokio::io::stdin()), thrum::DEFAULT_MAX_LINE);
    let incoming = futures::stream::unfold(stdin, |mut r| async move {
        loop {
            match r.next_line().await {
                Ok(Some(RawLine::Line(b))) => {
                    return Some((Ok(String::from_utf8_lossy(b).into_owned()), r))
                }
                Ok(Some(RawLine::TooLong { .. })) => continue,
                Ok(None) => return None,
                Err(e) => return Some((Err(e), r)),
            }
        }
    });
    let outgoing = futures::sink::unfold(
        tokio::io::stdout(),
        |mut out, mut line: String| async move {
            line.push('\n');
            out.write_all(line.as_bytes()).await?;
            out.flush().await?;
            Ok::<_, std::io::Error>(out)
        },
    );
    Agent
        .v1()
        .name("hum-sim-agent")
        .on_receive_request(
            async move |req: InitializeRequest,
                        responder: Responder<InitializeResponse>,
                        _cx: ConnectionTo<Client>| {
                responder.respond(
                    InitializeResponse::new(req.protocol_version).agent_capabilities(
                        AgentCapabilities::new()
                            .load_session(loads)
                            .prompt_capabilities(PromptCapabilities::new().image(false)),
                    ),
                )
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: NewSessionRequest,
                        responder: Responder<NewSessionResponse>,
                        _cx: ConnectionTo<Client>| {
                let id = uuid::Uuid::new_v4().to_string();
                match start(&req.cwd, &req.mcp_servers, &["--session-id", &id]) {
                    Ok(inner) => {
                        s_new.open.lock().await.insert(id.clone(), inner);
                        responder.respond(NewSessionResponse::new(id))
                    }
                    Err(e) => responder.respond_with_error(internal(e)),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: LoadSessionRequest,
                        responder: Responder<LoadSessionResponse>,
                        cx: ConnectionTo<Client>| {
                load(&s_load, req, responder, cx).await
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_notification(
            async move |n: CancelNotification, _cx: ConnectionTo<Client>| {
                if let Some(tx) = s_cancel
                    .cancels
                    .lock()
                    .unwrap()
                    .get(&n.session_id.to_string())
                {
                    tx.send_modify(|v| *v += 1);
                }
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |req: PromptRequest,
                        responder: Responder<PromptResponse>,
                        cx: ConnectionTo<Client>| {
                let sessions = s_prompt.clone();
                let cx2 = cx.clone();
                // Off the dispatch loop: the turn waits for permission
                // answers and cancels, which that loop delivers.
                cx.spawn(
                    async move { responder.respond_with_result(turn(sessions, cx2, req).await) },
                )?;
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_to(Lines::new(Box::pin(outgoing), incoming.boxed()))
        .await
}

/// `session/load`: a session this simulator kept (else refused, as the
/// simulator refuses an unknown `--resume`), its last prompt replayed,
/// then its child started with `--resume`.
async fn load(
    sessions: &Sessions,
    req: LoadSessionRequest,
    responder: Responder<LoadSessionResponse>,
    cx: ConnectionTo<Client>,
) -> Result<(), agent_client_protocol::Error> {
    let id = req.session_id.to_string();
    let cwd = req.cwd.to_string_lossy().into_owned();
    let known = super::session::config_dir().ok().and_then(|dir| {
        let t = super::session::Transcript::new(&dir, &cwd, &id);
        (super::session::is_session_id(&id) && t.exists()).then_some(t)
    });
    let Some(transcript) = known else {
        return responder.respond_with_error(
            agent_client_protocol::Error::invalid_params()
                .data(Value::String(format!("no session {id}"))),
        );
    };
    let replay: Vec<SessionUpdate> = transcript
        .recall()
        .ok()
        .and_then(|m| m.last_prompt)
        .map(|prompt| {
            vec![
                SessionUpdate::UserMessageChunk(ContentChunk::new(text(prompt))),
                SessionUpdate::AgentMessageChunk(ContentChunk::new(text("[replayed history]"))),
            ]
        })
        .unwrap_or_default();
    let late = sessions.late_replay;
    if !late {
        for u in replay.clone() {
            cx.send_notification(SessionNotification::new(req.session_id.clone(), u))?;
        }
    }
    match start(&req.cwd, &req.mcp_servers, &["--resume", &id]) {
        Ok(inner) => {
            sessions.open.lock().await.insert(id, inner);
            responder.respond(LoadSessionResponse::new())?;
            if late {
                // As Gemini CLI does: part of the history after the answer.
                let (session, cx2) = (req.session_id.clone(), cx.clone());
                cx.spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    for u in replay {
                        cx2.send_notification(SessionNotification::new(session.clone(), u))?;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        }
        Err(e) => responder.respond_with_error(internal(e)),
    }
}

fn text(s: impl Into<String>) -> ContentBlock {
    ContentBlock::Text(TextContent::new(s))
}

fn internal(e: impl std::fmt::Display) -> agent_client_protocol::Error {
    agent_client_protocol::Error::internal_error().data(Value::String(e.to_string()))
}

/// The session's child: this program as the stream-json simulator, with
/// the flags this one got (less its own), `session` and the MCP servers.
fn start(
    cwd: &std::path::Path,
    servers: &[McpServer],
    session: &[&str],
) -> std::io::Result<Arc<Mutex<Inner>>> {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| {
            !OWN_FLAGS
                .iter()
                .any(|f| a == f || a.starts_with(&format!("{f}=")))
        })
        .collect();
    args.extend(
        [
            "-p",
            "--verbose",
            "--input-format=stream-json",
            "--output-format=stream-json",
            "--include-partial-messages",
        ]
        .map(String::from),
    );
    args.extend(session.iter().map(|s| s.to_string()));
    if let Some(cfg) = mcp_config(servers) {
        args.push(format!("--mcp-config={cfg}"));
    }
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(args)
        .current_dir(cwd)
        .env_remove("HUM_SIM_ACP")
        .env_remove("HUM_SIM_ACP_NO_LOAD")
        .env_remove("HUM_SIM_ACP_LATE_REPLAY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    Ok(Arc::new(Mutex::new(Inner {
        _child: child,
        stdin,
        stdout: thrum::LineReader::new(BufReader::new(stdout), thrum::DEFAULT_MAX_LINE),
        cost_so_far: 0.0,
    })))
}

/// The session's stdio MCP servers in claude's `--mcp-config` shape.
fn mcp_config(servers: &[McpServer]) -> Option<String> {
    let mut map = serde_json::Map::new();
    for s in servers {
        if let McpServer::Stdio(s) = s {
            let env: serde_json::Map<String, Value> = s
                .env
                .iter()
                .map(|e| (e.name.clone(), Value::String(e.value.clone())))
                .collect();
            map.insert(
                s.name.clone(),
                json!({"type": "stdio", "command": s.command, "args": s.args, "env": env}),
            );
        }
    }
    (!map.is_empty()).then(|| json!({ "mcpServers": map }).to_string())
}

/// What the child's `assistant` and `user` lines carry that the ACP side
/// shows: tool uses and their results.
#[derive(Deserialize)]
struct Said {
    #[serde(default)]
    message: Option<SaidMessage>,
}

#[derive(Deserialize)]
struct SaidMessage {
    #[serde(default)]
    content: Option<Vec<SaidBlock>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum SaidBlock {
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Value,
        #[serde(default)]
        is_error: bool,
    },
    #[serde(other)]
    Other,
}

/// One prompt: permission asks first, then the child's turn, mapped.
async fn turn(
    sessions: Sessions,
    cx: ConnectionTo<Client>,
    req: PromptRequest,
) -> Result<PromptResponse, agent_client_protocol::Error> {
    let key = req.session_id.to_string();
    let Some(inner) = sessions.open.lock().await.get(&key).cloned() else {
        return Err(agent_client_protocol::Error::invalid_params()
            .data(Value::String(format!("no session {key}"))));
    };
    let mut inner = inner.lock().await;
    let mut cancelled = {
        let mut cancels = sessions.cancels.lock().unwrap();
        let tx = cancels
            .entry(key.clone())
            .or_insert_with(|| tokio::sync::watch::channel(0).0);
        let mut rx = tx.subscribe();
        rx.mark_unchanged();
        rx
    };
    let prompt: Vec<String> = req
        .prompt
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect();
    let prompt = prompt.join("\n");
    let say = |update: SessionUpdate| {
        cx.send_notification(SessionNotification::new(req.session_id.clone(), update))
    };
    for (n, tool) in super::mcp::permission_asks_in(&prompt)
        .into_iter()
        .enumerate()
    {
        let verdict = ask(&cx, &req.session_id, n, &tool).await?;
        say(SessionUpdate::AgentMessageChunk(ContentChunk::new(text(
            format!("permission {tool}: {verdict}\n"),
        ))))?;
    }
    // (Asked here: the child, which has no permission prompt tool, is not
    // to ask again.)
    let prompt = prompt.replace("ASK_PERMISSION ", "asked permission for ");
    let line = json!({"type": "user", "message": {"role": "user", "content": prompt}, "parent_tool_use_id": null});
    write(&mut inner.stdin, &line).await;
    let mut interrupted = false;
    loop {
        let next = tokio::select! {
            next = inner.stdout.next_line() => next,
            _ = cancelled.changed(), if !interrupted => {
                interrupted = true;
                let stop = json!({"type": "control_request", "request_id": uuid::Uuid::new_v4().to_string(),
                    "request": {"subtype": "interrupt"}});
                write(&mut inner.stdin, &stop).await;
                continue;
            }
        };
        let bytes = match next {
            Ok(Some(RawLine::Line(b))) => b.to_vec(),
            Ok(Some(RawLine::TooLong { .. })) => continue,
            // The child is gone: so is this agent, as a crashed one is.
            Ok(None) | Err(_) => std::process::exit(1),
        };
        let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        match Line::read(&value) {
            Line::Stream(StreamEvent::BlockDelta { delta, .. }) => match delta {
                Delta::Text(Some(t)) => {
                    say(SessionUpdate::AgentMessageChunk(ContentChunk::new(text(t))))?
                }
                Delta::Thinking(Some(t)) => {
                    say(SessionUpdate::AgentThoughtChunk(ContentChunk::new(text(t))))?
                }
                _ => {}
            },
            Line::Result(r) => {
                let cost = r.total_cost_usd.unwrap_or(0.0);
                let turn_cost = (cost - inner.cost_so_far).max(0.0);
                inner.cost_so_far = cost;
                let stop = if interrupted {
                    StopReason::Cancelled
                } else {
                    match r.stop_reason.as_deref() {
                        Some("max_tokens") => StopReason::MaxTokens,
                        Some("refusal") => StopReason::Refusal,
                        _ => StopReason::EndTurn,
                    }
                };
                if r.is_error && !interrupted {
                    return Err(internal(
                        r.result.unwrap_or_else(|| "the turn failed".into()),
                    ));
                }
                let mut meta = serde_json::Map::new();
                if let Some(u) = r.usage {
                    meta.insert("usage".into(), u);
                }
                meta.insert("costUsd".into(), json!(turn_cost));
                return Ok(PromptResponse::new(stop).meta(meta));
            }
            _ => {
                for update in tool_updates(&value) {
                    say(update)?;
                }
            }
        }
    }
}

/// The tool uses and results an `assistant` or `user` line reports.
fn tool_updates(line: &Value) -> Vec<SessionUpdate> {
    let Ok(said) = Said::deserialize(line) else {
        return Vec::new();
    };
    let blocks = said.message.and_then(|m| m.content).unwrap_or_default();
    blocks
        .into_iter()
        .filter_map(|b| match b {
            SaidBlock::ToolUse { id, name, input } => Some(SessionUpdate::ToolCall(
                ToolCall::new(id, name)
                    .kind(ToolKind::Other)
                    .status(ToolCallStatus::InProgress)
                    .raw_input(input),
            )),
            SaidBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => Some(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
                tool_use_id,
                ToolCallUpdateFields::new()
                    .status(if is_error {
                        ToolCallStatus::Failed
                    } else {
                        ToolCallStatus::Completed
                    })
                    .raw_output(content),
            ))),
            SaidBlock::Other => None,
        })
        .collect()
}

/// Asks the client whether `tool` may run; what it chose, in words.
async fn ask(
    cx: &ConnectionTo<Client>,
    session: &SessionId,
    n: usize,
    tool: &str,
) -> Result<String, agent_client_protocol::Error> {
    let call = ToolCallUpdate::new(
        format!("permission-{n}"),
        ToolCallUpdateFields::new()
            .title(tool.to_owned())
            .kind(ToolKind::Execute)
            .raw_input(json!({"tool": tool})),
    );
    let options = vec![
        PermissionOption::new("allow-once", "Allow", PermissionOptionKind::AllowOnce),
        PermissionOption::new("reject-once", "Reject", PermissionOptionKind::RejectOnce),
    ];
    let answer = cx
        .send_request(RequestPermissionRequest::new(
            session.clone(),
            call,
            options,
        ))
        .block_task()
        .await?;
    Ok(match answer.outcome {
        RequestPermissionOutcome::Selected(s) if s.option_id.to_string() == "allow-once" => {
            "allowed (allow-once)".to_owned()
        }
        RequestPermissionOutcome::Selected(s) => format!("denied ({})", s.option_id),
        _ => "cancelled".to_owned(),
    })
}

async fn write(stdin: &mut ChildStdin, line: &Value) {
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    // (A child gone shows as its stdout's end, where this agent exits.)
    let _ = stdin.write_all(&bytes).await;
    let _ = stdin.flush().await;
}
