//! hum's one thrum client: connect and say hello, prompt, read what a turn
//! produces as typed [`Event`]s, cancel, ask for status. `hum prompt`,
//! `hum status`, `hum demo`, `hum bench` and the gateway are all bees made
//! of it, so each speaks the wire the same way.
//!
//! Many turns may share one client (tones carry their sid); [`Client::event`]
//! hands out the next event of any of them, [`Client::event_of`] of one.

use crate::reports::DaemonStatus;
use std::path::Path;
use thrum::{
    Bees, Body, ChunkType, Connection, ErrorTone, Finish, Hello, Inbound, Inbox, Limits, Outbox,
    Prompt, Pulse, SessionReady, Tone, Unknown,
};
use tokio::net::unix::OwnedReadHalf;

/// Why the client could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach humd: {0}")]
    Unreachable(std::io::Error),
    #[error("humd closed the connection")]
    Gone,
    #[error("{0}")]
    Unreadable(String),
}

/// What a turn produced next. Tones without a sid (humd's answers to
/// requests, its refusals of unreadable input) come as [`Event::Other`] or,
/// when they are errors, as [`Event::Error`] with no sid.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The cell took the turn (its first event).
    Ready {
        sid: String,
        ready: SessionReady,
    },
    /// A piece of the answer's text.
    Text {
        sid: String,
        text: String,
    },
    /// Any other chunk (thinking, tool use, …).
    Chunk {
        sid: String,
        chunk: thrum::Chunk,
    },
    /// The turn ended; `cancelled` when a cancel ended it.
    Finish {
        sid: String,
        finish: Finish,
    },
    /// The turn, or a request without a sid, ended with an error.
    Error {
        sid: Option<String>,
        error: ErrorTone,
    },
    Pulse {
        sid: String,
        pulse: Pulse,
    },
    /// The agent calls one of this asker's tools (its prompt's `tools`):
    /// answer with [`Client::tool_result`].
    ToolCall {
        sid: String,
        call: thrum::ToolCall,
    },
    /// Anything else (echo, breath, status answers, extensions); boxed, as
    /// a whole tone is most of a kilobyte and the common events are small.
    Other(Box<Tone>),
}

impl Event {
    fn from_tone(tone: Tone) -> Event {
        let sid = tone.envelope.sid.clone();
        match (tone.body, sid) {
            (Body::SessionReady(ready), Some(sid)) => Event::Ready { sid, ready },
            (Body::Chunk(c), Some(sid)) if c.chunk_type == ChunkType::TextDelta => Event::Text {
                sid,
                text: c.delta.unwrap_or_default(),
            },
            (Body::Chunk(chunk), Some(sid)) => Event::Chunk { sid, chunk },
            (Body::Finish(finish), Some(sid)) => Event::Finish { sid, finish },
            (Body::Error(error), sid) => Event::Error { sid, error },
            (Body::Pulse(pulse), Some(sid)) => Event::Pulse { sid, pulse },
            (Body::ToolCall(call), Some(sid)) => Event::ToolCall { sid, call },
            (body, _) => Event::Other(Box::new(Tone {
                envelope: tone.envelope,
                body,
            })),
        }
    }

    /// The sid the event belongs to, if any.
    pub fn sid(&self) -> Option<&str> {
        match self {
            Event::Ready { sid, .. }
            | Event::Text { sid, .. }
            | Event::Chunk { sid, .. }
            | Event::Finish { sid, .. }
            | Event::Pulse { sid, .. }
            | Event::ToolCall { sid, .. } => Some(sid),
            Event::Error { sid, .. } => sid.as_deref(),
            Event::Other(t) => t.sid(),
        }
    }

    /// Whether it ends its turn.
    pub fn ends_turn(&self) -> bool {
        matches!(self, Event::Finish { .. } | Event::Error { .. })
    }
}

/// How a whole turn went, for callers that want only its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub end: Result<Finish, ErrorTone>,
}

/// A connection to humd that has said hello.
pub struct Client {
    inbox: Inbox<OwnedReadHalf>,
    outbox: Outbox,
}

