//! Peers: the accept loop that admits socket connections (same user,
//! under the cap), and the task that serves each peer, from the socket or
//! made in memory for the cluster's links.

use super::router::{ConnId, RouterMsg};
use super::{HELLO_WITHIN, IN_FLIGHT_BYTES};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thrum::{Connection, InboundRaw, Limits};
use tokio::sync::mpsc;

/// What the accept loop needs to admit a connection.
pub(super) struct Admission {
    pub(super) own_uid: u32,
    pub(super) max_connections: usize,
    /// Connections open right now.
    pub(super) open: Arc<AtomicUsize>,
    pub(super) host: PeerHost,
}

/// Decrements the open-connection count when a connection's task ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections and hands each to a task of its own. It never waits
/// on the router: the hand-over (`Joined`) is sent from the connection's
/// task, so a full router inbox slows only new connections' first words,
/// never the loop that drains it.
pub(super) async fn accept_loop(listener: tokio::net::UnixListener, admission: Admission) {
    let mut next_id: ConnId = 0;
    let mut refused_busy: u64 = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(event = "daemon.accept_failed", error = %e, "accept failed");
                // Out of descriptors, most likely: let some close. Only this
                // loop waits; the router goes on.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                tracing::warn!(event = "daemon.peer_cred_failed", error = %e, "cannot read peer credentials; refusing");
                continue;
            }
        };
        if !thrum::peer::allowed(uid, admission.own_uid) {
            tracing::warn!(
                event = "daemon.peer_refused",
                uid,
                "a process of another user tried to connect"
            );
            continue;
        }
        let open = admission.open.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Slot(admission.open.clone());
        if open > admission.max_connections {
            refused_busy += 1;
            // Logged once per hundred so a flood does not flood the log.
            if refused_busy % 100 == 1 {
                tracing::warn!(
                    event = "daemon.connection_refused",
                    open = open - 1,
                    cap = admission.max_connections,
                    refused = refused_busy,
                    "connection cap reached"
                );
            }
            refuse_busy(stream, admission.max_connections);
            drop(slot);
            continue;
        }
        let id = next_id;
        next_id += 1;
        let (read, write) = stream.into_split();
        admission.host.spawn(id, read, write, Some(slot));
    }
}

/// What every peer's task needs, whether the peer came by the socket or is
/// the cluster's link to another node: the router's inbox and the bounds
/// shared by every connection.
#[derive(Clone)]
pub(crate) struct PeerHost {
    pub(super) tx: mpsc::Sender<RouterMsg>,
    /// Unfinished lines across every connection.
    pub(super) budget: Arc<thrum::ByteBudget>,
    /// Bytes of tones read and not yet handled by the router.
    pub(super) in_flight: Arc<tokio::sync::Semaphore>,
}

impl PeerHost {
    /// A task that reads the peer on `read` and hands its tones to the
    /// router, which writes to it on `write`.
    fn spawn<R, W>(&self, id: ConnId, read: R, write: W, slot: Option<Slot>)
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let PeerHost {
            tx,
            budget,
            in_flight,
        } = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Connection { inbox, outbox } =
                Connection::new(read, write, Limits::default(), format!("conn-{id}"));
            let mut inbox = inbox.with_budget(budget);
            if tx
                .send(RouterMsg::Joined(id, outbox.clone()))
                .await
                .is_err()
            {
                return;
            }
            let mut first = true;
            loop {
                let next = if first {
                    first = false;
                    match tokio::time::timeout(HELLO_WITHIN, inbox.recv_raw()).await {
                        Ok(n) => n,
                        Err(_) => {
                            tracing::info!(
                                event = "daemon.silent_peer",
                                conn = id,
                                "closed a connection that said nothing"
                            );
                            outbox.abort();
                            break;
                        }
                    }
                } else {
                    inbox.recv_raw().await
                };
                let msg = match next {
                    Ok(Some(InboundRaw::Tone(t))) => {
                        let bytes = inbox.last_line_len().clamp(1, IN_FLIGHT_BYTES) as u32;
                        let Ok(permit) = in_flight.clone().acquire_many_owned(bytes).await else {
                            return;
                        };
                        RouterMsg::Tone(id, Box::new(t), Some(permit))
                    }
                    Ok(Some(InboundRaw::Rejected(r))) => RouterMsg::Rejected(id, r),
                    Ok(None) | Err(_) => break,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(RouterMsg::Left(id)).await;
            // The slot is held until the writer has let go of the socket.
            let _ = tokio::time::timeout(Duration::from_secs(1), outbox.closed()).await;
        });
    }

    /// A peer made in memory (the cluster's link to another node): the
    /// router serves it exactly as a socket's. Returned: the lines the
    /// router sends the peer, taken straight from its outbox, and where
    /// the lines the other node sent go, handed to the router by this
    /// peer's own task, in order with its arrival and its leaving. Neither
    /// way goes through a pipe: that cost each line two more task
    /// hand-offs and a copy, each way.
    pub(crate) fn attach(&self, id: ConnId) -> (thrum::Lines, LinkLines) {
        let (outbox, to_link) = thrum::Outbox::channel(Limits::default(), format!("link-{id}"));
        let (lines, from_link) = mpsc::channel(LINK_QUEUE);
        let PeerHost { tx, in_flight, .. } = self.clone();
        tokio::spawn(async move {
            if tx
                .send(RouterMsg::Joined(id, outbox.clone()))
                .await
                .is_err()
            {
                return;
            }
            let mut from_link: mpsc::Receiver<LinkLine> = from_link;
            loop {
                let (line, room) = tokio::select! {
                    // The router closing the link, its queue to the link
                    // overflowing, or the link ending, first: no line is
                    // handed over after that, whether or not the link has
                    // taken what was queued (it may be stuck publishing).
                    biased;
                    () = outbox.stopped() => break,
                    line = from_link.recv() => match line {
                        Some(line) => line,
                        None => break,
                    },
                };
                let Some(tone) = link_tone(id, &line) else {
                    continue;
                };
                let bytes = line.len().clamp(1, IN_FLIGHT_BYTES) as u32;
                let Ok(permit) = in_flight.clone().acquire_many_owned(bytes).await else {
                    return;
                };
                if tx
                    .send(RouterMsg::Tone(id, Box::new(tone), Some(permit)))
                    .await
                    .is_err()
                {
                    return;
                }
                // The link's budget is the router's from here.
                drop(room);
            }
            let _ = tx.send(RouterMsg::Left(id)).await;
        });
        (to_link, lines)
    }
}

