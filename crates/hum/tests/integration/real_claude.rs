//! The real `claude` CLI (2.1.332) through humd and `hum worker`, offline
//! against the loopback mock of the Messages API. `.ci/run` installs the
//! exact version with npm and sets `HUM_TEST_CLAUDE`.

use crate::common::mock_api::{real_claude, MockApi};
use crate::common::*;
use rustix::process::Signal;
use serde_json::{json, Value};
use std::process::Stdio;

/// The next tone, waiting as long as a real CLI may take.
async fn next_slowly(inbox: &mut thrum::Inbox<tokio::net::unix::OwnedReadHalf>) -> thrum::Tone {
    match tokio::time::timeout(PROMPTLY * 3, inbox.recv())
        .await
        .expect("silence")
        .unwrap()
    {
        Some(thrum::Inbound::Tone(t)) => t,
        other => panic!("{other:?}"),
    }
}

/// The shared process stack with a claude-cli worker.
struct Hum {
    procs: crate::common::stack::Stack,
}

impl std::ops::Deref for Hum {
    type Target = crate::common::stack::Stack;
    fn deref(&self) -> &crate::common::stack::Stack {
        &self.procs
    }
}

impl std::ops::DerefMut for Hum {
    fn deref_mut(&mut self) -> &mut crate::common::stack::Stack {
        &mut self.procs
    }
}

impl Hum {
    fn start(claude: &std::path::Path, api: &MockApi, cap: usize) -> Hum {
        let mut procs = crate::common::stack::Stack::start(Value::Null, &["--no-metrics"]);
        let tmp = procs.sb.dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let config = json!({
            "nest": {"maxActiveCells": cap, "firstEventTimeoutMs": 60000},
            "claude": {"enabled": true, "path": claude, "models": ["claude-haiku-4-5"], "env": {
                "ANTHROPIC_BASE_URL": api.base_url(), "ANTHROPIC_API_KEY": "sk-test-offline",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "IS_SANDBOX": "1",
                "TMPDIR": tmp, "MCP_TIMEOUT": "2000",
            }},
            "sim": {"enabled": false},
            "cwd": procs.sb.work(),
        });
        procs.worker = Some(procs.worker_with(config, &[]));
        Hum { procs }
    }

    /// One turn with `hum prompt`; retried while the worker connects.
    fn ask(&self, sid: &str, text: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            let out = self
                .sb
                .hum(&[
                    "prompt",
                    "--socket",
                    self.sock.to_str().unwrap(),
                    "--model",
                    "claude-haiku-4-5",
                    "--sid",
                    sid,
                    text,
                ])
                .output()
                .unwrap();
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                return String::from_utf8(out.stdout).unwrap();
            }
            assert!(
                last.contains("no_worker"),
                "turn failed: {last}\nworker log:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("never served: {last}");
    }

    /// One turn whose prompt allows `tools` (so the CLI may run them).
    fn ask_with_tools(&self, sid: &str, text: &str, tools: &[&str]) -> String {
        // hum prompt has no tools flag: speak thrum directly.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..100 {
                let stream = tokio::net::UnixStream::connect(&self.sock).await.unwrap();
                let thrum::Connection { mut inbox, outbox } =
                    thrum::Connection::unix(stream, thrum::Limits::default(), "test");
                let hello = thrum::Hello {
                    bee: Some(thrum::Bees::Many(vec!["asker".into()])),
                    ..Default::default()
                };
                outbox.try_send(&thrum::Tone::new(hello)).unwrap();
                let prompt = thrum::Prompt {
                    text: Some(text.into()),
                    model_id: Some("claude-haiku-4-5".into()),
                    allowed_tools: Some(tools.iter().map(|t| t.to_string()).collect()),
                    ..Default::default()
                };
                outbox
                    .try_send(&thrum::Tone::new(prompt).with_sid(sid))
                    .unwrap();
                let mut answer = String::new();
                loop {
                    let t = next_slowly(&mut inbox).await;
                    match t.body {
                        thrum::Body::Chunk(c) if c.chunk_type == thrum::ChunkType::TextDelta => {
                            answer += c.delta.as_deref().unwrap_or("")
                        }
                        thrum::Body::Finish(_) => return answer,
                        thrum::Body::Error(e) if e.code == thrum::ErrorCode::NoWorker => break,
                        thrum::Body::Error(e) => {
                            panic!("turn failed: {e:?}\nworker log:\n{}", self.log())
                        }
                        _ => {}
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("never served");
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.sb.dir.path().join("worker.log")).unwrap_or_default()
    }

    fn stop(mut self) {
        if let Some(mut worker) = self.procs.worker.take() {
            crate::common::stack::stop_child(&mut worker);
            assert_eq!(worker.wait().unwrap().code(), Some(0));
        }
        self.procs.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_turn_conversation_with_the_real_cli() {
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 4);
    let (one, two, hum) = tokio::task::spawn_blocking(move || {
        let a = hum.ask("conv", "hi");
        let b = hum.ask("conv", "second message please");
        (a, b, hum)
    })
    .await
    .unwrap();
    // humd filed both turns as the CLI reported them: the mock's tokens
    // (10 in per request), a cost claude worked out, under its model.
    let usage = || {
        let out = hum
            .sb
            .hum(&["usage", "--json", "--since", "today", "--by", "model"])
            .output()
            .unwrap();
        serde_json::from_slice::<hum::usage::report::UsageReport>(&out.stdout).unwrap()
    };
    assert!(
        wait_until(PROMPTLY, || usage().total.turns == 2),
        "{:?}",
        usage()
    );
    let r = usage();
    assert_eq!(r.rows.len(), 1, "{r:?}");
    assert_eq!(r.rows[0].key, "claude-haiku-4-5");
    assert_eq!(
        r.rows[0].tally.input_tokens,
        10 * api.requests().len() as u64,
        "{r:?}"
    );
    assert!(r.rows[0].tally.output_tokens > 0);
    assert!(r.total.tally.cost_usd > 0.0, "{r:?}");
    hum.stop();
    assert_eq!(one, "MOCK-REPLY #1: you said <hi>\n");
    assert_eq!(two, "MOCK-REPLY #2: you said <second message please>\n");
    let last = api.requests().pop().unwrap();
    assert_eq!(last["stream"], true);
    let text = last["messages"].to_string();
    assert!(
        text.contains("hi") && text.contains("MOCK-REPLY #1"),
        "the CLI did not send the first turn: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_session_resumes_from_its_transcript() {
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 1);
    let (first, other, third, hum) = tokio::task::spawn_blocking(move || {
        let a = hum.ask("resumer", "remember the word pelican");
        // Cap 1: this sid evicts the first one's cell.
        let b = hum.ask("intruder", "hello");
        let c = hum.ask("resumer", "what was the word");
        (a, b, c, hum)
    })
    .await
    .unwrap();
    // Each turn is filed at its own cost: claude's resumed process reports
    // the session's earlier turns too, which hum takes off. The mock's
    // tokens at Haiku 4.5's list prices ($1 in, $5 out per million).
    let by_sid = || {
        let out = hum
            .sb
            .hum(&["usage", "--json", "--since", "today", "--by", "sid"])
            .output()
            .unwrap();
        serde_json::from_slice::<hum::usage::report::UsageReport>(&out.stdout).unwrap()
    };
    assert!(
        wait_until(PROMPTLY, || by_sid().total.turns == 3),
        "{:?}",
        by_sid()
    );
    for row in by_sid().rows {
        let t = &row.tally;
        let list = t.input_tokens as f64 * 1e-6 + t.output_tokens as f64 * 5e-6;
        assert!(
            (t.cost_usd - list).abs() < 1e-9,
            "{}: {} USD filed for {} in / {} out",
            row.key,
            t.cost_usd,
            t.input_tokens,
            t.output_tokens
        );
    }
    let log = hum.log();
    hum.stop();
    assert_eq!(
        first,
        "MOCK-REPLY #1: you said <remember the word pelican>\n"
    );
    assert_eq!(other, "MOCK-REPLY #1: you said <hello>\n");
    assert_eq!(
        third, "MOCK-REPLY #2: you said <what was the word>\n",
        "the resumed CLI lost the conversation"
    );
    let last = api.requests().pop().unwrap();
    assert!(
        last["messages"].to_string().contains("pelican"),
        "the mock never saw the earlier turn"
    );
    assert!(log.contains("cell.evicted"), "no eviction happened:\n{log}");
    // The transcript was found where claude keeps it (its project name
    // for a cwd with a dot in it): the resume was right the first time.
    assert!(
        !log.contains("cell.session_retry"),
        "the session had to be retried:\n{log}"
    );
}

/// Processes of the test whose argv[0] is the claude binary: the cells
/// (askers merely name the model on their command line).
/// Whether `pid` runs a program whose argv[0] ends with `name`.
fn runs(pid: i32, name: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        c.split(|b| *b == 0)
            .next()
            .is_some_and(|a0| a0.ends_with(name))
    })
}

