use super::*;
use agent_client_protocol::v1::schema::{
    ContentChunk, Plan, PlanEntry, PlanEntryPriority, PlanEntryStatus, ToolCall, ToolCallStatus,
    ToolKind,
};

fn kinds(bodies: &[Body]) -> Vec<(String, Option<u64>, Option<String>)> {
    bodies
        .iter()
        .map(|b| match b {
            Body::Chunk(c) => (c.chunk_type.to_string(), c.block_idx, c.delta.clone()),
            other => panic!("not a chunk: {other:?}"),
        })
        .collect()
}

fn said(text: &str) -> SessionUpdate {
    SessionUpdate::AgentMessageChunk(ContentChunk::new(ContentBlock::Text(TextContent::new(
        text,
    ))))
}

fn thought(text: &str) -> SessionUpdate {
    SessionUpdate::AgentThoughtChunk(ContentChunk::new(ContentBlock::Text(TextContent::new(
        text,
    ))))
}

#[test]
fn message_and_thought_chunks_become_numbered_blocks_as_claudes_are() {
    let mut s = TurnStream::default();
    let mut out = Vec::new();
    for u in [thought("hmm"), thought(" ok"), said("Hel"), said("lo")] {
        out.extend(s.update(&u));
    }
    out.extend(s.close());
    let d = |x: &str| Some(x.to_owned());
    assert_eq!(
        kinds(&out),
        [
            ("reasoning_start".into(), Some(0), None),
            ("reasoning_delta".into(), Some(0), d("hmm")),
            ("reasoning_delta".into(), Some(0), d(" ok")),
            ("content_block_stop".into(), Some(0), None),
            ("text_start".into(), Some(1), None),
            ("text_delta".into(), Some(1), d("Hel")),
            ("text_delta".into(), Some(1), d("lo")),
            ("content_block_stop".into(), Some(1), None),
        ]
    );
    assert!(s.close().is_empty(), "closed once");
}

#[test]
fn tool_calls_and_plans_pass_with_their_fields_after_the_open_block_closes() {
    let mut s = TurnStream::default();
    s.update(&said("let me look"));
    let call = SessionUpdate::ToolCall(
        ToolCall::new("tc-1", "read README")
            .kind(ToolKind::Read)
            .status(ToolCallStatus::InProgress)
            .raw_input(serde_json::json!({"path": "README"})),
    );
    let out = s.update(&call);
    assert_eq!(out.len(), 2, "{out:?}");
    let Body::Chunk(c) = &out[1] else { panic!() };
    assert_eq!(c.chunk_type, ChunkType::ToolCall);
    assert_eq!(c.extra["toolCallId"], "tc-1");
    assert_eq!(c.extra["title"], "read README");
    assert_eq!(c.extra["rawInput"]["path"], "README");
    assert!(!c.extra.contains_key("sessionUpdate"));
    let plan = SessionUpdate::Plan(Plan::new(vec![PlanEntry::new(
        "step one",
        PlanEntryPriority::High,
        PlanEntryStatus::Pending,
    )]));
    let out = s.update(&plan);
    let Body::Chunk(c) = &out[0] else { panic!() };
    assert_eq!(c.chunk_type, ChunkType::Plan);
    assert_eq!(c.extra["entries"][0]["content"], "step one");
    // The message after a tool call is a new block.
    let after = kinds(&s.update(&said("done")));
    assert_eq!(after[0], ("text_start".into(), Some(1), None));
}

#[test]
fn a_stop_reason_becomes_a_finish_with_the_usage_the_agent_gave() {
    let meta: Map<String, Value> = serde_json::from_value(serde_json::json!({
        "usage": {"input_tokens": 3, "output_tokens": 5}, "costUsd": 0.01, "other": 1
    }))
    .unwrap();
    let Body::Finish(f) = finish(&StopReason::EndTurn, Some(&meta), None, true) else {
        panic!()
    };
    assert_eq!(f.finish_reason, Some(FinishReason::EndTurn));
    assert_eq!(f.usage.unwrap()["output_tokens"], 5);
    assert_eq!(f.extra["costUsd"], 0.01);
    assert!(!f.extra.contains_key("historyCarried"));
    let Body::Finish(f) = finish(&StopReason::MaxTurnRequests, None, None, false) else {
        panic!()
    };
    assert_eq!(f.finish_reason.unwrap().to_string(), "max_turn_requests");
    assert_eq!(f.extra["historyCarried"], false);
    assert_eq!(f.usage, None);
    // The answer's own token counts, in claude's words, when no _meta.
    let tokens = agent_client_protocol::v1::schema::Usage::new(19, 12, 7).cached_read_tokens(5);
    let Body::Finish(f) = finish(&StopReason::EndTurn, None, Some(&tokens), true) else {
        panic!()
    };
    let u = f.usage.unwrap();
    assert_eq!(
        (u["input_tokens"].as_u64(), u["output_tokens"].as_u64()),
        (Some(12), Some(7))
    );
    assert_eq!(u["cache_read_input_tokens"], 5);
    assert_eq!(
        finish_reason(&StopReason::Cancelled),
        FinishReason::Cancelled
    );
}

