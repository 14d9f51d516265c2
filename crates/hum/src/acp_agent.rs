//! `hum acp`: hum as an ACP agent. An editor (Zed, JetBrains, a headless
//! client such as `acpx`) launches it as its agent and speaks the Agent
//! Client Protocol on its stdin/stdout; `hum acp` is a thin bee of humd's:
//! each ACP session is a sid, each prompt a turn of it in hum's pool (warm,
//! capped, leak-proof cells), streamed back as `session/update`s. A
//! permission ask of the cell reaches the editor as
//! `session/request_permission`; `session/cancel` cancels the turn. When
//! the editor closes it, its turns are cancelled and the cells stay warm
//! for the next window (`session/load` of the id finds its cell, or its
//! transcript). When humd goes (a restart, an upgrade), the turns under
//! way end with an error and `hum acp` links to humd again: the editor
//! keeps its agent and its sessions.

use crate::client::{Client, Event};
use crate::hive::acp as map;
use agent_client_protocol::v1::schema::{
    AgentCapabilities, CancelNotification, ContentBlock, InitializeRequest, InitializeResponse,
    LoadSessionRequest, LoadSessionResponse, NewSessionRequest, NewSessionResponse,
    PermissionOption, PermissionOptionKind, PromptCapabilities, PromptRequest, PromptResponse,
    RequestPermissionOutcome, RequestPermissionRequest, SessionId, SessionNotification,
    ToolCallUpdate, ToolCallUpdateFields,
};
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{Agent, Client as AcpClient, Lines};
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use thrum::{Body, Outbox, RawLine, Tone};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Events of one turn waiting for its prompt's task: a turn's stream, a
/// few permission asks. A slow editor holds humd's connection (its
/// bounded outbox), not memory.
const TURN_EVENTS: usize = 256;

/// ACP sessions one `hum acp` serves at once: far more than editor
/// windows, bounded so a client cannot grow its table without end.
const MAX_SESSIONS: usize = 1024;

/// The longest session id taken as a sid (`session/load` names one).
const MAX_SID_LEN: usize = 256;

/// Waits between tries to reach humd again after it went (a restart, an
/// upgrade): soon at first, never more than a couple of seconds, so the
/// editor's next prompt after humd is back finds `hum acp` linked.
const RECONNECT_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone, clap::Args)]
pub struct AcpArgs {
    /// The model of every prompt (default: humd's default model).
    #[arg(long)]
    pub model: Option<String>,
    /// humd's socket (default: the thrum socket path rules).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The bee name the turns' usage is filed under.
    #[arg(long, default_value = "acp")]
    pub bee: String,
}

/// What `hum acp` knows while it runs.
struct Door {
    /// humd's connection; `None` while humd is away and `hum acp` tries
    /// to reach it again.
    to_humd: Mutex<Option<Outbox>>,
    model: Option<String>,
    /// Each ACP session (a sid) and where it runs.
    sessions: Mutex<HashMap<String, PathBuf>>,
    /// The turn under way per sid, numbered: where its events go.
    turns: Mutex<HashMap<String, (u64, mpsc::Sender<Event>)>>,
    /// The number the next turn gets.
    next_turn: std::sync::atomic::AtomicU64,
    /// Counts humd's goings: a permission ask the editor is still
    /// deciding ends when humd goes (its answer would reach nobody).
    links: tokio::sync::watch::Sender<u64>,
    /// The editor went: humd's connection closing is this program's doing.
    closing: std::sync::atomic::AtomicBool,
}

/// How `hum acp` greets humd, on its first connection and every one after.
fn hello(bee: &str) -> thrum::Hello {
    let mut hello = Client::bee_hello("hum-acp", Some(bee));
    hello.chis = Some(
        [
            "hello",
            "prompt",
            "cancel",
            "permission-ask",
            "release-permit",
        ]
        .map(String::from)
        .to_vec(),
    );
    hello
}

