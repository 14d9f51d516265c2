//! The router's turn routing, without processes: peers are socket pairs,
//! time is passed in. What each peer received is read up to a marker (the
//! echo of a tone it sent last), so "nothing else came" is a fact, not a
//! wait.

use super::desk::{MAX_CALLS_PER_OWNER, MAX_CALLS_PER_SID};
use super::*;
use serde_json::json;
use thrum::{Connection, Head, Inbound, Inbox, Limits};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

const W: ConnId = 1;
const GRACE: Duration = Duration::from_secs(30);

struct Rig {
    router: Router,
    /// Each peer's end of its socket (its outbox kept, unused), and the
    /// router's inbox of it (kept open, unread).
    ends: HashMap<ConnId, (Inbox<OwnedReadHalf>, thrum::Outbox, Inbox<OwnedReadHalf>)>,
    markers: u64,
}

impl Rig {
    fn new(grace: Duration) -> Rig {
        Rig {
            router: Router::new(None, "/".into()).with_asker_gone_grace(grace),
            ends: HashMap::new(),
            markers: 0,
        }
    }

    /// A humd with a worker (conn [`W`]) serving model `m`.
    async fn with_worker(grace: Duration) -> Rig {
        let mut rig = Rig::new(grace);
        rig.join(W);
        rig.tone(
            W,
            json!({"chi": "hello", "bee": ["worker"], "hive": "sim", "models": ["m"]}),
        );
        let hello = rig.received(W).await;
        assert_eq!(hello[0]["chi"], "breath");
        assert_eq!(hello[0]["askerGoneGraceMs"], grace.as_millis() as u64);
        rig
    }

    fn join(&mut self, id: ConnId) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let router_side = Connection::unix(ours, Limits::default(), "router");
        let peer_side = Connection::unix(theirs, Limits::default(), "peer");
        self.router
            .handle(RouterMsg::Joined(id, router_side.outbox));
        self.ends
            .insert(id, (peer_side.inbox, peer_side.outbox, router_side.inbox));
    }

    /// An asker `id` that said hello (its breath read).
    async fn asker(&mut self, id: ConnId) {
        self.join(id);
        self.tone(
            id,
            json!({"chi": "hello", "bee": ["asker"], "hid": format!("bee-{id}")}),
        );
        assert_eq!(self.received(id).await[0]["chi"], "breath");
    }

    fn leave(&mut self, id: ConnId) {
        self.router.handle(RouterMsg::Left(id));
        self.ends.remove(&id);
    }

    fn tone(&mut self, id: ConnId, v: Value) {
        let line = serde_json::to_vec(&v).unwrap();
        let head = Head::read(&line).unwrap();
        self.router
            .handle(RouterMsg::Tone(id, Box::new(RawTone { head, line }), None));
    }

    fn prompt(&mut self, id: ConnId, sid: &str, rid: &str, text: &str) {
        self.tone(
            id,
            json!({"chi": "prompt", "sid": sid, "rid": rid, "text": text, "modelId": "m"}),
        );
    }

    /// What the worker says about turn (`sid`, `rid`).
    fn worker_says(&mut self, chi: &str, sid: &str, rid: &str, delta: &str) {
        let mut v = json!({"chi": chi, "sid": sid, "rid": rid, "from": "worker"});
        match chi {
            "chunk" => {
                v["chunkType"] = json!("text_delta");
                v["delta"] = json!(delta);
            }
            "finish" => v["finishReason"] = json!(delta),
            _ => {}
        }
        self.tone(W, v);
    }

    /// Everything but acks `id` received since the last call, up to a
    /// marker: an echo the router sends it now, after all it sent before.
    async fn received(&mut self, id: ConnId) -> Vec<Value> {
        self.markers += 1;
        let marker = format!("marker-{}", self.markers);
        let echo = Tone::new(Echo {
            ok: true,
            extra: Map::new(),
        })
        .with_rid(&marker);
        assert!(self.router.send(id, echo), "the marker went out");
        let (inbox, _, _) = self.ends.get_mut(&id).expect("a peer");
        let mut got = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
                .await
                .expect("the marker arrives")
                .unwrap();
            let Some(Inbound::Tone(t)) = next else {
                panic!("the connection closed before the marker: {got:?}");
            };
            let v = t.to_value();
            if v["chi"] == "echo" && v["rid"] == marker {
                return got;
            }
            // Acks are not what these tests are about.
            if v["chi"] != "echo" {
                got.push(v);
            }
        }
    }
}

