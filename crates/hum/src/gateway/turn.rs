//! One turn asked of humd on behalf of an HTTP request, as a bee would.

use crate::client::{Client, Event};
use std::path::Path;
use thrum::{Prompt, Tone};

/// The longest answer gathered for a non-streaming response; past it the
/// turn is cancelled and the client told to stream instead.
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Why a turn did not finish: one of humd's error codes.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: thrum::ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

impl Failure {
    fn new(
        code: thrum::ErrorCode,
        message: impl Into<String>,
        retry_after_ms: Option<u64>,
    ) -> Failure {
        Failure {
            code,
            message: message.into(),
            retry_after_ms,
        }
    }
}

/// What the turn produced next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Text(String),
    /// The agent calls one of the client's functions.
    ToolCall(thrum::ToolCall),
    Finish {
        usage: thrum::Usage,
    },
    Error(Failure),
}

/// What a streaming response does next, given the calls it holds.
// One lives for one loop turn of a response, never in a collection: its
// size is not worth a box per text piece.
#[allow(clippy::large_enum_variant)]
pub enum Streamed {
    Step(Step),
    /// The calls made together are all in: the response ends with them.
    CallsDone,
    /// The client left (its stream was dropped): the turn is to be dropped.
    Gone,
}

pub struct Turn {
    client: Client,
    sid: String,
    done: bool,
    /// Calls of the client's functions not answered yet, by call id.
    calls: std::collections::HashMap<String, thrum::ToolCall>,
    /// A step read while waiting for admission, handed out first.
    pending: Option<Step>,
    /// The usage of the latest model call that began (its input and cache
    /// tokens), not yet taken by a response.
    started: Option<thrum::Usage>,
    /// When the first text or call came.
    first: Option<std::time::Instant>,
    /// Its sid counted busy for as long as the turn lives (parked too).
    claim: Option<super::in_flight::Claim>,
}

impl Turn {
    /// Connects, says hello and sends the prompt; `tools` are the client's
    /// functions, offered to the agent as this asker's tools.
    pub async fn start(
        socket: &Path,
        sid: &str,
        text: &str,
        model: &str,
        system: Option<String>,
        tools: Option<serde_json::Value>,
        bee: Option<&str>,
    ) -> Result<Turn, Failure> {
        let prompt = Prompt {
            system_prompt: system,
            tools,
            ..Client::text_prompt(text, Some(model))
        };
        Turn::send(socket, sid, prompt, bee).await
    }

    /// Connects as `bee`, says hello and sends `prompt` for `sid`.
    pub async fn send(
        socket: &Path,
        sid: &str,
        prompt: Prompt,
        bee: Option<&str>,
    ) -> Result<Turn, Failure> {
        let unavailable = |e: &dyn std::fmt::Display| {
            Failure::new(
                thrum::ErrorCode::Unavailable,
                format!("humd is not reachable: {e}"),
                Some(1000),
            )
        };
        let client = Client::connect(socket, Client::bee_hello("hum gateway", bee))
            .await
            .map_err(|e| unavailable(&e))?;
        client
            .prompt(sid, prompt)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(Turn {
            client,
            sid: sid.to_owned(),
            done: false,
            calls: Default::default(),
            pending: None,
            started: None,
            first: None,
            claim: None,
        })
    }

    /// Keeps `claim` (its sid busy) until the turn is dropped.
    pub fn hold(&mut self, claim: super::in_flight::Claim) {
        self.claim = Some(claim);
    }

    /// The next step if it comes while the agent may still be making
    /// calls together with the `so_far` already seen: within
    /// [`CALLS_TOGETHER`](super::calls::CALLS_TOGETHER), and never past
    /// [`MAX_CALLS_TOGETHER`](super::calls::MAX_CALLS_TOGETHER) calls in one
    /// response (later ones wait for the next round).
    pub async fn next_together(&mut self, so_far: usize) -> Option<Step> {
        if so_far >= super::calls::MAX_CALLS_TOGETHER {
            return None;
        }
        tokio::time::timeout(super::calls::CALLS_TOGETHER, self.next())
            .await
            .ok()
    }

    /// The next step of a streamed response that holds `calls` calls so
    /// far: while it holds none, whatever comes or the client leaving
    /// (`client` closed); once it holds some, the calls made together with
    /// them, then [`Streamed::CallsDone`].
    pub async fn next_streamed<T>(
        &mut self,
        calls: usize,
        client: &tokio::sync::mpsc::Sender<T>,
    ) -> Streamed {
        if calls == 0 {
            tokio::select! {
                step = self.next() => Streamed::Step(step),
                () = client.closed() => Streamed::Gone,
            }
        } else {
            match self.next_together(calls).await {
                Some(step) => Streamed::Step(step),
                None => Streamed::CallsDone,
            }
        }
    }

