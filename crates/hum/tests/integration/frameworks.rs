//! Agent frameworks through the gateway, as they use the official clients:
//! runs that end on a tool call and never answer it must not starve the
//! pool, and the conversation is recognised from its messages alone.

use crate::gateway::{cells_started_for, python_with_clients, run_client, Stack};
use serde_json::json;

/// One cell for everyone; turns waiting for their client's results keep it
/// for a minute unless a prompt waits for it; a prompt waits 20 s at most
/// for a cell (the old gateway kept a parked turn's cell for the worker's
/// 5-minute call timeout: the plain request failed with a 429).
#[test]
fn a_run_that_never_answers_its_tool_call_gives_the_cell_back_and_a_late_answer_continues_it() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let stack = Stack::start_with(
        json!({}),
        &["--parked-turn-ms", "60000"],
        json!({"maxActiveCells": 1, "admissionTimeoutMs": 20000, "cancelGraceMs": 300}),
    );
    let seen = run_client(&python, &stack, "parked.py");
    let gateway_log = || stack.procs.log("gateway.log");
    // The plain request got the cell the parked turn gave back.
    assert!(
        seen["b_text"]
            .as_str()
            .is_some_and(|t| t.contains("you said <hello B>")),
        "the plain request was not served: {seen}\n{}",
        gateway_log()
    );
    assert!(
        gateway_log().contains("gateway.parked_preempted"),
        "{}",
        gateway_log()
    );
    // The late result continued the same conversation, and the agent got it.
    assert_eq!(seen["a_late_sid"], seen["a_sid"], "{seen}");
    let late = seen["a_late_text"].as_str().unwrap_or_default();
    assert!(
        late.contains("get_weather") && late.contains("sunny in Paris"),
        "the agent did not get the late result: {seen}"
    );
    // Its session went on in a new cell (one at a time: the cap is 1).
    let sid = seen["a_sid"].as_str().unwrap();
    assert_eq!(
        cells_started_for(&stack, sid),
        2,
        "{}",
        stack.procs.log("worker.log")
    );
    // …and it resumed the session: the agent remembers the first turn.
    assert!(
        late.contains("before that <CALL_TOOL get_weather"),
        "the second cell did not resume the session: {late}"
    );
    // The same through the Anthropic client.
    assert_eq!(seen["c_late_sid"], seen["c_sid"], "{seen}");
    assert!(
        seen["c_late_text"]
            .as_str()
            .is_some_and(|t| t.contains("rainy in Rome")),
        "{seen}"
    );
    // A new message with no header and no result: the same conversation,
    // its waiting turn cancelled, a result for it refused from then on.
    assert_eq!(seen["e_next_sid"], seen["e_sid"], "{seen}");
    assert!(
        seen["e_next_text"]
            .as_str()
            .is_some_and(|t| t.contains("you said <never mind, say hi>")),
        "{seen}"
    );
    assert_eq!(seen["e_late"], 400, "{seen}");
    stack.stop();
}

