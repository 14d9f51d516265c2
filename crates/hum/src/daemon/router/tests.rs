//! The router's turn routing, without processes: peers are socket pairs,
//! time is passed in. What each peer received is read up to a marker (the
//! echo of a tone it sent last), so "nothing else came" is a fact, not a
//! wait.

use super::tools::{MAX_CALLS_PER_OWNER, MAX_CALLS_PER_SID};
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
    assert!(rig.router.turns.is_empty());
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
    let theirs = rig.received(11).await;
    assert_eq!(theirs[0]["chi"], "error", "{theirs:?}");
    assert_eq!(theirs[0]["code"], "bad_request");
    rig.worker_says("finish", "s", "r1", "stop");
    assert_eq!(heads(&rig.received(10).await), pairs(&[("finish", "r1")]));
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
async fn a_tool_call_goes_to_the_asker_of_the_turn_that_made_it() {
    let mut rig = Rig::with_worker(GRACE).await;
    let tools = json!([{"name": "lookup", "inputSchema": {"type": "object"}}]);
    rig.asker(10).await;
    rig.tone(
        10,
        json!({"chi": "prompt", "sid": "s", "rid": "r1", "text": "a", "modelId": "m", "tools": tools}),
    );
    rig.leave(10);
    rig.asker(11).await;
    rig.tone(
        11,
        json!({"chi": "prompt", "sid": "s", "rid": "r2", "text": "b", "modelId": "m", "tools": tools}),
    );
    // The old turn (being cancelled) calls the tool: not the new asker's
    // call; the agent is answered that nobody serves it.
    rig.tone(
        W,
        json!({"chi": "tool-call", "sid": "s", "rid": "r1", "callId": "c1", "toolName": "lookup", "args": {}}),
    );
    // A call of a turn that is over, or never was, is answered at once.
    rig.tone(
        W,
        json!({"chi": "tool-call", "sid": "s", "rid": "nope", "callId": "c2", "toolName": "lookup", "args": {}}),
    );
    rig.tone(
        W,
        json!({"chi": "tool-call", "sid": "s", "rid": "r2", "callId": "c3", "toolName": "lookup", "args": {}}),
    );
    let got = rig.received(11).await;
    assert_eq!(heads(&got), pairs(&[("tool-call", "r2")]), "{got:?}");
    assert_eq!(got[0]["callId"], "c3");
    let to_worker = rig.received(W).await;
    let results: Vec<(String, bool)> = to_worker
        .iter()
        .filter(|t| t["chi"] == "tool-result")
        .map(|t| {
            (
                t["callId"].as_str().unwrap().to_owned(),
                t["isError"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        results,
        vec![("c1".to_owned(), true), ("c2".to_owned(), true)],
        "{to_worker:?}"
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

#[tokio::test]
async fn a_foragers_tools_with_names_that_are_not_tool_names_are_refused_and_named() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    rig.join(20);
    let long = "x".repeat(300);
    let names = [
        "",
        "with space",
        &long,
        "../../etc",
        "mcp__hum__x",
        "permission_prompt",
        "good_one",
        "good-2",
    ];
    let tools: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
    rig.tone(
        20,
        json!({"chi": "hello", "bee": ["forager"], "tools": tools}),
    );
    let got = rig.received(20).await;
    let error = got
        .iter()
        .find(|t| t["chi"] == "error")
        .expect("the forager is told");
    let said = error["message"].as_str().unwrap();
    for bad in [
        "with space",
        "../../etc",
        "mcp__hum__x",
        "permission_prompt",
    ] {
        assert!(said.contains(bad), "{said}");
    }
    let mut owned = rig.router.tools.owned_by(20);
    owned.sort();
    assert_eq!(owned, ["good-2", "good_one"]);
}

#[tokio::test]
async fn a_forager_that_never_answers_fills_its_own_share_of_calls_not_everyones() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    rig.join(20);
    rig.tone(
        20,
        json!({"chi": "hello", "bee": ["forager"], "tools": [{"name": "stuck"}]}),
    );
    rig.join(21);
    rig.tone(
        21,
        json!({"chi": "hello", "bee": ["forager"], "tools": [{"name": "fine"}]}),
    );
    let call = |rig: &mut Rig, sid: &str, id: &str, tool: &str| {
        rig.tone(
            W,
            json!({"chi": "tool-call", "sid": sid, "callId": id, "toolName": tool, "args": {}}),
        );
    };
    // A thousand calls of many sessions to a forager that never answers.
    for i in 0..MAX_CALLS_PER_OWNER {
        call(&mut rig, &format!("s{}", i % 10), &format!("c{i}"), "stuck");
    }
    call(&mut rig, "s0", "one-too-many", "stuck");
    // Another bee's call to another forager still goes through.
    call(&mut rig, "other", "theirs", "fine");
    let to_fine = rig.received(21).await;
    assert!(
        to_fine.iter().any(|t| t["callId"] == "theirs"),
        "{to_fine:?}"
    );
    let refused: Vec<Value> = rig
        .received(W)
        .await
        .into_iter()
        .filter(|t| t["chi"] == "tool-result")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?} {:?}", rig.router.tool_stats);
    assert_eq!(refused[0]["callId"], "one-too-many");
    assert_eq!(refused[0]["isError"], true);
    // One sid's calls: its own share too.
    for i in 0..MAX_CALLS_PER_SID {
        call(&mut rig, "busy", &format!("b{i}"), "fine");
    }
    call(&mut rig, "busy", "b-too-many", "fine");
    call(&mut rig, "quiet", "q1", "fine");
    let to_fine = rig.received(21).await;
    assert!(to_fine.iter().any(|t| t["callId"] == "q1"));
    assert!(!to_fine.iter().any(|t| t["callId"] == "b-too-many"));
}

/// Issue 26, items 2 and 7: a bee of thrum 0.7 prompts without a hello
/// and answers a permission ask by its `permitId`.
#[tokio::test]
async fn an_old_bee_prompts_without_hello_and_answers_a_permit_by_its_permit_id() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    rig.join(30);
    // No hello: the prompt is taken (as an asker's) and reaches the worker.
    rig.prompt(30, "old", "r1", "hi");
    assert_eq!(heads(&rig.received(W).await), pairs(&[("prompt", "r1")]));
    // A hello saying it answers asks, then an ask in both shapes.
    rig.tone(
        30,
        json!({"chi": "hello", "bee": ["asker"], "chis": ["permission-ask"]}),
    );
    rig.tone(
        W,
        json!({"chi": "permission-ask", "sid": "old", "rid": "r1", "callId": "permit-1",
               "permitId": "permit-1", "toolName": "Bash", "input": {"command": "ls"},
               "question": "claude wants to run Bash: ls", "context": {"toolName": "Bash"}}),
    );
    let ask = rig
        .received(30)
        .await
        .into_iter()
        .find(|t| t["chi"] == "permission-ask")
        .expect("the ask");
    assert_eq!(
        (ask["permitId"].as_str(), ask["callId"].as_str()),
        (Some("permit-1"), Some("permit-1"))
    );
    // Answered the old way: permitId only.
    rig.tone(
        30,
        json!({"chi": "release-permit", "sid": "old", "permitId": "permit-1", "decision": "allow"}),
    );
    let to_worker = rig.received(W).await;
    let answer = to_worker
        .iter()
        .find(|t| t["chi"] == "release-permit")
        .unwrap_or_else(|| panic!("no answer reached the worker: {to_worker:?}"));
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["permitId"], "permit-1");
}