pub fn run(args: AcpArgs) -> ExitCode {
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    rt.block_on(async move {
        let socket = args.socket.clone().unwrap_or_else(thrum::socket_path);
        let client = match Client::connect(&socket, hello(&args.bee)).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("hum acp: {e} ({})", socket.display());
                return ExitCode::from(1);
            }
        };
        let door = Arc::new(Door {
            to_humd: Mutex::new(Some(client.outbox().clone())),
            model: args.model,
            sessions: Mutex::default(),
            turns: Mutex::default(),
            next_turn: Default::default(),
            links: tokio::sync::watch::Sender::new(0),
            closing: Default::default(),
        });
        tokio::spawn(route(client, door.clone(), socket, args.bee));
        let served = serve(door.clone()).await;
        // The editor went: its turns are cancelled, the cells stay warm.
        let open: Vec<String> = door.turns.lock().unwrap().keys().cloned().collect();
        for sid in open {
            door.tell_humd(&Tone::new(thrum::Cancel::default()).with_sid(&sid))
                .await;
        }
        door.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(o) = door.humd() {
            o.close();
        }
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hum acp: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// humd's tones, each to the turn of its sid (none waiting: dropped).
/// When humd goes, the turns under way end with an error (their answers
/// went with it) and humd is tried again until it is back: the editor
/// keeps its agent and its sessions across a restart of humd.
async fn route(mut client: Client, door: Arc<Door>, socket: PathBuf, bee: String) {
    let fresh = || crate::backoff::Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    // Kept across links that carry nothing: a humd that takes the
    // connection and drops it at once is tried less and less often.
    let mut backoff = fresh();
    let mut carried = false;
    loop {
        let event = match client.event().await {
            Ok(e) => e,
            Err(_) if door.closing.load(std::sync::atomic::Ordering::SeqCst) => return,
            Err(_) => {
                door.humd_gone();
                tracing::warn!(
                    event = "acp.humd_gone",
                    "humd closed the connection; reaching it again"
                );
                if std::mem::take(&mut carried) {
                    backoff = fresh();
                }
                client = loop {
                    tokio::time::sleep(backoff.next_delay()).await;
                    if door.closing.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(c) = Client::connect(&socket, hello(&bee)).await {
                        break c;
                    }
                };
                *door.to_humd.lock().unwrap() = Some(client.outbox().clone());
                tracing::info!(event = "acp.humd_back", "linked to humd again");
                continue;
            }
        };
        carried = true;
        let Some(sid) = event.sid().map(str::to_owned) else {
            continue;
        };
        let to = door.turns.lock().unwrap().get(&sid).map(|t| t.1.clone());
        if let Some(to) = to {
            let _ = to.send(event).await;
        }
    }
}

async fn serve(door: Arc<Door>) -> Result<(), agent_client_protocol::Error> {
    let (d_new, d_load, d_prompt, d_cancel) =
        (door.clone(), door.clone(), door.clone(), door.clone());
    let stdin = thrum::LineReader::new(BufReader::new(tokio::io::stdin()), thrum::DEFAULT_MAX_LINE);
    let incoming = futures::stream::unfold(stdin, |mut r| async move {
        loop {
            match r.next_line().await {
                Ok(Some(RawLine::Line(b))) => {
                    return Some((Ok(String::from_utf8_lossy(b).into_owned()), r))
                }
                Ok(Some(RawLine::TooLong { limit })) => {
                    tracing::warn!(
                        event = "acp.line_too_long",
                        limit,
                        "skipped an over-long line from the client"
                    );
                }
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
        .name("hum")
        .on_receive_request(
            async move |req: InitializeRequest,
                        responder: Responder<InitializeResponse>,
                        _cx: ConnectionTo<AcpClient>| {
                responder.respond(
                    InitializeResponse::new(req.protocol_version).agent_capabilities(
                        AgentCapabilities::new()
                            .load_session(true)
                            .prompt_capabilities(PromptCapabilities::new().image(true)),
                    ),
                )
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: NewSessionRequest,
                        responder: Responder<NewSessionResponse>,
                        _cx: ConnectionTo<AcpClient>| {
                let sid = format!("acp-{}", uuid::Uuid::new_v4());
                match d_new.open(&sid, req.cwd) {
                    Ok(()) => responder.respond(NewSessionResponse::new(sid)),
                    Err(e) => responder.respond_with_error(e),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: LoadSessionRequest,
                        responder: Responder<LoadSessionResponse>,
                        _cx: ConnectionTo<AcpClient>| {
                // (The sid's warm cell, or its transcript, carries the
                // history: hum keeps no copy to replay.)
                match d_load.open(&req.session_id.to_string(), req.cwd) {
                    Ok(()) => responder.respond(LoadSessionResponse::new()),
                    Err(e) => responder.respond_with_error(e),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_notification(
            async move |n: CancelNotification, _cx: ConnectionTo<AcpClient>| {
                d_cancel
                    .tell_humd(
                        &Tone::new(thrum::Cancel::default()).with_sid(n.session_id.to_string()),
                    )
                    .await;
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |req: PromptRequest,
                        responder: Responder<PromptResponse>,
                        cx: ConnectionTo<AcpClient>| {
                let door = d_prompt.clone();
                let cx2 = cx.clone();
                // Off the dispatch loop: the turn waits on the editor's
                // answers to permission asks, which that loop delivers.
                cx.spawn(async move { responder.respond_with_result(door.turn(cx2, req).await) })?;
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_to(Lines::new(Box::pin(outgoing), incoming.boxed()))
        .await
}

/// What a turn ends with when humd went during it.
fn humd_gone_error() -> agent_client_protocol::Error {
    agent_client_protocol::Error::internal_error().data(Value::String("humd is gone".into()))
}

fn refused(message: impl Into<String>) -> agent_client_protocol::Error {
    agent_client_protocol::Error::invalid_params().data(Value::String(message.into()))
}

impl Door {
    /// humd's connection, unless humd is away.
    fn humd(&self) -> Option<Outbox> {
        self.to_humd.lock().unwrap().clone()
    }

    /// Sends `tone` to humd, if it is there (a cancel or an answer to a
    /// permission ask has nothing to reach while it is away).
    async fn tell_humd(&self, tone: &Tone) {
        if let Some(o) = self.humd() {
            let _ = o.send(tone).await;
        }
    }

    /// humd went: nothing more is sent to it, and every turn under way
    /// hears so (its events' sender is dropped) instead of waiting for
    /// an answer that went with it.
    fn humd_gone(&self) {
        *self.to_humd.lock().unwrap() = None;
        self.turns.lock().unwrap().clear();
        self.links.send_modify(|n| *n += 1);
    }

    /// Takes `sid` as a session of this client, run in `cwd`.
    fn open(&self, sid: &str, cwd: PathBuf) -> Result<(), agent_client_protocol::Error> {
        if sid.is_empty() || sid.len() > MAX_SID_LEN {
            return Err(refused("not a session id hum can keep"));
        }
        let mut sessions = self.sessions.lock().unwrap();
        if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(sid) {
            return Err(refused(format!("at most {MAX_SESSIONS} sessions at once")));
        }
        sessions.insert(sid.to_owned(), cwd);
        Ok(())
    }

    /// One prompt: a turn of the session's sid, its events as updates.
    async fn turn(
        &self,
        cx: ConnectionTo<AcpClient>,
        req: PromptRequest,
    ) -> Result<PromptResponse, agent_client_protocol::Error> {
        let sid = req.session_id.to_string();
        let Some(cwd) = self.sessions.lock().unwrap().get(&sid).cloned() else {
            return Err(refused(format!(
                "no session {sid}: session/new or session/load first"
            )));
        };
        let link = *self.links.borrow();
        let Some(to_humd) = self.humd() else {
            return Err(
                agent_client_protocol::Error::internal_error().data(Value::String(
                    "humd is away; hum acp is reaching it again".into(),
                )),
            );
        };
        let (tx, mut events) = mpsc::channel(TURN_EVENTS);
        let number = self
            .next_turn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut turns = self.turns.lock().unwrap();
            if turns.contains_key(&sid) {
                return Err(refused("a prompt of this session is under way"));
            }
            turns.insert(sid.clone(), (number, tx));
        }
        let _done = TurnGuard {
            door: self,
            sid: &sid,
            number,
        };
        let prompt = thrum::Prompt {
            content: Some(content_of(&req.prompt)),
            model_id: self.model.clone(),
            cwd: Some(cwd.to_string_lossy().into_owned()),
            ..Default::default()
        };
        let tone = Tone::new(prompt).with_sid(&sid).with_rid(thrum::rid());
        if to_humd.send(&tone).await.is_err() {
            return Err(humd_gone_error());
        }
        while let Some(event) = events.recv().await {
            match event {
                Event::Text { .. } | Event::Chunk { .. } => {
                    let chunk = match event {
                        Event::Text { text, .. } => thrum::Chunk {
                            chunk_type: thrum::ChunkType::TextDelta,
                            block_idx: None,
                            delta: Some(text),
                            partial_json: None,
                            usage: None,
                            extra: Default::default(),
                        },
                        Event::Chunk { chunk, .. } => chunk,
                        _ => unreachable!("matched above"),
                    };
                    if let Some(update) = map::update_of(&chunk) {
                        cx.send_notification(SessionNotification::new(
                            req.session_id.clone(),
                            update,
                        ))?;
                    }
                }
                Event::Finish { finish, .. } => {
                    let mut meta = serde_json::Map::new();
                    if let Some(u) = finish.usage.clone() {
                        meta.insert("usage".into(), u);
                    }
                    let fields = serde_json::to_value(&finish).unwrap_or_default();
                    if let Some(c) = thrum::Billing::read(&fields).cost_usd {
                        meta.insert("costUsd".into(), c.into());
                    }
                    return Ok(PromptResponse::new(map::stop_reason(&finish)).meta(meta));
                }
                Event::Error { error, .. } => {
                    return Err(agent_client_protocol::Error::internal_error()
                        .data(serde_json::json!({"code": error.code.to_string(),
                            "message": error.message.unwrap_or_default()})));
                }
                Event::Other(tone) => {
                    if let Body::PermissionAsk(ask) = tone.body {
                        self.permit(&cx, &req.session_id, &sid, ask, link).await?;
                    }
                }
                _ => {}
            }
        }
        Err(humd_gone_error())
    }

    /// A cell's permission ask, put to the editor; its choice to humd.
    async fn permit(
        &self,
        cx: &ConnectionTo<AcpClient>,
        session: &SessionId,
        sid: &str,
        ask: thrum::PermissionAsk,
        link: u64,
    ) -> Result<(), agent_client_protocol::Error> {
        // The link the turn began on: gone already, or going while the
        // editor decides, the ask's answer would reach nobody.
        let mut gone = self.links.subscribe();
        if *gone.borrow_and_update() != link {
            return Err(humd_gone_error());
        }
        // An ACP hive's own options when the ask carries them, else hum's.
        let options: Vec<PermissionOption> = ask
            .options
            .as_ref()
            .and_then(|o| serde_json::from_value(o.clone()).ok())
            .filter(|o: &Vec<PermissionOption>| !o.is_empty())
            .unwrap_or_else(|| {
                vec![
                    PermissionOption::new("allow", "Allow", PermissionOptionKind::AllowOnce),
                    PermissionOption::new("reject", "Reject", PermissionOptionKind::RejectOnce),
                ]
            });
        let call = ToolCallUpdate::new(
            ask.call_id.clone(),
            ToolCallUpdateFields::new()
                .title(ask.tool_name.clone())
                .raw_input(ask.input.clone()),
        );
        let asked = cx
            .send_request(RequestPermissionRequest::new(
                session.clone(),
                call,
                options.clone(),
            ))
            .block_task();
        let answer = tokio::select! {
            answer = asked => answer?,
            _ = gone.changed() => return Err(humd_gone_error()),
        };
        let chosen = match answer.outcome {
            RequestPermissionOutcome::Selected(s) => {
                options.into_iter().find(|o| o.option_id == s.option_id)
            }
            _ => None,
        };
        let allow = chosen.as_ref().is_some_and(|o| {
            matches!(
                o.kind,
                PermissionOptionKind::AllowOnce | PermissionOptionKind::AllowAlways
            )
        });
        let release = thrum::ReleasePermit {
            call_id: ask.call_id,
            decision: Some(if allow {
                thrum::Decision::Allow
            } else {
                thrum::Decision::Deny
            }),
            message: (!allow).then(|| "the editor's user said no".to_owned()),
            updated_input: None,
            option_id: chosen.as_ref().map(|o| o.option_id.to_string()),
            extra: Default::default(),
        };
        self.tell_humd(&Tone::new(release).with_sid(sid)).await;
        Ok(())
    }
}

/// A turn's place in the table, given back however its task ends (unless
/// humd's going already took it and a new turn of the sid holds it now).
struct TurnGuard<'a> {
    door: &'a Door,
    sid: &'a str,
    number: u64,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        let mut turns = self.door.turns.lock().unwrap();
        if turns.get(self.sid).is_some_and(|t| t.0 == self.number) {
            turns.remove(self.sid);
        }
    }
}

/// An ACP prompt's content blocks as a thrum prompt's content (claude's
/// message blocks): text, images, and embedded text resources as text.
fn content_of(blocks: &[ContentBlock]) -> Value {
    let parts: Vec<Value> = blocks
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text(t) => Some(serde_json::json!({"type": "text", "text": t.text})),
            ContentBlock::Image(i) => Some(serde_json::json!({"type": "image",
                "source": {"type": "base64", "media_type": i.mime_type, "data": i.data}})),
            ContentBlock::ResourceLink(l) => Some(serde_json::json!({"type": "text",
                "text": format!("[{}]({})", l.name, l.uri)})),
            _ => None,
        })
        .collect();
    Value::Array(parts)
}
