//! Every `hum sim-agent` knob does what its help says, and every process it
//! starts is found (by the test's tag in /proc) and ended.

use crate::common::*;
use rustix::process::Signal;
use serde_json::json;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

/// How long "nothing happens" is watched for. Absence can only be shown over
/// a window; a broken knob shows itself well within it.
const QUIET: Duration = Duration::from_millis(400);

/// Processes of the sandbox other than the agent itself.
fn helpers_of(sb: &Sandbox, sim: &Sim) -> Vec<ProcId> {
    sb.live()
        .into_iter()
        .filter(|p| p.pid != sim.pid())
        .collect()
}

#[test]
fn bootstrap_delay_holds_back_the_first_event() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-bootstrap-delay-ms", "500"]);
    sim.say("hi");
    let (at, first) = sim.next_within(PROMPTLY).unwrap();
    assert_eq!(first["subtype"], "init");
    assert!(
        at - sim.started >= Duration::from_millis(500),
        "first event after {:?}",
        at - sim.started
    );
    sim.close_stdin();
    sim.turn();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn turn_delay_separates_status_from_the_answer() {
    let sb = Sandbox::new();
    let mut cmd = sb.sim_command(&[]);
    cmd.env("HUM_SIM_TURN_DELAY_MS", "2000");
    let mut sim = Sim::spawn(cmd);
    let said = Instant::now();
    sim.say("hi");
    let (_, init) = sim.next_within(PROMPTLY).unwrap();
    let (status_at, status) = sim.next_within(PROMPTLY).unwrap();
    let (start_at, start) = sim.next_within(PROMPTLY).unwrap();
    assert_eq!(
        (init["subtype"].as_str(), status["subtype"].as_str()),
        (Some("init"), Some("status"))
    );
    assert_eq!(start["event"]["type"], "message_start");
    // Lines are timed as the test reads them, which a busy machine can
    // make late: the answer comes at least the whole delay after the
    // prompt, and the status (not held back) well before it, with a
    // second of slack for a late read of the status.
    assert!(start_at - said >= Duration::from_millis(2000));
    assert!(
        start_at - status_at >= Duration::from_millis(1000),
        "the status came {:?} before the answer",
        start_at - status_at
    );
    sim.close_stdin();
    sim.turn();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn chunks_and_chunk_size_shape_the_stream() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&[
        "--sim-chunks=12",
        "--sim-chunk-size=100",
        "--sim-chunk-delay-ms=5",
    ]);
    sim.say("abc");
    let turn = sim.turn();
    let deltas: Vec<&str> = turn
        .iter()
        .filter(|e| e["event"]["delta"]["type"] == "text_delta")
        .map(|e| e["event"]["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas.len(), 12);
    assert!(deltas.iter().all(|d| d.len() == 100));
    assert!(deltas.concat().starts_with("SIM-REPLY #1: you said <abc>"));
    assert_eq!(
        turn.last().unwrap()["result"].as_str().unwrap(),
        deltas.concat()
    );
    sim.close_stdin();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn thinking_comes_as_a_reasoning_block_before_the_text() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-thinking"]);
    sim.say("why");
    let turn = sim.turn();
    let starts: Vec<(u64, &str)> = turn
        .iter()
        .filter(|e| e["event"]["type"] == "content_block_start")
        .map(|e| {
            (
                e["event"]["index"].as_u64().unwrap(),
                e["event"]["content_block"]["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(starts, [(0, "thinking"), (1, "text")]);
    assert!(turn
        .iter()
        .any(|e| e["event"]["delta"]["type"] == "thinking_delta"));
    sim.close_stdin();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn stall_stops_mid_turn_and_stdin_eof_does_not_end_it() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-stall-after-chunks", "2"]);
    sim.say("hang");
    let mut deltas = 0;
    while let Some((_, ev)) = sim.next_within(QUIET) {
        assert_ne!(ev["type"], "result", "a stalled turn finished");
        if ev["event"]["delta"]["type"] == "text_delta" {
            deltas += 1;
        }
    }
    assert_eq!(deltas, 2);
    sim.close_stdin();
    assert!(
        !sim.stdout_closed_within(QUIET),
        "a stalled agent exited on EOF"
    );
    assert!(sim.is_running());
    sim.kill();
    sb.assert_no_leaks();
}

#[test]
fn hold_until_file_stops_after_one_delta_until_the_file_exists_and_the_turn_log_says_so() {
    let sb = Sandbox::new();
    let gate = sb.dir.path().join("gate");
    let log = sb.dir.path().join("turns.jsonl");
    let mut sim = sb.spawn_sim(&[
        "--sim-hold-until-file",
        gate.to_str().unwrap(),
        "--sim-turn-log",
        log.to_str().unwrap(),
    ]);
    sim.say("held");
    let mut deltas = 0;
    while let Some((_, ev)) = sim.next_within(QUIET) {
        assert_ne!(ev["type"], "result", "a held turn finished");
        if ev["event"]["delta"]["type"] == "text_delta" {
            deltas += 1;
        }
    }
    assert_eq!(deltas, 1);
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let started = lines();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(
        (started[0]["event"].as_str(), started[0]["prompt"].as_str()),
        (Some("start"), Some("held"))
    );
    assert_eq!(started[0]["pid"], sim.pid());
    std::fs::write(&gate, b"").unwrap();
    let rest = sim.turn();
    assert_eq!(rest.last().unwrap()["subtype"], "success");
    let ended = lines();
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert_eq!(ended[1]["event"], "done");
    assert!(ended[1]["atMs"].as_u64() >= ended[0]["atMs"].as_u64());
    sim.close_stdin();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn never_answer_prints_nothing_at_all() {
    let sb = Sandbox::new();
    let mut cmd = sb.sim_command(&[]);
    cmd.env("HUM_SIM_NEVER_ANSWER", "1");
    let mut sim = Sim::spawn(cmd);
    sim.say("hello?");
    assert!(sim.next_within(QUIET).is_none(), "it answered");
    sim.close_stdin();
    assert!(!sim.stdout_closed_within(QUIET));
    assert!(sim.is_running());
    sim.kill();
    sb.assert_no_leaks();
}

#[test]
fn crash_exits_non_zero_mid_turn_without_a_result() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-crash-after-chunks=1", "--sim-crash-code=7"]);
    sim.say("boom");
    let mut events = Vec::new();
    while let Some((_, ev)) = sim.next_within(PROMPTLY) {
        events.push(ev);
    }
    assert_eq!(sim.wait_exit().code(), Some(7));
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"]["delta"]["type"] == "text_delta")
            .count(),
        1
    );
    assert!(events.iter().all(|e| e["type"] != "result"));
    sb.assert_no_leaks();
}

#[test]
fn error_result_from_the_fault_turn_on_and_the_agent_lives_on() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&[
        "--sim-error-result",
        "--sim-fault-turn=2",
        "--sim-error-message=API Error: 529 overloaded",
    ]);
    sim.say("one");
    assert_eq!(
        sim.turn().last().unwrap()["subtype"],
        "success",
        "turn 1 precedes the fault turn"
    );
    sim.say("two");
    let result = sim.turn().pop().unwrap();
    assert_eq!(result["is_error"], true);
    assert_eq!(result["subtype"], "error_during_execution");
    assert_eq!(
        result["errors"],
        serde_json::json!(["API Error: 529 overloaded"])
    );
    assert!(sim.is_running());
    sim.close_stdin();
    assert!(sim.wait_exit().success());
    sb.assert_no_leaks();
}

#[test]
fn fault_if_limits_faults_to_matching_prompts() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-error-result", "--sim-fault-if=BOOM"]);
    sim.say("fine");
    assert_eq!(sim.turn().last().unwrap()["subtype"], "success");
    sim.say("now BOOM");
    assert_eq!(sim.turn().last().unwrap()["is_error"], true);
    sim.say("fine again");
    assert_eq!(sim.turn().last().unwrap()["subtype"], "success");
    sim.close_stdin();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn forget_sessions_refuses_every_resume_and_accepts_any_session_id() {
    let sb = Sandbox::new();
    let id = "7c1b6e0a-4f1e-4f4c-9a57-0b2a3f6d8e11";
    let mut first = sb.spawn_sim(&["--session-id", id]);
    first.say("remember me");
    first.turn();
    first.close_stdin();
    first.wait_exit();
    let out = sb
        .sim_command(&["--sim-forget-sessions", "--resume", id])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "resume of a known session still refused"
    );
    let mut again = sb.spawn_sim(&["--sim-forget-sessions", "--session-id", id]);
    again.say("hello");
    assert_eq!(
        again.turn().last().unwrap()["subtype"],
        "success",
        "an id in use is accepted"
    );
    again.close_stdin();
    again.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn ballast_is_held_resident() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-ballast-mb=96"]);
    sim.say("heavy");
    sim.turn();
    let rss = rss_kib(sim.pid()).unwrap();
    assert!(rss >= 96 * 1024, "RSS {rss} KiB with 96 MiB of ballast");
    sim.close_stdin();
    sim.wait_exit();

    let mut light = sb.spawn_sim(&[]);
    light.say("light");
    light.turn();
    let base = rss_kib(light.pid()).unwrap();
    assert!(base < 48 * 1024, "baseline RSS {base} KiB");
    light.close_stdin();
    light.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn growth_is_taken_every_turn_and_kept() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-grow-mb=40"]);
    sim.say("one");
    sim.turn();
    let after_one = rss_kib(sim.pid()).unwrap();
    assert!(after_one >= 40 * 1024, "RSS {after_one} KiB after one turn");
    sim.say("two");
    sim.turn();
    let after_two = rss_kib(sim.pid()).unwrap();
    assert!(
        after_two >= after_one + 39 * 1024,
        "{after_one} then {after_two} KiB"
    );
    // A prompt's own SIM_GROW_MB wins for its turn.
    sim.say("SIM_GROW_MB 100");
    sim.turn();
    let after_three = rss_kib(sim.pid()).unwrap();
    assert!(
        after_three >= after_two + 99 * 1024,
        "{after_two} then {after_three} KiB"
    );
    sim.close_stdin();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn usage_knobs_set_the_results_tokens_and_cost_like_claudes() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&[
        "--sim-input-tokens=1200",
        "--sim-output-tokens=34",
        "--sim-cache-read-tokens=5600",
        "--sim-cache-creation-tokens=78",
        "--sim-cost-usd=0.125",
        "--model=claude-sonnet-4-5",
    ]);
    sim.say("hello");
    let turn = sim.turn();
    let result = turn.last().unwrap();
    assert_eq!(result["type"], "result");
    assert_eq!(result["total_cost_usd"], 0.125);
    let u = &result["usage"];
    assert_eq!(
        (
            &u["input_tokens"],
            &u["output_tokens"],
            &u["cache_read_input_tokens"],
            &u["cache_creation_input_tokens"]
        ),
        (&json!(1200), &json!(34), &json!(5600), &json!(78))
    );
    // modelUsage as claude 2.1.332 prints it, keyed by the model.
    let m = &result["modelUsage"]["claude-sonnet-4-5"];
    assert_eq!(m["inputTokens"], 1200);
    assert_eq!(m["cacheReadInputTokens"], 5600);
    assert_eq!(m["costUSD"], 0.125);
    let fixture_keys: Vec<String> = read_jsonl(&fixture("turn1.jsonl"))
        .into_iter()
        .filter(|e| e["type"] == "result")
        .flat_map(|e| {
            e["modelUsage"]
                .as_object()
                .into_iter()
                .flat_map(|o| o.values())
                .flat_map(|v| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
        .collect();
    for key in [
        "inputTokens",
        "outputTokens",
        "cacheReadInputTokens",
        "cacheCreationInputTokens",
        "costUSD",
    ] {
        assert!(fixture_keys.iter().any(|k| k == key), "claude prints {key}");
        assert!(m.get(key).is_some(), "the sim prints {key}");
    }
    // The prompt's SIM_USAGE wins for its turn; the knobs fill the rest.
    // As claude's, `usage` is the turn's while `total_cost_usd` and
    // `modelUsage` are the process's so far.
    sim.say("SIM_USAGE out=9 cost=0.5");
    let result = sim.turn().last().unwrap().clone();
    assert_eq!(result["total_cost_usd"], 0.625);
    assert_eq!(result["usage"]["output_tokens"], 9);
    assert_eq!(result["usage"]["input_tokens"], 1200);
    let m = &result["modelUsage"]["claude-sonnet-4-5"];
    assert_eq!(
        (m["inputTokens"].as_u64(), m["outputTokens"].as_u64()),
        (Some(2400), Some(43))
    );
    sim.close_stdin();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn mcp_servers_share_the_agents_group_and_exit_with_it() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-mcp-servers=3"]);
    sim.say("tools?");
    let turn = sim.turn();
    assert_eq!(turn[0]["mcp_servers"].as_array().unwrap().len(), 3);
    let sim_stat = stat(sim.pid()).unwrap();
    // (Under load a scan of /proc once missed a helper that had just
    // started: counted when the count has settled.)
    assert!(
        wait_until(PROMPTLY, || helpers_of(&sb, &sim).len() == 3),
        "three MCP servers running: {:?}",
        helpers_of(&sb, &sim)
    );
    let servers = helpers_of(&sb, &sim);
    for s in &servers {
        let st = stat(s.pid).unwrap();
        assert_eq!(st.ppid, sim.pid(), "a child of the agent");
        assert_eq!(
            (st.pgid, st.sid),
            (sim_stat.pgid, sim_stat.sid),
            "in the agent's group and session"
        );
    }
    sim.close_stdin();
    assert!(sim.wait_exit().success());
    sb.assert_no_leaks();
}

/// `hum-sim`, the simulator's own binary, answers as `hum sim-agent` does
/// and starts its helpers as itself: `hum-sim` has no `sim-agent`
/// subcommand (it would take the word for a prompt).
#[test]
fn hum_sim_answers_as_sim_agent_and_starts_its_helpers_as_itself() {
    let sb = Sandbox::new();
    let own = std::path::Path::new(env!("CARGO_BIN_EXE_hum-sim"));
    let mut sim = Sim::spawn(sb.own_sim_command(&["--sim-mcp-servers=2"]));
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", sim.pid())).unwrap(),
        own
    );
    sim.say("hi");
    let turn = sim.turn();
    assert_eq!(turn[0]["mcp_servers"].as_array().unwrap().len(), 2);
    assert_eq!(
        turn.last().unwrap()["result"],
        "SIM-REPLY #1: you said <hi>"
    );
    assert!(
        wait_until(PROMPTLY, || helpers_of(&sb, &sim).len() == 2),
        "two MCP servers running: {:?}",
        helpers_of(&sb, &sim)
    );
    for h in helpers_of(&sb, &sim) {
        let exe = std::fs::read_link(format!("/proc/{}/exe", h.pid)).unwrap();
        let argv: Vec<String> = std::fs::read(format!("/proc/{}/cmdline", h.pid))
            .unwrap()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert_eq!(exe, own, "{argv:?}");
        assert_eq!(argv[1..], ["--sim-role", "mcp-server"], "{argv:?}");
    }
    sim.close_stdin();
    assert!(sim.wait_exit().success());
    sb.assert_no_leaks();
}

#[test]
fn mcp_servers_honour_stdin_eof_when_the_agent_is_killed() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-mcp-servers=2"]);
    sim.say("x");
    sim.turn();
    assert!(
        wait_until(PROMPTLY, || helpers_of(&sb, &sim).len() == 2),
        "{:?}",
        helpers_of(&sb, &sim)
    );
    sim.kill();
    // Their stdin closed with the agent, so they leave by themselves.
    sb.assert_no_leaks();
}

#[test]
fn mcp_servers_that_ignore_eof_outlive_a_killed_agent() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-mcp-servers=2", "--sim-mcp-ignore-eof"]);
    sim.say("x");
    sim.turn();
    assert!(wait_until(PROMPTLY, || helpers_of(&sb, &sim).len() == 2));
    let servers = helpers_of(&sb, &sim);
    sim.kill();
    assert!(
        !wait_until(QUIET, || servers.iter().all(|s| !alive(*s))),
        "they exited on EOF"
    );
    assert!(servers.iter().all(|s| alive(*s)));
    // The orphans this knob exists to produce: end them by pid.
    for s in &servers {
        kill_exact(*s);
    }
    sb.assert_no_leaks();
}

