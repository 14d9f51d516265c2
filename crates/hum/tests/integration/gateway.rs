//! `hum gateway`: OpenAI's chat completions over hum, with curl-like raw
//! HTTP against the real daemon, worker and sim cells.

use crate::common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;

/// The process stack with a gateway in front of it.
pub(crate) struct Stack {
    pub(crate) procs: crate::common::stack::Stack,
    gateway: Child,
    pub(crate) addr: String,
    /// The Ollama door's address, when the test opened it.
    pub(crate) ollama: Option<String>,
    /// Sent with every request unless the test passes its own credentials.
    token: Option<String>,
}

/// The token every stack's gateway requires unless a test sets its own.
pub(crate) const TOKEN: &str = "test-token-0123";

impl Stack {
    pub(crate) fn start(sim_env: Value) -> Stack {
        Stack::start_with(sim_env, &[], json!({"cancelGraceMs": 300}))
    }

    pub(crate) fn start_with(sim_env: Value, gateway_args: &[&str], nest: Value) -> Stack {
        let mut procs = crate::common::stack::Stack::start(Value::Null, &[]);
        let config = json!({"claude": {"enabled": false}, "sim": {"env": sim_env}, "nest": nest, "cwd": procs.sb.work()});
        procs.worker = Some(procs.worker_with(config, &[]));
        let mut args = gateway_args.to_vec();
        let own_auth = gateway_args.iter().any(|a| a.starts_with("--token"));
        if !own_auth {
            args.extend_from_slice(&["--token", TOKEN]);
        }
        let (gateway, addr, ollama) = procs.gateway_doors(&args);
        let stack = Stack {
            procs,
            gateway,
            addr,
            ollama,
            token: (!own_auth).then(|| TOKEN.to_owned()),
        };
        // Wait until the worker is there.
        let auth: Vec<(&str, String)> = gateway_args
            .windows(2)
            .find(|w| w[0] == "--token")
            .map(|w| vec![("authorization", format!("Bearer {}", w[1]))])
            .unwrap_or_default();
        let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert!(wait_until(PROMPTLY, || {
            let (_, _, body) = stack.request("GET", "/v1/models", None, &auth);
            serde_json::from_str::<Value>(&body)
                .is_ok_and(|v| v["data"].as_array().is_some_and(|d| !d.is_empty()))
        }));
        stack
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        let has_auth = headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("x-api-key")
        });
        if let (Some(t), false) = (&self.token, has_auth) {
            req += &format!("authorization: Bearer {t}\r\n");
        }
        req += "\r\n";
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.request("GET", path, None, &[]);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    pub(crate) fn chat(&self, body: Value, headers: &[(&str, &str)]) -> (u16, String, Value) {
        let (status, head, body) =
            self.request("POST", "/v1/chat/completions", Some(&body), headers);
        (
            status,
            head,
            serde_json::from_str(&body).unwrap_or(Value::Null),
        )
    }

    pub(crate) fn stop(mut self) {
        crate::common::stack::stop_child(&mut self.gateway);
        self.procs.stop();
    }
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