/// The answer of a gateway request, its text.
fn said(stack: &Stack, text: &str, headers: &[(&str, &str)]) -> String {
    let (status, _, resp) = stack.chat(
        json!({"model": "sim", "messages": [{"role": "user", "content": text}]}),
        headers,
    );
    assert_eq!(status, 200, "{resp}");
    resp["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// An HTTP caller gets a model with its own functions, not the server's
/// files: the gateway's cells run without the agent's own tools (claude's
/// `--tools=`), while a bee over thrum keeps them; a sid used both ways
/// gets a cell with the set its turn asks for. hum.json's
/// `gateway.builtinTools` gives some back.
#[test]
fn a_gateway_request_gets_none_of_the_agents_own_tools_unless_hum_json_says_so() {
    let stack = Stack::start_with(json!({}), &[], json!({"cancelGraceMs": 300}));
    let over_http = said(&stack, "DESCRIBE_TOOL Read DESCRIBE_TOOL Bash", &[]);
    assert!(
        over_http.contains("[Read is not offered]") && over_http.contains("[Bash is not offered]"),
        "{over_http}"
    );
    let sock = stack.procs.sock.to_str().unwrap().to_owned();
    let prompt = |sid: &str| {
        let out = stack
            .procs
            .sb
            .hum(&[
                "prompt",
                "--socket",
                &sock,
                "--model",
                "sim",
                "--sid",
                sid,
                "DESCRIBE_TOOL Read",
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(prompt("shared").contains("[Read is built in]"));
    // The same sid over HTTP: its cell is replaced by one without them, and
    // the conversation goes on in it.
    let http = said(&stack, "DESCRIBE_TOOL Read", &[("x-hum-session", "shared")]);
    assert!(
        http.contains("[Read is not offered]") && http.contains("before that"),
        "{http}"
    );
    assert!(prompt("shared").contains("[Read is built in]"));
    let sid_cells = stack
        .procs
        .log("worker.log")
        .lines()
        .filter(|l| l.contains("cell.spawned") && l.contains("sid=shared"))
        .count();
    assert_eq!(sid_cells, 3, "{}", stack.procs.log("worker.log"));
    stack.stop();

    // hum.json gives the gateway's cells Grep back.
    let config = std::env::temp_dir().join(format!("hum-gw-{}.json", std::process::id()));
    std::fs::write(&config, r#"{"gateway": {"builtinTools": ["Grep"]}}"#).unwrap();
    let stack = Stack::start_with(
        json!({}),
        &["--config", config.to_str().unwrap()],
        json!({"cancelGraceMs": 300}),
    );
    let text = said(&stack, "DESCRIBE_TOOL Grep DESCRIBE_TOOL Read", &[]);
    assert!(
        text.contains("[Grep is built in]") && text.contains("[Read is not offered]"),
        "{text}"
    );
    stack.stop();
    let _ = std::fs::remove_file(&config);
}

/// `response_format` is honoured, never answered with prose: the official
/// client's `parse` with a pydantic model gets a valid object (at once, or
/// after one repair turn in the same cell), an answer that cannot be made
/// valid is a 400 in OpenAI's shape, `json_object` and a streamed request
/// get JSON.
#[test]
fn structured_output_is_checked_repaired_once_and_refused_when_still_invalid() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let stack = Stack::start_with(json!({}), &[], json!({"cancelGraceMs": 300}));
    let seen = run_client(&python, &stack, "structured.py");
    let oslo = json!({"city": "Oslo", "temp": 3});
    assert_eq!(seen["valid"], oslo, "{seen}");
    assert_eq!(seen["repaired"], oslo, "{seen}");
    assert!(
        stack
            .procs
            .log("gateway.log")
            .contains("gateway.structured_repair"),
        "{}",
        stack.procs.log("gateway.log")
    );
    for refused in ["prose", "plain"] {
        assert_eq!(seen[refused], 400, "{refused}: {seen}");
        assert!(
            seen[format!("{refused}_message")]
                .as_str()
                .is_some_and(|m| m.contains("requested shape")),
            "{seen}"
        );
    }
    assert_eq!(seen["json_object"], json!({"ok": true}));
    assert_eq!(seen["streamed"], json!({"ok": 1}));
    // Anthropic's way: a forced tool whose input is checked, repaired once
    // (the agent is answered why and calls again), refused when no call.
    let forced = json!({"stop": "tool_use", "inputs": [oslo]});
    assert_eq!(seen["forced_valid"], forced, "{seen}");
    assert_eq!(seen["forced_repaired"], forced, "{seen}");
    assert_eq!(seen["forced_none"], 400, "{seen}");
    stack.stop();
}

/// LangChain's default `with_structured_output` (a json_schema
/// `response_format` through the official client) gets a valid object, and
/// prose is a 400, not the "Invalid JSON" parse failure it met before.
#[test]
fn langchains_default_structured_output_gets_a_valid_object() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let stack = Stack::start_with(json!({}), &[], json!({"cancelGraceMs": 300}));
    let seen = run_client(&python, &stack, "langchain.py");
    assert_eq!(
        seen["structured"],
        json!({"city": "Oslo", "temp": 3}),
        "{seen}"
    );
    assert_eq!(seen["prose"], 400, "{seen}");
    stack.stop();
}
