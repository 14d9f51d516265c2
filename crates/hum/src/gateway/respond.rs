//! The one pipeline every API's request goes through: check the token,
//! read the request into a neutral [`Ask`], open or resume its turn, then
//! either collect the answer or stream it, park a turn that ends with the
//! client's calls, and remember the conversation for affinity. An API is a
//! [`Dialect`]: how its requests read and how its replies, stream events
//! and errors look — pure functions, tested without a server.

use super::affinity::Message;
use super::calls::{self, Opened, ToolAnswer};
use super::functions::{self, Choice, FunctionSpec};
use super::turn::{Collected, Failure, Step, Streamed};
use super::Gateway;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use thrum::{ErrorCode, ToolCall, Usage};

/// What one request asks, whichever API it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub model: String,
    pub system: Option<String>,
    /// The conversation as affinity reads it (no system messages).
    pub messages: Vec<Message>,
    /// Results of the calls a previous response ended with: the request
    /// continues that turn.
    pub answers: Vec<ToolAnswer>,
    /// The functions offered, after `tool_choice`.
    pub offered: Vec<FunctionSpec>,
    pub choice: Choice,
    /// The body's user id, for affinity.
    pub user: Option<String>,
    pub stream: bool,
    /// The shape the final answer must have (structured output).
    pub format: Option<super::structured::Wanted>,
    /// The response this request continues (the Responses API's
    /// `previous_response_id`): its conversation's sid, when hum gave it.
    pub previous: Option<String>,
    /// Keep the reply for reading back (the Responses API's `store`).
    pub store: bool,
    /// Results without a call id answer the waiting calls in order
    /// (Ollama's calls carry no id).
    pub by_position: bool,
}

/// One frame of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `data: <json>`.
    Data(Value),
    /// `event: <name>` and `data: <json>`.
    Named(&'static str, Value),
    /// `data: [DONE]`.
    Done,
}

impl Frame {
    fn event(self) -> Event {
        match self {
            Frame::Data(v) => Event::default().data(v.to_string()),
            Frame::Named(name, v) => Event::default().event(name).data(v.to_string()),
            Frame::Done => Event::default().data("[DONE]"),
        }
    }

    /// The frame as one NDJSON line (only data has one: names and `[DONE]`
    /// are SSE's).
    fn line(self) -> Option<Bytes> {
        match self {
            Frame::Data(v) | Frame::Named(_, v) => {
                let mut line = v.to_string().into_bytes();
                line.push(b'\n');
                Some(Bytes::from(line))
            }
            Frame::Done => None,
        }
    }
}

/// How an API streams: server-sent events, or one JSON object per line
/// (Ollama's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Sse,
    Ndjson,
}

/// An API's shapes. One value of it shapes one reply (its ids, and where a
/// stream is: which block is open).
pub trait Dialect: Send + 'static {
    /// What a request without the right credential is told.
    const UNAUTHORIZED: &'static str;
    /// How a stream is written.
    const WIRE: Wire = Wire::Sse;
    /// Reads a request body (a refusal says why, as `bad_request`).
    fn ask(body: &[u8]) -> Result<Ask, String>;
    /// An error's body in this API's shape.
    fn error_body(code: &ErrorCode, message: &str) -> Value;
    /// The shaper of one reply to a request for `model`.
    fn reply(model: &str) -> Self;
    /// The reply is `sid`'s (an API whose ids name their conversation
    /// takes one from `ids`).
    fn of_sid(&mut self, _sid: &str, _ids: &super::response_ids::ResponseIds) {}
    /// The agent's first content came at `at` (a reply that reports
    /// durations splits its time there).
    fn first_content(&mut self, _at: std::time::Instant) {}
    /// The whole reply of a finished turn.
    fn finished(&self, text: &str, usage: &Usage) -> Value;
    /// The whole reply of a turn that ends with the client's calls.
    fn called(&self, text: &str, calls: &[ToolCall], usage: &Usage) -> Value;
    /// A stream's first frames, sent with its first content: `started`
    /// holds the input and cache tokens of the model call that began.
    fn open(&mut self, started: &Usage) -> Vec<Frame>;
    fn text(&mut self, text: &str) -> Vec<Frame>;
    fn call(&mut self, call: &ToolCall) -> Vec<Frame>;
    /// The stream ends with the calls made (their results continue it).
    fn calls_done(&mut self, usage: &Usage) -> Vec<Frame>;
    /// The turn finished.
    fn finish(&mut self, usage: &Usage) -> Vec<Frame>;
    /// The turn failed after the stream began.
    fn fail(&mut self, code: &ErrorCode, message: &str) -> Vec<Frame>;
    /// What keeps a quiet stream alive.
    fn keep_alive() -> KeepAlive {
        KeepAlive::new()
    }
}

