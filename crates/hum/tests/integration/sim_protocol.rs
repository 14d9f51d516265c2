//! `hum sim-agent` speaks like the captured claude 2.1.332: same events in
//! the same order with the same key fields, same session rules, same life
//! cycle. Every test ends by proving it left no process behind.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

/// Key paths a consumer of claude's stream-json reads; wherever the fixture
/// has one, the simulator must have it too.
const KEY_PATHS: &[&[&str]] = &[
    &["type"],
    &["subtype"],
    &["session_id"],
    &["uuid"],
    &["model"],
    &["cwd"],
    &["tools"],
    &["mcp_servers"],
    &["status"],
    &["event", "type"],
    &["event", "index"],
    &["event", "content_block", "type"],
    &["event", "delta", "type"],
    &["event", "delta", "text"],
    &["event", "delta", "stop_reason"],
    &["event", "message", "id"],
    &["event", "message", "model"],
    &["event", "message", "usage", "input_tokens"],
    &["event", "usage", "output_tokens"],
    &["message", "content"],
    &["message", "model"],
    &["message", "role"],
    &["is_error"],
    &["result"],
    &["usage", "input_tokens"],
    &["usage", "output_tokens"],
    &["total_cost_usd"],
    &["num_turns"],
    &["duration_ms"],
    &["stop_reason"],
];

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

#[test]
fn one_turn_matches_the_captured_claude_turn() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--model", "claude-haiku-4-5"]);
    sim.say("hi");
    let ours = sim.turn();
    let theirs = read_jsonl(&fixture("turn1.jsonl"));

    assert_eq!(
        shape(&ours),
        shape(&theirs),
        "event types and order differ from the fixture"
    );
    for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
        for path in KEY_PATHS {
            if at(t, path).is_some() {
                assert!(at(o, path).is_some(), "event {i} lacks {path:?}: {o}");
            }
        }
    }
    let session = ours[0]["session_id"].as_str().unwrap();
    assert!(
        ours.iter().all(|e| e["session_id"] == session),
        "one session id throughout"
    );
    assert_eq!(ours[0]["model"], "claude-haiku-4-5");
    assert_eq!(ours[0]["cwd"], sb.work().to_string_lossy().as_ref());
    let text = "SIM-REPLY #1: you said <hi>";
    assert_eq!(streamed_text(&ours), text);
    let result = ours.last().unwrap();
    assert_eq!(result["result"], text);
    assert_eq!(result["is_error"], false);
    assert!(result["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let assistant = ours.iter().find(|e| e["type"] == "assistant").unwrap();
    assert_eq!(assistant["message"]["content"][0]["text"], text);

    sim.close_stdin();
    assert!(sim.wait_exit().success());
    sb.assert_no_leaks();
}

#[test]
fn stays_alive_after_result_and_exits_zero_on_stdin_eof() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&[]);
    sim.say("first");
    let first = sim.turn();
    assert!(sim.is_running(), "exited after its result");
    sim.say("second");
    let second = sim.turn();
    // Every turn starts with a new system/init, in the same session.
    assert_eq!(second[0]["subtype"], "init");
    assert_eq!(second[0]["session_id"], first[0]["session_id"]);
    assert_eq!(
        second.last().unwrap()["result"],
        "SIM-REPLY #2: you said <second>; before that <first>"
    );
    sim.close_stdin();
    let status = sim.wait_exit();
    assert_eq!(status.code(), Some(0));
    sb.assert_no_leaks();
}

#[test]
fn stdin_eof_finishes_the_current_turn_before_exiting() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-turn-delay-ms", "300", "--sim-chunk-delay-ms", "20"]);
    sim.say("slow one");
    sim.say("queued one");
    sim.close_stdin();
    let a = sim.turn();
    let b = sim.turn();
    assert_eq!(
        a.last().unwrap()["result"],
        "SIM-REPLY #1: you said <slow one>"
    );
    assert_eq!(b.last().unwrap()["subtype"], "success");
    assert_eq!(sim.wait_exit().code(), Some(0));
    sb.assert_no_leaks();
}