    /// Sends the client's result of one of this turn's calls to the agent.
    pub async fn answer(&mut self, a: &super::calls::ToolAnswer) {
        // What comes after the results is the next reply's content.
        self.first = None;
        let call = self.calls.remove(&a.call_id).unwrap_or(thrum::ToolCall {
            call_id: a.call_id.clone(),
            tool_name: String::new(),
            args: serde_json::Value::Null,
            usage: None,
            extra: Default::default(),
        });
        let output = serde_json::Value::String(a.output.clone());
        if let Err(e) = self
            .client
            .tool_result(&self.sid, &call, output, a.is_error)
            .await
        {
            tracing::warn!(event = "gateway.tool_result_failed", sid = %self.sid, call = %a.call_id, error = %e, "a tool result did not reach humd");
        }
    }

    /// Waits until a cell has taken the turn (its first event), so a
    /// streaming response can still answer a refusal (`overloaded`,
    /// `no_worker`, …) with its own HTTP status before any byte of a 200.
    pub async fn admitted(&mut self) -> Result<(), Failure> {
        let step = self.step(true).await;
        match step {
            None => Ok(()),
            Some(Step::Error(f)) => Err(f),
            Some(other) => {
                self.pending = Some(other);
                Ok(())
            }
        }
    }

    /// The next text, or how the turn ended. Cancel-safe.
    pub async fn next(&mut self) -> Step {
        if let Some(step) = self.pending.take() {
            return step;
        }
        self.step(false).await.expect("only admission stops early")
    }

    /// The next step; with `until_ready`, `None` once the turn's
    /// `session-ready` arrives.
    async fn step(&mut self, until_ready: bool) -> Option<Step> {
        Some(loop {
            let Ok(event) = self.client.event_of(&self.sid).await else {
                self.done = true;
                break Step::Error(Failure::new(
                    thrum::ErrorCode::WorkerLost,
                    "humd went away",
                    Some(1000),
                ));
            };
            match event {
                Event::Ready { .. } if until_ready => return None,
                Event::Chunk { chunk, .. }
                    if chunk.chunk_type == thrum::ChunkType::MessageStart =>
                {
                    self.started = Some(thrum::Usage::read(
                        chunk.usage.as_ref().unwrap_or(&serde_json::Value::Null),
                    ));
                }
                Event::Text { text, .. } => {
                    self.first.get_or_insert_with(std::time::Instant::now);
                    break Step::Text(text);
                }
                Event::ToolCall { call, .. } => {
                    self.first.get_or_insert_with(std::time::Instant::now);
                    self.calls.insert(call.call_id.clone(), call.clone());
                    break Step::ToolCall(call);
                }
                Event::Finish { finish, .. } => {
                    self.done = true;
                    break Step::Finish {
                        usage: thrum::Usage::read(&finish.usage.unwrap_or_default()),
                    };
                }
                Event::Error { error, .. } => {
                    self.done = true;
                    break Step::Error(Failure {
                        code: error.code,
                        message: error.message.unwrap_or_default(),
                        retry_after_ms: error.retry_after_ms,
                    });
                }
                _ => {}
            }
        })
    }

    /// The whole answer, for a non-streaming response: its text and how it
    /// ended (finished with usage, or with calls of the client's functions,
    /// the turn then handed back to be parked). An answer over
    /// [`MAX_ANSWER`] cancels the turn (by dropping it).
    pub async fn collect(mut self) -> Result<Collected, Failure> {
        let mut text = String::new();
        loop {
            match self.next().await {
                Step::ToolCall(first) => {
                    let mut calls = vec![first];
                    while let Some(step) = self.next_together(calls.len()).await {
                        match step {
                            Step::ToolCall(c) => calls.push(c),
                            Step::Text(t) if text.len() + t.len() <= MAX_ANSWER => {
                                text.push_str(&t)
                            }
                            Step::Text(_) => {}
                            Step::Finish { usage } => {
                                return Ok(Collected::Finished {
                                    text,
                                    usage,
                                    first: self.first,
                                })
                            }
                            Step::Error(f) => return Err(f),
                        }
                    }
                    return Ok(Collected::Calls {
                        text,
                        calls,
                        turn: Box::new(self),
                    });
                }
                Step::Text(t) if text.len() + t.len() > MAX_ANSWER => {
                    return Err(Failure::new(
                        thrum::ErrorCode::BadRequest,
                        format!("the answer is over {MAX_ANSWER} bytes; ask with stream: true"),
                        None,
                    ));
                }
                Step::Text(t) => text.push_str(&t),
                Step::Finish { usage } => {
                    return Ok(Collected::Finished {
                        text,
                        usage,
                        first: self.first,
                    })
                }
                Step::Error(f) => return Err(f),
            }
        }
    }