/// (chi, rid) of each tone, for comparing what a peer got.
fn heads(tones: &[Value]) -> Vec<(String, String)> {
    tones
        .iter()
        .filter(|t| t["chi"] != "echo")
        .map(|t| {
            (
                t["chi"].as_str().unwrap_or("").to_owned(),
                t["rid"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn a_new_prompt_never_gets_the_output_of_a_gone_askers_turn() {
    let mut rig = Rig::with_worker(GRACE).await;
    rig.asker(10).await;
    rig.prompt(10, "s", "r1", "first");
    rig.leave(10);
    // The bee is back on a new connection and asks something new: its old
    // turn is cancelled before the new prompt reaches the worker.
    rig.asker(11).await;
    rig.prompt(11, "s", "r2", "second");
    assert_eq!(
        heads(&rig.received(W).await),
        pairs(&[("prompt", "r1"), ("cancel", "r1"), ("prompt", "r2")])
    );
    assert_eq!(rig.router.stats.cancelled_gone_askers, 1);
    // The old turn's last words, then the new turn's: only the new ones
    // reach the bee.
    rig.worker_says("chunk", "s", "r1", "old answer");
    rig.worker_says("finish", "s", "r1", "cancelled");
    rig.worker_says("chunk", "s", "r2", "new answer");
    rig.worker_says("finish", "s", "r2", "stop");
    let got = rig.received(11).await;
    assert_eq!(
        heads(&got),
        pairs(&[("chunk", "r2"), ("finish", "r2")]),
        "{got:?}"
    );
    assert_eq!(got[0]["delta"], "new answer");
    assert_eq!(rig.router.stats.dropped_for_gone_askers, 2);
    assert_eq!(rig.router.routes.all().count(), 0);
}

#[tokio::test]
async fn a_prompt_that_sends_its_rid_again_takes_its_turn_back() {
    let mut rig = Rig::with_worker(GRACE).await;
    rig.asker(10).await;
    rig.prompt(10, "s", "r1", "first");
    rig.worker_says("chunk", "s", "r1", "before");
    rig.leave(10);
    rig.worker_says("chunk", "s", "r1", "while away");
    rig.asker(11).await;
    rig.prompt(11, "s", "r1", "first");
    rig.worker_says("chunk", "s", "r1", "after");
    rig.worker_says("finish", "s", "r1", "stop");
    // Nothing new reached the worker: the same turn goes on.
    assert_eq!(heads(&rig.received(W).await), pairs(&[("prompt", "r1")]));
    let got = rig.received(11).await;
    assert_eq!(heads(&got), pairs(&[("chunk", "r1"), ("finish", "r1")]));
    assert_eq!(got[0]["delta"], "after");
    assert_eq!(rig.router.stats.turns_adopted, 1);
    assert_eq!(rig.router.stats.cancelled_gone_askers, 0);
    // The grace runs out with nothing left to cancel.
    rig.router.tick(Instant::now() + GRACE * 2);
    assert_eq!(heads(&rig.received(W).await), pairs(&[]));
}

#[tokio::test]
async fn the_same_rid_from_another_live_asker_is_refused_and_from_the_same_one_is_the_same_turn() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    rig.asker(10).await;
    rig.asker(11).await;
    rig.prompt(10, "s", "r1", "first");
    rig.prompt(10, "s", "r1", "first");
    rig.prompt(11, "s", "r1", "first");
    assert_eq!(heads(&rig.received(W).await), pairs(&[("prompt", "r1")]));
    // 11 waits for 10's end (it may be the same bee, back before humd
    // read its old connection close); 10 stays, so 11 is refused.
    assert_eq!(heads(&rig.received(11).await), pairs(&[]));
    rig.router.tick(Instant::now() + super::routes::CLAIM_WAIT);
    let theirs = rig.received(11).await;
    assert_eq!(theirs[0]["chi"], "error", "{theirs:?}");
    assert_eq!(theirs[0]["code"], "bad_request");
    rig.worker_says("finish", "s", "r1", "stop");
    assert_eq!(heads(&rig.received(10).await), pairs(&[("finish", "r1")]));
    assert_eq!(heads(&rig.received(11).await), pairs(&[]));
}

/// Bee 10's turn r1 is running when the bee, back on connection 11, sends
/// r1 again while 10 still looks connected: its claim waits.
async fn a_claim_waits() -> Rig {
    let mut rig = Rig::with_worker(GRACE).await;
    rig.asker(10).await;
    rig.prompt(10, "s", "r1", "first");
    rig.worker_says("chunk", "s", "r1", "before");
    rig.asker(11).await;
    rig.prompt(11, "s", "r1", "first");
    rig
}

#[tokio::test]
async fn a_bee_back_before_its_old_connection_is_read_closed_gets_its_turn_and_its_cancel_holds() {
    // Its new connection's prompt and cancel are read before the old
    // connection's end.
    let mut rig = a_claim_waits().await;
    rig.tone(11, json!({"chi": "cancel", "sid": "s"}));
    rig.leave(10);
    rig.worker_says("finish", "s", "r1", "cancelled");
    assert_eq!(
        heads(&rig.received(W).await),
        pairs(&[("prompt", "r1"), ("cancel", "r1")])
    );
    let got = rig.received(11).await;
    assert_eq!(heads(&got), pairs(&[("finish", "r1")]), "{got:?}");
    assert_eq!(got[0]["finishReason"], "cancelled");
    assert_eq!(rig.router.stats.turns_adopted, 1);
    assert_eq!(rig.router.stats.cancelled_gone_askers, 0);
    assert_eq!(rig.router.stats.bad_requests, 0);
    // Nothing is left to refuse or cancel later.
    rig.router
        .tick(Instant::now() + GRACE + super::routes::CLAIM_WAIT);
    assert_eq!(heads(&rig.received(W).await), pairs(&[]));
    assert_eq!(heads(&rig.received(11).await), pairs(&[]));
}

#[tokio::test]
async fn a_turn_that_ends_before_its_old_connection_is_read_closed_still_ends_at_the_bee() {
    let mut rig = a_claim_waits().await;
    rig.worker_says("finish", "s", "r1", "stop");
    rig.leave(10);
    let got = rig.received(11).await;
    assert_eq!(heads(&got), pairs(&[("finish", "r1")]), "{got:?}");
    rig.router
        .tick(Instant::now() + GRACE + super::routes::CLAIM_WAIT);
    assert_eq!(heads(&rig.received(11).await), pairs(&[]));
}

#[tokio::test]
async fn a_prompt_without_a_rid_gets_one_and_its_output_by_it() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    rig.asker(10).await;
    rig.asker(11).await;
    rig.tone(
        10,
        json!({"chi": "prompt", "sid": "s", "text": "a", "modelId": "m"}),
    );
    rig.tone(
        11,
        json!({"chi": "prompt", "sid": "s", "text": "b", "modelId": "m"}),
    );
    let fwd = rig.received(W).await;
    let rids: Vec<String> = fwd
        .iter()
        .map(|t| t["rid"].as_str().expect("a rid").to_owned())
        .collect();
    assert_eq!(rids.len(), 2);
    assert_ne!(rids[0], rids[1]);
    // Two askers of one sid: each turn's end reaches its own asker, in
    // whatever order the turns end.
    rig.worker_says("finish", "s", &rids[1], "stop");
    rig.worker_says("finish", "s", &rids[0], "stop");
    assert_eq!(
        heads(&rig.received(10).await),
        vec![("finish".into(), rids[0].clone())]
    );
    assert_eq!(
        heads(&rig.received(11).await),
        vec![("finish".into(), rids[1].clone())]
    );
}

#[tokio::test]
async fn turns_a_worker_tells_a_restarted_humd_of_wait_the_grace_for_their_asker() {
    let mut rig = Rig::with_worker(GRACE).await;
    rig.tone(
        W,
        json!({"chi": "worker-turns", "from": "worker", "abandoned": 4, "turns": [
            {"sid": "kept", "rid": "k1", "bee": "bee-a", "model": "m"},
            {"sid": "moved", "rid": "m1", "bee": "bee-b"},
            {"sid": "late", "rid": "l1"}]}),
    );
    assert_eq!(rig.router.stats.abandoned_humd_gone, 4);
    assert_eq!(rig.router.load(W), 3, "they count as the worker's load");
    assert_eq!(
        heads(&rig.received(W).await),
        pairs(&[]),
        "nothing cancelled yet"
    );
    rig.asker(10).await;
    // Back for its turn: adopted, its output comes here.
    rig.prompt(10, "kept", "k1", "same");
    // Moved on: the old turn is cancelled before the new one starts.
    rig.prompt(10, "moved", "m2", "new");
    assert_eq!(
        heads(&rig.received(W).await),
        pairs(&[("cancel", "m1"), ("prompt", "m2")])
    );
    rig.worker_says("finish", "kept", "k1", "stop");
    rig.worker_says("finish", "moved", "m1", "cancelled");
    assert_eq!(heads(&rig.received(10).await), pairs(&[("finish", "k1")]));
    // Nobody came back for the last one: cancelled when the grace is over.
    assert!(rig.router.next_deadline().is_some());
    rig.router.tick(Instant::now() + GRACE * 2);
    assert_eq!(heads(&rig.received(W).await), pairs(&[("cancel", "l1")]));
    assert_eq!(rig.router.stats.cancelled_gone_askers, 2);
    assert_eq!(rig.router.stats.turns_adopted, 1);
    // The same report again (the worker's link dropped and came back to
    // this humd) adds nothing for what is known already.
    rig.tone(
        W,
        json!({"chi": "worker-turns", "turns": [{"sid": "late", "rid": "l1"}]}),
    );
    assert_eq!(heads(&rig.received(W).await), pairs(&[]));
}

#[tokio::test]
async fn with_no_grace_a_restarted_humd_cancels_every_turn_it_is_told_of() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    rig.tone(
        W,
        json!({"chi": "worker-turns", "turns": [{"sid": "a", "rid": "1"}, {"sid": "b", "rid": "2"}]}),
    );
    let mut got = heads(&rig.received(W).await);
    got.sort();
    assert_eq!(got, pairs(&[("cancel", "1"), ("cancel", "2")]));
    assert_eq!(rig.router.stats.cancelled_gone_askers, 2);
    // A bad report is logged and harms nothing.
    rig.tone(W, json!({"chi": "worker-turns", "turns": "nonsense"}));
    assert_eq!(heads(&rig.received(W).await), pairs(&[]));
}

#[tokio::test]
async fn a_bees_cancel_names_one_turn_to_the_worker() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    rig.asker(10).await;
    rig.prompt(10, "s", "r1", "first");
    rig.prompt(10, "s", "r2", "second");
    // A cancel with its own request id: the sid's current turn.
    rig.tone(10, json!({"chi": "cancel", "sid": "s", "rid": "c-1"}));
    // Again: the first is being cancelled, so the next one.
    rig.tone(10, json!({"chi": "cancel", "sid": "s", "rid": "c-2"}));
    // Again: both are, so nothing more.
    rig.tone(10, json!({"chi": "cancel", "sid": "s"}));
    assert_eq!(
        heads(&rig.received(W).await),
        pairs(&[
            ("prompt", "r1"),
            ("prompt", "r2"),
            ("cancel", "r1"),
            ("cancel", "r2")
        ])
    );
    assert_eq!(rig.router.stats.cancelled_gone_askers, 0);
    // A cancel naming a turn by its rid cancels that one.
    rig.prompt(10, "t", "t1", "x");
    rig.prompt(10, "t", "t2", "y");
    rig.tone(10, json!({"chi": "cancel", "sid": "t", "rid": "t2"}));
    assert_eq!(
        heads(&rig.received(W).await),
        pairs(&[("prompt", "t1"), ("prompt", "t2"), ("cancel", "t2")])
    );
}

#[tokio::test]
async fn a_gone_askers_queued_turn_is_cancelled_at_once_and_its_running_one_after_the_grace() {
    let mut rig = Rig::with_worker(GRACE).await;
    rig.asker(10).await;
    rig.prompt(10, "a", "running", "x");
    rig.prompt(10, "b", "queued", "y");
    rig.tone(
        W,
        json!({"chi": "session-ready", "sid": "a", "rid": "running", "from": "worker"}),
    );
    rig.leave(10);
    assert_eq!(
        heads(&rig.received(W).await),
        pairs(&[
            ("prompt", "running"),
            ("prompt", "queued"),
            ("cancel", "queued")
        ])
    );
    rig.router.tick(Instant::now() + GRACE * 2);
    assert_eq!(
        heads(&rig.received(W).await),
        pairs(&[("cancel", "running")])
    );
    assert_eq!(rig.router.stats.cancelled_gone_askers, 2);
}

/// The bee's new prompt came before humd saw its old connection close: the
/// old turn is cancelled when it does, not after the grace, so the new
/// prompt is not stuck behind it.
#[tokio::test]
async fn a_new_prompt_that_came_before_the_old_connection_closed_is_not_kept_waiting() {
    let mut rig = Rig::with_worker(GRACE).await;
    rig.asker(10).await;
    rig.prompt(10, "s", "r1", "first");
    rig.worker_says("chunk", "s", "r1", "running");
    rig.asker(11).await;
    rig.prompt(11, "s", "r2", "second");
    assert_eq!(
        heads(&rig.received(W).await),
        pairs(&[("prompt", "r1"), ("prompt", "r2")]),
        "the old connection is still here: nothing cancelled yet"
    );
    rig.leave(10);
    assert_eq!(heads(&rig.received(W).await), pairs(&[("cancel", "r1")]));
    assert_eq!(rig.router.stats.cancelled_gone_askers, 1);
}

mod accounting;
mod placing;
mod routes;
mod routes_props;
mod tools;

#[tokio::test]
async fn a_worker_lost_while_a_bee_waits_for_its_turn_is_said_to_it_and_counted_once() {
    let mut rig = a_claim_waits().await;
    rig.leave(W);
    let got = rig.received(11).await;
    assert_eq!(heads(&got), pairs(&[("error", "r1")]), "{got:?}");
    assert_eq!(got[0]["code"], "worker_lost");
    assert_eq!(rig.router.stats.worker_lost, 1);
    rig.router.tick(Instant::now() + super::routes::CLAIM_WAIT);
    assert_eq!(
        heads(&rig.received(11).await),
        pairs(&[]),
        "not refused after"
    );
}
