//! A link: one peer of this node's router that stands for another node.
//!
//! For every other node this node holds up to four: its *worker* link (the
//! router sends it the prompts of sids placed on that node; what comes
//! back over NATS is that node's answer), its *asker* link (what that
//! node's askers send for sids living here; the router's answers go back),
//! its *tools* link (a forager offering that node's foragers' tools: the
//! router sends it calls of this node's cells) and its *calls* link (that
//! node's cells' calls of the tools of foragers here; results go back).
//! Each is an in-memory connection the router serves like a socket's, so
//! sticky routing, cancel, gone askers and lost workers work across nodes
//! with no second set of rules.

use crate::daemon::router::ConnId;
use crate::daemon::PeerHost;
use bytes::Bytes;
use std::sync::Arc;
use thrum::{Head, Limits, Tone};
use tokio::sync::{mpsc, Semaphore};

/// Bytes of those lines at most: a line may be as long as NATS carries
/// (megabytes), so the count alone would let a link hold gigabytes. Past
/// it the cluster's loop waits for the router to take some (the router
/// reads every peer at once; it is not slow for long).
const LINK_BYTES: usize = 16 * 1024 * 1024;

/// Most bytes of lines sent to another node as one NATS message. Lines
/// the router hands a link together (a turn's chunks and its finish) go
/// as one message, so nats-server and the other node wake once for them,
/// not once a line; a line longer than this goes alone.
const BATCH_BYTES: usize = 64 * 1024;

/// Which of a node's two links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// Stands for the node's workers: the router sends it prompts.
    Worker,
    /// Stands for the node's askers: the router sends it answers.
    Asker,
    /// Stands for the node's foragers: the router sends it tool calls.
    Tools,
    /// Stands for the node's cells calling tools here: the router sends it
    /// tool results.
    Calls,
}

impl Side {
    /// The subject word for lines *to* this side's counterpart: what the
    /// router sends a worker link goes to the other node's asker link.
    fn their_word(self) -> &'static str {
        match self {
            Side::Worker => "a",
            Side::Asker => "w",
            Side::Tools => "c",
            Side::Calls => "t",
        }
    }

    /// Whether a line the router sent this side goes to the other node:
    /// acks are for the router that sent the tone, which acked its own
    /// peer already; the catalogue each node's router tells its own
    /// workers; a tools link carries only calls and their cancels, a calls
    /// link only results (a conflict warning or a refusal of the tools it
    /// offers is this node's to log, not the other's to act on).
    fn carries(self, chi: &str) -> bool {
        match self {
            Side::Worker | Side::Asker => !matches!(chi, "echo" | "tool-info"),
            Side::Tools => matches!(chi, "tool-call" | "cancel"),
            Side::Calls => chi == "tool-result",
        }
    }

    /// The side a subject word delivers to.
    pub fn of_word(word: &str) -> Option<Side> {
        match word {
            "a" => Some(Side::Asker),
            "w" => Some(Side::Worker),
            "c" => Some(Side::Calls),
            "t" => Some(Side::Tools),
            _ => None,
        }
    }
}

/// Where a link publishes and who it is.
pub struct LinkPlan {
    pub id: ConnId,
    pub node: String,
    pub side: Side,
    /// The hello the link says to the router.
    pub hello: Tone,
    /// The subject of this node's lines to `node` on this side.
    pub subject: String,
}

impl LinkPlan {
    /// The subject lines for `to`'s `side`-link of `from` go to.
    pub fn subject(cluster: &str, to: &str, side: Side, from: &str) -> String {
        format!("hum.{cluster}.to.{to}.{}.{from}", side.their_word())
    }
}

/// What a link tells the cluster's loop.
#[derive(Debug)]
pub enum LinkEvent {
    /// The router greeted it: it can take sids.
    Ready(String, Side),
    /// It ended (the router closed it, or its owner did).
    Closed(String, Side, ConnId),
}