#[test]
fn nothing_is_printed_before_the_first_message() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&[]);
    assert!(
        sim.next_within(Duration::from_millis(300)).is_none(),
        "printed before any input"
    );
    sim.say("now");
    assert_eq!(sim.next()["subtype"], "init");
    sim.close_stdin();
    sim.turn();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn resume_of_an_unknown_id_prints_the_error_result_and_exits_1() {
    let sb = Sandbox::new();
    let fixture_line = read_jsonl(&fixture("resume-unknown.stdout.jsonl")).remove(0);
    let fixture_stderr = std::fs::read_to_string(fixture("resume-unknown.stderr.txt")).unwrap();
    for id in [
        "11111111-2222-4333-8444-555555555555",
        "../../../etc/passwd",
        "not-a-uuid",
    ] {
        let out = sb
            .sim_command(&[&format!("--resume={id}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "resume {id}");
        let lines: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "one stdout line");
        let ours = &lines[0];
        for key in [
            "type",
            "subtype",
            "is_error",
            "num_turns",
            "session_id",
            "errors",
            "usage",
            "total_cost_usd",
        ] {
            assert!(ours.get(key).is_some(), "missing {key}");
        }
        assert_eq!(ours["subtype"], fixture_line["subtype"]);
        assert_eq!(ours["is_error"], true);
        assert_eq!(ours["session_id"], id);
        let expected = format!("No conversation found with session ID: {id}");
        assert_eq!(ours["errors"], serde_json::json!([expected]));
        assert_eq!(String::from_utf8(out.stderr).unwrap().trim(), expected);
        if id.starts_with("1111") {
            assert_eq!(ours["errors"], fixture_line["errors"]);
            assert_eq!(expected, fixture_stderr.trim());
        }
    }
    sb.assert_no_leaks();
}

#[test]
fn session_id_already_in_use_exits_1_with_empty_stdout() {
    let sb = Sandbox::new();
    let id = "0b9c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e";
    let mut first = sb.spawn_sim(&["--session-id", id]);
    first.say("hello");
    assert_eq!(first.turn()[0]["session_id"], id);
    first.close_stdin();
    first.wait_exit();
    assert!(sb.transcript(id).is_file(), "transcript at claude's path");

    let out = sb
        .sim_command(&[&format!("--session-id={id}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap().trim(),
        format!("Error: Session ID {id} is already in use.")
    );

    let out = sb.sim_command(&["--session-id", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a session id must be a UUID");
    sb.assert_no_leaks();
}

#[test]
fn a_resumed_session_remembers_its_earlier_turns() {
    let sb = Sandbox::new();
    let mut first = sb.spawn_sim(&[]);
    first.say("alpha");
    let id = first.turn()[0]["session_id"].as_str().unwrap().to_owned();
    first.say("beta");
    first.turn();
    first.close_stdin();
    assert!(first.wait_exit().success());

    let mut resumed = sb.spawn_sim(&["--resume", &id]);
    resumed.say("gamma");
    let turn = resumed.turn();
    assert_eq!(
        turn[0]["session_id"],
        id.as_str(),
        "resume keeps the session id"
    );
    assert_eq!(
        turn.last().unwrap()["result"],
        "SIM-REPLY #3: you said <gamma>; before that <beta>"
    );
    resumed.close_stdin();
    resumed.wait_exit();

    let entries = read_jsonl(&sb.transcript(&id));
    let users: Vec<&Value> = entries.iter().filter(|e| e["type"] == "user").collect();
    assert_eq!(users.len(), 3);
    assert_eq!(users[2]["message"]["content"], "gamma");
    sb.assert_no_leaks();
}

#[test]
fn flags_work_in_both_spellings_and_dash_values_stay_values() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&[
        "--model=opus-x",
        "--allowed-tools=Read,Write",
        "--disallowed-tools",
        "Write",
        "--system-prompt=--resume=evil",
        "--append-system-prompt",
        "extra",
        "--permission-mode=bypassPermissions",
        "--dangerously-skip-permissions",
        "--mcp-config={}",
        "--max-turns=3",
    ]);
    sim.say("x");
    let turn = sim.turn();
    assert_eq!(turn[0]["model"], "opus-x");
    // As claude 2.1.332: the allowed tools do not narrow the offer, the
    // disallowed ones leave it.
    assert_eq!(
        turn[0]["tools"],
        serde_json::json!(["Bash", "Edit", "Glob", "Grep", "Read"])
    );
    assert_eq!(
        turn.last().unwrap()["subtype"],
        "success",
        "a --flag=value value is never a flag"
    );
    sim.close_stdin();
    sim.wait_exit();

    let out = sb.sim_command(&["--no-such-flag"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown flags are refused, as claude refuses them"
    );
    sb.assert_no_leaks();
}

/// The simulator reports its own model unless told one (its turns are not
/// filed as a real model's), and offers the built-in tools `--tools` names
/// (`""`: none), as claude 2.1.332 does.
#[test]
fn the_sim_reports_its_own_model_and_offers_the_tools_its_tools_flag_names() {
    let sb = Sandbox::new();
    for (flag, tools) in [
        (
            None,
            serde_json::json!(["Bash", "Edit", "Glob", "Grep", "Read", "Write"]),
        ),
        (Some("--tools="), serde_json::json!([])),
        (
            Some("--tools=Read,Grep"),
            serde_json::json!(["Grep", "Read"]),
        ),
        (
            Some("--tools=default"),
            serde_json::json!(["Bash", "Edit", "Glob", "Grep", "Read", "Write"]),
        ),
    ] {
        let mut sim = sb.spawn_sim(flag.as_slice());
        sim.say("x");
        let turn = sim.turn();
        assert_eq!(turn[0]["model"], "sim", "{flag:?}");
        assert_eq!(turn[0]["tools"], tools, "{flag:?}");
        sim.close_stdin();
        sim.wait_exit();
    }
    sb.assert_no_leaks();
}

#[test]
fn stream_json_output_requires_verbose_as_claude_does() {
    let sb = Sandbox::new();
    let out = sb
        .hum(&[
            "sim-agent",
            "-p",
            "--input-format=stream-json",
            "--output-format=stream-json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires --verbose"));
    sb.assert_no_leaks();
}

#[test]
fn bad_input_lines_are_skipped_and_the_next_message_answered() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&[]);
    sim.send_raw(b"not json\n{\"type\":\"control\"}\n\xff\xfe\n{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"blocks\"}]}}\n");
    let turn = sim.turn();
    assert_eq!(
        turn.last().unwrap()["result"],
        "SIM-REPLY #1: you said <blocks>"
    );
    sim.close_stdin();
    assert!(sim.wait_exit().success());
    assert!(sim.stderr().contains("not JSON"));
    sb.assert_no_leaks();
}

#[test]
fn an_over_long_input_line_is_skipped_in_bounded_memory() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&[]);
    let pid = sim.pid();
    let writer_line = vec![b'x'; 64 * 1024 * 1024];
    sim.send_raw(&writer_line);
    sim.send_raw(b"\n");
    sim.say("after");
    let turn = sim.turn();
    assert_eq!(
        turn.last().unwrap()["result"],
        "SIM-REPLY #1: you said <after>"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(
        hwm_kib < 40 * 1024,
        "peak RSS {hwm_kib} KiB for a 64 MiB line"
    );
    sim.close_stdin();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn text_mode_answers_the_prompt_argument_once() {
    let sb = Sandbox::new();
    let out = sb
        .hum(&["sim-agent", "-p", "hello there"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "SIM-REPLY #1: you said <hello there>\n"
    );
    sb.assert_no_leaks();
}

/// (type, subtype or inner event type) of each event after the
/// `control_response`: how an interrupted turn ends.
fn after_interrupt(events: &[Value]) -> Vec<(String, String)> {
    let at = events
        .iter()
        .position(|e| e["type"] == "control_response")
        .expect("a control_response");
    shape(&events[at..])
        .into_iter()
        // The stream's intermediate events differ with where the turn was.
        .filter(|(t, _)| t != "stream_event")
        .collect()
}

#[test]
fn an_interrupt_ends_the_turn_as_claude_does_and_the_agent_serves_on() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-chunks", "400", "--sim-chunk-delay-ms", "20"]);
    sim.say("a long answer");
    // A few deltas in, the interrupt (as hum's worker writes it).
    let mut events = Vec::new();
    while events.len() < 8 {
        events.push(sim.next());
    }
    sim.send_raw(
        b"{\"type\":\"control_request\",\"request_id\":\"req-7\",\"request\":{\"subtype\":\"interrupt\"}}\n",
    );
    events.extend(sim.turn());
    let response = events
        .iter()
        .find(|e| e["type"] == "control_response")
        .expect("answered");
    assert_eq!(response["response"]["subtype"], "success");
    assert_eq!(response["response"]["request_id"], "req-7");
    let result = events.last().unwrap();
    assert_eq!(result["subtype"], "error_during_execution");
    assert_eq!(result["is_error"], true);
    assert_eq!(result["terminal_reason"], "aborted_streaming");
    // The same closing sequence as the real CLI, captured.
    let captured = read_jsonl(&fixture("interrupt.jsonl"));
    assert_eq!(after_interrupt(&events), after_interrupt(&captured));
    assert!(
        streamed_text(&events).len() < 400 * 16,
        "the whole answer streamed despite the interrupt"
    );
    // The process lives on and answers the next turn.
    assert!(sim.is_running());
    sim.say("next");
    assert_eq!(sim.turn().last().unwrap()["subtype"], "success");
    sim.close_stdin();
    assert_eq!(sim.wait_exit().code(), Some(0));
    sb.assert_no_leaks();
}

#[test]
fn a_stalled_turn_ends_on_interrupt_but_not_with_the_ignore_knob() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-stall-after-chunks", "1"]);
    sim.say("stall");
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &Value| e["event"]["delta"]["type"] == "text_delta")
    {
        seen.push(sim.next());
    }
    sim.send_raw(b"{\"type\":\"control_request\",\"request_id\":\"r\",\"request\":{\"subtype\":\"interrupt\"}}\n");
    assert_eq!(
        sim.turn().last().unwrap()["terminal_reason"],
        "aborted_streaming"
    );
    sim.close_stdin();
    assert_eq!(sim.wait_exit().code(), Some(0));

    let mut wedged = sb.spawn_sim(&["--sim-stall-after-chunks", "1", "--sim-ignore-interrupt"]);
    wedged.say("stall");
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &Value| e["event"]["delta"]["type"] == "text_delta")
    {
        seen.push(wedged.next());
    }
    wedged.send_raw(b"{\"type\":\"control_request\",\"request_id\":\"r\",\"request\":{\"subtype\":\"interrupt\"}}\n");
    assert!(
        wedged
            .next_within(std::time::Duration::from_millis(500))
            .is_none(),
        "a wedged agent answered"
    );
    wedged.kill();
    sb.assert_no_leaks();
}
