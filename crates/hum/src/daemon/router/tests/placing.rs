//! A cluster node's router: new sids wait for the cluster's answer and go
//! where it says; nothing waits on one machine or when the cluster cannot
//! be asked.

use super::super::placing::{Placement, ToCluster, REMOTE_CONNS};
use super::*;
use tokio::sync::mpsc;

/// The link to node `b`'s workers.
const LINK_B: ConnId = REMOTE_CONNS + 1;
/// The link to node `c`'s askers.
const LINK_C: ConnId = REMOTE_CONNS + 2;

async fn node_rig(asks: usize) -> (Rig, mpsc::Receiver<ToCluster>) {
    let mut rig = Rig::with_worker(GRACE).await;
    let (tx, rx) = mpsc::channel(asks);
    rig.router.set_placer(tx);
    rig.join(LINK_B);
    rig.tone(
        LINK_B,
        json!({"chi": "hello", "bee": ["worker"], "hive": "node:b", "hid": "node:b", "models": ["m"]}),
    );
    assert_eq!(rig.received(LINK_B).await[0]["chi"], "breath");
    (rig, rx)
}

fn place_asked(rx: &mut mpsc::Receiver<ToCluster>) -> Option<(String, Option<String>)> {
    match rx.try_recv() {
        Ok(ToCluster::Place(p)) => Some((p.sid, p.from_node)),
        _ => None,
    }
}

#[tokio::test]
async fn a_new_sid_waits_for_the_cluster_and_goes_where_it_says() {
    let (mut rig, mut rx) = node_rig(8).await;
    rig.asker(10).await;
    rig.asker(11).await;
    rig.prompt(10, "s1", "r1", "one");
    rig.prompt(11, "s1", "r2", "two");
    assert_eq!(place_asked(&mut rx), Some(("s1".into(), None)));
    assert_eq!(place_asked(&mut rx), None, "one question per sid");
    assert!(
        rig.received(W).await.is_empty(),
        "nothing runs before the answer"
    );
    assert!(rig.received(LINK_B).await.is_empty());
    rig.router.handle(RouterMsg::Placed {
        sid: "s1".into(),
        placement: Placement::Node("b".into()),
        restore: None,
    });
    assert_eq!(
        heads(&rig.received(LINK_B).await),
        pairs(&[("prompt", "r1"), ("prompt", "r2")]),
        "both, in the order they came"
    );
    assert!(rig.received(W).await.is_empty());
    assert_eq!(rig.router.stats.placed_remote, 2);
    // The sid is held there now: no new question.
    rig.prompt(10, "s1", "r3", "three");
    assert_eq!(place_asked(&mut rx), None);
    assert_eq!(
        heads(&rig.received(LINK_B).await),
        pairs(&[("prompt", "r3")])
    );
}

#[tokio::test]
async fn placed_here_goes_to_a_local_worker_with_the_moved_transcript_and_no_askers_own() {
    let (mut rig, mut rx) = node_rig(8).await;
    rig.asker(10).await;
    // An asker cannot name a file for the worker to take as a transcript.
    rig.tone(
        10,
        json!({"chi": "prompt", "sid": "s1", "rid": "r1", "text": "x", "modelId": "m",
               "restoreTranscript": "/etc/shadow"}),
    );
    assert!(place_asked(&mut rx).is_some());
    rig.router.handle(RouterMsg::Placed {
        sid: "s1".into(),
        placement: Placement::Here,
        restore: None,
    });
    let got = rig.received(W).await;
    assert_eq!(heads(&got), pairs(&[("prompt", "r1")]));
    assert!(got[0].get("restoreTranscript").is_none(), "{}", got[0]);
    // A sid that moved here: humd names the transcript it fetched.
    rig.prompt(10, "s2", "r2", "y");
    assert!(place_asked(&mut rx).is_some());
    rig.router.handle(RouterMsg::Placed {
        sid: "s2".into(),
        placement: Placement::Here,
        restore: Some("/state/t.jsonl".into()),
    });
    let got = rig.received(W).await;
    assert_eq!(got[0]["restoreTranscript"], "/state/t.jsonl");
    assert!(
        rig.received(LINK_B).await.is_empty(),
        "a link is chosen only by placement"
    );
}

