//! Real ACP agents as hives (issue 29): Gemini CLI and opencode, pinned and
//! installed by `.ci/run` (`HUM_TEST_GEMINI`: gemini-cli's `gemini.js`,
//! `HUM_TEST_OPENCODE`: the opencode binary), run offline against loopback
//! mocks of their model APIs (`common/mock_models.rs`). For each: two turns
//! in one warm process quoting the mock, a cancel mid-turn, a permission ask
//! answered by the asker, a forager's tool called through the bridge, an
//! eviction then `session/load` with the history, and the worker SIGKILLed
//! with nothing left.

use crate::acp::finish_of;
use crate::common::forager::*;
use crate::common::mock_models::{Api, MockModel};
use crate::common::stack::*;
use crate::common::*;
use crate::tools::{answer_text, asker_answering_permits, turn};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use thrum::{Body, Tone};

/// A real agent of these tests.
#[derive(Clone, Copy)]
struct Agent {
    name: &'static str,
    var: &'static str,
    model: &'static str,
    api: Api,
}

const GEMINI: Agent = Agent {
    name: "gemini",
    var: "HUM_TEST_GEMINI",
    model: "gemini-2.5-flash",
    api: Api::Gemini,
};

const OPENCODE: Agent = Agent {
    name: "opencode",
    var: "HUM_TEST_OPENCODE",
    model: "opencode-mock",
    api: Api::OpenAiChat,
};

/// The agent's program, from its variable. In CI its absence is a failure;
/// elsewhere the test says it did not run.
fn program(agent: Agent) -> Option<PathBuf> {
    match std::env::var_os(agent.var).filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.exists(), "{}={} does not exist", agent.var, p.display());
            Some(p)
        }
        None if std::env::var_os("CI").is_some() => {
            panic!(
                "{} is not set: .ci/run must install {} and point it at it",
                agent.var, agent.name
            )
        }
        None => {
            use std::io::Write;
            let _ = std::io::stderr().write_all(
                format!(
                    "\n*** NOT RUN: the real {} tests need {} (see .ci/run) ***\n",
                    agent.name, agent.var
                )
                .as_bytes(),
            );
            None
        }
    }
}

fn node() -> String {
    hum_which("node").expect("node on PATH (gemini-cli runs on it)")
}

