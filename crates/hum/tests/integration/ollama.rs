//! The Ollama door (issue 30): the official ollama Python and JavaScript
//! clients against sim cells (chat plain, streamed, a tool round-trip,
//! `format`, generate, list, show, ps, a follow-up on the same cell), its
//! errors in Ollama's shape, and who gets in without a token (the user's
//! own processes over loopback, nobody else).

use crate::common::*;
use crate::gateway::{python_with_clients, Stack, TOKEN};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A stack whose gateway also opens its Ollama door, on a free port.
fn ollama_stack(sim_env: Value, nest: Value) -> (Stack, String) {
    let stack = Stack::start_with(sim_env, &["--ollama-listen", "127.0.0.1:0"], nest);
    let door = stack
        .ollama
        .clone()
        .expect("the gateway opened its Ollama door");
    (stack, door)
}

/// One HTTP/1.0 request to `addr`: status, lowercased head, body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req += &format!("Host: {addr}\r\n");
    }
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

/// Runs a client script with `program` against the door and reads the
/// JSON it prints.
fn run_script(
    program: &str,
    script: &str,
    door: &str,
    stack: &Stack,
    env: &[(&str, &str)],
) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = Command::new(program)
        .arg(path)
        .arg(door)
        .env_remove("OLLAMA_API_KEY")
        .env_remove("OLLAMA_HOST")
        .envs(env.iter().copied())
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
fn the_official_ollama_python_client_chats_generates_and_lists_through_hum() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let (stack, door) = ollama_stack(json!({}), json!({"cancelGraceMs": 300}));
    let seen = run_script(&python, "ollama_client.py", &door, &stack, &[]);
    assert_eq!(seen["list"], json!(["sim"]), "{seen}");
    assert_eq!(seen["list_family"], "sim", "the model's hive");
    assert_eq!(seen["show_family"], "sim");
    assert!(seen["show_capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("tools")));
    assert!(seen["version"]
        .as_str()
        .is_some_and(|v| v.split('.').count() == 3));
    assert_eq!(seen["chat"], "SIM-REPLY #1: you said <hi>");
    assert_eq!(seen["chat_done"], json!([true, "stop"]));
    let counts = seen["chat_counts"].as_array().unwrap();
    assert!(
        counts.iter().all(|c| c.as_u64().unwrap() > 0),
        "real usage: {seen}"
    );
    let d: Vec<u64> = seen["chat_durations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        d[0] > 0 && d[1] + d[2] <= d[0],
        "nanoseconds that add up: {d:?}"
    );
    assert_eq!(
        seen["second"], "SIM-REPLY #2: you said <more>; before that <hi>",
        "the same conversation's cell"
    );
    assert_eq!(seen["stream"], "SIM-REPLY #1: you said <stream>");
    assert!(seen["stream_lines"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(seen["stream_last"][0], true);
    assert_eq!(seen["stream_last"][1], "stop");
    assert!(seen["stream_last"][2].as_u64().unwrap() > 0);
    assert_eq!(
        seen["tool_rounds"],
        json!([["get_weather", {"city": "Paris"}]])
    );
    assert!(
        seen["tool_final"]
            .as_str()
            .unwrap()
            .contains("sunny in Paris"),
        "{seen}"
    );
    assert_eq!(
        seen["stream_tool_rounds"],
        json!([["get_weather", {"city": "Rome"}]])
    );
    assert!(
        seen["stream_tool_final"]
            .as_str()
            .unwrap()
            .contains("sunny in Rome"),
        "{seen}"
    );
    assert_eq!(seen["format"], json!({"city": "Paris", "temp": 21}));
    assert_eq!(seen["generate"][0], "SIM-REPLY #1: you said <why>");
    assert_eq!(seen["generate"][1], true);
    assert_eq!(seen["generate_stream"], "SIM-REPLY #1: you said <flow>");
    assert_eq!(seen["load"], "load", "an empty prompt only loads");
    assert_eq!(seen["ps"], json!(["sim"]), "the warm cells");
    assert_eq!(seen["unknown"][0], 404, "{seen}");
    assert_eq!(seen["bad"][0], 400, "{seen}");
    assert!(seen["bad"][1].as_str().unwrap().contains("last message"));
    assert_eq!(seen["openai_models"], json!(["sim"]));
    assert_eq!(seen["openai_chat"], "SIM-REPLY #1: you said <via openai>");
    stack.stop();
}

#[test]
fn the_official_ollama_js_client_chats_with_tools_through_hum() {
    let js = match std::env::var("HUM_TEST_OLLAMA_JS")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(dir) => dir,
        None if std::env::var_os("CI").is_some() => {
            panic!("HUM_TEST_OLLAMA_JS is not set: .ci/run must install the ollama JS client")
        }
        None => {
            eprintln!("\n*** NOT RUN: the ollama JS client test needs HUM_TEST_OLLAMA_JS (see .ci/run) ***");
            return;
        }
    };
    let (stack, door) = ollama_stack(json!({}), json!({"cancelGraceMs": 300}));
    let seen = run_script(
        "node",
        "ollama_js.cjs",
        &door,
        &stack,
        &[("HUM_TEST_OLLAMA_JS", &js)],
    );
    assert_eq!(seen["list"], json!(["sim"]), "{seen}");
    assert_eq!(seen["show_family"], "sim");
    assert_eq!(seen["chat"], "SIM-REPLY #1: you said <hi>");
    assert_eq!(seen["chat_done"], json!([true, "stop"]));
    assert_eq!(seen["stream"], "SIM-REPLY #1: you said <stream>");
    assert!(seen["stream_lines"].as_u64().unwrap() >= 2);
    assert_eq!(
        seen["tool_rounds"],
        json!([["get_weather", {"city": "Oslo"}]])
    );
    assert!(
        seen["tool_final"]
            .as_str()
            .unwrap()
            .contains("sunny in Oslo"),
        "{seen}"
    );
    assert_eq!(seen["format"], json!({"ok": true}));
    assert_eq!(seen["generate"], "SIM-REPLY #1: you said <why>");
    assert_eq!(seen["ps"], json!(["sim"]));
    assert_eq!(seen["unknown"][0], 404, "{seen}");
    stack.stop();
}

/// `path` on the door as user `nobody`, with `token` if given: the status.
fn as_nobody(door: &str, path: &str, token: Option<&str>) -> u16 {
    let script = r#"
import sys, urllib.request, urllib.error
req = urllib.request.Request("http://" + sys.argv[1] + sys.argv[2])
if len(sys.argv) > 3:
    req.add_header("Authorization", "Bearer " + sys.argv[3])
try:
    print(urllib.request.urlopen(req, timeout=60).status)
except urllib.error.HTTPError as e:
    print(e.code)
"#;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.uid(65534)
        .gid(65534)
        .current_dir("/")
        .env("HOME", "/nonexistent")
        .arg("-c")
        .arg(script)
        .arg(door)
        .arg(path);
    if let Some(t) = token {
        cmd.arg(t);
    }
    let out = cmd
        .output()
        .expect("/usr/bin/python3, as nobody (a pyenv shim in root's home is not theirs to run)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn the_ollama_door_lets_in_its_own_user_without_a_token_and_nobody_else() {
    let (stack, door) = ollama_stack(json!({}), json!({}));
    // This test's own user, no token: in (Ollama's clients send none).
    let (status, _, body) = http(&door, "GET", "/api/tags", None, &[]);
    assert_eq!(status, 200, "{body}");
    // Another local user, no token: refused, in Ollama's shape.
    assert_eq!(as_nobody(&door, "/api/tags", None), 401);
    assert_eq!(
        as_nobody(&door, "/api/version", Some("wrong-token-0123")),
        401
    );
    // With the gateway's token, anyone who has it is in.
    assert_eq!(as_nobody(&door, "/api/tags", Some(TOKEN)), 200);
    // OpenAI's routes on this door follow its rule.
    let (status, _, _) = http(&door, "GET", "/v1/models", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(as_nobody(&door, "/v1/models", None), 401);
    let (status, _, body) = http(
        &door,
        "GET",
        "/v1/models",
        None,
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(status, 200, "its own user, whatever key it sends: {body}");
    // A web page in the user's browser is not the user.
    let (status, _, _) = http(
        &door,
        "POST",
        "/api/chat",
        Some(&json!({"model": "sim", "messages": [{"role": "user", "content": "x"}]})),
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(status, 403);
    let (status, _, _) = http(
        &door,
        "GET",
        "/api/tags",
        None,
        &[("Host", "rebind.example:11434")],
    );
    assert_eq!(status, 403, "a rebound name");
    stack.stop();
}

#[test]
fn the_ollama_door_answers_errors_in_ollamas_shape() {
    // Turns long enough that the pool is still full when the refused
    // requests come, on a busy machine too.
    let (stack, door) = ollama_stack(
        json!({"HUM_SIM_TURN_DELAY_MS": "4000"}),
        json!({"maxActiveCells": 1, "maxQueuedPrompts": 1, "cancelGraceMs": 300}),
    );
    let chat = |sid: &str, stream: bool| json!({"model": "sim", "stream": stream, "messages": [{"role": "user", "content": format!("slow {sid}")}]});
    let (status, _, body) = http(
        &door,
        "POST",
        "/api/chat",
        Some(&json!({"model": "sim", "messages": "nope"})),
        &[],
    );
    assert_eq!(status, 400);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert!(
        err["error"].as_str().unwrap().starts_with("messages"),
        "{err}"
    );
    let (status, _, body) = http(
        &door,
        "POST",
        "/api/show",
        Some(&json!({"model": "nowhere"})),
        &[],
    );
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = http(
        &door,
        "POST",
        "/api/chat",
        Some(&json!({"model": "nowhere"})),
        &[],
    );
    assert_eq!(status, 404, "loading an unknown model: {body}");
    let (status, _, _) = http(&door, "GET", "/api/pull", None, &[]);
    assert_eq!(status, 404);
    // One turn runs, one waits (the queue holds one): a third is refused
    // with 429 and Retry-After, streamed or not, before any line.
    let running = {
        let (door, body) = (door.clone(), chat("one", false));
        std::thread::spawn(move || {
            http(
                &door,
                "POST",
                "/api/chat",
                Some(&body),
                &[("x-hum-session", "one")],
            )
        })
    };
    let log = stack.procs.sb.dir.path().join("worker.log");
    assert!(wait_until(PROMPTLY, || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("sid=one")));
    let queued = {
        let (door, body) = (door.clone(), chat("two", true));
        std::thread::spawn(move || {
            http(
                &door,
                "POST",
                "/api/chat",
                Some(&body),
                &[("x-hum-session", "two")],
            )
        })
    };
    assert!(wait_until(PROMPTLY, || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("sid=two")));
    for stream in [false, true] {
        let (status, head, body) = http(
            &door,
            "POST",
            "/api/chat",
            Some(&chat("three", stream)),
            &[("x-hum-session", "three")],
        );
        assert_eq!(status, 429, "{body}");
        assert!(head.contains("retry-after: "), "{head}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert!(err["error"].is_string(), "{err}");
    }
    let (status, _, body) = running.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["message"]["content"],
        "SIM-REPLY #1: you said <slow one>"
    );
    // The streamed one: NDJSON lines, the last one done.
    let (status, head, body) = queued.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/x-ndjson"),
        "{head}"
    );
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["done"], true);
    let text: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(text, "SIM-REPLY #1: you said <slow two>");
    stack.stop();
}

/// The README's Ollama example, as printed, with the official client and
/// no token: its tool loop prints the answer built from its function's
/// result, then the warm cells' models.
#[test]
fn the_readmes_ollama_example_runs_its_tool_loop() {
    let Some(python) = python_with_clients() else {
        return;
    };
    let code = crate::gateway::readme_example("### The Ollama door");
    let (stack, door) = ollama_stack(json!({}), json!({"cancelGraceMs": 300}));
    let script = stack.procs.sb.dir.path().join("weather_ollama.py");
    std::fs::write(&script, code).unwrap();
    let out = Command::new(&python)
        .arg(&script)
        .arg(r#"CALL_TOOL get_weather {"city": "Paris"}"#)
        .env_remove("OLLAMA_API_KEY")
        .env("OLLAMA_HOST", format!("http://{door}"))
        .env("HUM_MODEL", "sim")
        .env(TAG_VAR, &stack.procs.sb.tag)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && printed.contains("said sunny in Paris")
            && printed.trim_end().ends_with("['sim']"),
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stack.stop();
}

/// A listener of user `nobody` (`script` prints its port), and that port.
fn nobody_listens(script: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut listener = Command::new("/usr/bin/python3")
        .uid(65534)
        .gid(65534)
        .current_dir("/")
        .env("HOME", "/nonexistent")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3, as nobody");
    let mut line = String::new();
    std::io::BufReader::new(listener.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (listener, line.trim().to_owned())
}

/// Another local user holding the port first (Ollama's, or the gateway's):
/// the gateway does not start there, and says the holder is another user,
/// whose server would get what clients send (a token, too).
#[test]
fn a_port_another_user_holds_first_is_named_not_trusted() {
    let sb = Sandbox::new();
    let script = "import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\nprint(s.getsockname()[1], flush=True)\ntime.sleep(3600)\n";
    let (mut squatter, port) = nobody_listens(script);
    let held = format!("127.0.0.1:{port}");
    let sock = sb.dir.path().join("no-humd.sock");
    for args in [
        vec!["--listen", "127.0.0.1:0", "--ollama-listen", held.as_str()],
        vec!["--listen", held.as_str(), "--ollama-listen", "off"],
    ] {
        let mut all = vec![
            "gateway",
            "--socket",
            sock.to_str().unwrap(),
            "--token",
            TOKEN,
        ];
        all.extend_from_slice(&args);
        let out = sb
            .hum(&all)
            .env("HUM_STATE_DIR", sb.dir.path().join("state"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("65534 (nobody)") && err.contains("ANOTHER USER"),
            "{err}"
        );
    }
    let _ = squatter.kill();
    let _ = squatter.wait();

    // Beside the gateway, on the other loopback address: it starts, and
    // warns that `localhost` may reach the other user.
    let script6 = script
        .replace("socket.socket()", "socket.socket(socket.AF_INET6)")
        .replace("'127.0.0.1'", "'::1'");
    let (mut squatter, port) = nobody_listens(&script6);
    let beside = format!("127.0.0.1:{port}");
    let log = sb.dir.path().join("gateway-beside.log");
    let mut gw = sb
        .hum(&[
            "gateway",
            "--socket",
            sock.to_str().unwrap(),
            "--token",
            TOKEN,
            "--listen",
            &beside,
            "--ollama-listen",
            "off",
        ])
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = hum::gateway::read_listening_addr(gw.stdout.take().unwrap());
    assert_eq!(addr.as_deref(), Some(beside.as_str()), "it starts");
    crate::common::stack::stop_child(&mut gw);
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("WARNING") && err.contains("65534 (nobody)") && err.contains("localhost"),
        "{err}"
    );
    let _ = squatter.kill();
    let _ = squatter.wait();
}

/// Ollama's calls carry no id: results answer the calls of their
/// conversation's waiting turn in order, and only when exactly one turn
/// can be it. Two conversations that began alike are refused rather than
/// crossed; a client that kept the ids hum gave names its turn exactly.
#[test]
fn unnamed_results_never_continue_another_conversations_turn() {
    let (stack, door) = ollama_stack(json!({}), json!({"cancelGraceMs": 300}));
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let question =
        json!({"role": "user", "content": "CALL_TOOL get_weather {\"city\": \"Paris\"}"});
    let ask = |messages: Value| {
        let body = json!({"model": "sim", "stream": false, "tools": tools, "messages": messages});
        let (status, head, body) = http(&door, "POST", "/api/chat", Some(&body), &[]);
        let sid = head
            .lines()
            .find_map(|l| l.strip_prefix("x-hum-session: "))
            .map(|s| s.trim().to_owned());
        (
            status,
            sid,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    let (status, sid_a, a) = ask(json!([question]));
    assert_eq!(status, 200, "{a}");
    let (status, sid_b, b) = ask(json!([question]));
    assert_eq!(status, 200, "{b}");
    assert_ne!(sid_a, sid_b, "two conversations");
    let call_of = |v: &Value| v["message"]["tool_calls"][0].clone();
    let (call_a, call_b) = (call_of(&a), call_of(&b));
    assert_eq!(call_a["function"]["arguments"], json!({"city": "Paris"}));
    // Without ids both waiting turns could be it: refused, nothing used up.
    let mut bare = call_a.clone();
    bare.as_object_mut().unwrap().remove("id");
    let results = |call: &Value, said: &str| {
        json!([question, {"role": "assistant", "content": "", "tool_calls": [call]},
               {"role": "tool", "content": said, "tool_name": "get_weather"}])
    };
    let (status, _, refused) = ask(results(&bare, "sunny, for whom?"));
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("x-hum-session"),
        "{refused}"
    );
    // With the ids hum gave, each result goes to its own turn.
    for (call, sid, said) in [
        (&call_b, &sid_b, "sunny for B"),
        (&call_a, &sid_a, "sunny for A"),
    ] {
        let (status, got, done) = ask(results(call, said));
        assert_eq!(status, 200, "{done}");
        assert_eq!(&got, sid);
        let text = done["message"]["content"].as_str().unwrap_or_default();
        assert!(text.contains(said), "{done}");
    }
    // OpenAI's door never answers by place: a result without its call id
    // is refused as before.
    let (status, _, body) = stack.request(
        "POST",
        "/v1/chat/completions",
        Some(
            &json!({"model": "sim", "tools": tools, "messages": [question,
            {"role": "assistant", "content": null, "tool_calls": []},
            {"role": "tool", "content": "x"}]}),
        ),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    stack.stop();
}
