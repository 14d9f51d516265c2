use super::*;

fn call(id: &str, name: &str, args: Value) -> ToolCall {
    ToolCall {
        call_id: id.into(),
        tool_name: name.into(),
        args,
        usage: None,
        extra: Default::default(),
    }
}

fn data(frames: &[Frame]) -> Vec<Value> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_request_reads_as_its_system_conversation_and_tool_results() {
    let body = json!({"model": "m", "user": "u1", "stream": true, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": "and kind"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call-1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call-1", "content": "sunny"}],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]});
    let ask = OpenAi::ask(body.to_string().as_bytes()).unwrap();
    assert_eq!(ask.system.as_deref(), Some("be brief\nand kind"));
    assert_eq!(ask.messages.len(), 3, "{:?}", ask.messages);
    assert_eq!(
        ask.answers,
        [ToolAnswer {
            call_id: "call-1".into(),
            output: "sunny".into(),
            is_error: false
        }]
    );
    assert_eq!(ask.offered.len(), 1);
    assert!(ask.stream && ask.user.as_deref() == Some("u1"));
}

#[test]
fn a_request_that_asks_nothing_is_refused_with_the_reason() {
    let refused = |v: Value| OpenAi::ask(v.to_string().as_bytes()).unwrap_err();
    assert!(refused(json!({"model": "m", "messages": []})).contains("non-empty"));
    assert!(
        refused(json!({"model": "m", "messages": [{"role": "assistant", "content": "hi"}]}))
            .contains("the user's")
    );
    assert!(refused(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"})).contains("tool_choice"));
    assert!(refused(json!({"messages": []})).contains("model"));
}

#[test]
fn a_streamed_call_is_announced_then_its_arguments_come_in_pieces_that_join() {
    let mut r = OpenAi::reply("m");
    let opened = data(&r.open(&Usage::default()));
    assert_eq!(opened[0]["choices"][0]["delta"]["role"], "assistant");
    let args = json!({"city": "Paris", "units": "metric"});
    let frames = data(&r.call(&call("call-1", "weather", args.clone())));
    let head = &frames[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (head["index"].as_u64(), head["id"].as_str()),
        (Some(0), Some("call-1"))
    );
    assert_eq!(head["function"]["name"], "weather");
    let joined: String = frames[1..]
        .iter()
        .map(|f| {
            f["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), args);
    let second = data(&r.call(&call("call-2", "weather", Value::Null)));
    assert_eq!(
        second[0]["choices"][0]["delta"]["tool_calls"][0]["index"],
        1
    );
    let end = r.calls_done(&Usage::read(
        &json!({"input_tokens": 3, "output_tokens": 4}),
    ));
    assert_eq!(end.last(), Some(&Frame::Done));
    let last = &data(&end)[0];
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(last["usage"]["total_tokens"], 7);
}

#[test]
fn replies_and_errors_have_openais_shapes() {
    let r = OpenAi::reply("m");
    let done = r.finished(
        "hi",
        &Usage::read(&json!({"input_tokens": 1, "output_tokens": 2})),
    );
    assert_eq!(done["object"], "chat.completion");
    assert_eq!(done["choices"][0]["message"]["content"], "hi");
    assert_eq!(done["choices"][0]["finish_reason"], "stop");
    let called = r.called("", &[call("c", "f", json!({"a": 1}))], &Usage::default());
    assert!(called["choices"][0]["message"]["content"].is_null());
    assert_eq!(
        called["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":1}"
    );
    let e = OpenAi::error_body(&ErrorCode::NoWorker, "no such model");
    assert_eq!(
        (e["error"]["type"].as_str(), e["error"]["code"].as_str()),
        (Some("invalid_request_error"), Some("model_not_found"))
    );
    let e = OpenAi::error_body(&ErrorCode::Overloaded, "busy");
    assert_eq!(e["error"]["code"], "overloaded");
    let mut s = OpenAi::reply("m");
    let failed = s.fail(&ErrorCode::CellDied, "gone");
    assert_eq!(data(&failed)[0]["error"]["code"], "cell_died");
    assert_eq!(failed.last(), Some(&Frame::Done));
}