#[tokio::test]
async fn a_new_sid_is_served_here_when_the_cluster_cannot_be_asked() {
    let (mut rig, mut rx) = node_rig(1).await;
    rig.asker(10).await;
    rig.prompt(10, "s1", "r1", "one");
    // The question queue (of one) is full now: the next sid does not wait.
    rig.prompt(10, "s2", "r2", "two");
    assert_eq!(heads(&rig.received(W).await), pairs(&[("prompt", "r2")]));
    assert_eq!(rig.router.stats.placed_here_unasked, 1);
    assert_eq!(place_asked(&mut rx), Some(("s1".into(), None)));
}

#[tokio::test]
async fn a_forwarded_prompt_names_its_node_and_keeps_its_askers_name() {
    let (mut rig, mut rx) = node_rig(8).await;
    rig.join(LINK_C);
    rig.tone(
        LINK_C,
        json!({"chi": "hello", "bee": ["asker"], "hid": "node:c", "source": "hum cluster"}),
    );
    assert_eq!(rig.received(LINK_C).await[0]["chi"], "breath");
    rig.tone(
        LINK_C,
        json!({"chi": "prompt", "sid": "s1", "rid": "r1", "text": "x", "modelId": "m",
               "humBee": "bee-on-c"}),
    );
    assert_eq!(place_asked(&mut rx), Some(("s1".into(), Some("c".into()))));
    rig.router.handle(RouterMsg::Placed {
        sid: "s1".into(),
        placement: Placement::Here,
        restore: None,
    });
    let got = rig.received(W).await;
    assert_eq!(got[0]["humBee"], "bee-on-c", "{}", got[0]);
    // A local asker's name is its own, whatever its prompt says.
    rig.asker(10).await;
    rig.tone(
        10,
        json!({"chi": "prompt", "sid": "s1", "rid": "r2", "text": "x", "modelId": "m",
               "humBee": "someone-else"}),
    );
    let got = rig.received(W).await;
    assert_eq!(got[0]["humBee"], "bee-10");
}

#[tokio::test]
async fn a_flood_of_prompts_for_one_sid_waiting_to_be_placed_is_refused_past_the_bound() {
    let (mut rig, mut rx) = node_rig(8).await;
    rig.asker(10).await;
    for i in 0..20 {
        rig.prompt(10, "s1", &format!("r{i}"), "x");
    }
    assert!(place_asked(&mut rx).is_some());
    let got = rig.received(10).await;
    let refused: Vec<_> = got
        .iter()
        .filter(|t| t["chi"] == "error" && t["code"] == "overloaded")
        .collect();
    assert_eq!(refused.len(), 4, "16 wait, the rest are refused: {got:?}");
    rig.router.handle(RouterMsg::Placed {
        sid: "s1".into(),
        placement: Placement::Here,
        restore: None,
    });
    assert_eq!(rig.received(W).await.len(), 16);
}

#[tokio::test]
async fn a_cancel_while_a_sid_waits_for_placement_ends_its_held_prompts_cancelled() {
    let (mut rig, mut rx) = node_rig(8).await;
    rig.asker(10).await;
    rig.asker(11).await;
    rig.prompt(10, "s1", "r1", "one");
    rig.prompt(11, "s1", "r2", "two");
    assert!(place_asked(&mut rx).is_some());
    // Cancel names r1: only that turn ends; r2 still waits.
    rig.tone(10, json!({"chi": "cancel", "sid": "s1", "rid": "r1"}));
    let got = rig.received(10).await;
    let finish = got.iter().find(|t| t["chi"] == "finish").expect("r1 ends");
    assert_eq!(
        (finish["rid"].as_str(), finish["finishReason"].as_str()),
        (Some("r1"), Some("cancelled"))
    );
    assert!(
        got.iter().all(|t| t["chi"] != "error"),
        "not refused: {got:?}"
    );
    rig.router.handle(RouterMsg::Placed {
        sid: "s1".into(),
        placement: Placement::Here,
        restore: None,
    });
    assert_eq!(
        heads(&rig.received(W).await),
        pairs(&[("prompt", "r2")]),
        "only r2 runs"
    );
}