#[test]
fn a_prompts_text_and_images_become_blocks_images_only_where_taken() {
    let line = crate::hive::launch::user_line(&thrum::Prompt {
        content: Some(serde_json::json!([
            {"type": "text", "text": "what is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            {"type": "mystery"}
        ])),
        ..Default::default()
    });
    let with = prompt_blocks(&line, true);
    assert_eq!(with.len(), 2);
    assert!(
        matches!(&with[1], ContentBlock::Image(i) if i.data == "AAAA" && i.mime_type == "image/png")
    );
    let without = prompt_blocks(&line, false);
    assert!(matches!(&without[1], ContentBlock::Text(t) if t.text.contains("left out")));
    let plain = crate::hive::launch::user_line(&thrum::Prompt {
        text: Some("hi".into()),
        ..Default::default()
    });
    assert!(matches!(&prompt_blocks(&plain, false)[..], [ContentBlock::Text(t)] if t.text == "hi"));
}

#[test]
fn the_decision_picks_the_agents_option_of_that_kind() {
    let options = vec![
        PermissionOption::new("always", "Always", PermissionOptionKind::AllowAlways),
        PermissionOption::new("once", "Once", PermissionOptionKind::AllowOnce),
        PermissionOption::new("no", "No", PermissionOptionKind::RejectAlways),
    ];
    assert_eq!(
        chosen_option(&options, true).unwrap().option_id.to_string(),
        "once"
    );
    assert_eq!(
        chosen_option(&options, false)
            .unwrap()
            .option_id
            .to_string(),
        "no"
    );
    assert!(chosen_option(&options[..2], false).is_none());
}

#[test]
fn the_cells_tool_bridge_goes_to_the_session_as_a_stdio_server() {
    let cfg = crate::worker::bridge::Bridge::mcp_config(std::path::Path::new("/run/b/cell.sock"))
        .unwrap();
    let servers = mcp_servers(Some(&cfg));
    let [McpServer::Stdio(s)] = &servers[..] else {
        panic!("{servers:?}")
    };
    assert_eq!(s.name, crate::hive::argv::BRIDGE_SERVER);
    let exe = std::env::current_exe().unwrap();
    match crate::worker::bridge::shim::beside(&exe) {
        Some(own) => {
            assert_eq!(s.args, ["/run/b/cell.sock"]);
            assert_eq!(s.command, own);
        }
        None => {
            assert_eq!(s.args, ["mcp-bridge", "/run/b/cell.sock"]);
            assert_eq!(s.command, exe);
        }
    }
    assert!(mcp_servers(None).is_empty());
    assert!(mcp_servers(Some("not json")).is_empty());
}

#[test]
fn chunks_go_back_to_the_updates_they_came_from() {
    let mut s = TurnStream::default();
    let call = SessionUpdate::ToolCall(
        ToolCall::new("tc-9", "grep")
            .kind(ToolKind::Search)
            .status(ToolCallStatus::Pending),
    );
    for original in [call, said("hi"), thought("hmm")] {
        let bodies = s.update(&original);
        let back: Vec<SessionUpdate> = bodies
            .iter()
            .filter_map(|b| match b {
                Body::Chunk(c) => update_of(c),
                _ => None,
            })
            .collect();
        assert_eq!(back, std::slice::from_ref(&original), "{bodies:?}");
    }
    let done = thrum::tools::ToolExecuted {
        call_id: "call-1".into(),
        tool_name: "echo".into(),
        arguments: serde_json::json!({"text": "x"}),
        output: serde_json::json!("x"),
        is_error: false,
    };
    let Some(SessionUpdate::ToolCall(c)) = update_of(&done.to_chunk()) else {
        panic!()
    };
    assert_eq!(
        (c.title.as_str(), c.status),
        ("echo", ToolCallStatus::Completed)
    );
    let stop = |r: FinishReason| {
        stop_reason(&thrum::Finish {
            finish_reason: Some(r),
            usage: None,
            extra: Map::new(),
        })
    };
    assert_eq!(stop(FinishReason::Cancelled), StopReason::Cancelled);
    assert_eq!(
        stop(FinishReason::from("max_turn_requests")),
        StopReason::MaxTurnRequests
    );
    assert_eq!(stop(FinishReason::ToolUse), StopReason::EndTurn);
}

#[test]
fn a_prompts_text_and_images_become_acp_blocks_and_images_are_named_where_not_taken() {
    let line = serde_json::to_vec(&serde_json::json!({"type": "user", "message": {"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "document", "source": {}},
        {"type": "image", "source": {"media_type": "image/png"}},
        "not a block"
    ]}}))
    .unwrap();
    let taken = prompt_blocks(&line, true);
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert!(matches!(&taken[0], ContentBlock::Text(t) if t.text == "look"));
    assert!(
        matches!(&taken[1], ContentBlock::Image(i) if i.data == "iVBO" && i.mime_type == "image/png")
    );
    let words = prompt_blocks(&line, false);
    assert!(
        matches!(&words[1], ContentBlock::Text(t) if t.text.contains("image (image/png) was left out")),
        "{words:?}"
    );
    let plain = prompt_blocks(br#"{"message": {"content": "hi"}}"#, false);
    assert!(matches!(&plain[..], [ContentBlock::Text(t)] if t.text == "hi"));
}