#[test]
fn bash_escapee_runs_in_its_own_session_ignores_sigterm_and_survives_sigkill_of_the_agent() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-bash-escapee"]);
    sim.say("run something");
    sim.turn();
    let sim_stat = stat(sim.pid()).unwrap();
    // Just spawned: its environ is readable once it is past exec.
    assert!(
        wait_until(PROMPTLY, || helpers_of(&sb, &sim).len() == 1),
        "no escapee"
    );
    let escapees = helpers_of(&sb, &sim);
    let esc = escapees[0];
    assert!(
        wait_until(PROMPTLY, || stat(esc.pid).is_some_and(|s| s.sid == esc.pid)
            && sigterm_handled(esc.pid)),
        "the escapee never became a session leader"
    );
    let st = stat(esc.pid).unwrap();
    assert_ne!(
        st.pgid, sim_stat.pgid,
        "a signal to the agent's group must miss it"
    );
    assert_ne!(st.sid, sim_stat.sid);

    signal(esc.pid, Signal::TERM);
    assert!(!wait_until(QUIET, || !alive(esc)), "SIGTERM ended it");

    // A second turn does not start a second one.
    sim.say("again");
    sim.turn();
    assert_eq!(helpers_of(&sb, &sim).len(), 1);

    sim.kill();
    assert!(!wait_until(QUIET, || !alive(esc)), "it died with the agent");
    assert_ne!(stat(esc.pid).unwrap().ppid, sim.pid());
    kill_exact(esc);
    sb.assert_no_leaks();
}

