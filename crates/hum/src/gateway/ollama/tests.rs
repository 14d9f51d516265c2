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

fn usage(input: u64, cached: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        cache_read_input_tokens: cached,
        output_tokens: output,
        ..Default::default()
    }
}

#[test]
fn a_chat_streams_unless_told_not_to_and_keeps_its_system_apart() {
    let ask = OllamaChat::ask(
        br#"{"model":"sim","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    assert!(ask.stream, "Ollama streams by default");
    assert_eq!(ask.system.as_deref(), Some("be brief"));
    assert_eq!(ask.messages, vec![Message::new("user", "hi")]);
    let ask = OllamaChat::ask(
        br#"{"model":"sim","stream":false,"messages":[{"role":"user","content":"hi"}],"options":{"temperature":0},"keep_alive":"5m"}"#,
    )
    .unwrap();
    assert!(!ask.stream);
}

#[test]
fn tool_messages_at_the_end_answer_the_calls_in_order() {
    let ask = OllamaChat::ask(
        br#"{"model":"sim","tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
            "messages":[{"role":"user","content":"weather?"},
                        {"role":"assistant","content":"","tool_calls":[{"function":{"name":"weather","arguments":{"city":"Paris"}}},{"function":{"name":"weather","arguments":{"city":"Rome"}}}]},
                        {"role":"tool","content":"sunny","tool_name":"weather"},
                        {"role":"tool","content":"rain","tool_name":"weather"}]}"#,
    )
    .unwrap();
    let outputs: Vec<&str> = ask.answers.iter().map(|a| a.output.as_str()).collect();
    assert_eq!(outputs, ["sunny", "rain"]);
    assert!(ask.answers.iter().all(|a| a.call_id.is_empty()));
    assert!(ask.by_position);
    assert_eq!(ask.offered.len(), 1);
    assert_eq!(ask.offered[0].name, "weather");
    // The ids hum gave, when the client kept them, name the calls.
    let kept = OllamaChat::ask(
        br#"{"model":"sim","messages":[{"role":"user","content":"weather?"},
            {"role":"assistant","content":"","tool_calls":[{"id":"c1","function":{"name":"weather","arguments":{}}},{"id":"c2","function":{"name":"weather","arguments":{}}}]},
            {"role":"tool","content":"sunny"},{"role":"tool","content":"rain"}]}"#,
    )
    .unwrap();
    let named: Vec<&str> = kept.answers.iter().map(|a| a.call_id.as_str()).collect();
    assert_eq!(named, ["c1", "c2"]);
}