/// An error response in `D`'s shape, with the status its code maps to.
pub fn error<D: Dialect>(code: &ErrorCode, message: &str, retry_after_ms: Option<u64>) -> Response {
    let face = super::errors::face(code);
    super::with_retry_after(
        (face.status, axum::Json(D::error_body(code, message))).into_response(),
        retry_after_ms,
    )
}

fn failed<D: Dialect>(f: &Failure) -> Response {
    error::<D>(&f.code, &f.message, f.retry_after_ms)
}

const TOO_MANY_PARKED: &str = "too many turns wait for tool results";

/// Answers one request of `D`'s API, which must carry the token.
pub async fn respond<D: Dialect>(gw: Arc<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    if !super::authorized(&gw, &headers) {
        return error::<D>(&ErrorCode::Unauthorized, D::UNAUTHORIZED, None);
    }
    answer::<D>(gw, headers, body).await
}

/// Answers one request of `D`'s API whose caller was let in already.
pub async fn answer<D: Dialect>(gw: Arc<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    let ask = match D::ask(&body) {
        Ok(a) => a,
        Err(e) => return error::<D>(&ErrorCode::BadRequest, &e, None),
    };
    // A response id names its conversation; one hum did not give out is
    // unknown, as an unknown conversation is.
    let named = match &ask.previous {
        Some(id) => match gw.response_ids.sid_of(id) {
            Some(sid) => Some(sid),
            None => {
                return error::<D>(
                    &ErrorCode::NotFound,
                    &format!("no response {}", crate::logsafe::escape(id)),
                    None,
                )
            }
        },
        None => None,
    };
    let opening = calls::Opening {
        answers: ask.answers.clone(),
        header: named.or_else(|| super::session_header(&headers)),
        bee: super::bee_header(&headers),
        user: ask.user.as_deref(),
        messages: &ask.messages,
        model: &ask.model,
        system: ask.system.clone(),
        offered: &ask.offered,
        choice: &ask.choice,
        format: ask.format.as_ref(),
        by_position: ask.by_position,
    };
    // Made before the turn opens, so a reply's clock counts the wait for
    // a cell too.
    let mut reply = D::reply(&ask.model);
    let opened = match calls::open(&gw, opening).await {
        Ok(o) => o,
        Err(f) => return failed::<D>(&f),
    };
    reply.of_sid(&opened.sid, &gw.response_ids);
    if let Some(wanted) = ask.format.clone() {
        let bee = super::bee_header(&headers);
        return structured(gw, ask, opened, reply, wanted, bee).await;
    }
    if ask.stream {
        stream(gw, ask, opened, reply).await
    } else {
        collect(gw, ask, opened, reply).await
    }
}

async fn collect<D: Dialect>(gw: Arc<Gateway>, ask: Ask, opened: Opened, reply: D) -> Response {
    let Opened {
        sid, turn, owner, ..
    } = opened;
    let mut reply = reply;
    let body = match turn.collect().await {
        Ok(Collected::Finished { text, usage, first }) => {
            gw.affinity
                .lock()
                .expect("affinity lock")
                .remember(&sid, &ask.messages, &text);
            if let Some(at) = first {
                reply.first_content(at);
            }
            reply.finished(&text, &usage)
        }
        Ok(Collected::Calls { text, calls, turn }) => {
            let body = reply.called(&text, &calls, &functions::usage_of(&calls));
            if !gw.parked.park(*turn, &sid, owner, calls, gw.parked_turn) {
                return error::<D>(&ErrorCode::Overloaded, TOO_MANY_PARKED, Some(1000));
            }
            body
        }
        Err(f) => return failed::<D>(&f),
    };
    keep(&gw, &ask, Some(&body));
    super::with_session(axum::Json(body).into_response(), &sid)
}