#[test]
fn sigterm_ends_the_agent_and_its_helpers_like_claude() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&[
        "--sim-mcp-servers=2",
        "--sim-mcp-ignore-eof",
        "--sim-bash-escapee",
    ]);
    sim.say("x");
    sim.turn();
    assert!(
        wait_until(PROMPTLY, || helpers_of(&sb, &sim).len() == 3),
        "helpers not all running"
    );
    signal(sim.pid(), Signal::TERM);
    assert_eq!(sim.wait_exit().code(), Some(143));
    // Bash tool command SIGKILLed, MCP servers SIGTERMed: nothing left.
    sb.assert_no_leaks();
}

#[test]
fn ignore_sigterm_keeps_the_agent_answering() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-ignore-sigterm"]);
    sim.say("one");
    sim.turn();
    signal(sim.pid(), Signal::TERM);
    sim.say("two");
    assert_eq!(
        sim.turn().last().unwrap()["result"],
        "SIM-REPLY #2: you said <two>; before that <one>"
    );
    assert!(sim.is_running());
    sim.kill();
    assert_eq!(sim.child.wait().unwrap().signal(), Some(9));
    sb.assert_no_leaks();
}

#[test]
fn chunk_delay_spaces_the_deltas() {
    let sb = Sandbox::new();
    let mut sim = sb.spawn_sim(&["--sim-chunks=4", "--sim-chunk-delay-ms=150"]);
    sim.say("tick");
    let mut arrivals = Vec::new();
    loop {
        let (at, ev) = sim.next_within(PROMPTLY).expect("turn ended early");
        if ev["event"]["delta"]["type"] == "text_delta" {
            arrivals.push(at);
        }
        if ev["type"] == "result" {
            break;
        }
    }
    assert_eq!(arrivals.len(), 4);
    for pair in arrivals.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(140),
            "deltas {:?} apart",
            pair[1] - pair[0]
        );
    }
    sim.close_stdin();
    sim.wait_exit();
    sb.assert_no_leaks();
}

