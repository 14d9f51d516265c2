//! The router's tool side without processes: calls routed to the asker
//! of their turn, foragers' names and shares, permits, capabilities.

use super::*;

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
    // The turn waits for its own asker's result: it is parked (in status
    // and /metrics) until the result comes.
    assert_eq!(rig.router.snapshot().daemon.tools.parked_turns, 1);
    rig.tone(
        11,
        json!({"chi": "tool-result", "sid": "s", "callId": "c3", "output": "found"}),
    );
    assert_eq!(rig.router.snapshot().daemon.tools.parked_turns, 0);
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
    let mut owned = rig.router.desk.registry.owned_by(20);
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
    assert_eq!(refused.len(), 1, "{refused:?} {:?}", rig.router.desk.stats);
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
    assert!(rig.router.desk.registry.conflicts().is_empty());
    assert_eq!(rig.router.desk.registry.owned_by(41), ["ask_oracle"]);
    assert!(rig.router.desk.registry.owned_by(40).is_empty());
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
    rig.router.desk.announced_at = None;
    rig.join(50);
    rig.tone(
        50,
        json!({"chi": "hello", "bee": ["forager"], "hid": "humfs", "tools": [{"name": "read_file"}], "provides": ["fs"]}),
    );
    assert_eq!(provides_told(&rig.received(W).await), [json!(["fs"])]);
    rig.router.desk.announced_at = None;
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
    rig.router.desk.announced_at = None;
    rig.leave(50);
    assert_eq!(
        provides_told(&rig.received(W).await),
        [json!(["fs", "session"])],
        "another forager still serves fs"
    );
    rig.router.desk.announced_at = None;
    rig.leave(51);
    assert_eq!(provides_told(&rig.received(W).await), [json!([])]);
    let status = rig.router.tools_status();
    assert!(status.capabilities.iter().all(|c| !c.served));
}

/// An asker that says it answers permission asks, with a turn of `sid`
/// (rid `r-<sid>`) running on the worker.
async fn answering_asker(rig: &mut Rig, id: ConnId, sid: &str) {
    rig.join(id);
    rig.tone(
        id,
        json!({"chi": "hello", "bee": ["asker"], "hid": format!("bee-{id}"), "chis": ["permission-ask"]}),
    );
    assert_eq!(rig.received(id).await[0]["chi"], "breath");
    rig.prompt(id, sid, &format!("r-{sid}"), "go");
    rig.received(W).await;
}

fn ask(sid: &str, call: &str) -> Value {
    json!({"chi": "permission-ask", "sid": sid, "rid": format!("r-{sid}"), "callId": call,
           "toolName": "Bash", "input": {"command": "ls"}})
}

#[tokio::test]
async fn a_permission_ask_goes_to_the_asker_of_its_turn_and_only_it_may_answer() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    answering_asker(&mut rig, 10, "a").await;
    answering_asker(&mut rig, 11, "b").await;
    rig.tone(W, ask("b", "permit-b"));
    assert!(
        rig.received(10).await.is_empty(),
        "another turn's asker was asked"
    );
    let got = rig.received(11).await;
    assert_eq!(got[0]["chi"], "permission-ask", "{got:?}");
    assert_eq!(got[0]["callId"], "permit-b");
    // A stranger's answer is refused and reaches no worker.
    rig.tone(
        10,
        json!({"chi": "release-permit", "rid": "x", "callId": "permit-b", "decision": "allow"}),
    );
    let refused = rig.received(10).await;
    assert_eq!(refused[0]["code"], "bad_request", "{refused:?}");
    assert!(rig.received(W).await.is_empty());
    // Its own asker's answer goes to the worker, once.
    rig.tone(
        11,
        json!({"chi": "release-permit", "callId": "permit-b", "decision": "deny", "message": "no"}),
    );
    let answer = rig.received(W).await;
    assert_eq!(
        (answer[0]["chi"].as_str(), answer[0]["decision"].as_str()),
        (Some("release-permit"), Some("deny"))
    );
    rig.tone(
        11,
        json!({"chi": "release-permit", "rid": "again", "callId": "permit-b", "decision": "allow"}),
    );
    assert_eq!(rig.received(11).await[0]["code"], "bad_request");
    assert!(rig.received(W).await.is_empty(), "answered twice");
}

#[tokio::test]
async fn an_ask_nobody_answers_gets_no_decision_at_once_so_the_default_applies() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    // An asker that never said it answers asks.
    rig.asker(12).await;
    rig.prompt(12, "c", "r-c", "go");
    rig.received(W).await;
    rig.tone(W, ask("c", "permit-c"));
    assert!(rig.received(12).await.is_empty(), "it was asked anyway");
    let answer = rig.received(W).await;
    assert_eq!(answer[0]["chi"], "release-permit", "{answer:?}");
    assert!(answer[0]["decision"].is_null(), "{answer:?}");
    assert_eq!(answer[0]["callId"], "permit-c");
}

#[tokio::test]
async fn an_ask_the_worker_gives_up_on_is_withdrawn_and_counted_against_its_asker() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    answering_asker(&mut rig, 13, "d").await;
    rig.tone(W, ask("d", "permit-d"));
    assert_eq!(rig.received(13).await[0]["chi"], "permission-ask");
    // The worker's wait ran out: it cancels the ask.
    rig.tone(
        W,
        json!({"chi": "cancel", "sid": "d", "callId": "permit-d"}),
    );
    let told = rig.received(13).await;
    assert!(
        told.iter()
            .any(|t| t["chi"] == "cancel" && t["callId"] == "permit-d"),
        "{told:?}"
    );
    assert_eq!(
        rig.router.tools_status().unanswered_permits.get("bee-13"),
        Some(&1)
    );
    // A late answer is refused.
    rig.tone(
        13,
        json!({"chi": "release-permit", "rid": "late", "callId": "permit-d", "decision": "allow"}),
    );
    assert_eq!(rig.received(13).await[0]["code"], "bad_request");
    assert!(rig.received(W).await.is_empty());
}

/// A hello naming a line's worth of capabilities gets a short refusal that
/// counts them, and only the first ones are kept.
#[tokio::test]
async fn a_forager_naming_thousands_of_capabilities_is_told_briefly() {
    let mut rig = Rig::with_worker(Duration::ZERO).await;
    let tags: Vec<String> = (0..10_000).map(|i| format!("cap{i}")).collect();
    rig.join(60);
    rig.tone(
        60,
        json!({"chi": "hello", "bee": ["forager"], "hid": "many", "tools": [], "provides": tags}),
    );
    let got = rig.received(60).await;
    let refused = got.iter().find(|t| t["chi"] == "error").expect("a refusal");
    let message = refused["message"].as_str().unwrap();
    assert!(message.len() < 2048, "{} bytes", message.len());
    assert!(message.contains("9984 not kept"), "{message}");
    assert_eq!(rig.router.desk.registry.provided_by(60).len(), 16);
}