/// Keeps a finished reply when its request asked to (`store`).
fn keep(gw: &Gateway, ask: &Ask, body: Option<&Value>) {
    if let (true, Some(body)) = (ask.store, body) {
        gw.kept.lock().expect("kept lock").keep(body);
    }
}

async fn stream<D: Dialect>(gw: Arc<Gateway>, ask: Ask, opened: Opened, mut reply: D) -> Response {
    let Opened {
        sid,
        mut turn,
        resumed,
        owner,
    } = opened;
    // A refusal still gets its own status (429 + Retry-After for an
    // overloaded pool): the 200 and its stream start once a cell has the
    // turn (a resumed turn has one already).
    if !resumed {
        if let Err(f) = turn.admitted().await {
            return failed::<D>(&f);
        }
    }
    // The first bytes leave with the first frame. A client that goes away
    // drops the receiver; the producer then drops the turn, which cancels
    // it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(64);
    let stream_sid = sid.clone();
    tokio::spawn(async move {
        let sid = stream_sid;
        let send = |frames: Vec<Frame>| {
            let tx = tx.clone();
            async move {
                for f in frames {
                    tx.send(f).await?;
                }
                Ok::<(), tokio::sync::mpsc::error::SendError<Frame>>(())
            }
        };
        let mut opened = false;
        let mut text = String::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        loop {
            let step = turn.next_streamed(calls.len(), &tx).await;
            // The stream opens with its first content, when the model
            // call's input tokens are known.
            if !opened && !matches!(step, Streamed::Gone) {
                opened = true;
                reply.first_content(std::time::Instant::now());
                if send(reply.open(&turn.take_started())).await.is_err() {
                    return;
                }
            }
            let frames = match step {
                Streamed::Step(Step::Text(t)) => {
                    text.push_str(&t);
                    reply.text(&t)
                }
                Streamed::Step(Step::ToolCall(c)) => {
                    let frames = reply.call(&c);
                    calls.push(c);
                    frames
                }
                Streamed::Step(Step::Finish { usage }) => {
                    gw.affinity
                        .lock()
                        .expect("affinity lock")
                        .remember(&sid, &ask.messages, &text);
                    let frames = reply.finish(&usage);
                    keep(&gw, &ask, super::kept::completed(&frames));
                    let _ = send(frames).await;
                    return;
                }
                Streamed::Step(Step::Error(Failure { code, message, .. })) => {
                    let _ = send(reply.fail(&code, &message)).await;
                    return;
                }
                // No more calls made together: the reply ends with them,
                // and the turn waits for their results.
                Streamed::CallsDone => {
                    let usage = functions::usage_of(&calls);
                    let frames = if gw.parked.park(turn, &sid, owner, calls, gw.parked_turn) {
                        let frames = reply.calls_done(&usage);
                        keep(&gw, &ask, super::kept::completed(&frames));
                        frames
                    } else {
                        reply.fail(&ErrorCode::Overloaded, TOO_MANY_PARKED)
                    };
                    let _ = send(frames).await;
                    return;
                }
                // The client left: dropping `turn` cancels it.
                Streamed::Gone => return,
            };
            if send(frames).await.is_err() {
                return; // dropping `turn` cancels it
            }
        }
    });
    streamed::<D>(rx, &sid)
}