impl Client {
    /// Connects and says `hello` (not waiting for humd's `breath`: the first
    /// request can go at once).
    pub async fn connect(socket: &Path, hello: Hello) -> Result<Client, ClientError> {
        let stream = thrum::connect(socket)
            .await
            .map_err(ClientError::Unreachable)?;
        let Connection { inbox, outbox } = Connection::unix(stream, Limits::default(), "humd");
        let client = Client { inbox, outbox };
        client.send(&Tone::new(hello)).await?;
        Ok(client)
    }

    /// Connects as an asker; `source` names the program in humd's logs.
    pub async fn asker(socket: &Path, source: &str) -> Result<Client, ClientError> {
        Client::connect(socket, Client::asker_hello(source)).await
    }

    /// The hello of a hum bee of `role`; `source` names the program in
    /// humd's logs.
    fn hello_as(role: thrum::Role, source: &str) -> Hello {
        Hello {
            bee: Some(Bees::of(role)),
            proto_version: Some(thrum::PROTO_VERSION.into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            source: Some(source.into()),
            ..Default::default()
        }
    }

    /// The hello of an asker.
    pub fn asker_hello(source: &str) -> Hello {
        Client::hello_as(thrum::Role::Asker, source)
    }

    /// The hello of a forager serving `tools` (for the capabilities
    /// `provides` names).
    pub fn forager_hello(
        source: &str,
        tools: &[thrum::tools::ToolSpec],
        provides: &[&str],
    ) -> Hello {
        Hello {
            tools: Some(tools.iter().map(thrum::tools::ToolSpec::to_value).collect()),
            provides: Some(provides.iter().map(|p| p.to_string()).collect())
                .filter(|p: &Vec<String>| !p.is_empty()),
            ..Client::hello_as(thrum::Role::Forager, source)
        }
    }

    /// The hello of a worker of `hive` serving `models`.
    pub fn worker_hello(source: &str, hive: &str, models: Vec<String>) -> Hello {
        Hello {
            hive: Some(hive.to_owned()),
            models: Some(models),
            ..Client::hello_as(thrum::Role::Worker, source)
        }
    }

    /// An asker's hello naming the bee it speaks for (`hid`): what its
    /// turns' usage is filed under and budgeted as.
    pub fn bee_hello(source: &str, bee: Option<&str>) -> Hello {
        Hello {
            hid: bee.map(str::to_owned),
            ..Client::asker_hello(source)
        }
    }

    /// The writing half, for a task that sends while another reads.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Sends one tone, waiting for room in the outbound queue.
    pub async fn send(&self, tone: &Tone) -> Result<(), ClientError> {
        self.outbox.send(tone).await.map_err(|_| ClientError::Gone)
    }

    /// Asks for a turn of `sid`.
    pub async fn prompt(&self, sid: &str, prompt: Prompt) -> Result<(), ClientError> {
        self.send(&Tone::new(prompt).with_sid(sid)).await
    }

    /// Sends `tone` with a fresh request id (humd acknowledges it with an
    /// `echo`); returns the id.
    pub async fn request(&self, tone: Tone) -> Result<String, ClientError> {
        let rid = thrum::rid();
        self.send(&tone.with_rid(&rid)).await?;
        Ok(rid)
    }

    /// A prompt of plain text for `model`.
    pub fn text_prompt(text: &str, model: Option<&str>) -> Prompt {
        Prompt {
            text: Some(text.into()),
            model_id: model.map(str::to_owned),
            ..Default::default()
        }
    }

    /// Answers a [`Event::ToolCall`].
    pub async fn tool_result(
        &self,
        sid: &str,
        call: &thrum::ToolCall,
        output: serde_json::Value,
        is_error: bool,
    ) -> Result<(), ClientError> {
        let result = thrum::ToolResult {
            call_id: call.call_id.clone(),
            tool_name: Some(call.tool_name.clone()),
            output: Some(output),
            result: None,
            is_error: Some(is_error),
            extra: Default::default(),
        };
        self.send(&Tone::new(result).with_sid(sid)).await
    }

    /// Cancels `sid`'s turn (queued or running).
    pub async fn cancel(&self, sid: &str) -> Result<(), ClientError> {
        self.send(&Tone::new(thrum::Cancel::default()).with_sid(sid))
            .await
    }

    /// The next event of any turn. Lines humd sent that are not tones are
    /// skipped (the reader counts them).
    pub async fn event(&mut self) -> Result<Event, ClientError> {
        loop {
            match self.inbox.recv().await {
                Ok(Some(Inbound::Tone(t))) => return Ok(Event::from_tone(t)),
                Ok(Some(Inbound::Rejected(_))) => continue,
                Ok(None) | Err(_) => return Err(ClientError::Gone),
            }
        }
    }

    /// The next event of `sid`'s turn, or an error without a sid (a refusal
    /// of the request itself); other turns' events are dropped.
    pub async fn event_of(&mut self, sid: &str) -> Result<Event, ClientError> {
        loop {
            let e = self.event().await?;
            match e.sid() {
                Some(s) if s == sid => return Ok(e),
                None if matches!(e, Event::Error { .. }) => return Ok(e),
                _ => {}
            }
        }
    }

    /// Reads `sid`'s turn to its end.
    pub async fn answer(&mut self, sid: &str) -> Result<Answer, ClientError> {
        let mut text = String::new();
        loop {
            match self.event_of(sid).await? {
                Event::Text { text: t, .. } => text.push_str(&t),
                Event::Finish { finish, .. } => {
                    return Ok(Answer {
                        text,
                        end: Ok(finish),
                    })
                }
                Event::Error { error, .. } => {
                    return Ok(Answer {
                        text,
                        end: Err(error),
                    })
                }
                _ => {}
            }
        }
    }

    /// Asks humd for its status (a thrum extension chi) and reads the
    /// answer as it came.
    pub async fn status_tone(&mut self) -> Result<Tone, ClientError> {
        let request = Tone::new(Unknown {
            chi: crate::reports::STATUS.into(),
            fields: Default::default(),
        });
        let rid = self.request(request).await?;
        loop {
            if let Event::Other(t) = self.event().await? {
                if t.chi() == crate::reports::STATUS && t.rid() == Some(rid.as_str()) {
                    return Ok(*t);
                }
            }
        }
    }

    /// Asks humd for its status, typed.
    pub async fn status(&mut self) -> Result<DaemonStatus, ClientError> {
        let tone = self.status_tone().await?;
        DaemonStatus::from_tone(&tone).map_err(ClientError::Unreadable)
    }

    /// Flushes what is queued and closes the connection.
    pub fn close(&self) {
        self.outbox.close();
    }
}

/// Whether a daemon answers on a socket, as every command asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    /// A daemon of this user answers.
    Yes,
    /// Its accept queue is full: a live daemon under a burst, not a stale
    /// socket.
    Busy,
    /// Something answers as another user (uid): not ours to talk to.
    Stranger(u32),
    /// Nobody answers (no file, or a stale one).
    No,
}