    /// Cancels the turn and waits (within `within`) for its end on this
    /// connection, so nothing of it is left to be delivered elsewhere.
    pub async fn cancel_and_wait(&mut self, within: std::time::Duration) {
        if self.done {
            return;
        }
        if self.client.cancel(&self.sid).await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + within;
        while !self.done {
            if tokio::time::timeout_at(deadline, self.step(false))
                .await
                .is_err()
            {
                tracing::warn!(event = "gateway.cancel_unanswered", sid = %self.sid, "an abandoned turn did not end in time");
                return;
            }
        }
    }

    /// The input and cache tokens of the latest model call that began, once
    /// (none: zeros).
    pub fn take_started(&mut self) -> thrum::Usage {
        self.started.take().unwrap_or_default()
    }

    pub fn sid(&self) -> &str {
        &self.sid
    }
}

/// How a collected answer ended.
pub enum Collected {
    Finished {
        text: String,
        usage: thrum::Usage,
        /// When the agent's first content came.
        first: Option<std::time::Instant>,
    },
    /// The agent called the client's functions and waits for their results.
    Calls {
        text: String,
        calls: Vec<thrum::ToolCall>,
        turn: Box<Turn>,
    },
}

impl Drop for Turn {
    /// A turn dropped before it ended (the HTTP client went away, or its
    /// answer grew too long) is cancelled.
    fn drop(&mut self) {
        if !self.done {
            let outbox = self.client.outbox();
            let _ = outbox.try_send(&Tone::new(thrum::Cancel::default()).with_sid(&self.sid));
            outbox.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrum::{Chunk, ChunkType, Connection, Finish, Inbound, Limits};

    /// A stand-in humd that answers the prompt with `chunks` chunks of
    /// `size` bytes, then finish, and reports whether a cancel came.
    async fn fake_humd(
        path: std::path::PathBuf,
        chunks: usize,
        size: usize,
    ) -> tokio::task::JoinHandle<bool> {
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let Connection { mut inbox, outbox } =
                Connection::unix(stream, Limits::default(), "bee");
            let mut cancelled = false;
            while let Ok(Some(Inbound::Tone(t))) = inbox.recv().await {
                match t.chi() {
                    "prompt" => {
                        let sid = t.sid().unwrap().to_owned();
                        let out = outbox.clone();
                        tokio::spawn(async move {
                            let delta = "x".repeat(size);
                            for _ in 0..chunks {
                                let c = Chunk {
                                    chunk_type: ChunkType::TextDelta,
                                    block_idx: Some(0),
                                    delta: Some(delta.clone()),
                                    partial_json: None,
                                    usage: None,
                                    extra: Default::default(),
                                };
                                if out.send(&Tone::new(c).with_sid(&sid)).await.is_err() {
                                    return;
                                }
                            }
                            let _ = out.send(&Tone::new(Finish::default()).with_sid(&sid)).await;
                        });
                    }
                    "cancel" => cancelled = true,
                    _ => {}
                }
            }
            cancelled
        })
    }

    #[tokio::test]
    async fn collect_gathers_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let humd = fake_humd(path.clone(), 3, 4).await;
        let turn = Turn::start(&path, "s", "hi", "m", None, None, None)
            .await
            .unwrap();
        let Ok(Collected::Finished { text, .. }) = turn.collect().await else {
            panic!("not finished")
        };
        assert_eq!(text, "xxxxxxxxxxxx");
        assert!(!humd.await.unwrap(), "a finished turn is not cancelled");
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_and_its_turn_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let size = 1024 * 1024;
        let humd = fake_humd(path.clone(), MAX_ANSWER / size + 2, size).await;
        let turn = Turn::start(&path, "s", "hi", "m", None, None, None)
            .await
            .unwrap();
        let Err(err) = turn.collect().await else {
            panic!("not refused")
        };
        assert_eq!(err.code, thrum::ErrorCode::BadRequest);
        assert!(humd.await.unwrap(), "the turn was not cancelled");
    }
}