/// A request with a `response_format`: the answer is collected and
/// checked, repaired once in the same cell when it has not the shape, and
/// refused in the API's error shape when it still has not; a streaming
/// request gets the checked answer as its stream.
async fn structured<D: Dialect>(
    gw: Arc<Gateway>,
    ask: Ask,
    opened: Opened,
    mut reply: D,
    wanted: super::structured::Wanted,
    bee: Option<String>,
) -> Response {
    let Opened {
        sid,
        mut turn,
        owner,
        ..
    } = opened;
    let mut repaired = false;
    let (text, usage) = loop {
        match turn.collect().await {
            Ok(Collected::Finished { text, usage, .. }) => {
                match super::structured::check(&wanted, &text) {
                    Ok(json) => break (json, usage),
                    Err(why) if !repaired => {
                        repaired = true;
                        tracing::info!(event = "gateway.structured_repair", sid = %sid, why = %why, "the answer has not the requested shape: one repair turn");
                        let fix = super::structured::repair(&wanted, &why);
                        turn = match calls::follow_up(
                            &gw,
                            &sid,
                            &ask.model,
                            &fix,
                            &ask.offered,
                            bee.as_deref(),
                        )
                        .await
                        {
                            Ok(t) => t,
                            Err(f) => return failed::<D>(&f),
                        };
                    }
                    Err(why) => {
                        let message = format!("the agent's answer does not have the requested shape, even after a repair: {why}");
                        return error::<D>(&ErrorCode::BadRequest, &message, None);
                    }
                }
            }
            // The calls a response ends with: a forced call's input is
            // checked (a wrong one is answered with why, once, and the
            // agent calls again); other calls go back as usual, the shape
            // applying to the final answer.
            Ok(Collected::Calls {
                text,
                calls,
                turn: parked,
            }) => {
                if let Err(why) = super::structured::check_calls(&wanted, &calls) {
                    if repaired {
                        let message = format!("the agent's call does not have the requested shape, even after a repair: {why}");
                        return error::<D>(&ErrorCode::BadRequest, &message, None);
                    }
                    repaired = true;
                    tracing::info!(event = "gateway.structured_repair", sid = %sid, why = %why, "the forced call has not the requested shape: the agent is told, once");
                    turn = *parked;
                    let fix = super::structured::repair(&wanted, &why);
                    for c in &calls {
                        let answer = ToolAnswer {
                            call_id: c.call_id.clone(),
                            output: fix.clone(),
                            is_error: true,
                        };
                        turn.answer(&answer).await;
                    }
                    continue;
                }
                let usage = functions::usage_of(&calls);
                let body = reply.called(&text, &calls, &usage);
                if !gw
                    .parked
                    .park(*parked, &sid, owner, calls.clone(), gw.parked_turn)
                {
                    return error::<D>(&ErrorCode::Overloaded, TOO_MANY_PARKED, Some(1000));
                }
                if !ask.stream {
                    keep(&gw, &ask, Some(&body));
                    return super::with_session(axum::Json(body).into_response(), &sid);
                }
                let mut frames = reply.open(&Usage::default());
                for c in &calls {
                    frames.extend(reply.call(c));
                }
                frames.extend(reply.calls_done(&usage));
                keep(&gw, &ask, super::kept::completed(&frames));
                return frames_response::<D>(frames, &sid);
            }
            Err(f) => return failed::<D>(&f),
        }
    };
    gw.affinity
        .lock()
        .expect("affinity lock")
        .remember(&sid, &ask.messages, &text);
    if !ask.stream {
        let body = reply.finished(&text, &usage);
        keep(&gw, &ask, Some(&body));
        return super::with_session(axum::Json(body).into_response(), &sid);
    }
    let mut frames = reply.open(&usage);
    frames.extend(reply.text(&text));
    frames.extend(reply.finish(&usage));
    keep(&gw, &ask, super::kept::completed(&frames));
    frames_response::<D>(frames, &sid)
}

/// A stream of frames known whole.
fn frames_response<D: Dialect>(frames: Vec<Frame>, sid: &str) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(frames.len().max(1));
    for f in frames {
        let _ = tx.try_send(f);
    }
    drop(tx);
    streamed::<D>(rx, sid)
}

/// The streamed response fed by `rx`, written as `D` streams.
fn streamed<D: Dialect>(rx: tokio::sync::mpsc::Receiver<Frame>, sid: &str) -> Response {
    use tokio_stream::StreamExt;
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx);
    match D::WIRE {
        Wire::Sse => super::sse_response(frames.map(Frame::event), D::keep_alive(), sid),
        Wire::Ndjson => super::ndjson_response(frames.filter_map(Frame::line), sid),
    }
}