#[test]
fn chat_completions_keep_a_conversation_on_one_cell() {
    let stack = Stack::start(json!({}));
    let (status, models) = stack.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "sim"));

    let (status, head, first) = stack.chat(
        json!({"model": "sim", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["object"], "chat.completion");
    assert_eq!(content(&first), "SIM-REPLY #1: you said <hi>");
    assert!(first["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(head.to_lowercase().contains("x-hum-session: conv-"));
    // The next request of the same conversation lands on the same cell and
    // sends it only the new turn (the simulator counts turns per session).
    let history = json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": content(&first)}, {"role": "user", "content": "more"}]);
    let (_, _, second) = stack.chat(json!({"model": "sim", "messages": history}), &[]);
    assert_eq!(
        content(&second),
        "SIM-REPLY #2: you said <more>; before that <hi>"
    );
    // A conversation the gateway never saw is replayed to a new cell.
    let unknown = json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]);
    let (_, _, third) = stack.chat(json!({"model": "sim", "messages": unknown}), &[]);
    let text = content(&third);
    assert!(
        text.starts_with("SIM-REPLY #1")
            && text.contains("[user] a")
            && text.contains("[assistant] b"),
        "{text}"
    );
    // The session header wins.
    let (_, _, h1) = stack.chat(
        json!({"model": "sim", "messages": [{"role": "user", "content": "x"}]}),
        &[("x-hum-session", "mine")],
    );
    let (_, _, h2) = stack.chat(
        json!({"model": "sim", "messages": [{"role": "user", "content": "y"}]}),
        &[("X-Claude-Code-Session-Id", "mine")],
    );
    assert_eq!(content(&h1), "SIM-REPLY #1: you said <x>");
    assert!(
        content(&h2).starts_with("SIM-REPLY #2: you said <y>"),
        "{}",
        content(&h2)
    );
    stack.stop();
}

#[test]
fn two_clients_going_on_from_the_same_history_at_once_each_get_their_own_turn() {
    // Turns long enough that the second request is decided while the
    // first's turn is on, however slow the machine (they are sent together).
    let stack = Stack::start(json!({"HUM_SIM_TURN_DELAY_MS": "2000"}));
    let (status, _, first) = stack.chat(
        json!({"model": "sim", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(status, 200, "{first}");
    let history = |next: &str| {
        json!({"model": "sim", "messages": [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": content(&first)}, {"role": "user", "content": next}]})
    };
    // Two clients (a retry, two evaluators) send the same continuation at
    // once: neither is refused, and neither sees the other's message.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| stack.chat(history("left"), &[]));
        let b = scope.spawn(|| stack.chat(history("right"), &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    for ((status, _, body), mine, other) in [(&a, "left", "right"), (&b, "right", "left")] {
        assert_eq!(*status, 200, "{body}");
        let text = content(body);
        // Its own message is what the turn answers (as the new turn of
        // the replayed history, or of the conversation's own cell).
        assert!(text.contains(&format!("{mine}>")), "{text}");
        assert!(
            !text.contains(other),
            "one conversation's turn saw the other's: {text}"
        );
        assert!(text.contains("hi"), "the history reached the turn: {text}");
    }
    stack.stop();
}

#[test]
fn streaming_chunks_end_with_done_and_errors_have_openai_shapes() {
    let stack = Stack::start(json!({}));
    let (status, _, body) = stack.request("POST", "/v1/chat/completions", Some(&json!({"model": "sim", "stream": true, "messages": [{"role": "user", "content": "stream"}]})), &[]);
    assert_eq!(status, 200);
    let frames: Vec<&str> = body
        .split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|f| f.trim().trim_start_matches("data: "))
        .collect();
    assert_eq!(frames.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "SIM-REPLY #1: you said <stream>");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(
        chunks.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    let (status, _, err) = stack.chat(
        json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
        &[],
    );
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "model_not_found");
    let (status, _, err) = stack.chat(json!({"messages": []}), &[]);
    assert_eq!(status, 400);
    assert_eq!(err["error"]["type"], "invalid_request_error");
    stack.stop();
}

#[test]
fn a_client_that_disconnects_mid_stream_cancels_its_turn() {
    let stack = Stack::start(json!({"HUM_SIM_CHUNKS": "200", "HUM_SIM_CHUNK_DELAY_MS": "50"}));
    let mut s = TcpStream::connect(&stack.addr).unwrap();
    let body =
        json!({"model": "sim", "stream": true, "messages": [{"role": "user", "content": "long"}]})
            .to_string();
    s.write_all(format!("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("SIM-REPLY") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early");
        seen += &String::from_utf8_lossy(&buf[..n]);
    }
    drop(s);
    let log = stack.procs.sb.dir.path().join("worker.log");
    assert!(
        wait_until(PROMPTLY, || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("turn.cancelled")),
        "the turn was not cancelled"
    );
    stack.stop();
}

#[test]
fn anthropic_messages_plain_and_streaming() {
    let stack = Stack::start(json!({}));
    let post = |body: Value| -> (u16, Value) {
        let (status, _, text) = stack.request("POST", "/v1/messages", Some(&body), &[]);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    let (status, first) = post(
        json!({"model": "sim", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}], "metadata": {"user_id": "ann"}}),
    );
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["type"], "message");
    assert_eq!(
        first["content"][0]["text"],
        "SIM-REPLY #1: you said <hello>"
    );
    assert_eq!(first["stop_reason"], "end_turn");
    assert!(first["usage"]["output_tokens"].as_u64().unwrap() > 0);
    // Same user id: same cell, only the new turn sent.
    let (_, second) = post(
        json!({"model": "sim", "max_tokens": 100, "metadata": {"user_id": "ann"}, "messages": [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": [{"type": "text", "text": first["content"][0]["text"]}]},
        {"role": "user", "content": [{"type": "text", "text": "again"}]}]}),
    );
    assert_eq!(
        second["content"][0]["text"],
        "SIM-REPLY #2: you said <again>; before that <hello>"
    );

    let (status, _, body) = stack.request("POST", "/v1/messages", Some(&json!({"model": "sim", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "s"}]})), &[]);
    assert_eq!(status, 200);
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events[1], "content_block_start");
    assert!(
        events[2..events.len() - 3]
            .iter()
            .all(|e| *e == "content_block_delta")
            && events.len() > 5
    );
    assert_eq!(
        &events[events.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let text: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "SIM-REPLY #1: you said <s>");

    let (status, err) = post(
        json!({"model": "gpt-9", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(status, 404);
    assert_eq!(
        (err["type"].as_str(), err["error"]["type"].as_str()),
        (Some("error"), Some("not_found_error"))
    );
    stack.stop();
}

/// The Python interpreter with `openai` and `anthropic` installed:
/// `$HUM_TEST_PYTHON` (`.ci/run` makes the virtual environment). In CI its
/// absence is a failure; elsewhere the test says loudly that it did not run.
pub(crate) fn python_with_clients() -> Option<String> {
    match std::env::var("HUM_TEST_PYTHON")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("HUM_TEST_PYTHON is not set: .ci/run must create the client venv")
        }
        None => {
            let _ = std::io::stderr().write_all(
                b"\n*** NOT RUN: the client-library tests need HUM_TEST_PYTHON (see .ci/run) ***\n",
            );
            None
        }
    }
}

/// Runs `tests/clients/<script>` against the stack's gateway and reads the
/// JSON it prints; its failure shows its stderr and the worker's log.
pub(crate) fn run_client(python: &str, stack: &Stack, script: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = std::process::Command::new(python)
        .arg(path)
        .arg(&stack.addr)
        .env("HUM_TEST_GATEWAY_TOKEN", TOKEN)
        .env(TAG_VAR, &stack.procs.sb.tag)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        stack.procs.log("worker.log")
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_official_openai_and_anthropic_clients_work_against_hum() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let stack = Stack::start(json!({}));
    let seen = run_client(&python, &stack, "clients.py");
    assert_eq!(seen["models"], json!(["sim"]));
    assert_eq!(seen["openai_first"], "SIM-REPLY #1: you said <hi>");
    assert!(seen["openai_usage"].as_u64().unwrap() > 0);
    assert_eq!(
        seen["openai_second"],
        "SIM-REPLY #2: you said <more>; before that <hi>"
    );
    assert_eq!(seen["openai_stream"], "SIM-REPLY #1: you said <stream>");
    assert_eq!(seen["openai_404"], 404);
    assert_eq!(seen["anthropic_text"], "SIM-REPLY #1: you said <bonjour>");
    assert!(seen["anthropic_usage"].as_u64().unwrap() > 0);
    assert_eq!(seen["anthropic_stream"], "SIM-REPLY #1: you said <flux>");
    // A stream reports the turn's input tokens at its start, its output at
    // its end (the old gateway said 0 input tokens).
    let starts = seen["anthropic_stream_start_input"].as_array().unwrap();
    assert!(
        starts.len() == 1 && starts[0].as_u64().is_some_and(|n| n > 0),
        "{seen}"
    );
    let used = &seen["anthropic_stream_usage"];
    assert!(
        used["input_tokens"].as_u64().is_some_and(|n| n > 0)
            && used["output_tokens"].as_u64().is_some_and(|n| n > 0),
        "{used}"
    );
    assert_eq!(seen["anthropic_404"], 404);
    stack.stop();
}

/// How many cells were started for `sid`, by the worker's log.
pub(crate) fn cells_started_for(stack: &Stack, sid: &str) -> usize {
    stack
        .procs
        .log("worker.log")
        .lines()
        .filter(|l| l.contains("cell.spawned") && l.contains(sid))
        .count()
}

/// Function calling, each API with its official client running its own
/// tool loop (plain and streaming): the client sees the calls, runs its
/// functions, sends the results, gets the final answer; the agent's MCP
/// calls got exactly the client's results (the sim says each in its answer);
/// one sid and one cell served the whole loop.
#[test]
fn the_official_clients_run_tool_loops_through_hum() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let stack = Stack::start(json!({}));
    let seen = run_client(&python, &stack, "tools.py");
    let paris = json!([[["get_weather", {"city": "Paris"}]], [["get_time", {"zone": "CET"}]]]);
    for api in [
        "openai_plain",
        "openai_stream",
        "anthropic_plain",
        "anthropic_stream",
    ] {
        let run = &seen[api];
        assert_eq!(run["rounds"], paris, "{api}: {run}");
        let final_text = run["final"].as_str().unwrap();
        assert!(
            final_text.contains("said sunny in Paris") && final_text.contains("said 12:00 in CET"),
            "{api}: the agent did not get the client's results: {final_text}"
        );
        // A response that ends with calls reports the CLI's usage of the
        // model call that made them.
        let used = run["call_usage"].as_array().unwrap();
        assert!(
            used.len() == 2 && used.iter().all(|u| u.as_u64().is_some_and(|n| n > 0)),
            "{api}: usage of the responses that ended with calls: {used:?}"
        );
    }
    for api in [
        "openai_plain",
        "openai_stream",
        "anthropic_plain",
        "anthropic_stream",
    ] {
        let sids = seen[api]["sids"].as_array().unwrap();
        assert_eq!(sids.len(), 1, "{api}: one sid for the whole loop: {sids:?}");
        let sid = sids[0].as_str().unwrap();
        assert_eq!(
            cells_started_for(&stack, sid),
            1,
            "{api}: one cell for the loop"
        );
    }
    // Two calls made together come back in one response.
    let both = json!([[["get_weather", {"city": "Oslo"}], ["get_time", {"zone": "UTC"}]]]);
    for api in ["openai_together", "anthropic_together"] {
        assert_eq!(seen[api]["rounds"], both, "{api}: {}", seen[api]);
        let final_text = seen[api]["final"].as_str().unwrap();
        assert!(
            final_text.contains("said sunny in Oslo") && final_text.contains("said 12:00 in UTC")
        );
    }
    // Text written before a call is in the response that carries the call.
    for api in ["openai_text_first", "anthropic_text_first"] {
        assert_eq!(
            seen[api]["first_text"], "Let me check.",
            "{api}: {}",
            seen[api]
        );
        assert_eq!(seen[api]["rounds"].as_array().unwrap().len(), 1);
    }
    assert_eq!(seen["openai_unknown_call"], 400);
    assert_eq!(seen["anthropic_unknown_call"], 400);
    stack.stop();
}

/// A client that never sends its results: the worker answers the pending
/// call with an error after `tools.callTimeoutMs`, the turn ends, a late
/// result still continues the conversation (once), and nothing is left.
#[test]
fn a_client_that_never_returns_its_results_ends_the_turn_and_a_late_result_still_continues_it() {
    let mut procs = crate::common::stack::Stack::start(Value::Null, &[]);
    let config = json!({"claude": {"enabled": false}, "cwd": procs.sb.work(),
                        "tools": {"callTimeoutMs": 1000}});
    procs.worker = Some(procs.worker_with(config, &[]));
    let (gateway, addr) = procs.gateway(&["--token", TOKEN]);
    let stack = Stack {
        procs,
        gateway,
        addr,
        ollama: None,
        token: Some(TOKEN.to_owned()),
    };
    let tools = json!([{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]);
    let mut first = (0, String::new(), Value::Null);
    assert!(wait_until(PROMPTLY, || {
        first = stack.chat(
            json!({"model": "sim", "tools": tools,
                   "messages": [{"role": "user", "content": "CALL_TOOL get_time {\"zone\": \"UTC\"}"}]}),
            &[],
        );
        first.0 == 200
    }));
    let (_, head, resp) = first;
    assert_eq!(resp["choices"][0]["finish_reason"], "tool_calls", "{resp}");
    let call = resp["choices"][0]["message"]["tool_calls"][0].clone();
    let sid = head
        .lines()
        .find_map(|l| l.strip_prefix("x-hum-session: "))
        .unwrap()
        .trim()
        .to_owned();
    // The turn ends on its own: the worker times the call out, the agent
    // goes on and finishes, and the gateway lets go of the parked turn.
    assert!(
        wait_until(PROMPTLY, || stack
            .procs
            .log("worker.log")
            .contains("tool.timed_out")),
        "the call never timed out:\n{}",
        stack.procs.log("worker.log")
    );
    assert!(
        wait_until(PROMPTLY, || stack.procs.log("gateway.log").lines().any(
            |l| l.contains("gateway.turn_unparked") && l.contains("expired")
        )),
        "the gateway kept the turn:\n{}",
        stack.procs.log("gateway.log")
    );
    assert_eq!(cells_started_for(&stack, &sid), 1);
    // Its results come late: they continue the conversation in a new turn
    // of its session, which hands the agent the result.
    let late = json!({"model": "sim", "tools": tools, "messages": [
        {"role": "user", "content": "CALL_TOOL get_time {\"zone\": \"UTC\"}"},
        {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
        {"role": "tool", "tool_call_id": call["id"], "content": "12:00"}]});
    let (status, head, resp) = stack.chat(late.clone(), &[]);
    assert_eq!(status, 200, "a late result was refused: {resp}");
    assert!(head.contains(&format!("x-hum-session: {sid}")), "{head}");
    assert!(
        content(&resp).contains("get_time({\"zone\":\"UTC\"}) returned: 12:00"),
        "{resp}"
    );
    // Once: the same results again are no continuation.
    let again = stack.chat(late, &[]);
    assert_eq!(again.0, 400, "{again:?}");
    assert_eq!(again.2["error"]["type"], "invalid_request_error");
    stack.stop();
}

#[test]
fn a_token_is_required_when_set_and_off_loopback() {
    let stack = Stack::start_with(json!({}), &["--token", "s3cret"], json!({}));
    let body = json!({"model": "sim", "messages": [{"role": "user", "content": "x"}]});
    let (status, _, err) = stack.chat(body.clone(), &[]);
    assert_eq!(status, 401);
    assert_eq!(err["error"]["type"], "authentication_error");
    let (status, _, _) = stack.chat(body.clone(), &[("authorization", "Bearer wrong")]);
    assert_eq!(status, 401);
    let (status, _, ok) = stack.chat(body, &[("authorization", "Bearer s3cret")]);
    assert_eq!(status, 200, "{ok}");
    let anth =
        json!({"model": "sim", "max_tokens": 5, "messages": [{"role": "user", "content": "y"}]});
    let (status, _, _) = stack.request(
        "POST",
        "/v1/messages",
        Some(&anth),
        &[("x-api-key", "s3cret")],
    );
    assert_eq!(status, 200);
    let (status, _, text) = stack.request("POST", "/v1/messages", Some(&anth), &[]);
    assert_eq!(status, 401);
    assert!(text.contains("authentication_error"));
    // Off loopback without a token given explicitly: refused at start.
    let out = stack
        .procs
        .sb
        .hum(&["gateway", "--listen", "0.0.0.0:0"])
        .env_remove("HUM_GATEWAY_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = stack
        .procs
        .sb
        .hum(&["gateway", "--listen", "0.0.0.0:0", "--no-auth"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--no-auth off loopback");
    stack.stop();
}

#[test]
fn an_overloaded_pool_answers_429_with_retry_after() {
    let stack = Stack::start_with(
        json!({"HUM_SIM_TURN_DELAY_MS": "1500"}),
        &[],
        json!({"maxActiveCells": 1, "maxQueuedPrompts": 1}),
    );
    let addr = stack.addr.clone();
    let slow = |sid: &'static str| {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let body = json!({"model": "sim", "messages": [{"role": "user", "content": "slow"}]})
                .to_string();
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(format!("POST /v1/chat/completions HTTP/1.0\r\nx-hum-session: {sid}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            r
        })
    };
    // One turn runs, one waits: the queue (1) is full.
    let running = slow("one");
    let log = stack.procs.sb.dir.path().join("worker.log");
    assert!(wait_until(PROMPTLY, || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("sid=one")));
    let queued = slow("two");
    assert!(wait_until(PROMPTLY, || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("sid=two")));
    let (status, head, err) = stack.chat(
        json!({"model": "sim", "messages": [{"role": "user", "content": "x"}]}),
        &[("x-hum-session", "three")],
    );
    assert_eq!(status, 429, "{err}");
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert!(head.to_lowercase().contains("retry-after: "), "{head}");
    let body = json!({"model": "sim", "input": "x"});
    let (status, head, err) = stack.request(
        "POST",
        "/v1/responses",
        Some(&body),
        &[("x-hum-session", "four")],
    );
    assert_eq!(status, 429, "{err}");
    assert!(head.to_lowercase().contains("retry-after: "), "{head}");
    let err: Value = serde_json::from_str(&err).unwrap();
    assert_eq!(err["error"]["type"], "rate_limit_error", "{err}");
    assert!(running.join().unwrap().starts_with("HTTP/1.0 200"));
    assert!(queued.join().unwrap().starts_with("HTTP/1.0 200"));
    stack.stop();
}

/// The README's two function-calling examples, run as printed (model and
/// question from their own knobs: the sim, and a question that makes it
/// call the tool), each must print the answer built from its function's
/// result.
#[test]
fn the_readmes_function_calling_examples_run_their_loops() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme
        .find("#### Function calling")
        .expect("the README's function-calling section")..];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(at) = rest.find("```python\n") {
        let body = &rest[at + "```python\n".len()..];
        let end = body.find("```").unwrap();
        blocks.push(body[..end].to_owned());
        rest = &body[end..];
        if blocks.len() == 2 {
            break;
        }
    }
    assert!(blocks[0].contains("openai.OpenAI") && blocks[1].contains("anthropic.Anthropic"));
    let stack = Stack::start(json!({}));
    for (i, code) in blocks.iter().enumerate() {
        let script = stack.procs.sb.dir.path().join(format!("example{i}.py"));
        std::fs::write(&script, code).unwrap();
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(r#"CALL_TOOL get_weather {"city": "Paris"}"#)
            .env("HUM_GATEWAY", format!("http://{}", stack.addr))
            .env("OPENAI_API_KEY", TOKEN)
            .env("ANTHROPIC_API_KEY", TOKEN)
            .env("HUM_MODEL", "sim")
            .env(TAG_VAR, &stack.procs.sb.tag)
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && printed.contains("said sunny in Paris"),
            "example {i}: {printed}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stack.stop();
}

/// The first ```python block of the README after `heading`.
pub(crate) fn readme_example(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let at = readme
        .find(heading)
        .unwrap_or_else(|| panic!("the README's {heading:?}"));
    let body = &readme[at..];
    let start = body.find("```python\n").expect("a python example") + "```python\n".len();
    let end = body[start..].find("```").unwrap();
    body[start..start + end].to_owned()
}

/// The README's Responses example, as printed: its tool loop sends only
/// the results after the first request (the previous response's id names
/// the conversation), prints the answer built from its function's result,
/// and reads the response back.
#[test]
fn the_readmes_responses_example_runs_its_loop_on_previous_response_ids() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let code = readme_example("#### The Responses API, with the conversation kept by hum");
    assert!(code.contains("previous_response_id"), "{code}");
    let stack = Stack::start(json!({}));
    let script = stack.procs.sb.dir.path().join("weather_responses.py");
    std::fs::write(&script, code).unwrap();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(r#"CALL_TOOL get_weather {"city": "Paris"}"#)
        .env("HUM_GATEWAY", format!("http://{}", stack.addr))
        .env("OPENAI_API_KEY", TOKEN)
        .env("HUM_MODEL", "sim")
        .env(TAG_VAR, &stack.procs.sb.tag)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && printed.contains("said sunny in Paris")
            && printed.trim_end().ends_with("completed"),
        "{printed}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        stack.procs.log("worker.log")
    );
    stack.stop();
}

/// `tool_choice: "none"`: the tools are not offered at all, so the agent's
/// call finds no such tool and the turn ends with text. And a client that
/// moves on with a new message instead of the results: the turn waiting for
/// them is cancelled at once, not after the worker's 5-minute call timeout,
/// and the new message is answered on the same cell.
#[test]
fn tool_choice_none_offers_nothing_and_a_new_message_abandons_a_waiting_turn() {
    let stack = Stack::start(json!({}));
    let tools = json!([{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]);
    let cue = "CALL_TOOL get_time {\"zone\": \"UTC\"}";
    let (status, _, none) = stack.chat(
        json!({"model": "sim", "tools": tools, "tool_choice": "none",
               "messages": [{"role": "user", "content": cue}]}),
        &[],
    );
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["choices"][0]["finish_reason"], "stop", "{none}");
    assert!(
        content(&none).contains("get_time failed"),
        "the tool was offered after all: {none}"
    );

    let session = [("x-hum-session", "abandoned-loop")];
    let (_, _, first) = stack.chat(
        json!({"model": "sim", "tools": tools, "messages": [{"role": "user", "content": cue}]}),
        &session,
    );
    assert_eq!(
        first["choices"][0]["finish_reason"], "tool_calls",
        "{first}"
    );
    let started = std::time::Instant::now();
    let (status, _, next) = stack.chat(
        json!({"model": "sim", "messages": [{"role": "user", "content": "never mind"}]}),
        &session,
    );
    assert_eq!(status, 200, "{next}");
    assert!(content(&next).contains("you said <never mind>"), "{next}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the new message waited {:?} behind the abandoned turn",
        started.elapsed()
    );
    assert!(stack.procs.log("gateway.log").contains("abandoned"));
    assert_eq!(cells_started_for(&stack, "abandoned-loop"), 1);
    stack.stop();
}

/// Two messages sent at once after a turn that waits for tool results,
/// both without the results and without a session header (a retry, two
/// evaluators): one goes on the waiting conversation's sid, the other gets
/// its own turn with the history replayed, and neither sees the other's.
#[test]
fn two_new_messages_at_once_after_a_waiting_turn_each_get_their_own_turn() {
    // Turns long enough that the second message is decided while the
    // first's turn is on, however slow the machine (they are sent together).
    let stack = Stack::start(json!({"HUM_SIM_TURN_DELAY_MS": "2000"}));
    let tools = json!([{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]);
    let cue = "CALL_TOOL get_time {\"zone\": \"UTC\"}";
    let (status, _, first) = stack.chat(
        json!({"model": "sim", "tools": tools, "messages": [{"role": "user", "content": cue}]}),
        &[],
    );
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["choices"][0]["finish_reason"], "tool_calls",
        "{first}"
    );
    // (No tools offered now: a turn given the history replayed would
    // call the tool again on the cue.)
    let next = |text: &str| {
        json!({"model": "sim", "messages": [{"role": "user", "content": cue},
            first["choices"][0]["message"].clone(), {"role": "user", "content": text}]})
    };
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| stack.chat(next("left"), &[]));
        let b = scope.spawn(|| stack.chat(next("right"), &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    for ((status, _, body), mine, other) in [(&a, "left", "right"), (&b, "right", "left")] {
        assert_eq!(*status, 200, "{body}");
        let text = content(body);
        assert!(text.contains(&format!("{mine}>")), "{body}");
        assert!(
            !text.contains(other),
            "one message's turn saw the other's: {text}"
        );
    }
    assert!(stack.procs.log("gateway.log").contains("abandoned"));
    stack.stop();
}

/// Issue 24, item 4: a client holding the gateway token cannot answer
/// another conversation's parked call, even knowing its id; the refusal
/// reads exactly as for an id that does not exist.
#[test]
fn another_conversation_cannot_answer_a_parked_call() {
    let stack = Stack::start(json!({}));
    let tools = json!([{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]);
    let cue = |zone: &str| format!("CALL_TOOL get_time {{\"zone\": \"{zone}\"}}");
    let open = |zone: &str, headers: &[(&str, &str)]| {
        let (status, _, resp) = stack.chat(
            json!({"model": "sim", "tools": tools, "messages": [{"role": "user", "content": cue(zone)}]}),
            headers,
        );
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp["choices"][0]["finish_reason"], "tool_calls", "{resp}");
        resp["choices"][0]["message"]["tool_calls"][0].clone()
    };
    let answer = |first: &str, call: &Value, id: &str, headers: &[(&str, &str)]| {
        stack.chat(
            json!({"model": "sim", "tools": tools, "messages": [
                {"role": "user", "content": first},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": id, "content": "FORGED 13:37"}]}),
            headers,
        )
    };
    // The victim's conversation, by its history and by a session name.
    let victim = open("UTC", &[]);
    let named = open("CET", &[("x-hum-session", "victim")]);
    // The attacker's own conversation makes its own call (and sees that
    // ids are not a counter away from each other).
    let own = open("PST", &[]);
    let (id_v, id_own) = (victim["id"].as_str().unwrap(), own["id"].as_str().unwrap());
    let hex = |id: &str| id.rsplit('-').next().unwrap().to_owned();
    assert_eq!(hex(id_v).len(), 32, "{id_v}");
    assert_ne!(hex(id_v)[..8], hex(id_own)[..8], "{id_v} {id_own}");
    // Unknown id: the baseline refusal.
    let unknown = answer(
        &cue("PST"),
        &own,
        "call-00000000000000000000000000000000",
        &[],
    );
    assert_eq!(unknown.0, 400, "{unknown:?}");
    let said = |r: &(u16, String, Value), id: &str| {
        r.2["error"]["message"]
            .as_str()
            .unwrap()
            .replace(id, "<id>")
    };
    // From another history, from another name, from no name: all refused
    // as if the id did not exist.
    for (first, call, id, headers) in [
        (cue("PST"), &own, id_v, vec![]),
        (
            cue("UTC"),
            &victim,
            id_v,
            vec![("x-hum-session", "attacker")],
        ),
        (cue("CET"), &named, named["id"].as_str().unwrap(), vec![]),
        (
            cue("CET"),
            &named,
            named["id"].as_str().unwrap(),
            vec![("x-hum-session", "attacker")],
        ),
    ] {
        let r = answer(&first, call, id, &headers);
        assert_eq!(r.0, 400, "a foreign result was taken: {r:?}");
        assert_eq!(r.2["error"]["type"], unknown.2["error"]["type"]);
        assert_eq!(
            said(&r, id),
            said(&unknown, "call-00000000000000000000000000000000")
        );
    }
    // Their own conversations answer their own calls.
    let ok = answer(&cue("UTC"), &victim, id_v, &[]);
    assert_eq!(ok.0, 200, "{ok:?}");
    assert!(content(&ok.2).contains("FORGED 13:37"), "{}", ok.2);
    let ok = answer(
        &cue("CET"),
        &named,
        named["id"].as_str().unwrap(),
        &[("x-hum-session", "victim")],
    );
    assert_eq!(ok.0, 200, "{ok:?}");
    stack.stop();
}

#[test]
fn the_official_openai_client_speaks_the_responses_api_to_hum() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let stack = Stack::start(json!({}));
    let seen = run_client(&python, &stack, "responses.py");
    assert_eq!(seen["plain"], "SIM-REPLY #1: you said <hi>", "{seen}");
    assert!(seen["plain_usage"].as_u64().unwrap() > 0);
    assert!(seen["plain_id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(
        seen["second"], "SIM-REPLY #2: you said <more>; before that <hi>",
        "the same conversation's cell"
    );
    assert_eq!(seen["stream_text"], "SIM-REPLY #1: you said <stream>");
    assert_eq!(seen["stream_final"], seen["stream_text"]);
    let events: Vec<&str> = seen["stream_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(events.first(), Some(&"response.created"), "{events:?}");
    assert_eq!(events.last(), Some(&"response.completed"), "{events:?}");
    for e in [
        "response.output_item.added",
        "response.output_text.delta",
        "response.output_item.done",
    ] {
        assert!(events.contains(&e), "{e} missing: {events:?}");
    }
    assert_eq!(
        seen["loop_rounds"],
        json!([["get_weather", {"city": "Paris"}]])
    );
    let last = seen["loop_final"].as_str().unwrap();
    assert!(last.contains("sunny in Paris"), "{last}");
    assert_eq!(seen["structured"], json!({"city": "Paris", "temp": 21}));
    assert_eq!(
        seen["follow"], "SIM-REPLY #3: you said <again>; before that <more>",
        "previous_response_id: the same conversation, only the new input sent"
    );
    assert_eq!(seen["follow_sid"], seen["second_sid"]);
    assert_ne!(seen["other_sid"], seen["second_sid"], "a new conversation");
    assert_eq!(seen["forged"], 404, "an id hum did not give out");
    assert_eq!(
        seen["retrieved"], seen["plain"],
        "a kept response reads back"
    );
    assert_eq!(seen["retrieved_stream"], seen["stream_text"]);
    assert_eq!(seen["unkept"], 404, "store: false keeps nothing");
    assert_eq!(seen["retrieve_forged"], 404);
    assert_eq!(seen["deleted"], 404, "a deleted response is gone");
    assert_eq!(seen["unknown_model"], json!([404, "model_not_found"]));
    assert_eq!(seen["bad"], json!([400, "invalid_request_error"]));
    stack.stop();
}

#[test]
fn the_openai_agents_sdk_runs_its_tool_loop_on_its_default_responses_model() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let stack = Stack::start(json!({}));
    let seen = run_client(&python, &stack, "agents_sdk.py");
    assert_eq!(seen["called"], json!(["Oslo", "Lima"]), "{seen}");
    let (plain, streamed) = (
        seen["final"].as_str().unwrap(),
        seen["streamed_final"].as_str().unwrap(),
    );
    assert!(plain.contains("sunny in Oslo"), "{plain}");
    assert!(streamed.contains("sunny in Lima"), "{streamed}");
    assert_eq!(seen["streamed_deltas"].as_str(), Some(streamed));
    stack.stop();
}
