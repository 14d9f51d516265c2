//! # The cluster: this humd as one node of many, on NATS
//!
//! One machine needs none of this. With `--cluster`, humd joins the
//! cluster its NATS server carries:
//!
//! - [`nodes`]: every node's load as last heard, and where a new sid goes
//!   (a plain value: unit-tested, no NATS, no clock).
//! - [`sidmap`]: the sid → node map, a JetStream key-value bucket written
//!   only by compare-and-set, so one sid has one cell in the cluster.
//! - [`link`]: each other node as two peers of this node's router, whose
//!   lines travel over NATS subjects scoped to the cluster's name.
//! - [`settings`]: the URL, names and credentials.
//! - `tls`: a private authority's certificates, and which failures to
//!   connect are refusals.
//! - `transcripts`: each session's transcript kept in a JetStream stream
//!   (what each good turn added), and put back where a moved sid lands.
//! - `reconcile`: a sid two nodes served while NATS was away keeps the
//!   cell with the newer turn.
//! - `beat`: this node's heartbeat, and leaving.
//! - `links`: which links this node holds to each other node, and the
//!   lines from NATS handed to them.
//! - `tools`: each node's foragers' tools offered to every node's cells.
//!
//! The loop here owns the links and the node table; it hears the router's
//! placement questions and answers each with `RouterMsg::Placed` (from a
//! task of its own: the router never waits for NATS, and this loop never
//! waits for the router's inbox while holding a question).

mod beat;
mod buckets;
pub mod link;
mod links;
pub mod nodes;
mod place;
mod ready;
mod reconcile;
pub mod settings;
pub mod sidmap;
mod spend;
mod tls;
mod tools;
mod transcripts;
pub mod usage;

pub use nodes::{NodeReport, Nodes, Placement};
pub use settings::{ClusterArgs, ClusterSettings};

use crate::daemon::router::placing::{PlaceRequest, ToCluster, REMOTE_CONNS};
use crate::daemon::router::{ConnId, RouterMsg};
use crate::daemon::PeerHost;
use async_nats::jetstream::{self, kv};
use buckets::{next_entry, open_bucket};
use link::{Link, LinkEvent, Side};
use ready::Ready;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// Questions from the router waiting here; past it the router serves new
/// sids itself (it never waits).
pub const PLACE_QUEUE: usize = 4096;

/// How this node's loop talks to NATS once connected.
struct Js {
    sids: kv::Store,
    nodes: kv::Store,
    /// Each node's foragers' catalogue, by node.
    tools: kv::Store,
    /// Every node's turns.
    usage: jetstream::stream::Stream,
    transcripts: transcripts::Transcripts,
}

/// Connects once, to tell a wrong password from a server not there yet:
/// credentials NATS refuses, or its TLS these settings do not trust, stop
/// humd (said plainly); an unreachable server does not (the node serves
/// alone and keeps trying).
pub async fn first_connect(
    settings: &ClusterSettings,
) -> Result<Option<async_nats::Client>, String> {
    match tokio::time::timeout(Duration::from_secs(10), settings.connect()).await {
        Ok(Ok(c)) => Ok(Some(c)),
        Ok(Err(e)) if e.refused => Err(e.message),
        Ok(Err(e)) => {
            tracing::warn!(event = "cluster.nats_unreachable", url = %settings.url, error = %e,
                "NATS is not there yet: serving alone until it is");
            Ok(None)
        }
        Err(_) => {
            tracing::warn!(event = "cluster.nats_unreachable", url = %settings.url,
                "NATS did not answer: serving alone until it does");
            Ok(None)
        }
    }
}