/// Issue 26, item 5: a forager that re-dials with its `hid` without
/// closing the old connection: the new one takes over its tools at once,
/// the old one is told (`replaced`) and closed, and no name conflict is
/// reported. Askers sharing a hid (a bee's turns, one connection each)
/// all stay.
#[tokio::test]
async fn a_new_connection_with_a_live_ones_hid_takes_its_place() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    let hello = json!({"chi": "hello", "bee": ["forager"], "hid": "oracle", "tools": [{"name": "ask_oracle"}]});
    rig.join(40);
    rig.tone(40, hello.clone());
    rig.join(41);
    rig.tone(41, hello);
    assert!(rig.router.tools.conflicts().is_empty());
    assert_eq!(rig.router.tools.owned_by(41), ["ask_oracle"]);
    assert!(rig.router.tools.owned_by(40).is_empty());
    assert!(!rig.router.peers.contains_key(&40));
    // The old connection's last word, then its end.
    let (inbox, _, _) = rig.ends.get_mut(&40).unwrap();
    let mut said = Vec::new();
    while let Ok(Some(Inbound::Tone(t))) =
        tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .expect("closed")
    {
        said.push(t.to_value());
    }
    assert!(
        said.iter()
            .any(|t| t["chi"] == "error" && t["code"] == "replaced"),
        "{said:?}"
    );
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

/// Issue 26, item 4: the worker hears which capabilities connected
/// foragers serve, with each catalogue, until the last such forager goes.
#[tokio::test]
async fn the_worker_is_told_the_capabilities_foragers_serve_until_the_last_one_goes() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    let provides_told = |tones: &[Value]| -> Vec<Value> {
        tones
            .iter()
            .filter(|t| t["chi"] == "tool-info")
            .map(|t| t["provides"].clone())
            .collect()
    };
    // (The announcement is not held back by the one before: each is seen.)
    rig.router.announced_at = None;
    rig.join(50);
    rig.tone(
        50,
        json!({"chi": "hello", "bee": ["forager"], "hid": "humfs", "tools": [{"name": "read_file"}], "provides": ["fs"]}),
    );
    assert_eq!(provides_told(&rig.received(W).await), [json!(["fs"])]);
    rig.router.announced_at = None;
    rig.join(51);
    rig.tone(
        51,
        json!({"chi": "hello", "bee": ["forager"], "hid": "oai", "tools": [], "provides": ["session", "fs"]}),
    );
    assert_eq!(
        provides_told(&rig.received(W).await),
        [json!(["fs", "session"])]
    );
    let status = rig.router.tools_status();
    let fs = status.capabilities.iter().find(|c| c.name == "fs").unwrap();
    assert!(fs.served && fs.builtins.contains(&"Read".to_owned()));
    let session = status.capabilities.iter().find(|c| c.name == "session");
    assert!(session.is_some_and(|c| c.served && c.builtins.is_empty()));
    rig.router.announced_at = None;
    rig.leave(50);
    assert_eq!(
        provides_told(&rig.received(W).await),
        [json!(["fs", "session"])],
        "another forager still serves fs"
    );
    rig.router.announced_at = None;
    rig.leave(51);
    assert_eq!(provides_told(&rig.received(W).await), [json!([])]);
    let status = rig.router.tools_status();
    assert!(status.capabilities.iter().all(|c| !c.served));
}