/// A running link; dropping it ends it.
pub struct Link {
    pub id: ConnId,
    /// To the router, through this link's peer task.
    lines: crate::daemon::peers::LinkLines,
    /// The bytes the queued lines may still take.
    room: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Link {
    /// Starts a link to the router through `host`, publishing on `nats`.
    pub(crate) fn open(
        host: &PeerHost,
        plan: LinkPlan,
        nats: async_nats::Client,
        events: mpsc::UnboundedSender<LinkEvent>,
    ) -> Link {
        let id = plan.id;
        let (from_router, lines) = host.attach(id);
        // The hello first: the router knows the link by it.
        if let Ok(mut hello) = plan.hello.encode_line(Limits::default().max_line) {
            hello.pop();
            let _ = lines.try_send((Bytes::from(hello), None));
        }
        let task = tokio::spawn(run(from_router, plan, nats, events));
        let room = Arc::new(Semaphore::new(LINK_BYTES));
        Link {
            id,
            lines,
            room,
            task,
        }
    }

    /// Hands a line from the other node to the router, waiting while the
    /// link's queue is full (in lines or in bytes).
    pub async fn deliver(&self, line: Bytes) -> bool {
        // A line longer than the whole budget takes all of it.
        let want = line.len().clamp(1, LINK_BYTES) as u32;
        let Ok(permit) = self.room.clone().acquire_many_owned(want).await else {
            return false;
        };
        self.lines.send((line, Some(permit))).await.is_ok()
    }

    /// Hands each line of a message from the other node to the router, in
    /// order (a message holds the lines of one batch).
    pub async fn deliver_all(&self, message: Bytes) -> bool {
        for line in lines_of(&message) {
            if !self.deliver(line).await {
                return false;
            }
        }
        true
    }

    /// Says a new hello to the router as this link (a tools link whose
    /// node's catalogue changed); false if the link's queue is full now.
    pub fn say_again(&self, hello: &thrum::Tone) -> bool {
        let Ok(mut line) = hello.encode_line(Limits::default().max_line) else {
            return false;
        };
        line.pop();
        self.lines.try_send((Bytes::from(line), None)).is_ok()
    }
}

/// Publishes what the router sends the link to the other node, until the
/// router closes it (or the link is dropped).
async fn run(
    mut from_router: thrum::Lines,
    plan: LinkPlan,
    nats: async_nats::Client,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    let publish = |batch: Option<Vec<u8>>| {
        let (nats, plan) = (&nats, &plan);
        async move {
            let Some(batch) = batch else { return };
            if let Err(e) = nats.publish(plan.subject.clone(), Bytes::from(batch)).await {
                tracing::warn!(event = "cluster.publish_failed", node = %plan.node, error = %e, "lines to another node were not sent");
            }
        }
    };
    while let Some(first) = from_router.recv().await {
        // This line and the ones already behind it: one message.
        let mut batch = Batch::default();
        let mut next = Some(first);
        while let Some(mut line) = next.take() {
            line.pop(); // its newline: a batch puts its own between lines
            match Head::read(&line).map(|h| h.chi) {
                // The router's answer to the link's hello.
                Ok(chi) if chi == "breath" => {
                    let _ = events.send(LinkEvent::Ready(plan.node.clone(), plan.side));
                }
                Ok(chi) if !plan.side.carries(&chi) => {
                    tracing::debug!(event = "cluster.line_kept", node = %plan.node, side = ?plan.side, chi, "a line for this node only");
                }
                // The router writes only tones; one it could not have
                // written is not sent on.
                Err(_) => {}
                Ok(_) => {
                    if let Some(full) = batch.push(line) {
                        publish(Some(full)).await;
                        // The rest of a long burst makes more messages.
                        break;
                    }
                }
            }
            next = from_router.try_recv();
        }
        publish(batch.take()).await;
    }
    let _ = events.send(LinkEvent::Closed(plan.node, plan.side, plan.id));
}

/// Lines for one NATS message, newline-separated (a line never holds a
/// raw newline: it is one JSON value).
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
}

impl Batch {
    /// Adds `line`; when it does not fit beside what is held, returns what
    /// is held (to send first) and holds `line` alone.
    fn push(&mut self, line: Vec<u8>) -> Option<Vec<u8>> {
        if self.bytes.is_empty() {
            self.bytes = line;
            return None;
        }
        if self.bytes.len() + 1 + line.len() > BATCH_BYTES {
            return Some(std::mem::replace(&mut self.bytes, line));
        }
        self.bytes.push(b'\n');
        self.bytes.extend_from_slice(&line);
        None
    }

    /// What is held, if anything.
    fn take(&mut self) -> Option<Vec<u8>> {
        Some(std::mem::take(&mut self.bytes)).filter(|b| !b.is_empty())
    }
}