fn hum_which(name: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// The hive entry of `agent` against `mock`, its home in `home` (made
/// ready here: settings that keep it offline and quiet).
fn hive(agent: Agent, program: &Path, mock: &MockModel, home: &Path) -> Value {
    std::fs::create_dir_all(home).unwrap();
    match agent.api {
        Api::Gemini => {
            std::fs::create_dir_all(home.join(".gemini")).unwrap();
            let settings = json!({
                "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false, "maxAttempts": 1},
                "privacy": {"usageStatisticsEnabled": false}, "telemetry": {"enabled": false},
                "security": {"folderTrust": {"enabled": false}}, "model": {"name": agent.model}});
            std::fs::write(home.join(".gemini/settings.json"), settings.to_string()).unwrap();
            json!({"command": [node(), program, "--acp"], "models": [agent.model], "env": {
                "HOME": home, "GEMINI_CLI_HOME": home,
                "GOOGLE_GEMINI_BASE_URL": format!("http://{}", mock.addr), "GEMINI_API_KEY": "mock-key",
                "GEMINI_CLI_NO_RELAUNCH": "true", "GEMINI_CLI_TRUST_WORKSPACE": "true",
                "NO_BROWSER": "true", "CI": "true"}})
        }
        Api::OpenAiChat => {
            let config = home.join("config");
            // (opencode installs a plugin with npm at its first start unless
            // it finds one: it must not reach for the network.)
            std::fs::create_dir_all(config.join("opencode/node_modules")).unwrap();
            std::fs::write(
                config.join("opencode/package-lock.json"),
                r#"{"packages":{"":{"dependencies":{"@opencode-ai/plugin":"*"}}}}"#,
            )
            .unwrap();
            let oc = json!({"autoupdate": false, "share": "disabled",
                "model": "mock/mock-model", "small_model": "mock/mock-model", "enabled_providers": ["mock"],
                "provider": {"mock": {"npm": "@ai-sdk/openai-compatible", "name": "Mock",
                    "options": {"baseURL": format!("http://{}/v1", mock.addr), "apiKey": "mock-key"},
                    "models": {"mock-model": {"name": "Mock Model", "tool_call": true, "reasoning": false,
                        "limit": {"context": 128000, "output": 4096}}}}},
                "permission": {"edit": "ask", "bash": "ask"}, "lsp": false, "formatter": false});
            std::fs::write(home.join("opencode.json"), oc.to_string()).unwrap();
            let env: serde_json::Map<String, Value> = [
                ("HOME", home.display().to_string()),
                ("XDG_CONFIG_HOME", config.display().to_string()),
                ("XDG_DATA_HOME", home.join("data").display().to_string()),
                ("XDG_CACHE_HOME", home.join("cache").display().to_string()),
                ("XDG_STATE_HOME", home.join("state").display().to_string()),
                (
                    "OPENCODE_CONFIG",
                    home.join("opencode.json").display().to_string(),
                ),
                ("OPENCODE_DISABLE_AUTOUPDATE", "1".into()),
                ("OPENCODE_DISABLE_MODELS_FETCH", "1".into()),
                ("OPENCODE_DISABLE_SHARE", "1".into()),
                ("OPENCODE_DISABLE_LSP_DOWNLOAD", "1".into()),
                ("OPENCODE_DISABLE_DEFAULT_PLUGINS", "1".into()),
                ("OPENCODE_DISABLE_CLAUDE_CODE", "1".into()),
                ("OPENCODE_DISABLE_EXTERNAL_SKILLS", "1".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
            json!({"command": [program, "acp", "--pure"], "models": [agent.model], "env": env})
        }
    }
}

/// humd, a worker serving only `agent`, the mock it calls.
async fn real_stack(agent: Agent, program: &Path, nest: Value) -> (Stack, MockModel) {
    let mock = MockModel::start(agent.api).await;
    let s = Stack::start(Value::Null, &[]);
    let entry = hive(
        agent,
        program,
        &mock,
        &s.sb.dir.path().join(format!("{}-home", agent.name)),
    );
    let mut limits = json!({"maxActiveCells": 4, "firstEventTimeoutMs": 120000});
    if let (Some(l), Some(n)) = (limits.as_object_mut(), nest.as_object()) {
        l.extend(n.clone());
    }
    let config = json!({"claude": {"enabled": false}, "sim": {"enabled": false},
        "acp": {agent.name: entry}, "cwd": s.sb.work(), "nest": limits,
        "tools": {"permissionTimeoutMs": 60000}});
    let worker = s.worker_with(config, &[]);
    let s = Stack {
        worker: Some(worker),
        ..s
    };
    s.wait_worker().await;
    (s, mock)
}

fn prompt(agent: Agent, sid: &str, text: &str) -> Tone {
    Tone::new(thrum::Prompt {
        text: Some(text.into()),
        model_id: Some(agent.model.into()),
        ..Default::default()
    })
    .with_sid(sid)
}

/// Two warm turns, a cancel mid-turn, a permission ask, a forager's tool.
async fn turns_cancel_permission_and_tools(agent: Agent) {
    let Some(program) = program(agent) else {
        return;
    };
    let (s, mock) = real_stack(agent, &program, json!({})).await;
    let (forager, _) = Forager::connect(&s, &["echo"], Serve::Answer).await;
    wait_foragers(&s, 1).await;
    let (mut inbox, out) = asker_answering_permits(&s).await;

    out.send(&prompt(agent, "r", "hello there")).await.unwrap();
    let first = turn(&mut inbox).await;
    let fin = finish_of(&first);
    if agent.api == Api::OpenAiChat {
        // opencode puts the turn's token counts on its answer.
        assert!(
            fin["usage"]["output_tokens"].as_u64() > Some(0),
            "opencode's usage: {fin}"
        );
    }
    assert!(
        answer_text(&first).contains("MOCK says (turn 1): hello there"),
        "{}",
        answer_text(&first)
    );
    let pid = crate::acp::cell_pid(&s, "r").await;
    out.send(&prompt(agent, "r", "and again")).await.unwrap();
    let second = turn(&mut inbox).await;
    assert!(
        answer_text(&second).contains("MOCK says (turn 2): and again"),
        "{}",
        answer_text(&second)
    );
    assert_eq!(crate::acp::cell_pid(&s, "r").await, pid, "one warm process");

    // Cancel mid-turn: the agent stops, its process stays.
    out.send(&prompt(agent, "r", "SLOW please")).await.unwrap();
    loop {
        let t = crate::common::stack::next(&mut inbox).await;
        if matches!(&t.body, Body::Chunk(c) if c.chunk_type == thrum::ChunkType::TextDelta) {
            break;
        }
        assert!(
            !matches!(t.chi(), "finish" | "error"),
            "no text came: {t:?}"
        );
    }
    out.send(&Tone::new(thrum::Cancel::default()).with_sid("r"))
        .await
        .unwrap();
    assert_eq!(
        finish_of(&turn(&mut inbox).await)["finishReason"],
        "cancelled"
    );
    assert_eq!(
        crate::acp::cell_pid(&s, "r").await,
        pid,
        "stopped, not torn down"
    );

    // A permission ask: the agent's own file tool, allowed by the asker.
    let target = s.sb.work().join("allowed.txt");
    let ask_text = format!("WRITE_FILE {} written by the agent", target.display());
    out.send(&prompt(agent, "r", &ask_text)).await.unwrap();
    let ask = loop {
        let t = crate::common::stack::next(&mut inbox).await;
        if let Body::PermissionAsk(a) = t.body {
            break a;
        }
        assert!(!matches!(t.chi(), "finish" | "error"), "no ask came: {t:?}");
    };
    let options = ask.options.clone().unwrap_or_default();
    assert!(
        options
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["kind"] == "allow_once")),
        "the agent's options: {options}"
    );
    let allow = thrum::ReleasePermit {
        call_id: ask.call_id.clone(),
        decision: Some(thrum::Decision::Allow),
        message: None,
        updated_input: None,
        option_id: None,
        extra: Default::default(),
    };
    out.send(&Tone::new(allow).with_sid("r")).await.unwrap();
    finish_of(&turn(&mut inbox).await);
    assert_eq!(
        std::fs::read_to_string(&target)
            .ok()
            .as_deref()
            .map(str::trim),
        Some("written by the agent"),
        "the allowed write happened"
    );

    // A forager's tool through the cell's bridge.
    out.send(&prompt(
        agent,
        "r",
        r#"CALL_TOOL echo {"text": "through hum"}"#,
    ))
    .await
    .unwrap();
    let mut tones = Vec::new();
    loop {
        let t = crate::common::stack::next(&mut inbox).await;
        if let Body::PermissionAsk(a) = &t.body {
            // (An agent may ask before an MCP tool too.)
            let ok = thrum::ReleasePermit {
                call_id: a.call_id.clone(),
                decision: Some(thrum::Decision::Allow),
                message: None,
                updated_input: None,
                option_id: None,
                extra: Default::default(),
            };
            out.send(&Tone::new(ok).with_sid("r")).await.unwrap();
            continue;
        }
        let end = matches!(t.chi(), "finish" | "error");
        tones.push(t);
        if end {
            break;
        }
    }
    finish_of(&tones);
    assert_eq!(forager.calls().len(), 1, "the forager was called");
    assert!(
        answer_text(&tones).contains("MOCK tool result:")
            && answer_text(&tones).contains("through hum"),
        "{}",
        answer_text(&tones)
    );
    assert!(!mock.requests().is_empty());
    drop((inbox, out, forager));
    s.stop();
}

/// An evicted cell's sid comes back with its history (`session/load`),
/// then the worker is SIGKILLed and nothing is left.
async fn eviction_load_and_sigkill(agent: Agent) {
    let Some(program) = program(agent) else {
        return;
    };
    let (mut s, mock) = real_stack(agent, &program, json!({"maxActiveCells": 1})).await;
    let (mut inbox, out) = s.connect("bee").await;
    out.send(&prompt(agent, "keep", "remember the word quince"))
        .await
        .unwrap();
    finish_of(&turn(&mut inbox).await);
    let pid = crate::acp::cell_pid(&s, "keep").await;
    if agent.api == Api::Gemini {
        // Gemini CLI 0.61 names a session's file by the minute it began and
        // loses a session loaded within that same minute: the load waits
        // for the clock's next minute (a condition, not a guess).
        let minute = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                / 60
        };
        let began = minute();
        assert!(wait_until(std::time::Duration::from_secs(70), || minute() > began));
    }
    out.send(&prompt(agent, "other", "someone else"))
        .await
        .unwrap();
    finish_of(&turn(&mut inbox).await);
    assert!(
        wait_until(PROMPTLY, || stat(pid).is_none()),
        "keep's cell was not evicted"
    );
    out.send(&prompt(agent, "keep", "which word?"))
        .await
        .unwrap();
    let back = turn(&mut inbox).await;
    let fin = finish_of(&back);
    assert!(fin.get("historyCarried").is_none(), "loaded: {fin}");
    let last = mock.conversations().into_iter().last().unwrap_or_default();
    assert!(
        last.iter().any(|t| t.contains("remember the word quince"))
            && last.last().is_some_and(|t| t == "which word?"),
        "the model saw the history: {last:?}"
    );
    assert!(
        answer_text(&back).contains("which word?"),
        "{}",
        answer_text(&back)
    );

    // The worker dies mid-turn: the asker hears, nothing is left.
    out.send(&prompt(agent, "keep", "SLOW and then the end"))
        .await
        .unwrap();
    loop {
        let t = crate::common::stack::next(&mut inbox).await;
        if matches!(&t.body, Body::Chunk(c) if c.chunk_type == thrum::ChunkType::TextDelta) {
            break;
        }
    }
    let mut worker = s.worker.take().unwrap();
    signal(worker.id() as i32, rustix::process::Signal::KILL);
    worker.wait().unwrap();
    let end = loop {
        let t = crate::common::stack::next(&mut inbox).await.to_value();
        if matches!(t["chi"].as_str(), Some("finish" | "error")) {
            break t;
        }
    };
    assert_eq!(end["code"], "worker_lost", "{end}");
    let daemon = s.daemon.id() as i32;
    assert!(
        wait_until(std::time::Duration::from_secs(10), || s
            .sb
            .live()
            .iter()
            .all(|p| p.pid == daemon)),
        "processes outlived the SIGKILLed worker: {:?}",
        s.sb.live()
    );
    drop((inbox, out));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_serves_warm_turns_cancel_permissions_and_tools() {
    turns_cancel_permission_and_tools(GEMINI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_comes_back_with_its_history_and_leaves_nothing() {
    eviction_load_and_sigkill(GEMINI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_serves_warm_turns_cancel_permissions_and_tools() {
    turns_cancel_permission_and_tools(OPENCODE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_comes_back_with_its_history_and_leaves_nothing() {
    eviction_load_and_sigkill(OPENCODE).await;
}
