//! Tools across nodes (issue 28, item 5): a forager nestled on any node
//! serves every node's cells; its calls travel to its node and back, its
//! capabilities count everywhere, and its leaving is seen everywhere.

use crate::common::cluster::{runtime, wait_linked, Nats, Node};
use crate::common::forager::{wait_until_async, Forager, Serve};
use crate::common::*;
use hum::client::{Client, Event};
use serde_json::json;

/// One turn of `sid` through `node`'s socket: its text and the tools the
/// asker was shown executed (name, output).
async fn turn(node: &Node, sid: &str, text: &str) -> (String, Vec<(String, serde_json::Value)>) {
    let mut c = Client::asker(&node.sock, "cluster test").await.unwrap();
    c.prompt(sid, Client::text_prompt(text, Some("sim")))
        .await
        .unwrap();
    let (mut said, mut executed) = (String::new(), Vec::new());
    loop {
        let e = tokio::time::timeout(PROMPTLY * 3, c.event())
            .await
            .expect("the turn goes on")
            .unwrap();
        match e {
            Event::Text { text, .. } => said.push_str(&text),
            Event::Chunk { chunk, .. } if chunk.chunk_type == thrum::ChunkType::ToolExecuted => {
                let v = serde_json::to_value(&chunk).unwrap();
                executed.push((
                    v["toolName"].as_str().unwrap_or_default().to_owned(),
                    v["output"].clone(),
                ));
            }
            Event::Finish { .. } => return (said, executed),
            e if e.ends_turn() => panic!("turn {text:?} of {sid} via {} failed: {e:?}", node.name),
            _ => {}
        }
    }
}

/// Whether `node`'s router offers `tool` from node `from`'s foragers.
fn offers(node: &Node, rt: &tokio::runtime::Runtime, from: &str, tool: &str) -> bool {
    let tools = node.status(rt).daemon.tools;
    tools.foragers.iter().any(|f| {
        f.name.as_deref() == Some(&format!("node:{from}")[..]) && f.tools.iter().any(|t| t == tool)
    })
}

#[test]
fn a_forager_on_node_c_serves_a_cell_on_node_a_and_its_leaving_is_seen_there() {
    let sb = Sandbox::new();
    let nats = Nats::start(&sb);
    let a = Node::start(&sb, &nats, "tools", "a", 2, json!({}));
    let b = Node::start(&sb, &nats, "tools", "b", 2, json!({}));
    let c = Node::start(&sb, &nats, "tools", "c", 2, json!({}));
    let rt = runtime();
    wait_linked(&rt, &[&a, &b, &c]);
    let forager = rt.block_on(Forager::connect_at(
        &c.sock,
        &["echo", "add"],
        Serve::Answer,
        &["fs"],
    ));
    assert!(
        wait_until(PROMPTLY, || offers(&a, &rt, "c", "echo")
            && offers(&b, &rt, "c", "add")),
        "a and b offer c's forager's tools: {:?}",
        a.status(&rt).daemon.tools.foragers
    );
    // Its capabilities are the cluster's: a's cells are told c serves the
    // file system (they start without their own Bash, Read, ...).
    let fs = a
        .status(&rt)
        .daemon
        .tools
        .capabilities
        .into_iter()
        .find(|cap| cap.name == "fs")
        .expect("fs is listed");
    assert!(fs.served, "{fs:?}");
    let (text, executed) = rt.block_on(turn(
        &a,
        "fetcher",
        r#"use CALL_TOOL echo {"text": "hello from c"} and CALL_TOOL add {"a": 2, "b": 40}"#,
    ));
    assert!(
        text.contains("[mcp__hum__echo said hello from c]"),
        "{text}"
    );
    assert!(text.contains("[mcp__hum__add said 42]"), "{text}");
    // The sid's cell is on a; the forager on c saw both calls as the
    // agent made them; a's asker saw both executed.
    assert_eq!(
        (
            a.cells_of(&rt, "fetcher"),
            b.cells_of(&rt, "fetcher"),
            c.cells_of(&rt, "fetcher")
        ),
        (1, 0, 0)
    );
    let calls = forager.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].args, json!({"text": "hello from c"}));
    assert_eq!(calls[1].args, json!({"a": 2, "b": 40}));
    assert_eq!(
        executed,
        [
            ("echo".to_owned(), json!("hello from c")),
            ("add".to_owned(), json!(42))
        ]
    );
    // The forager leaves: no node offers its tools any more, and a call
    // of them is answered plainly, not left waiting.
    forager.leave();
    assert!(
        wait_until(PROMPTLY, || !offers(&a, &rt, "c", "echo")
            && !offers(&b, &rt, "c", "echo")),
        "c's tools are withdrawn everywhere"
    );
    let (text, _) = rt.block_on(turn(&a, "fetcher", r#"CALL_TOOL echo {"text": "anyone?"}"#));
    assert!(
        text.contains("failed: no bee serves the tool echo"),
        "{text}"
    );
    a.stop();
    b.stop();
    c.stop();
    nats.stop();
    sb.assert_no_leaks();
}

#[test]
fn a_call_to_a_forager_on_a_node_that_dies_ends_with_an_error_not_a_hang() {
    let sb = Sandbox::new();
    let nats = Nats::start(&sb);
    let a = Node::start(&sb, &nats, "tools-gone", "a", 2, json!({}));
    let c = Node::start(&sb, &nats, "tools-gone", "c", 2, json!({}));
    let rt = runtime();
    wait_linked(&rt, &[&a, &c]);
    // A forager on c that takes calls and never answers.
    let forager = rt.block_on(Forager::connect_at(&c.sock, &["echo"], Serve::Hold, &[]));
    assert!(
        wait_until(PROMPTLY, || offers(&a, &rt, "c", "echo")),
        "a offers c's echo"
    );
    let text = rt.block_on(async {
        let mut asker = Client::asker(&a.sock, "cluster test").await.unwrap();
        asker
            .prompt(
                "waiting",
                Client::text_prompt(r#"CALL_TOOL echo {"text": "x"}"#, Some("sim")),
            )
            .await
            .unwrap();
        // The call reached c's forager: then c dies, every process of it.
        assert!(
            wait_until_async(PROMPTLY, || async { !forager.calls().is_empty() }).await,
            "the call reaches c"
        );
        c.kill();
        let answer = tokio::time::timeout(PROMPTLY * 3, asker.answer("waiting"))
            .await
            .expect("the turn ends")
            .unwrap();
        assert!(answer.end.is_ok(), "{:?}", answer.end);
        answer.text
    });
    assert!(
        text.contains("[mcp__hum__echo failed: the bee serving echo left before answering]"),
        "{text}"
    );
    forager.leave();
    a.stop();
    nats.stop();
    sb.assert_no_leaks();
}
