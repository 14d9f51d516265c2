use super::*;

fn call(id: &str, args: Value) -> ToolCall {
    ToolCall {
        call_id: id.into(),
        tool_name: "weather".into(),
        args,
        usage: None,
        extra: Default::default(),
    }
}

fn names(frames: &[Frame]) -> Vec<&'static str> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Named(n, _) => *n,
            _ => "?",
        })
        .collect()
}

#[test]
fn a_request_reads_as_its_system_conversation_and_tool_results() {
    let body = json!({"model": "m", "system": [{"type": "text", "text": "be brief"}],
        "metadata": {"user_id": "u"}, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call-1", "name": "w", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call-1", "content": "rain", "is_error": true}]}]});
    let ask = Anthropic::ask(body.to_string().as_bytes()).unwrap();
    assert_eq!(ask.system.as_deref(), Some("be brief"));
    assert_eq!(ask.user.as_deref(), Some("u"));
    assert_eq!(
        ask.answers,
        [ToolAnswer {
            call_id: "call-1".into(),
            output: "rain".into(),
            is_error: true
        }]
    );
    assert!(!ask.stream);
    let refused = |v: Value| Anthropic::ask(v.to_string().as_bytes()).unwrap_err();
    assert!(refused(json!({"model": "m", "messages": []})).contains("at least one"));
    assert!(
        refused(json!({"model": "m", "messages": [{"role": "assistant", "content": "x"}]}))
            .contains("role user")
    );
}

#[test]
fn a_stream_opens_a_text_block_closes_it_before_a_call_and_ends_with_tool_use() {
    let mut r = Anthropic::reply("m");
    let started = Usage::read(&json!({"input_tokens": 12, "cache_read_input_tokens": 30}));
    let open = r.open(&started);
    assert_eq!(names(&open), ["message_start"]);
    // The model call's input and cache tokens, as the API sends them.
    let Frame::Named(_, start) = &open[0] else {
        panic!()
    };
    assert_eq!(start["message"]["usage"]["input_tokens"], 12);
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 30);
    assert_eq!(
        names(&r.text("Let me")),
        ["content_block_start", "content_block_delta"]
    );
    assert_eq!(names(&r.text(" look.")), ["content_block_delta"]);
    let args = json!({"city": "Paris"});
    let frames = r.call(&call("call-1", args.clone()));
    assert_eq!(
        names(&frames)[..2],
        ["content_block_stop", "content_block_start"]
    );
    assert_eq!(names(&frames).last(), Some(&"content_block_stop"));
    let Frame::Named(_, start) = &frames[1] else {
        panic!()
    };
    assert_eq!(start["index"], 1, "the text was block 0");
    let joined: String = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Named("content_block_delta", v) => v["delta"]["partial_json"].as_str(),
            _ => None,
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), args);
    let end = r.calls_done(&Usage::read(
        &json!({"input_tokens": 12, "output_tokens": 9}),
    ));
    assert_eq!(names(&end), ["message_delta", "message_stop"]);
    let Frame::Named(_, delta) = &end[0] else {
        panic!()
    };
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 9);
    assert_eq!(
        delta["usage"]["input_tokens"], 12,
        "the final usage is whole"
    );
}

#[test]
fn a_finished_stream_closes_its_open_text_and_errors_have_anthropics_shape() {
    let mut r = Anthropic::reply("m");
    r.open(&Usage::default());
    r.text("hi");
    assert_eq!(
        names(&r.finish(&Usage::read(&json!({"output_tokens": 1})))),
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let done = r.finished(
        "hi",
        &Usage::read(&json!({"input_tokens": 2, "output_tokens": 1})),
    );
    assert_eq!(done["content"][0]["text"], "hi");
    assert_eq!(done["stop_reason"], "end_turn");
    let called = r.called("", &[call("c", Value::Null)], &Usage::default());
    assert_eq!(called["content"][0]["type"], "tool_use");
    assert_eq!(called["content"][0]["input"], json!({}));
    let e = Anthropic::error_body(&ErrorCode::BudgetExceeded, "spent");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    let failed = r.fail(&ErrorCode::Overloaded, "busy");
    let Frame::Named("error", v) = &failed[0] else {
        panic!("{failed:?}")
    };
    assert_eq!(v["error"]["type"], "overloaded_error");
    let failed = r.fail(&ErrorCode::CellDied, "gone");
    let Frame::Named("error", v) = &failed[0] else {
        panic!()
    };
    assert_eq!(v["error"]["message"], "cell_died: gone");
}
