//! The link to humd: connect, say hello, pass tones in both directions;
//! when the socket goes away, reconnect with capped exponential backoff and
//! jitter, and say hello again.

use super::msg::Msg;
use std::path::PathBuf;
use std::time::Duration;
use thrum::{Connection, Inbound, Limits, Tone};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// First retry delay; doubled per failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// A restarted daemon is found within this long (plus jitter).
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Most tones handed to the actor at once.
const MAX_BATCH: usize = 256;

pub async fn run(
    socket: PathBuf,
    hello: Tone,
    to_actor: mpsc::Sender<Msg>,
    stop: CancellationToken,
) {
    // Jittered, so a herd of workers does not reconnect in lockstep.
    let mut backoff = crate::backoff::Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = thrum::connect(&socket) => c,
        };
        match connected {
            Ok(stream) => {
                backoff.reset();
                let Connection { mut inbox, outbox } =
                    Connection::unix(stream, Limits::default(), "humd");
                if outbox.try_send(&hello).is_err() {
                    continue;
                }
                tracing::info!(event = "worker.linked", socket = %socket.display(), "connected to humd");
                let _ = to_actor.send(Msg::Linked(outbox.clone())).await;
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => {
                            outbox.close();
                            return;
                        }
                        n = inbox.recv() => n,
                    };
                    match next {
                        Ok(Some(Inbound::Tone(tone))) => {
                            // Tones already read arrive together, so a herd of
                            // prompts is decided on as a whole.
                            let mut batch = vec![tone];
                            while batch.len() < MAX_BATCH {
                                match inbox.recv_ready().await {
                                    Some(Ok(Some(Inbound::Tone(t)))) => batch.push(t),
                                    _ => break,
                                }
                            }
                            let _ = to_actor.send(Msg::Inbound(batch)).await;
                        }
                        Ok(Some(Inbound::Rejected(r))) => {
                            tracing::warn!(event = "worker.inbound.rejected", error = %r, "humd sent something unusable");
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                outbox.abort();
                tracing::warn!(
                    event = "worker.unlinked",
                    "lost humd; cells stay, reconnecting"
                );
                let _ = to_actor.send(Msg::Unlinked).await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // Another user's socket: never linked to; said loudly, and
                // tried again later (the real humd may take the path back).
                tracing::error!(event = "worker.foreign_socket", socket = %socket.display(), error = %e, "refusing a humd socket another user serves");
            }
            Err(e) => {
                tracing::debug!(event = "worker.connect_failed", error = %e, backoff_ms = backoff.peek().as_millis() as u64, "humd not reachable");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