#[test]
fn help_documents_every_knob_with_its_environment_variable() {
    let sb = Sandbox::new();
    let out = sb.hum(&["sim-agent", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let knobs = [
        "bootstrap-delay-ms",
        "turn-delay-ms",
        "chunk-delay-ms",
        "chunks",
        "chunk-size",
        "thinking",
        "stall-after-chunks",
        "never-answer",
        "crash-after-chunks",
        "crash-code",
        "error-result",
        "error-message",
        "fault-turn",
        "fault-if",
        "forget-sessions",
        "ballast-mb",
        "grow-mb",
        "input-tokens",
        "output-tokens",
        "cache-read-tokens",
        "cache-creation-tokens",
        "cost-usd",
        "mcp-servers",
        "mcp-ignore-eof",
        "bash-escapee",
        "bash-escapee-clean-env",
        "ignore-sigterm",
        "ignore-interrupt",
        "hold-until-file",
        "turn-log",
        "acp-no-load",
        "acp-late-replay",
    ];
    for knob in knobs {
        assert!(
            help.contains(&format!("--sim-{knob}")),
            "--sim-{knob} missing from help"
        );
        let var = format!("HUM_SIM_{}", knob.to_uppercase().replace('-', "_"));
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} missing from help"
        );
    }
    // And no knob exists that the list above (and so the tests) forgot.
    let listed = help.matches("\n      --sim-").count();
    assert_eq!(
        listed,
        knobs.len(),
        "help lists knobs this test does not know"
    );
    sb.assert_no_leaks();
}