/// A line another node sent, with the share of its link's byte budget it
/// holds until the router has it.
pub(crate) type LinkLine = (bytes::Bytes, Option<tokio::sync::OwnedSemaphorePermit>);

/// Where a link's lines from the other node go.
pub(crate) type LinkLines = mpsc::Sender<LinkLine>;

/// Lines from another node waiting for the router, per link.
pub(crate) const LINK_QUEUE: usize = 1024;

/// A line from another node as a tone, read as a socket's line is; one
/// that is not (too long, not a tone) is dropped and said. Only hum nodes
/// publish on a cluster's subjects, so such a line is a bug or a stranger
/// with the cluster's credentials: nobody waits for an answer to it.
fn link_tone(id: ConnId, line: &[u8]) -> Option<thrum::RawTone> {
    if line.len() > thrum::DEFAULT_MAX_LINE {
        tracing::warn!(
            event = "cluster.line_refused",
            conn = id,
            len = line.len(),
            "a line from another node is over the line limit"
        );
        return None;
    }
    match thrum::Head::read(line) {
        Ok(head) => Some(thrum::RawTone {
            head,
            line: line.to_vec(),
        }),
        Err(e) => {
            tracing::warn!(event = "cluster.line_refused", conn = id, error = %e, "a line from another node is not a tone");
            None
        }
    }
}

/// Answers a connection over the cap with one error line and closes it.
/// The write never waits: a fresh socket's send buffer has room for a line.
fn refuse_busy(stream: tokio::net::UnixStream, cap: usize) {
    let mut tone = thrum::Tone::new(thrum::ErrorTone::new(
        thrum::ErrorCode::Overloaded,
        format!("humd serves at most {cap} connections at once; retry later"),
    ));
    tone.envelope.from = Some("daemon".into());
    if let Ok(line) = tone.encode_line(thrum::DEFAULT_MAX_LINE) {
        let _ = stream.try_write(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a broken implementation ever waits this long.
    const PROMPTLY: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_link_whose_queue_overflows_leaves_at_once_though_nothing_took_its_lines() {
        let (tx, mut router) = mpsc::channel(16);
        let host = PeerHost {
            tx,
            budget: Arc::new(thrum::ByteBudget::new(1 << 20)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(1 << 20)),
        };
        // The link's end is held and never read: its publishing is stuck.
        let (_stuck, from_link) = host.attach(7);
        let outbox = match tokio::time::timeout(PROMPTLY, router.recv()).await {
            Ok(Some(RouterMsg::Joined(7, outbox))) => outbox,
            _ => panic!("the link did not join"),
        };
        let chunk = thrum::Tone::new(thrum::ErrorTone::new(
            thrum::ErrorCode::BadRequest,
            "x".repeat(64 * 1024),
        ));
        let mut sent = 0;
        while outbox.try_send(&chunk).is_ok() {
            sent += 1;
            assert!(sent < 10_000, "the queue never filled");
        }
        // A line the other node sends now is not handed over.
        let _ = from_link.try_send((
            bytes::Bytes::from_static(br#"{"chi":"chunk","sid":"s"}"#),
            None,
        ));
        match tokio::time::timeout(PROMPTLY, router.recv()).await {
            Ok(Some(RouterMsg::Left(7))) => {}
            Ok(Some(RouterMsg::Tone(..))) => panic!("a line handed over after the link overflowed"),
            _ => panic!("the link did not leave"),
        }
    }

    #[test]
    fn a_line_from_another_node_is_read_as_a_sockets_line_is() {
        let tone = link_tone(1, br#"{"chi":"chunk","sid":"s","rid":"r"}"#).unwrap();
        assert_eq!(
            (tone.head.chi.as_str(), tone.head.rid.as_deref()),
            ("chunk", Some("r"))
        );
        assert!(link_tone(1, b"not json").is_none());
        assert!(link_tone(1, br#"{"sid":"s"}"#).is_none(), "no chi");
        let many = format!(
            "{{\"chi\":\"x\",\"a\":[{}]}}",
            "{\"k\":1},".repeat(thrum::MAX_MEMBERS) + "{}"
        );
        assert!(link_tone(1, many.as_bytes()).is_none(), "too many members");
        let long = format!(
            r#"{{"chi":"x","pad":"{}"}}"#,
            "y".repeat(thrum::DEFAULT_MAX_LINE)
        );
        assert!(
            link_tone(1, long.as_bytes()).is_none(),
            "over the line limit"
        );
    }
}