#[test]
fn bad_chats_are_refused_with_why() {
    let e = OllamaChat::ask(br#"{"model":"sim","messages":[{"role":"assistant","content":"x"}]}"#)
        .unwrap_err();
    assert!(e.contains("last message"), "{e}");
    let e = OllamaChat::ask(
        br#"{"model":"sim","messages":[{"role":"user","content":"x","images":["aGk="]}]}"#,
    )
    .unwrap_err();
    assert!(e.contains("images"), "{e}");
    let e = OllamaChat::ask(br#"{"messages":[]}"#).unwrap_err();
    assert!(e.contains("model"), "{e}");
    let e = OllamaChat::ask(
        br#"{"model":"sim","format":"yaml","messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap_err();
    assert!(e.starts_with("format:"), "{e}");
}

#[test]
fn format_json_or_a_schema_asks_for_structured_output() {
    let ask = OllamaChat::ask(
        br#"{"model":"sim","format":"json","messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap();
    assert_eq!(
        ask.format,
        Some(crate::gateway::structured::Wanted::JsonObject)
    );
    let ask = OllamaGenerate::ask(
        br#"{"model":"sim","prompt":"x","format":{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}}"#,
    )
    .unwrap();
    assert!(matches!(
        ask.format,
        Some(crate::gateway::structured::Wanted::JsonSchema { .. })
    ));
}

#[test]
fn a_generate_is_one_user_message_with_its_system_and_no_context() {
    let ask = OllamaGenerate::ask(
        br#"{"model":"sim","prompt":"why is the sky blue?","system":"be brief","context":[1,2,3],"stream":false}"#,
    )
    .unwrap();
    assert_eq!(
        ask.messages,
        vec![Message::new("user", "why is the sky blue?")]
    );
    assert_eq!(ask.system.as_deref(), Some("be brief"));
    assert!(!ask.stream);
}

#[test]
fn an_empty_request_only_loads_its_model() {
    assert_eq!(
        load_only(br#"{"model":"sim","messages":[]}"#, false).as_deref(),
        Some("sim")
    );
    assert_eq!(
        load_only(br#"{"model":"sim"}"#, true).as_deref(),
        Some("sim")
    );
    assert_eq!(load_only(br#"{"model":"sim","prompt":"x"}"#, true), None);
    assert_eq!(load_only(b"not json", false), None);
    assert_eq!(
        load_only(br#"{"model":"sim","messages":"nope"}"#, false),
        None,
        "a wrong body is refused, not taken for a load"
    );
    let v = OllamaChat::loaded("sim");
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "load");
    assert_eq!(v["message"]["content"], "");
}

#[test]
fn a_finished_answer_counts_tokens_and_nanoseconds() {
    let mut r = OllamaChat::reply("sim");
    r.first_content(Instant::now());
    let v = r.finished("hello", &usage(10, 5, 3));
    assert_eq!(v["model"], "sim");
    assert_eq!(
        v["message"],
        json!({"role": "assistant", "content": "hello"})
    );
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "stop");
    assert_eq!(v["prompt_eval_count"], 15, "cached tokens were read too");
    assert_eq!(v["eval_count"], 3);
    let total = v["total_duration"].as_u64().unwrap();
    let parts = v["prompt_eval_duration"].as_u64().unwrap() + v["eval_duration"].as_u64().unwrap();
    assert!(parts <= total, "{v}");
    assert!(
        humantime::parse_rfc3339(v["created_at"].as_str().unwrap()).is_ok(),
        "{v}"
    );
    let g = OllamaGenerate::reply("sim").finished("hi", &usage(1, 0, 1));
    assert_eq!(g["response"], "hi");
    assert!(g.get("message").is_none());
}

#[test]
fn calls_carry_their_arguments_as_an_object() {
    let r = OllamaChat::reply("sim");
    let v = r.called(
        "",
        &[call("c1", "weather", json!({"city": "Paris"}))],
        &usage(1, 0, 1),
    );
    let c = &v["message"]["tool_calls"][0];
    assert_eq!(c["function"]["name"], "weather");
    assert_eq!(c["function"]["arguments"], json!({"city": "Paris"}));
    assert_eq!(v["done"], true);
    // A stream gives each call a line of its own, numbered.
    let mut r = OllamaChat::reply("sim");
    let a = r.call(&call("c1", "weather", Value::Null));
    let b = r.call(&call("c2", "weather", json!({"city": "Rome"})));
    let (Frame::Data(a), Frame::Data(b)) = (&a[0], &b[0]) else {
        panic!("not data")
    };
    assert_eq!(
        a["message"]["tool_calls"][0]["function"]["arguments"],
        json!({})
    );
    assert_eq!(b["message"]["tool_calls"][0]["function"]["index"], 1);
    assert_eq!(b["done"], false);
}

#[test]
fn a_stream_is_lines_of_text_then_a_done_line_and_an_error_is_a_line() {
    let mut r = OllamaChat::reply("sim");
    assert!(r.open(&Usage::default()).is_empty());
    let t = r.text("he");
    let Frame::Data(t) = &t[0] else { panic!() };
    assert_eq!(t["message"]["content"], "he");
    assert_eq!(t["done"], false);
    let end = r.finish(&usage(2, 0, 1));
    let Frame::Data(end) = &end[0] else { panic!() };
    assert_eq!(end["done"], true);
    assert_eq!(end["eval_count"], 1);
    let fail = r.fail(&ErrorCode::Overloaded, "busy");
    assert_eq!(fail, vec![Frame::Data(json!({"error": "busy"}))]);
    assert_eq!(
        OllamaChat::error_body(&ErrorCode::NoWorker, "model \"x\" not found"),
        json!({"error": "model \"x\" not found"})
    );
}