#[tokio::test]
async fn a_prompt_cancelled_while_it_went_to_another_node_and_back_ends_cancelled() {
    let (mut rig, mut rx) = node_rig(8).await;
    rig.asker(10).await;
    rig.prompt(10, "s1", "r1", "one");
    assert!(place_asked(&mut rx).is_some());
    rig.router.handle(RouterMsg::Placed {
        sid: "s1".into(),
        placement: Placement::Node("b".into()),
        restore: None,
    });
    assert_eq!(
        heads(&rig.received(LINK_B).await),
        pairs(&[("prompt", "r1")])
    );
    // Its asker cancels; the cancel goes to b, which has let the sid go
    // and sends the prompt back, through its askers' link.
    rig.tone(10, json!({"chi": "cancel", "sid": "s1", "rid": "r1"}));
    let _ = rig.received(10).await;
    const B_ASKERS: ConnId = REMOTE_CONNS + 3;
    rig.join(B_ASKERS);
    rig.tone(
        B_ASKERS,
        json!({"chi": "hello", "bee": ["asker"], "hid": "node:b", "source": "hum cluster"}),
    );
    assert_eq!(rig.received(B_ASKERS).await[0]["chi"], "breath");
    rig.tone(
        B_ASKERS,
        json!({"chi": "prompt", "sid": "s1", "rid": "r1", "text": "one", "modelId": "m"}),
    );
    let got = rig.received(10).await;
    let finish = got.iter().find(|t| t["chi"] == "finish").expect("r1 ends");
    assert_eq!(
        (finish["rid"].as_str(), finish["finishReason"].as_str()),
        (Some("r1"), Some("cancelled")),
        "{got:?}"
    );
    // Not placed again, and run nowhere.
    assert_eq!(place_asked(&mut rx), None);
    assert!(rig.received(W).await.is_empty());
    assert!(rig.received(B_ASKERS).await.is_empty());
}

#[tokio::test]
async fn another_nodes_tools_said_again_keep_the_calls_they_hold() {
    let (mut rig, _rx) = node_rig(8).await;
    // Node c's tools, through its tools link.
    let tools_c = REMOTE_CONNS + 3;
    rig.join(tools_c);
    let hello = json!({"chi": "hello", "bee": ["forager"], "hid": "node:c",
                       "tools": [{"name": "echo"}]});
    rig.tone(tools_c, hello.clone());
    rig.received(tools_c).await;
    // A cell here calls echo: the call goes to c.
    rig.tone(
        W,
        json!({"chi": "tool-call", "sid": "s1", "callId": "call-1", "toolName": "echo", "args": {}}),
    );
    let got = rig.received(tools_c).await;
    assert!(got.iter().any(|t| t["chi"] == "tool-call"), "{got:?}");
    // c's catalogue grows: its link says hello again, with one more tool.
    let mut again = hello;
    again["tools"] = json!([{"name": "echo"}, {"name": "add"}]);
    rig.tone(tools_c, again);
    rig.received(tools_c).await;
    assert!(
        rig.received(W)
            .await
            .iter()
            .all(|t| t["chi"] != "tool-result"),
        "the call in flight is not failed"
    );
    // c's answer still reaches the cell.
    rig.tone(
        tools_c,
        json!({"chi": "tool-result", "sid": "s1", "callId": "call-1", "output": "hi"}),
    );
    let got = rig.received(W).await;
    let r = got
        .iter()
        .find(|t| t["chi"] == "tool-result")
        .expect("the result");
    assert_eq!(r["output"], "hi");
}

#[tokio::test]
async fn a_lone_humd_refuses_to_drain_and_a_node_drains_its_idle_cells_then_its_busy_ones() {
    let mut lone = Rig::with_worker(GRACE).await;
    lone.asker(10).await;
    lone.tone(10, json!({"chi": "drain", "rid": "d1"}));
    let got = lone.received(10).await;
    assert!(
        got.iter().any(|t| t["chi"] == "error"
            && t["message"]
                .as_str()
                .is_some_and(|m| m.contains("only a cluster node drains"))),
        "{got:?}"
    );
    let (mut rig, mut rx) = node_rig(8).await;
    rig.asker(10).await;
    for (sid, rid) in [("idle", "r1"), ("busy", "r2")] {
        rig.prompt(10, sid, rid, "x");
        assert!(place_asked(&mut rx).is_some());
        rig.router.handle(RouterMsg::Placed {
            sid: sid.into(),
            placement: Placement::Here,
            restore: None,
        });
    }
    rig.worker_says("finish", "idle", "r1", "stop");
    rig.received(W).await;
    rig.tone(10, json!({"chi": "drain", "rid": "d2"}));
    assert!(matches!(rx.try_recv(), Ok(ToCluster::Drain(true))));
    // The idle sid's cell goes now; the busy one's when its turn ends.
    assert_eq!(heads(&rig.received(W).await), pairs(&[("cleanup", "")]));
    rig.worker_says("finish", "busy", "r2", "stop");
    let got = rig.received(W).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["chi"].as_str(), got[0]["sid"].as_str()),
        (Some("cleanup"), Some("busy"))
    );
}