/// Asks once, without waiting (the EAGAIN rule written once: a full queue
/// is a daemon, busy).
pub async fn answering(socket: &Path) -> Answering {
    match tokio::net::UnixStream::connect(socket).await {
        Ok(stream) => match thrum::peer::peer_uid(std::os::fd::AsFd::as_fd(&stream)) {
            Ok(uid) if thrum::peer::allowed(uid, thrum::peer::own_uid()) => Answering::Yes,
            Ok(uid) => Answering::Stranger(uid),
            Err(_) => Answering::No,
        },
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Answering::Busy,
        Err(_) => Answering::No,
    }
}

/// Waits until a daemon of this user answers (busy counts), asking every
/// 10 ms; whether it did within `within`.
pub async fn wait_answering(socket: &Path, within: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if matches!(answering(socket).await, Answering::Yes | Answering::Busy) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The `source` of a status probe's hello (humd does not count it as an
/// asker).
pub const STATUS_SOURCE: &str = "hum status";

/// How long a status probe waits for humd's answer.
const STATUS_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks humd for its status, on a connection of its own.
pub async fn fetch_status(socket: &Path) -> Result<DaemonStatus, String> {
    let answer = ask_status(socket).await?;
    DaemonStatus::from_tone(&answer)
}

/// humd's status answer as it came, for `--json` and for tests of the
/// wire format itself.
pub async fn fetch_status_json(socket: &Path) -> Result<serde_json::Value, String> {
    Ok(ask_status(socket).await?.to_value())
}

async fn ask_status(socket: &Path) -> Result<Tone, String> {
    let mut client = Client::asker(socket, STATUS_SOURCE)
        .await
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(STATUS_WITHIN, client.status_tone())
        .await
        .map_err(|_| "humd did not answer in time".to_owned())?
        .map_err(|e| match e {
            ClientError::Gone => "humd went away before answering".to_owned(),
            other => other.to_string(),
        })?;
    client.close();
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon that does not accept for a while (a burst) is busy, not
    /// gone: the probe every command asks must not take it for a stale
    /// socket (which `hum up` would replace).
    #[tokio::test]
    async fn a_daemon_whose_accept_queue_is_full_answers_busy_and_a_closed_one_no() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("humd.sock");
        let socket = tokio::net::UnixSocket::new_stream().unwrap();
        socket.bind(&path).unwrap();
        let listener = socket.listen(0).unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(answering(&path).await);
        }
        assert_eq!(seen[0], Answering::Yes, "{seen:?}");
        assert!(seen.contains(&Answering::Busy), "{seen:?}");
        assert!(!seen.contains(&Answering::No), "{seen:?}");
        drop(listener);
        assert_eq!(answering(&path).await, Answering::No);
        assert_eq!(answering(&dir.path().join("none")).await, Answering::No);
    }
    use serde_json::json;

    fn tone(v: serde_json::Value) -> Tone {
        Tone::decode(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn tones_become_the_events_of_their_turn() {
        let text = Event::from_tone(tone(
            json!({"chi": "chunk", "sid": "a", "chunkType": "text_delta", "delta": "hi"}),
        ));
        assert_eq!(
            text,
            Event::Text {
                sid: "a".into(),
                text: "hi".into()
            }
        );
        let thinking = Event::from_tone(tone(
            json!({"chi": "chunk", "sid": "a", "chunkType": "thinking_delta", "delta": "hm"}),
        ));
        assert!(matches!(thinking, Event::Chunk { .. }) && !thinking.ends_turn());
        let done = Event::from_tone(tone(
            json!({"chi": "finish", "sid": "a", "finishReason": "cancelled"}),
        ));
        assert!(done.ends_turn() && done.sid() == Some("a"));
        // humd's refusal of a request without a sid still ends what waits.
        let refused = Event::from_tone(tone(
            json!({"chi": "error", "code": "bad_request", "message": "no"}),
        ));
        assert!(
            matches!(&refused, Event::Error { sid: None, error } if error.code == thrum::ErrorCode::BadRequest)
        );
        assert!(refused.ends_turn());
        // A sid-less chunk is not a turn's text.
        let stray = Event::from_tone(tone(
            json!({"chi": "chunk", "chunkType": "text_delta", "delta": "x"}),
        ));
        assert!(matches!(stray, Event::Other(_)));
    }

    #[tokio::test]
    async fn a_socket_answers_yes_while_listened_on_and_no_once_stale_or_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thrum.sock");
        assert_eq!(answering(&path).await, Answering::No, "no file");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        assert_eq!(answering(&path).await, Answering::Yes);
        assert!(wait_answering(&path, std::time::Duration::from_secs(1)).await);
        drop(listener);
        assert!(path.exists(), "the stale file stays");
        assert_eq!(answering(&path).await, Answering::No, "stale");
        assert!(!wait_answering(&path, std::time::Duration::from_millis(50)).await);
    }
}