/// Whether `pid` is a claude cell: claude's argv[0], and not a child claude
/// is starting (its MCP server shows claude's command line until it execs).
fn is_claude(pid: i32, name: &[u8]) -> bool {
    runs(pid, name) && !stat(pid).is_some_and(|s| runs(s.ppid, name))
}

fn claude_cells(sb: &Sandbox) -> Vec<ProcId> {
    sb.live()
        .into_iter()
        .filter(|p| is_claude(p.pid, b"claude"))
        .collect()
}

/// Processes of the test whose command line contains `needle`.
fn with_cmdline(sb: &Sandbox, needle: &str) -> Vec<ProcId> {
    sb.live()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid)).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bash_tool_command_that_escapes_into_its_own_session_dies_with_its_cell() {
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 1);
    // A long sleep left running in the background by the Bash tool.
    let marker = format!("sleep 3{}", std::process::id() % 100 + 100);
    let command = format!("nohup {marker} >/dev/null 2>&1 &");
    let hum = tokio::task::spawn_blocking(move || {
        let out = hum.ask_with_tools("bashy", &format!("RUN_BASH: {command}"), &["Bash"]);
        assert!(out.contains("MOCK-REPLY ran"), "{out}");
        hum
    })
    .await
    .unwrap();
    // The shell may still be starting it when the turn ends (seen under
    // load in the portable run): awaited, not sampled once.
    let mut sleepers = Vec::new();
    wait_until(PROMPTLY, || {
        sleepers = with_cmdline(&hum.sb, &marker);
        sleepers.len() == 1
    });
    assert_eq!(
        sleepers.len(),
        1,
        "the background command is not running (or not tagged)"
    );
    let sleeper = sleepers[0];
    let claude_pid = claude_cells(&hum.sb)
        .into_iter()
        .find(|p| p.pid != sleeper.pid)
        .expect("claude running")
        .pid;
    let st = stat(sleeper.pid).unwrap();
    assert_ne!(
        st.sid,
        stat(claude_pid).unwrap().sid,
        "the Bash tool did not start a new session"
    );
    // Cap 1: another sid evicts the cell, and the escapee goes with it.
    let hum = tokio::task::spawn_blocking(move || {
        hum.ask("evictor", "hello");
        hum
    })
    .await
    .unwrap();
    assert!(
        wait_until(PROMPTLY, || !alive(sleeper)),
        "the setsid escapee outlived its evicted cell"
    );
    hum.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bash_escapee_is_gone_within_5s_of_a_worker_sigkill() {
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    let marker = format!("sleep 4{}", std::process::id() % 100 + 100);
    let command = format!("nohup {marker} >/dev/null 2>&1 &");
    let mut hum = tokio::task::spawn_blocking(move || {
        let out = hum.ask_with_tools("bashy", &format!("RUN_BASH: {command}"), &["Bash"]);
        assert!(out.contains("MOCK-REPLY ran"), "{out}");
        hum
    })
    .await
    .unwrap();
    let sleeper = with_cmdline(&hum.sb, &marker)
        .pop()
        .expect("escapee running");
    let mut worker = hum.procs.worker.take().unwrap();
    signal(worker.id() as i32, Signal::KILL);
    worker.wait().unwrap();
    assert!(
        wait_until(std::time::Duration::from_secs(5), || !alive(sleeper)),
        "the escapee outlived the SIGKILLed worker by 5 s"
    );
    assert!(
        wait_until(std::time::Duration::from_secs(5), || claude_cells(&hum.sb)
            .is_empty()),
        "claude outlived its worker"
    );
    hum.procs.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_10_real_cells_against_a_slow_api_respects_cap_4() {
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    api.set_delay(std::time::Duration::from_millis(1500));
    let hum = std::sync::Arc::new(Hum::start(&claude, &api, 4));
    let claude_name = claude.file_name().unwrap().to_string_lossy().into_owned();
    let sampler_hum = hum.clone();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p, d) = (peak.clone(), done.clone());
    let sampler = std::thread::spawn(move || {
        let mut peak_rss_kib = 0;
        while !d.load(std::sync::atomic::Ordering::Relaxed) {
            // Cell leaders: argv[0] is the claude binary (askers merely name
            // the model).
            let cells: Vec<ProcId> = sampler_hum
                .sb
                .live()
                .into_iter()
                .filter(|p| is_claude(p.pid, claude_name.as_bytes()))
                .collect();
            p.fetch_max(cells.len(), std::sync::atomic::Ordering::Relaxed);
            peak_rss_kib =
                peak_rss_kib.max(cells.iter().filter_map(|c| rss_kib(c.pid)).sum::<u64>());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        peak_rss_kib
    });
    let answers: Vec<String> = {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let hum = hum.clone();
                std::thread::spawn(move || hum.ask(&format!("herd-{i}"), &format!("bee {i}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_rss_kib = sampler.join().unwrap();
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a, &format!("MOCK-REPLY #1: you said <bee {i}>\n"));
    }
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak <= 4, "{peak} claude processes alive with cap 4");
    assert!(peak >= 2, "the sampler saw {peak}: no concurrency at all");
    // Reported, not asserted: machines differ.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "herd of 10 real cells, cap 4: peak {peak} live, peak tree RSS {} MiB",
        peak_rss_kib / 1024
    );
    std::sync::Arc::into_inner(hum)
        .expect("all askers done")
        .stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_hum_prompt_interrupts_a_real_claude_turn_and_keeps_its_cell_warm() {
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    let hum = tokio::task::spawn_blocking(move || {
        hum.ask("patient", "hi");
        hum
    })
    .await
    .unwrap();
    let warm = claude_cells(&hum.sb);
    assert_eq!(warm.len(), 1, "{warm:?}");
    // The API now hangs: the turn waits on it, silent.
    api.set_delay(std::time::Duration::from_secs(60));
    let asked = api.requests().len();
    let mut cli = hum
        .sb
        .hum(&[
            "prompt",
            "--socket",
            hum.sock.to_str().unwrap(),
            "--model",
            "claude-haiku-4-5",
            "--sid",
            "patient",
            "think for a long time",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(PROMPTLY, || api.requests().len() > asked),
        "the turn never reached the API"
    );
    let interrupted = std::time::Instant::now();
    signal(cli.id() as i32, Signal::INT);
    assert!(wait_until(PROMPTLY, || cli.try_wait().unwrap().is_some()));
    assert_eq!(cli.wait().unwrap().code(), Some(130));
    assert!(
        wait_until(PROMPTLY, || hum.log().contains("turn.cancelled")),
        "the turn did not end cancelled:\n{}",
        hum.log()
    );
    let took = interrupted.elapsed();
    eprintln!("a real claude turn waiting on a hung API ended cancelled {took:?} after Ctrl-C");
    // claude obeyed the interrupt: the same process serves the next turn.
    api.set_delay(std::time::Duration::ZERO);
    let hum = tokio::task::spawn_blocking(move || {
        let answer = hum.ask("patient", "are you still there");
        assert!(answer.starts_with("MOCK-REPLY"), "{answer}");
        hum
    })
    .await
    .unwrap();
    assert_eq!(claude_cells(&hum.sb), warm, "the cell was replaced");
    assert!(
        !hum.log()
            .contains(&format!("reason={}", hum::cell::Reason::Cancelled)),
        "torn down instead of interrupted"
    );
    hum.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cli_calls_a_foragers_tool_through_the_bridge() {
    use crate::common::forager::{wait_foragers, Forager, Serve};
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let (forager, _) = Forager::connect(&hum, &["echo"], Serve::Answer).await;
    wait_foragers(&hum, 1).await;
    let (answer, hum) = tokio::task::spawn_blocking(move || {
        let a = hum.ask(
            "tool-sid",
            r#"CALL_TOOL: mcp__hum__echo {"text":"from the forager"}"#,
        );
        (a, hum)
    })
    .await
    .unwrap();
    let calls = forager.calls();
    forager.leave();
    let log = hum.log();
    hum.stop();
    assert_eq!(
        answer, "MOCK-REPLY tool said <from the forager>\n",
        "worker log:\n{log}"
    );
    // The forager got the model's call, with its input.
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].tool_name, "echo");
    assert_eq!(calls[0].args, json!({"text": "from the forager"}));
    // claude put the forager's output in its next request to the API.
    let requests = api.requests();
    let last = requests.last().unwrap();
    let results: Vec<&Value> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .filter(|b| b["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 1, "{last}");
    assert!(
        results[0]["content"]
            .to_string()
            .contains("from the forager"),
        "{}",
        results[0]
    );
    // The model was offered the bridge's tool by its MCP name (claude
    // 2.1.332 lists MCP tools by name and loads their schemas on demand).
    assert!(
        requests[0].to_string().contains("mcp__hum__echo"),
        "mcp__hum__echo was not offered to the model"
    );
}

/// A bash turn whose permission ask is answered `decision` by a thrum
/// asker that announced it answers them: the ask it saw and the answer.
async fn bash_with_permission(
    hum: &Hum,
    sid: &str,
    command: &str,
    decision: &str,
) -> (thrum::PermissionAsk, String) {
    let stream = tokio::net::UnixStream::connect(&hum.sock).await.unwrap();
    let thrum::Connection { mut inbox, outbox } =
        thrum::Connection::unix(stream, thrum::Limits::default(), "permits");
    let hello = thrum::Hello {
        bee: Some(thrum::Bees::Many(vec!["asker".into()])),
        chis: Some(vec!["permission-ask".into(), "release-permit".into()]),
        ..Default::default()
    };
    outbox.try_send(&thrum::Tone::new(hello)).unwrap();
    let prompt = thrum::Prompt {
        text: Some(format!("RUN_BASH: {command}")),
        model_id: Some("claude-haiku-4-5".into()),
        ..Default::default()
    };
    outbox
        .try_send(&thrum::Tone::new(prompt).with_sid(sid))
        .unwrap();
    let mut ask = None;
    let mut answer = String::new();
    loop {
        let t = next_slowly(&mut inbox).await;
        match t.body {
            thrum::Body::PermissionAsk(a) => {
                let reply = thrum::ReleasePermit {
                    call_id: a.call_id.clone(),
                    decision: Some(decision.into()),
                    message: (decision == "deny").then(|| "the user said no".into()),
                    updated_input: None,
                    option_id: None,
                    extra: Default::default(),
                };
                outbox
                    .try_send(&thrum::Tone::new(reply).with_sid(sid))
                    .unwrap();
                ask = Some(a);
            }
            thrum::Body::Chunk(c) if c.chunk_type == thrum::ChunkType::TextDelta => {
                answer += c.delta.as_deref().unwrap_or("")
            }
            thrum::Body::Finish(_) => break,
            thrum::Body::Error(e) => panic!("turn failed: {e:?}\nworker log:\n{}", hum.log()),
            _ => {}
        }
    }
    (ask.expect("claude never asked permission"), answer)
}

/// The `tool_result` blocks of the last request claude sent the API.
fn last_tool_results(api: &MockApi) -> Vec<Value> {
    let last = api.requests().pop().unwrap();
    last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cli_asks_the_asker_before_bash_and_obeys_allow_and_deny() {
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let marker = hum.sb.work().join("permitted");
    let allowed_cmd = format!("touch {}", marker.display());
    let (ask, answer) = bash_with_permission(&hum, "permit-yes", &allowed_cmd, "allow").await;
    assert_eq!(ask.tool_name, "Bash");
    assert_eq!(ask.input["command"], allowed_cmd.as_str());
    assert_eq!(answer, format!("MOCK-REPLY ran {allowed_cmd}"));
    assert!(marker.exists(), "allowed, but the command did not run");
    let results = last_tool_results(&api);
    assert_eq!(results.len(), 1);
    assert_ne!(results[0]["is_error"], true, "{}", results[0]);

    let denied = hum.sb.work().join("denied");
    let denied_cmd = format!("touch {}", denied.display());
    let (ask, _) = bash_with_permission(&hum, "permit-no", &denied_cmd, "deny").await;
    assert_eq!(ask.input["command"], denied_cmd.as_str());
    assert!(!denied.exists(), "denied, but the command ran");
    let results = last_tool_results(&api);
    assert!(
        results
            .iter()
            .any(|r| r.to_string().contains("the user said no")),
        "the deny message did not reach the model: {results:?}"
    );
    hum.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_real_cli_sees_the_tools_of_its_next_turn_and_calls_back_its_asker() {
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let stream = tokio::net::UnixStream::connect(&hum.sock).await.unwrap();
    let thrum::Connection { mut inbox, outbox } =
        thrum::Connection::unix(stream, thrum::Limits::default(), "asker");
    outbox
        .try_send(&thrum::Tone::new(thrum::Hello {
            bee: Some(thrum::Bees::Many(vec!["asker".into()])),
            ..Default::default()
        }))
        .unwrap();
    let ask = |text: &str, tools: Option<Value>| {
        thrum::Tone::new(thrum::Prompt {
            text: Some(text.into()),
            model_id: Some("claude-haiku-4-5".into()),
            tools,
            ..Default::default()
        })
        .with_sid("warm-tools")
    };
    // Turn 1: no tools of the asker's.
    outbox.try_send(&ask("hello", None)).unwrap();
    loop {
        if matches!(next_slowly(&mut inbox).await.chi(), "finish" | "error") {
            break;
        }
    }
    let first_turn = api.requests().len();
    assert!(!api.requests()[0].to_string().contains("mcp__hum__lookup"));
    // Turn 2, same cell: the prompt lends `lookup`; the model calls it.
    let spec = json!([{"name": "lookup", "description": "looks a key up", "inputSchema": {"type": "object"}}]);
    outbox
        .try_send(&ask(
            r#"CALL_TOOL: mcp__hum__lookup {"key":"k"}"#,
            Some(spec),
        ))
        .unwrap();
    let mut answer = String::new();
    let mut called = None;
    loop {
        let t = next_slowly(&mut inbox).await;
        match &t.body {
            thrum::Body::ToolCall(c) => {
                called = Some(c.clone());
                let mut r = thrum::ToolResult::error(&c.call_id, Some("lookup"), "");
                r.output = Some(json!("the value of k"));
                r.is_error = Some(false);
                outbox
                    .try_send(&thrum::Tone::new(r).with_sid("warm-tools"))
                    .unwrap();
            }
            thrum::Body::Chunk(c) if c.chunk_type == thrum::ChunkType::TextDelta => {
                answer += c.delta.as_deref().unwrap_or("")
            }
            thrum::Body::Finish(_) => break,
            thrum::Body::Error(e) => panic!("{e:?}\n{}", hum.log()),
            _ => {}
        }
    }
    let requests = api.requests();
    let log = hum.log();
    hum.stop();
    // First: a CLI that did not list the new tools within the runner's
    // wait (RELIST_WAIT) is why a call would be missing.
    assert!(
        !log.contains("bridge.not_relisted"),
        "claude did not list the new tools on the bridge's notice:\n{log}"
    );
    let Some(called) = called else {
        // Which of the two it was: the CLI's request went without the new
        // tool (it started the turn before taking the new list in), or the
        // model's call did not come back.
        let offered = requests
            .get(first_turn..)
            .into_iter()
            .flatten()
            .map(|r| r.to_string().contains("mcp__hum__lookup"))
            .collect::<Vec<_>>();
        panic!(
            "the asker's tool was not called back on the asker; the turn's model requests offered it: {offered:?}; answer {answer:?}\n{log}"
        );
    };
    assert_eq!(called.args, json!({"key": "k"}));
    assert_eq!(answer, "MOCK-REPLY tool said <the value of k>", "{log}");
    assert!(
        requests[first_turn]
            .to_string()
            .contains("mcp__hum__lookup"),
        "the second turn's first request does not offer the new tool"
    );
    assert_eq!(
        log.matches("event=\"cell.spawned\"").count(),
        2,
        "one cell (two log lines per spawn) served both turns"
    );
}

/// The real claude 2.1.332 behind the gateway, offline (the mock API
/// answers with a `tool_use` of the client's function, as served by the
/// bridge): the official OpenAI client runs a whole tool loop — it sees the
/// call, runs its function, and the model's next request carries exactly
/// the client's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_runs_a_tool_loop_on_the_real_cli() {
    let Some(claude) = real_claude() else { return };
    let Some(python) = crate::gateway::python_with_clients() else {
        return;
    };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let (mut gateway, addr) = hum.gateway(&["--token", "tok-real"]);
    let gateway_addr = addr.clone();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tool_loop.py");
    let out = tokio::task::spawn_blocking({
        let tag = hum.sb.tag.clone();
        move || {
            std::process::Command::new(python)
                .arg(script)
                .arg(addr)
                .arg("claude-haiku-4-5")
                .arg(r#"CALL_TOOL: mcp__hum__get_weather {"city":"Paris"}"#)
                .env("HUM_TEST_GATEWAY_TOKEN", "tok-real")
                .env(TAG_VAR, tag)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let log = hum.log();
    assert!(
        out.status.success(),
        "{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["rounds"],
        json!([[["get_weather", {"city": "Paris"}]]]),
        "{seen}"
    );
    assert_eq!(
        seen["final"], "MOCK-REPLY tool said <sunny in Paris>",
        "the model did not get the client's result: {seen}\n{log}"
    );
    assert_eq!(seen["sids"].as_array().unwrap().len(), 1, "{seen}");
    // The response that ended with the call reported claude's own usage of
    // the model call that made it (the mock API's message_start says 10).
    assert_eq!(seen["call_usage"], json!([10]), "{seen}");
    // The tool the model was offered is the client's function, on the bridge.
    assert!(api
        .requests()
        .iter()
        .any(|r| r.to_string().contains("mcp__hum__get_weather")));

    // tool_choice naming the function: the CLI has no switch that forces a
    // call, so the model is told; what reaches the model is measured here.
    let before = api.requests().len();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tool_loop.py");
    let python = crate::gateway::python_with_clients().unwrap();
    let (addr2, tag) = (gateway_addr, hum.sb.tag.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(addr2)
            .arg("claude-haiku-4-5")
            .arg("hello there")
            .env("HUM_TEST_GATEWAY_TOKEN", "tok-real")
            .env("HUM_TEST_TOOL_CHOICE", "named")
            .env(TAG_VAR, tag)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let told = api.requests()[before..].iter().any(|r| {
        r["messages"]
            .to_string()
            .contains("You must answer this message by calling the tool get_weather")
    });
    assert!(told, "the named tool_choice never reached the model");
    crate::common::stack::stop_child(&mut gateway);
    hum.stop();
}

/// Issue 23 with the real CLI: humd SIGKILLed while two model calls are
/// open (held at the mock API) and two prompts wait for a cell, restarted,
/// every bee back at once with a new prompt. Each gets its new prompt's
/// answer, and no model call is made after the kill for a prompt of before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_humd_restarts_each_bee_gets_its_own_answer_from_the_real_cli() {
    use crate::common::mock_api::last_user_text;
    use crate::restart::{kill_and_restart_humd, prompt, read_answer, until_worker};
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let mut hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let model = |t: thrum::Tone| {
        let mut t = t;
        if let thrum::Body::Prompt(p) = &mut t.body {
            p.model_id = Some("claude-haiku-4-5".into());
        }
        t
    };
    let n = 4;
    let mut bees = Vec::new();
    for i in 0..n {
        let (inbox, outbox) = hum.connect(&format!("bee-{i}")).await;
        let sid = format!("bee-{i}");
        let text = format!("HOLD {sid} before the kill");
        outbox
            .send(&model(prompt(&sid, &format!("w1-{i}"), &text)))
            .await
            .unwrap();
        bees.push((inbox, outbox));
    }
    let held = |api: &MockApi| {
        api.requests()
            .iter()
            .filter(|r| last_user_text(r).contains("before the kill"))
            .count()
    };
    assert!(
        wait_until(PROMPTLY * 3, || held(&api) == 2),
        "two model calls open: {}\n{}",
        held(&api),
        hum.log()
    );
    until_worker(&hum, "two prompts queued", |w| {
        w["status"]["pool"]["queued"] == 2
    })
    .await;
    let before = api.requests().len();
    kill_and_restart_humd(&mut hum, &[]).await;
    drop(bees);
    api.release_holds();
    let mut back = Vec::new();
    for i in 0..n {
        let (inbox, outbox) = hum.connect(&format!("bee-{i}-again")).await;
        let sid = format!("bee-{i}");
        let text = format!("{sid} after the restart");
        outbox
            .send(&model(prompt(&sid, &format!("w2-{i}"), &text)))
            .await
            .unwrap();
        back.push((inbox, outbox));
    }
    for (i, (inbox, _)) in back.iter_mut().enumerate() {
        let sid = format!("bee-{i}");
        let (text, end, rids) = read_answer(inbox, &sid).await;
        assert!(
            end.starts_with("finish:"),
            "{sid}: {end} {text}\n{}",
            hum.log()
        );
        assert_ne!(end, "finish:cancelled", "{sid}: {text}");
        assert_eq!(
            rids,
            [format!("w2-{i}")],
            "{sid}: only its new turn's tones"
        );
        assert!(
            text.contains(&format!("you said <{sid} after the restart>")),
            "{sid} got another prompt's answer: {text}"
        );
    }
    let late: Vec<String> = api.requests()[before..]
        .iter()
        .map(last_user_text)
        .filter(|t| t.contains("before the kill"))
        .collect();
    assert!(
        late.is_empty(),
        "model calls after the kill for gone askers: {late:?}"
    );
    drop(back);
    hum.stop();
}

/// Issue 24, item 5, with the real CLI: the system prompt reaches the
/// model from a private file; no cell's argv holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cli_gets_its_system_prompt_from_a_file_not_its_argv() {
    use crate::restart::read_answer;
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let secret = format!("SYSTEM-{}", uuid::Uuid::new_v4().simple());
    let (mut inbox, outbox) = hum.connect("bee").await;
    let prompt = thrum::Tone::new(thrum::Prompt {
        text: Some("hello".into()),
        model_id: Some("claude-haiku-4-5".into()),
        system_prompt: Some(secret.clone()),
        ..Default::default()
    })
    .with_sid("sys")
    .with_rid("r1");
    outbox.send(&prompt).await.unwrap();
    let (text, end, _) = read_answer(&mut inbox, "sys").await;
    assert!(end.starts_with("finish:"), "{end} {text}\n{}", hum.log());
    assert!(
        api.requests()
            .iter()
            .any(|r| r["system"].to_string().contains(&secret)),
        "the system prompt never reached the model"
    );
    for p in hum.sb.live() {
        let argv = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&argv).contains(&secret),
            "pid {}'s argv holds the system prompt",
            p.pid
        );
    }
    drop((inbox, outbox));
    hum.stop();
}

/// Issue 26, item 4, with the real CLI: while a forager that provides
/// `fs` is connected, claude starts without its own file and shell tools
/// (its argv, its init line and the tools it offers the model say so) and
/// the model's call goes to the forager's tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_forager_providing_fs_the_real_cli_has_no_file_tools_of_its_own() {
    use crate::common::forager::{wait_foragers, Forager};
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let forager = Forager::connect_providing(&hum, &["echo"], &["fs"]).await;
    wait_foragers(&hum, 1).await;
    crate::provides::wait_fs_served(&hum, true).await;
    let (mut inbox, outbox) = hum.connect("bee").await;
    let prompt = thrum::Tone::new(thrum::Prompt {
        text: Some(r#"CALL_TOOL: mcp__hum__echo {"text":"from the forager's disk"}"#.into()),
        model_id: Some("claude-haiku-4-5".into()),
        ..Default::default()
    })
    .with_sid("fs-real")
    .with_rid("r1");
    outbox.send(&prompt).await.unwrap();
    let (init_tools, answer) = init_tools_and_answer(&mut inbox, &hum).await;
    // The cell's argv turned them off.
    let argv = cell_argv(&hum, "fs-real").await;
    let calls = forager.calls();
    forager.leave();
    drop((inbox, outbox));
    let log = hum.log();
    hum.stop();
    assert!(
        argv.contains("--disallowed-tools=Bash,Edit,Glob,Grep,MultiEdit,NotebookEdit,Read,Write"),
        "{argv}"
    );
    // claude's init line lists none of them, and the forager's tool.
    for t in ["Read", "Write", "Edit", "Bash", "NotebookEdit"] {
        assert!(!init_tools.iter().any(|x| x == t), "{t} in {init_tools:?}");
    }
    assert!(
        init_tools.iter().any(|x| x == "mcp__hum__echo"),
        "{init_tools:?}"
    );
    // Nor does the model see them; the model's call went to the forager.
    let requests = api.requests();
    let offered = first_offered(&api);
    assert!(!offered.is_empty(), "no tools offered: {}", requests[0]);
    for t in ["Read", "Write", "Edit", "Bash"] {
        assert!(!offered.iter().any(|x| x == t), "{t} offered: {offered:?}");
    }
    assert!(
        requests[0].to_string().contains("mcp__hum__echo"),
        "the forager's tool was not offered: {offered:?}"
    );
    assert_eq!(calls.len(), 1, "{calls:?}\n{log}");
    assert_eq!(calls[0].args, json!({"text": "from the forager's disk"}));
    assert_eq!(
        answer, "MOCK-REPLY tool said <from the forager's disk>",
        "{log}"
    );
}

/// What the gateway asks for its cells (`builtinTools: "none"`) reaches the
/// real CLI as `--tools=`, and the model is offered none of claude's own
/// tools: an HTTP caller cannot make it read a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_asking_for_none_of_the_agents_own_tools_gets_a_real_cli_without_them() {
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let (mut inbox, outbox) = hum.connect("bee").await;
    let prompt = thrum::Tone::new(thrum::Prompt {
        text: Some("read secret.txt".into()),
        model_id: Some("claude-haiku-4-5".into()),
        builtin_tools: Some(serde_json::json!("none")),
        ..Default::default()
    })
    .with_sid("no-tools")
    .with_rid("r1");
    outbox.send(&prompt).await.unwrap();
    let (init_tools, _) = init_tools_and_answer(&mut inbox, &hum).await;
    let argv = cell_argv(&hum, "no-tools").await;
    drop((inbox, outbox));
    hum.stop();
    assert!(argv.contains("--tools= "), "{argv}");
    for t in ["Read", "Write", "Edit", "Bash", "Glob", "Grep"] {
        assert!(!init_tools.iter().any(|x| x == t), "{t} in {init_tools:?}");
    }
    let offered = first_offered(&api);
    for t in ["Read", "Write", "Edit", "Bash"] {
        assert!(!offered.iter().any(|x| x == t), "{t} offered: {offered:?}");
    }
}

/// The tools claude listed at its start (`session-ready`), and the text of
/// the turn, read until its finish (an error fails the test).
async fn init_tools_and_answer(
    inbox: &mut thrum::Inbox<tokio::net::unix::OwnedReadHalf>,
    hum: &Hum,
) -> (Vec<String>, String) {
    let mut init_tools: Vec<String> = Vec::new();
    let mut answer = String::new();
    loop {
        match next_slowly(inbox).await.body {
            thrum::Body::SessionReady(r) => {
                init_tools = r
                    .tools
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or_default()
            }
            thrum::Body::Chunk(c) if c.chunk_type == thrum::ChunkType::TextDelta => {
                answer += c.delta.as_deref().unwrap_or("")
            }
            thrum::Body::Finish(_) => return (init_tools, answer),
            other => assert!(
                !matches!(other, thrum::Body::Error(_)),
                "{other:?}\n{}",
                hum.log()
            ),
        }
    }
}

/// The command line of the cell serving `sid`, as any local user reads it.
async fn cell_argv(hum: &Hum, sid: &str) -> String {
    let status = hum::client::fetch_status(&hum.sock).await.unwrap();
    let pid = status
        .cells()
        .find(|c| c.sid == sid)
        .and_then(|c| c.pid)
        .expect("the cell");
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ")
}

/// The names of the tools the model was offered in its first request.
fn first_offered(api: &MockApi) -> Vec<String> {
    api.requests()[0]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

/// Issue 27 with the real CLI: a run ends on a tool call and its turn holds
/// the only cell; a bee's prompt queued for a cell preempts it (the turn is
/// interrupted mid tool call and gives the cell back) and is answered; the
/// result that comes late continues the same conversation: the model's
/// next request carries it and the answer quotes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_parked_turn_answered_late_continues_on_the_real_cli() {
    use std::io::{BufRead, Write};
    let Some(claude) = real_claude() else { return };
    let Some(python) = crate::gateway::python_with_clients() else {
        return;
    };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 1);
    hum.wait_worker().await;
    let (mut gateway, addr) = hum.gateway(&["--token", "tok-real", "--parked-turn-ms", "600000"]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/late.py");
    let mut client = std::process::Command::new(python)
        .arg(script)
        .arg(&addr)
        .arg("claude-haiku-4-5")
        .arg(r#"CALL_TOOL: mcp__hum__get_weather {"city":"Paris"}"#)
        .env("HUM_TEST_GATEWAY_TOKEN", "tok-real")
        .env(TAG_VAR, &hum.sb.tag)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(client.stdout.take().unwrap());
    let first: Value = tokio::task::block_in_place(|| {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or(Value::Null)
    });
    assert_eq!(first["call"], "get_weather", "{first}\n{}", hum.log());
    // A bee's prompt needs the only cell: it is answered, the parked turn
    // having given the cell back.
    let (mut inbox, outbox) = hum.connect("bee").await;
    let prompt = thrum::Tone::new(thrum::Prompt {
        text: Some("meanwhile".into()),
        model_id: Some("claude-haiku-4-5".into()),
        ..Default::default()
    })
    .with_sid("other")
    .with_rid("r1");
    outbox.send(&prompt).await.unwrap();
    loop {
        match next_slowly(&mut inbox).await.body {
            thrum::Body::Finish(_) => break,
            thrum::Body::Error(e) => panic!("the queued prompt failed: {e:?}\n{}", hum.log()),
            _ => {}
        }
    }
    drop((inbox, outbox));
    let gateway_log = hum.sb.dir.path().join("gateway.log");
    let log_text = std::fs::read_to_string(&gateway_log).unwrap_or_default();
    assert!(log_text.contains("gateway.parked_preempted"), "{log_text}");
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    drop(stdin);
    let late: Value = tokio::task::block_in_place(|| {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or(Value::Null)
    });
    let status = client.wait().unwrap();
    let log = hum.log();
    crate::common::stack::stop_child(&mut gateway);
    hum.stop();
    assert!(status.success(), "{late}\n{log}");
    assert_eq!(late["late_sid"], first["first_sid"], "{late}");
    let final_text = late["final"].as_str().unwrap_or_default();
    assert!(
        final_text.contains("sunny in Paris") && final_text.contains("get_weather"),
        "the model did not get the late result: {late}\n{log}"
    );
    // The model's last request carried it, in the same session.
    let last = api.requests().last().cloned().unwrap_or(Value::Null);
    assert!(
        last["messages"].to_string().contains("sunny in Paris"),
        "{last}"
    );
}

/// Structured output with the real CLI behind the gateway (offline, the
/// mock API answering as told): the schema reaches the model with the
/// turn's message, and the answer the client gets is JSON that validates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structured_output_request_through_the_real_cli_returns_json_that_validates() {
    use std::io::{Read, Write};
    let Some(claude) = real_claude() else { return };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let (mut gateway, addr) = hum.gateway(&["--token", "tok-real"]);
    let body = json!({"model": "claude-haiku-4-5",
        "messages": [{"role": "user", "content": r#"ANSWER: {"city": "Oslo", "temp": 3}"#}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "schema":
            {"type": "object", "required": ["city", "temp"],
             "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}}}}}})
    .to_string();
    let response = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let head = format!("POST /v1/chat/completions HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nAuthorization: Bearer tok-real\r\nContent-Length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    let log = hum.log();
    crate::common::stack::stop_child(&mut gateway);
    hum.stop();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{response}\n{log}"
    );
    let resp: Value = serde_json::from_str(body).unwrap();
    let content = resp["choices"][0]["message"]["content"].as_str().unwrap();
    let answer: Value = serde_json::from_str(content).unwrap();
    assert_eq!(answer, json!({"city": "Oslo", "temp": 3}));
    // The model was told the schema with the turn's message.
    let told = api.requests().iter().any(|r| {
        r["messages"]
            .to_string()
            .contains("valid against this JSON Schema")
    });
    assert!(told, "the schema never reached the model");
}

/// The Responses API with the real claude 2.1.332 behind it (offline, the
/// mock API): the openai-agents SDK on its default (Responses) model runs
/// its tool loop, plain and streamed, and the official client's follow-up
/// naming the previous response reaches the same session with only the new
/// input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responses_api_serves_the_agents_sdk_and_a_follow_up_on_the_real_cli() {
    let Some(claude) = real_claude() else { return };
    let Some(python) = crate::gateway::python_with_clients() else {
        return;
    };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let (mut gateway, addr) = hum.gateway(&["--token", "tok-real"]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let run = |script: &str, envs: Vec<(&'static str, String)>| {
        let (python, addr, tag) = (python.clone(), addr.clone(), hum.sb.tag.clone());
        let script = dir.join(script);
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(python)
                .arg(script)
                .arg(addr)
                .envs(envs)
                .env("HUM_TEST_GATEWAY_TOKEN", "tok-real")
                .env(TAG_VAR, tag)
                .output()
                .unwrap()
        })
    };
    let out = run(
        "agents_sdk.py",
        vec![
            ("HUM_TEST_MODEL", "claude-haiku-4-5".into()),
            (
                "HUM_TEST_CUE",
                r#"CALL_TOOL: mcp__hum__get_weather {{"city":"{city}"}}"#.into(),
            ),
        ],
    )
    .await
    .unwrap();
    let log = hum.log();
    assert!(
        out.status.success(),
        "{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["called"], json!(["Oslo", "Lima"]), "{seen}");
    assert_eq!(
        seen["final"], "MOCK-REPLY tool said <sunny in Oslo>",
        "{seen}"
    );
    assert_eq!(
        seen["streamed_final"], "MOCK-REPLY tool said <sunny in Lima>",
        "{seen}"
    );

    let out = run(
        "responses_follow_up.py",
        vec![
            ("HUM_TEST_MODEL", "claude-haiku-4-5".into()),
            (
                "HUM_TEST_CUE",
                r#"CALL_TOOL: mcp__hum__get_weather {{"city":"{city}"}}"#.into(),
            ),
        ],
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["first"], "MOCK-REPLY #1: you said <remember plums>",
        "{seen}"
    );
    assert_eq!(
        seen["follow"], "MOCK-REPLY #2: you said <and then?>",
        "the follow-up reached the session that holds the first turn: {seen}"
    );
    assert_eq!(seen["first_sid"], seen["follow_sid"]);
    assert_eq!(seen["stream"], "MOCK-REPLY #1: you said <flow>", "{seen}");
    assert_eq!(seen["called"], json!(["Quito"]), "{seen}");
    assert_eq!(
        seen["loop_final"], "MOCK-REPLY tool said <sunny in Quito>",
        "the results sent with previous_response_id continued the turn: {seen}"
    );
    assert_eq!(
        seen["structured"],
        json!({"city": "Oslo", "temp": 3}),
        "{seen}"
    );
    crate::common::stack::stop_child(&mut gateway);
    hum.stop();
}

/// The real claude behind the Ollama door (offline, the mock API): the
/// official ollama client chats (a follow-up on the same session,
/// streamed), runs a tool round-trip, generates, and lists the model and
/// its warm cells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ollama_door_serves_the_official_client_on_the_real_cli() {
    let Some(claude) = real_claude() else { return };
    let Some(python) = crate::gateway::python_with_clients() else {
        return;
    };
    let api = MockApi::start().await;
    let hum = Hum::start(&claude, &api, 2);
    hum.wait_worker().await;
    let (mut gateway, _, door) =
        hum.gateway_doors(&["--token", "tok-real", "--ollama-listen", "127.0.0.1:0"]);
    let door = door.expect("the Ollama door");
    let door_js = door.clone();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ollama_real.py");
    let tag = hum.sb.tag.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(door)
            .env_remove("OLLAMA_API_KEY")
            .env("HUM_TEST_MODEL", "claude-haiku-4-5")
            .env(
                "HUM_TEST_CUE",
                r#"CALL_TOOL: mcp__hum__get_weather {{"city":"{city}"}}"#,
            )
            .env(TAG_VAR, tag)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let log = hum.log();
    assert!(
        out.status.success(),
        "{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        seen["list"]
            .as_array()
            .unwrap()
            .contains(&json!("claude-haiku-4-5")),
        "{seen}"
    );
    assert_eq!(
        seen["first"], "MOCK-REPLY #1: you said <remember plums>",
        "{seen}"
    );
    assert!(
        seen["first_counts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.as_u64().unwrap() > 0),
        "the CLI's own usage: {seen}"
    );
    assert_eq!(
        seen["second"], "MOCK-REPLY #2: you said <and then?>",
        "the same session went on: {seen}"
    );
    assert_eq!(seen["stream"], "MOCK-REPLY #1: you said <flow>", "{seen}");
    assert_eq!(seen["called"], json!(["Oslo"]), "{seen}");
    assert_eq!(
        seen["final"], "MOCK-REPLY tool said <sunny in Oslo>",
        "{seen}"
    );
    assert_eq!(seen["generate"], "MOCK-REPLY #1: you said <why>", "{seen}");
    assert_eq!(seen["ps"], json!(["claude-haiku-4-5"]), "{seen}");
    assert_eq!(seen["format"], json!({"city": "Oslo", "temp": 3}), "{seen}");
    assert_eq!(seen["show_family"], "claude-cli", "{seen}");
    // The official JavaScript client too.
    match std::env::var("HUM_TEST_OLLAMA_JS")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(js) => {
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/clients/ollama_js.cjs");
            let (tag, door) = (hum.sb.tag.clone(), door_js);
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("node")
                    .arg(script)
                    .arg(door)
                    .arg("claude-haiku-4-5")
                    .env_remove("OLLAMA_API_KEY")
                    .env("HUM_TEST_OLLAMA_JS", js)
                    .env(
                        "HUM_TEST_CUE",
                        r#"CALL_TOOL: mcp__hum__get_weather {"city":"{city}"}"#,
                    )
                    .env("HUM_TEST_ANSWER", "ANSWER:")
                    .env(TAG_VAR, tag)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(seen["chat"], "MOCK-REPLY #1: you said <hi>", "{seen}");
            assert_eq!(seen["stream"], "MOCK-REPLY #1: you said <stream>", "{seen}");
            assert_eq!(
                seen["tool_rounds"],
                json!([["get_weather", {"city": "Oslo"}]]),
                "{seen}"
            );
            assert_eq!(
                seen["tool_final"], "MOCK-REPLY tool said <sunny in Oslo>",
                "{seen}"
            );
            assert_eq!(seen["format"], json!({"ok": true}), "{seen}");
            assert_eq!(seen["generate"], "MOCK-REPLY #1: you said <why>", "{seen}");
            assert_eq!(seen["show_family"], "claude-cli");
            assert_eq!(seen["unknown"][0], 404, "{seen}");
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("HUM_TEST_OLLAMA_JS is not set: .ci/run must install the ollama JS client")
        }
        None => eprintln!("\n*** NOT RUN: the ollama JS client part needs HUM_TEST_OLLAMA_JS ***"),
    }
    crate::common::stack::stop_child(&mut gateway);
    hum.stop();
}