/// The lines of a message from another node, without copying; empty ones
/// (none is sent) are skipped.
fn lines_of(message: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    message
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| message.slice_ref(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_handed_over_together_go_as_one_message_and_arrive_as_they_were() {
        let mut batch = Batch::default();
        let lines: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("{{\"chi\":\"chunk\",\"n\":{i}}}").into_bytes())
            .collect();
        for l in &lines {
            assert_eq!(batch.push(l.clone()), None);
        }
        let message = Bytes::from(batch.take().unwrap());
        assert_eq!(batch.take(), None, "nothing is sent twice");
        let back: Vec<Bytes> = lines_of(&message).collect();
        assert_eq!(back, lines);
    }

    #[test]
    fn a_batch_never_passes_its_bound_and_a_long_line_goes_alone() {
        let mut batch = Batch::default();
        let small = vec![b'x'; 1000];
        let mut sent = Vec::new();
        for _ in 0..200 {
            if let Some(full) = batch.push(small.clone()) {
                sent.push(full);
            }
        }
        sent.extend(batch.take());
        assert!(sent.len() > 1);
        assert!(
            sent.iter().all(|m| m.len() <= BATCH_BYTES),
            "a batch over its bound"
        );
        let total: usize = sent
            .iter()
            .map(|m| lines_of(&Bytes::from(m.clone())).count())
            .sum();
        assert_eq!(total, 200, "every line arrives once");
        // A line past the bound is held alone and sent alone.
        let big = vec![b'y'; BATCH_BYTES * 2];
        assert_eq!(batch.push(small.clone()), None);
        assert_eq!(batch.push(big.clone()), Some(small.clone()));
        assert_eq!(batch.push(small.clone()), Some(big));
        assert_eq!(batch.take(), Some(small));
    }

    /// A link's connection id in these tests.
    const REMOTE_CONNS_FOR_TEST: ConnId = crate::daemon::router::placing::REMOTE_CONNS;

    #[tokio::test]
    async fn a_link_whose_router_does_not_read_holds_megabytes_not_a_thousand_lines() {
        // A router that never reads past the link's first tones.
        let (tx, _rx) = mpsc::channel(1);
        let host = PeerHost {
            tx,
            budget: Arc::new(thrum::ByteBudget::new(64 << 20)),
            in_flight: Arc::new(Semaphore::new(64 << 20)),
        };
        // No NATS server: the client keeps trying, nothing is published.
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .unwrap();
        let plan = LinkPlan {
            id: REMOTE_CONNS_FOR_TEST,
            node: "b".into(),
            side: Side::Asker,
            hello: thrum::Tone::new(thrum::Hello::default()),
            subject: "hum.t.to.b.w.a".into(),
        };
        let (events, _events) = mpsc::unbounded_channel();
        let link = Link::open(&host, plan, nats, events);
        // Lines of a mebibyte each, as another node may send (NATS carries
        // up to its max_payload): the link takes about its byte budget.
        let line = Bytes::from(format!(
            "{{\"chi\":\"x\",\"pad\":\"{}\"}}",
            "y".repeat(1 << 20)
        ));
        let mut taken = 0;
        while taken < 200 {
            let delivered = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                link.deliver(line.clone()),
            )
            .await;
            if delivered.is_err() {
                break;
            }
            taken += 1;
        }
        // Its byte budget's worth, queued for the router (which holds the
        // hello it never read, and one line waiting to be handed over).
        let budget = LINK_BYTES / line.len();
        assert!(taken <= budget + 1, "{taken} MiB taken by one link");
        assert!(taken >= budget, "the budget is used: {taken}");
    }

    #[test]
    fn what_a_worker_link_sends_arrives_at_the_other_nodes_asker_link_and_back() {
        // a's worker link for b publishes what a's askers send...
        let to_b = LinkPlan::subject("hum", "b", Side::Worker, "a");
        assert_eq!(to_b, "hum.hum.to.b.a.a");
        // ...which b delivers to its asker link for a,
        let word = to_b.rsplit('.').nth(1).unwrap();
        assert_eq!(Side::of_word(word), Some(Side::Asker));
        // whose answers come back to a's worker link for b.
        let back = LinkPlan::subject("hum", "a", Side::Asker, "b");
        let word = back.rsplit('.').nth(1).unwrap();
        assert_eq!(Side::of_word(word), Some(Side::Worker));
        assert_eq!(Side::of_word("x"), None);
    }

    #[test]
    fn a_tools_links_calls_reach_the_other_nodes_calls_link_and_results_come_back() {
        // a's tools link for c (c's foragers) sends a's cells' calls to c,
        let to_c = LinkPlan::subject("hum", "c", Side::Tools, "a");
        let word = to_c.rsplit('.').nth(1).unwrap();
        assert_eq!(Side::of_word(word), Some(Side::Calls));
        // where c's calls link for a hands them to c's router; the results
        // come back to a's tools link.
        let back = LinkPlan::subject("hum", "a", Side::Calls, "c");
        let word = back.rsplit('.').nth(1).unwrap();
        assert_eq!(Side::of_word(word), Some(Side::Tools));
        // Only calls and their cancels go one way, only results the other.
        assert!(Side::Tools.carries("tool-call") && Side::Tools.carries("cancel"));
        assert!(!Side::Tools.carries("pulse") && !Side::Tools.carries("error"));
        assert!(Side::Calls.carries("tool-result") && !Side::Calls.carries("tool-info"));
        assert!(Side::Worker.carries("chunk") && !Side::Worker.carries("echo"));
    }
}
