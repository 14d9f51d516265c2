//! A forager bee for tests: says hello with its tools over the real
//! socket, answers (or holds) the calls humd sends it, and records every
//! tone it gets.

use super::stack::*;
use super::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thrum::{Bees, Body, Connection, Hello, Inbox, Limits, Outbox, Tone, ToolResult};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

/// How a test forager answers a call.
#[derive(Clone, Copy, PartialEq)]
pub enum Serve {
    /// `echo` gives back `text`, `add` gives `a + b`.
    Answer,
    /// Keeps the call, never answers.
    Hold,
}

/// A forager bee over the real socket: says hello with its tools, answers
/// (or holds) the calls it gets, and records every tone it was sent.
pub struct Forager {
    seen: Arc<Mutex<Vec<Tone>>>,
    outbox: Outbox,
    task: tokio::task::JoinHandle<()>,
}

pub fn spec(name: &str) -> Value {
    json!({"name": name, "description": format!("the test's {name}"),
           "inputSchema": {"type": "object"}})
}

impl Forager {
    /// Says hello; with `warned`, also reads the conflict warning that
    /// follows the hello's echo and returns it.
    pub async fn connect(stack: &Stack, tools: &[&str], serve: Serve) -> (Forager, Tone) {
        Self::connect_warned(stack, tools, serve, false).await
    }

    pub async fn connect_warned(
        stack: &Stack,
        tools: &[&str],
        serve: Serve,
        warned: bool,
    ) -> (Forager, Tone) {
        Self::open(&stack.sock, tools, serve, warned, &[]).await
    }

    /// Says hello with `provides` (capabilities it serves in the agent's
    /// stead) and answers its calls.
    pub async fn connect_providing(stack: &Stack, tools: &[&str], provides: &[&str]) -> Forager {
        Self::open(&stack.sock, tools, Serve::Answer, false, provides)
            .await
            .0
    }

    /// Says hello on the socket at `sock` (a cluster node's) with
    /// `provides`, and answers or holds its calls.
    pub async fn connect_at(
        sock: &std::path::Path,
        tools: &[&str],
        serve: Serve,
        provides: &[&str],
    ) -> Forager {
        Self::open(sock, tools, serve, false, provides).await.0
    }

    async fn open(
        sock: &std::path::Path,
        tools: &[&str],
        serve: Serve,
        warned: bool,
        provides: &[&str],
    ) -> (Forager, Tone) {
        let stream = UnixStream::connect(sock).await.unwrap();
        let Connection { mut inbox, outbox } =
            Connection::unix(stream, Limits::default(), "forager".to_owned());
        let hello = Hello {
            bee: Some(Bees::Many(vec!["forager".into()])),
            proto_version: Some(thrum::PROTO_VERSION.into()),
            hid: Some(format!("forager-{}", tools.join("-"))),
            tools: Some(tools.iter().map(|t| spec(t)).collect()),
            tool_names: Some(tools.iter().map(|t| t.to_string()).collect()),
            provides: (!provides.is_empty())
                .then(|| provides.iter().map(|p| p.to_string()).collect()),
            ..Default::default()
        };
        outbox
            .try_send(&Tone::new(hello).with_rid("hello-f"))
            .unwrap();
        let breath = next(&mut inbox).await;
        assert_eq!(breath.chi(), "breath");
        let echo = next(&mut inbox).await;
        assert_eq!(echo.chi(), "echo");
        let first = if warned { next(&mut inbox).await } else { echo };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(answer_calls(inbox, outbox.clone(), seen.clone(), serve));
        (Forager { seen, outbox, task }, first)
    }

    pub fn calls(&self) -> Vec<thrum::ToolCall> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|t| match &t.body {
                Body::ToolCall(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn cancels(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|t| match &t.body {
                Body::Cancel(c) => c.call_id.clone(),
                _ => None,
            })
            .collect()
    }

    /// Disconnects (the socket closes).
    pub fn leave(self) {
        self.task.abort();
        self.outbox.abort();
    }
}

async fn answer_calls(
    mut inbox: Inbox<OwnedReadHalf>,
    outbox: Outbox,
    seen: Arc<Mutex<Vec<Tone>>>,
    serve: Serve,
) {
    while let Ok(Some(thrum::Inbound::Tone(t))) = inbox.recv().await {
        seen.lock().unwrap().push(t.clone());
        let Body::ToolCall(call) = &t.body else {
            continue;
        };
        if serve == Serve::Hold {
            continue;
        }
        // Keyed on `name`, as thrum 0.7's foragers are (the old
        // first-party `paid-oracle` one among them): hum sends both.
        let name = call
            .extra
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("");
        assert_eq!(
            name, call.tool_name,
            "a tool-call's name and toolName differ"
        );
        let output = match name {
            "echo" => call.args["text"].clone(),
            "add" => {
                json!(call.args["a"].as_i64().unwrap_or(0) + call.args["b"].as_i64().unwrap_or(0))
            }
            other => json!(format!("unknown tool {other}")),
        };
        let mut r = ToolResult::error(&call.call_id, Some(&call.tool_name), "");
        r.output = Some(output);
        r.is_error = Some(false);
        let reply = Tone::new(r).with_sid(t.sid().unwrap_or_default());
        if outbox.try_send(&reply).is_err() {
            return;
        }
    }
}

/// Waits until humd's status lists `n` foragers.
pub async fn wait_foragers(stack: &Stack, n: usize) {
    assert!(
        wait_until_async(PROMPTLY, || async {
            hum::client::fetch_status(&stack.sock)
                .await
                .is_ok_and(|s| s.daemon.tools.foragers.len() == n)
        })
        .await,
        "humd never listed {n} foragers"
    );
}

pub async fn wait_until_async<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