/// The cluster's loop, until `stop` fires: then this node says it is
/// leaving (the others move its sids at once instead of waiting for its
/// heartbeats to stop) and `stop`'s answer is sent.
pub(crate) async fn run(
    settings: ClusterSettings,
    client: Option<async_nats::Client>,
    host: PeerHost,
    router: mpsc::Sender<RouterMsg>,
    mut asks: mpsc::Receiver<ToCluster>,
    mut stop: tokio::sync::oneshot::Receiver<tokio::sync::oneshot::Sender<()>>,
) {
    // What this node's foragers serve, if the router said it before NATS
    // answered (said to the cluster on joining).
    let mut catalogue = None;
    let client = match client {
        Some(c) => c,
        None => loop {
            // Until NATS answers, every new sid is served here.
            tokio::select! {
                Some(ask) = asks.recv() => match ask {
                    ToCluster::Place(ask) => answer(&router, ask.sid, Placement::Here, None).await,
                    ToCluster::Catalogue { tools, provides } => catalogue = Some((tools, provides)),
                    _ => {}
                },
                _ = tokio::time::sleep(Duration::from_secs(2)) => {
                    if let Ok(c) = settings.connect().await { break c; }
                }
                // Never joined: nothing to say on the way out.
                done = &mut stop => {
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        },
    };
    let mut node = Node::new(settings, client, host, router);
    node.serve(&mut asks, stop, catalogue).await;
}

async fn answer(
    router: &mpsc::Sender<RouterMsg>,
    sid: String,
    placement: Placement,
    restore: Option<std::path::PathBuf>,
) {
    let _ = router
        .send(RouterMsg::Placed {
            sid,
            placement,
            restore,
        })
        .await;
}

/// This node's part of the cluster.
struct Node {
    settings: ClusterSettings,
    client: async_nats::Client,
    host: PeerHost,
    router: mpsc::Sender<RouterMsg>,
    nodes: Nodes,
    /// Each other node's links, by side.
    links: BTreeMap<(String, Side), Link>,
    /// Worker links the router greeted: those nodes can take sids.
    ready: Ready,
    events: mpsc::UnboundedSender<LinkEvent>,
    events_rx: Option<mpsc::UnboundedReceiver<LinkEvent>>,
    next_id: ConnId,
    seq: u64,
    boot: String,
    /// Sids served here while NATS was away (see `place.rs`).
    unregistered: HashSet<String>,
    /// This node's and the others' foragers' catalogues.
    shared: tools::SharedTools,
    /// When each sid last ended a good turn here (to settle a sid two
    /// nodes served while NATS was away).
    turn_times: reconcile::TurnTimes,
    /// This node drains: it takes no sids and its own move away.
    draining: bool,
    /// When this node's heartbeat was last written: a node whose
    /// heartbeats failed longer than the node timeout was taken for gone,
    /// and its sids may have moved meanwhile (see `reconcile.rs`).
    beat_written: Instant,
    /// Heartbeats being written (each from a task of its own).
    puts: tokio::task::JoinSet<()>,
    /// An early heartbeat, due after the load changed.
    beat_due: Option<tokio::time::Instant>,
    /// Heartbeats written (when taken, the sids held then).
    beats: Channel<(Instant, Vec<String>)>,
    /// Sids whose settling must be tried again.
    unsettled: Channel<String>,
}

/// How soon a change of this node's load is said (at most this often
/// besides the regular beat: a herd of new sids is one report, not one
/// each).
const CHANGE_SAID_WITHIN: Duration = Duration::from_millis(100);

/// Sleeps until `at`; never, when there is no `at`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Node {
    /// This node's load changed: a report goes out soon.
    fn load_changed(&mut self) {
        self.beat_due
            .get_or_insert_with(|| tokio::time::Instant::now() + CHANGE_SAID_WITHIN);
    }
}

/// A channel a loop hands to its tasks: the sender, and the receiver until
/// the loop takes it.
type Channel<T> = (mpsc::UnboundedSender<T>, Option<mpsc::UnboundedReceiver<T>>);

fn channel<T>() -> Channel<T> {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Some(rx))
}

impl Node {
    fn new(
        settings: ClusterSettings,
        client: async_nats::Client,
        host: PeerHost,
        router: mpsc::Sender<RouterMsg>,
    ) -> Node {
        let (events, events_rx) = mpsc::unbounded_channel();
        let nodes = Nodes::new(&settings.node, settings.node_timeout);
        Node {
            settings,
            client,
            host,
            router,
            nodes,
            links: BTreeMap::new(),
            ready: Ready::default(),
            events,
            events_rx: Some(events_rx),
            next_id: REMOTE_CONNS,
            seq: 0,
            boot: uuid::Uuid::new_v4().simple().to_string(),
            unregistered: HashSet::new(),
            shared: Default::default(),
            turn_times: Default::default(),
            draining: false,
            beat_written: Instant::now(),
            unsettled: channel(),
            beats: channel(),
            beat_due: None,
            puts: tokio::task::JoinSet::new(),
        }
    }

