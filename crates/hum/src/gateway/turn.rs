//! One turn asked of humd on behalf of an HTTP request, as a bee would.

use std::path::Path;
use thrum::{
    Bees, Body, ChunkType, Connection, Hello, Inbound, Inbox, Limits, Outbox, Prompt, Tone,
};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

/// What the turn produced next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Text(String),
    Finish {
        usage: serde_json::Value,
    },
    Error {
        code: String,
        message: String,
        retry_after_ms: Option<u64>,
    },
}

pub struct Turn {
    inbox: Inbox<OwnedReadHalf>,
    outbox: Outbox,
    sid: String,
    done: bool,
}

impl Turn {
    /// Connects, says hello and sends the prompt.
    pub async fn start(
        socket: &Path,
        sid: &str,
        text: &str,
        model: &str,
        system: Option<String>,
    ) -> Result<Turn, Step> {
        let unreachable = |e: std::io::Error| Step::Error {
            code: "unavailable".into(),
            message: format!("humd is not reachable: {e}"),
            retry_after_ms: Some(1000),
        };
        let stream = UnixStream::connect(socket).await.map_err(unreachable)?;
        let Connection { inbox, outbox } = Connection::unix(stream, Limits::default(), "humd");
        let hello = Hello {
            bee: Some(Bees::Many(vec!["asker".into()])),
            source: Some("hum gateway".into()),
            ..Default::default()
        };
        let prompt = Prompt {
            text: Some(text.into()),
            model_id: Some(model.into()),
            system_prompt: system,
            ..Default::default()
        };
        for t in [Tone::new(hello), Tone::new(prompt).with_sid(sid)] {
            outbox.send(&t).await.map_err(|e| Step::Error {
                code: "unavailable".into(),
                message: e.to_string(),
                retry_after_ms: Some(1000),
            })?;
        }
        Ok(Turn {
            inbox,
            outbox,
            sid: sid.to_owned(),
            done: false,
        })
    }

    /// The next text, or how the turn ended.
    pub async fn next(&mut self) -> Step {
        loop {
            let tone = match self.inbox.recv().await {
                Ok(Some(Inbound::Tone(t))) => t,
                Ok(Some(Inbound::Rejected(_))) => continue,
                _ => {
                    self.done = true;
                    return Step::Error {
                        code: "worker_lost".into(),
                        message: "humd went away".into(),
                        retry_after_ms: Some(1000),
                    };
                }
            };
            if tone.sid() != Some(self.sid.as_str()) {
                continue;
            }
            match tone.body {
                Body::Chunk(c) if c.chunk_type == ChunkType::TextDelta => {
                    return Step::Text(c.delta.unwrap_or_default())
                }
                Body::Finish(f) => {
                    self.done = true;
                    return Step::Finish {
                        usage: f.usage.unwrap_or_default(),
                    };
                }
                Body::Error(e) => {
                    self.done = true;
                    return Step::Error {
                        code: e.code,
                        message: e.message.unwrap_or_default(),
                        retry_after_ms: e.retry_after_ms,
                    };
                }
                _ => {}
            }
        }
    }
}

impl Drop for Turn {
    /// A turn dropped before it ended (the HTTP client went away) is
    /// cancelled.
    fn drop(&mut self) {
        if !self.done {
            let _ = self
                .outbox
                .try_send(&Tone::new(thrum::Cancel::default()).with_sid(&self.sid));
            self.outbox.close();
        }
    }
}