    fn bucket(&self, what: &str) -> String {
        format!("hum-{}-{what}", self.settings.name)
    }

    /// The buckets, made if missing; retried until NATS has JetStream.
    async fn buckets(&self) -> Js {
        let js = jetstream::new(self.client.clone());
        loop {
            let sids = open_bucket(
                &js,
                &self.bucket("sids"),
                None,
                jetstream::stream::StorageType::File,
            )
            .await;
            // A node that stops reporting is gone from the bucket too.
            let nodes = open_bucket(
                &js,
                &self.bucket("nodes"),
                Some(self.settings.node_timeout * 2),
                // On disk: a NATS restarted finds the bucket still there.
                jetstream::stream::StorageType::File,
            )
            .await;
            let kept = transcripts::Transcripts::open(&js, &self.settings.name).await;
            let tools = open_bucket(
                &js,
                &self.bucket("tools"),
                None,
                jetstream::stream::StorageType::File,
            )
            .await;
            let usage = spend::open_usage(&js, &self.settings.name).await;
            match (sids, nodes, kept, tools, usage) {
                (Ok(sids), Ok(nodes), Ok(transcripts), Ok(tools), Ok(usage)) => {
                    return Js {
                        sids,
                        nodes,
                        tools,
                        usage,
                        transcripts,
                    }
                }
                (Err(e), ..)
                | (_, Err(e), ..)
                | (_, _, Err(e), ..)
                | (.., Err(e), _)
                | (.., Err(e)) => {
                    tracing::warn!(event = "cluster.buckets_unavailable", error = %e,
                        "the cluster's buckets cannot be opened (is JetStream on?); retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    async fn serve(
        &mut self,
        asks: &mut mpsc::Receiver<ToCluster>,
        mut stop: tokio::sync::oneshot::Receiver<tokio::sync::oneshot::Sender<()>>,
        catalogue: Option<(Vec<serde_json::Value>, Vec<String>)>,
    ) {
        let me = self.settings.node.clone();
        tracing::info!(event = "cluster.joining", node = %me, cluster = %self.settings.name, url = %self.settings.url, "joining the cluster");
        let js = self.buckets().await;
        let inbox = format!("hum.{}.to.{me}.>", self.settings.name);
        let mut subscription = subscribe(&self.client, inbox).await;
        // Every node's turns' costs, for budgets that are the cluster's.
        // Every node's turns since today began (UTC), then as they come:
        // the day's budgets are the cluster's from the first prompt.
        let today =
            crate::usage::budget::day_of(crate::usage::unix_ms()) * crate::usage::budget::DAY_MS;
        let mut spends = match spend::turns_since(&js.usage, today).await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(event = "cluster.usage_unread", error = %e, "the cluster's spend is not read: budgets count this node's only");
                None
            }
        };
        let reconciles = reconcile::subject(&self.settings.name, &me);
        let mut reconciles = subscribe(&self.client, reconciles).await;
        let mut unsettled = self.unsettled.1.take().expect("served once");
        let mut beats = self.beats.1.take().expect("served once");
        let mut watch = js.nodes.watch_all().await.ok();
        // Every live node's last heartbeat first: a sid of one of them is
        // then never taken for lack of having heard it.
        let within = self.settings.heartbeat * 2;
        let first = async {
            while let Some(e) = next_entry(&mut watch).await {
                let last = e.delta == 0;
                self.heard_entry(e);
                if last {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(within, first).await;
        // What this node's foragers serve (an entry of an earlier run of
        // this node with none is deleted), and the other nodes' tools.
        match catalogue {
            Some((tools, provides)) => self.share_tools(&js.tools, tools, provides).await,
            None => self.put_tools(&js.tools).await,
        }
        let mut tools_watch = js.tools.watch_all().await.ok();
        let mut events = self.events_rx.take().expect("served once");
        let mut beat = tokio::time::interval(self.settings.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(event = "cluster.joined", node = %me, cluster = %self.settings.name, "this humd is a node of the cluster");
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    self.heartbeat(&js).await;
                    self.register_alone(&js);
                    if watch.is_none() {
                        watch = js.nodes.watch_all().await.ok();
                    }
                    if tools_watch.is_none() {
                        tools_watch = js.tools.watch_all().await.ok();
                    }
                    self.sync_all_tools_links();
                }
                // A node went silent for the timeout: its turns end now.
                _ = sleep_until(self.nodes.next_expiry().map(Into::into)) => self.expire_silent(),
                // The load changed (a sid placed, a turn ended): said soon,
                // not only at the next beat, so the others place by it.
                _ = sleep_until(self.beat_due), if self.beat_due.is_some() => {
                    self.beat_due = None;
                    self.heartbeat(&js).await;
                }
                entry = next_entry(&mut watch) => match entry {
                    Some(e) => self.heard_entry(e),
                    None => watch = None,
                },
                entry = next_entry(&mut tools_watch) => match entry {
                    Some(e) => self.heard_tools(e),
                    None => tools_watch = None,
                },
                Some(msg) = subscription.next() => self.dispatch(msg).await,
                Some((subject, payload)) = spend::next_turn(&mut spends) => self.spent_elsewhere(&subject, &payload).await,
                Some(msg) = reconciles.next() => self.answer_reconcile(&js.sids, msg),
                Some(sid) = unsettled.recv() => self.serving_alone(sid),
                Some((at, held)) = beats.recv() => self.beat_written(&js, at, held),
                Some(ev) = events.recv() => self.link_event(ev),
                done = &mut stop => {
                    self.leave(&js).await;
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                ask = asks.recv() => match ask {
                    Some(ToCluster::Place(ask)) => self.place(&js, ask),
                    Some(ToCluster::Saved { sid, path }) => {
                        self.load_changed();
                        self.turn_times.note(&sid, crate::usage::unix_ms().max(0) as u64);
                        js.transcripts.keep(sid, path)
                    }
                    Some(ToCluster::Spent(note)) => self.share_spend(&note).await,
                    Some(ToCluster::Drain(on)) => {
                        self.draining = on;
                        tracing::info!(event = "cluster.draining", node = %self.settings.node, on, "this node drains: its sids move to the others");
                        // Said now, not at the next beat.
                        self.heartbeat(&js).await;
                    }
                    Some(ToCluster::Catalogue { tools, provides }) => {
                        self.share_tools(&js.tools, tools, provides).await
                    }
                    None => return,
                },
            }
        }
    }

    fn heard_entry(&mut self, entry: kv::Entry) {
        if entry.operation != kv::Operation::Put {
            // A node that left: its turns here end and its sids move now.
            if entry.key != self.settings.node && self.nodes.forget(&entry.key) {
                tracing::info!(event = "cluster.node_left", node = %entry.key, "a node left the cluster");
                self.drop_links(&entry.key);
            }
            return;
        }
        let Ok(report) = serde_json::from_slice::<NodeReport>(&entry.value) else {
            return;
        };
        if report.node != entry.key || report.node == self.settings.node {
            return;
        }
        let node = report.node.clone();
        let models = report.models.clone();
        if self.nodes.heard(report, Instant::now()) {
            tracing::info!(event = "cluster.node_joined", node = %node, "a node joined");
            self.sync_tools_link(&node);
        }
        if !models.is_empty() && !self.links.contains_key(&(node.clone(), Side::Worker)) {
            self.open_link(&node, Side::Worker, models);
        }
    }
}

/// A subscription to `subject`, retried each second until NATS takes it.
async fn subscribe(client: &async_nats::Client, subject: String) -> async_nats::Subscriber {
    loop {
        match client.subscribe(subject.clone()).await {
            Ok(s) => return s,
            Err(e) => {
                tracing::warn!(event = "cluster.subscribe_failed", subject = %subject, error = %e, "retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The source a link's hello names.
pub const LINK_SOURCE: &str = "hum cluster";
