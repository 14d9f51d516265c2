//! Usage and budgets: what turns cost is recorded per turn, summed exactly
//! by `hum usage`, kept across a restart of `hum up`, counted on
//! `/metrics`; a spent budget refuses its scope's prompts (a thrum error,
//! a 429 at the gateway) and nothing else's; `hardStop` cancels what runs.

use crate::common::forager::wait_until_async;
use crate::common::stack::{sim_prompt, stop_child, stop_up, Stack};
use crate::common::*;
use hum::client::Client;
use hum::usage::report::UsageReport;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// `hum up` with this hum.json, the sim hive alone, no gateway.
fn hum_up(sb: &Sandbox, sock: &Path, config: &Path) -> Child {
    sb.hum(&[
        "up",
        "--socket",
        sock.to_str().unwrap(),
        "--metrics-addr=127.0.0.1:0",
        "--no-gateway",
        "--config",
        config.to_str().unwrap(),
    ])
    .env("HUM_STATE_DIR", sb.dir.path().join("state"))
    .env("PATH", "/usr/bin:/bin")
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
}

/// `hum usage --json --since today --by <by>` (from the file alone).
fn usage(sb: &Sandbox, by: &str) -> UsageReport {
    let out = sb
        .hum(&["usage", "--json", "--since", "today", "--by", by])
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hum usage: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("hum usage --json")
}

/// Runs one turn as `client` and returns how it ended.
async fn turn(client: &mut Client, sid: &str, text: &str) -> hum::client::Answer {
    client
        .prompt(sid, Client::text_prompt(text, Some("sim")))
        .await
        .unwrap();
    tokio::time::timeout(PROMPTLY, client.answer(sid))
        .await
        .expect("the turn ended")
        .unwrap()
}

fn row<'a>(r: &'a UsageReport, key: &str) -> &'a hum::usage::UsageRow {
    r.rows
        .iter()
        .find(|x| x.key == key)
        .unwrap_or_else(|| panic!("no row {key} in {:?}", r.rows))
}

/// (bee, sid, input, output, cache read, cache creation, cost): costs in
/// binary fractions, so every sum is exact.
const TURNS: [(&str, &str, u64, u64, u64, u64, f64); 5] = [
    ("alpha", "s1", 100, 10, 1, 2, 0.125),
    ("alpha", "s1", 200, 20, 3, 4, 0.25),
    ("alpha", "s2", 300, 30, 5, 6, 0.5),
    ("beta", "s3", 400, 40, 7, 8, 1.0),
    ("beta", "s3", 500, 50, 9, 10, 0.0625),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_two_bees_and_three_sids_sums_exactly_and_survives_a_restart() {
    let sb = Sandbox::new();
    let sock = sb.dir.path().join("run/thrum.sock");
    let config = sb.dir.path().join("hum.json");
    std::fs::write(
        &config,
        json!({"claude": {"enabled": false}, "cwd": sb.work()}).to_string(),
    )
    .unwrap();
    let up = hum_up(&sb, &sock, &config);
    assert!(
        wait_until(PROMPTLY, || std::os::unix::net::UnixStream::connect(&sock)
            .is_ok()),
        "hum up never listened"
    );
    let mut alpha = Client::asker(&sock, "alpha").await.unwrap();
    let mut beta = Client::asker(&sock, "beta").await.unwrap();
    // The worker links a moment after humd listens.
    assert!(
        wait_until_async(PROMPTLY, || async {
            hum::client::fetch_status(&sock)
                .await
                .is_ok_and(|s| s.daemon.workers == 1)
        })
        .await
    );
    for (bee, sid, i, o, cr, cc, cost) in TURNS {
        let client = if bee == "alpha" {
            &mut alpha
        } else {
            &mut beta
        };
        let text =
            format!("SIM_USAGE in={i} out={o} cache_read={cr} cache_creation={cc} cost={cost}");
        let a = turn(client, sid, &text).await;
        assert!(a.end.is_ok(), "{bee}/{sid}: {:?}", a.end);
    }
    // The writer is behind the router by a moment.
    assert!(
        wait_until(PROMPTLY, || usage(&sb, "sid").total.turns == 5),
        "five turns recorded: {:?}",
        usage(&sb, "sid")
    );
    let check = |extra_s1: (u64, f64)| {
        let by_sid = usage(&sb, "sid");
        let s1 = row(&by_sid, "s1");
        assert_eq!(s1.turns, 2 + extra_s1.0);
        assert_eq!(s1.tally.input_tokens, 300 + extra_s1.0 * 1000);
        assert_eq!(s1.tally.output_tokens, 30);
        assert_eq!(s1.tally.cache_read_tokens, 4);
        assert_eq!(s1.tally.cache_creation_tokens, 6);
        assert_eq!(s1.tally.cost_usd, 0.375 + extra_s1.1);
        assert_eq!(row(&by_sid, "s2").tally.cost_usd, 0.5);
        assert_eq!(row(&by_sid, "s3").tally.input_tokens, 900);
        assert_eq!(row(&by_sid, "s3").tally.cost_usd, 1.0625);
        assert_eq!(by_sid.total.tally.cost_usd, 1.9375 + extra_s1.1);
        assert_eq!(by_sid.total.tally.input_tokens, 1500 + extra_s1.0 * 1000);
        assert_eq!(by_sid.total.tally.cache_creation_tokens, 30);
        let by_bee = usage(&sb, "bee");
        assert_eq!(row(&by_bee, "alpha").turns, 3 + extra_s1.0);
        assert_eq!(row(&by_bee, "alpha").tally.cost_usd, 0.875 + extra_s1.1);
        assert_eq!(row(&by_bee, "beta").tally.cost_usd, 1.0625);
        assert_eq!(row(&by_bee, "beta").tally.output_tokens, 90);
        // One UTC day; every model's rows add up to the whole.
        let by_day = usage(&sb, "day");
        assert_eq!(by_day.rows.len(), 1);
        assert_eq!(by_day.rows[0].tally, by_sid.total.tally);
        let by_model = usage(&sb, "model");
        let cost: f64 = by_model.rows.iter().map(|r| r.tally.cost_usd).sum();
        assert_eq!(cost, by_sid.total.tally.cost_usd);
        // One model (the sim's), also for the turn after the restart whose
        // share humd worked out from the session's totals.
        assert_eq!(by_model.rows.len(), 1, "{by_model:?}");
        assert_eq!(row(&usage(&sb, "hive"), "sim").turns, 5 + extra_s1.0);
    };
    check((0, 0.0));
    // A period that ends before the turns has none of them.
    let out = sb
        .hum(&["usage", "--json", "--since", "2h", "--until", "1h"])
        .env("HUM_STATE_DIR", sb.dir.path().join("state"))
        .output()
        .unwrap();
    let earlier: UsageReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(earlier.total.turns, 0);
    assert!(earlier.until_ms - earlier.since_ms == 3_600_000);
    // /metrics counts the same tokens and dollars since humd started.
    let addr = std::fs::read_to_string(sock.with_file_name("metrics.addr")).unwrap();
    let m = scrape_metrics(&addr);
    assert_eq!(
        metric(
            &m,
            "hum_tokens_total",
            &[("hive", "sim"), ("kind", "input")]
        ),
        1500.0
    );
    assert_eq!(
        metric(&m, "hum_tokens_total", &[("kind", "cache_read")]),
        25.0
    );
    assert_eq!(metric(&m, "hum_cost_usd_total", &[("hive", "sim")]), 1.9375);
    assert_eq!(metric(&m, "hum_spent_today_usd", &[]), 1.9375);
    alpha.close();
    beta.close();

    // Down: the file alone answers, with the same numbers.
    stop_up(up);
    check((0, 0.0));
    // Up again: the old turns are still counted (today's spend too), and
    // new ones add to them.
    let up = hum_up(&sb, &sock, &config);
    assert!(
        wait_until_async(PROMPTLY, || async {
            hum::client::fetch_status(&sock)
                .await
                .is_ok_and(|s| s.daemon.workers == 1)
        })
        .await,
        "hum up did not come back"
    );
    let status = hum::client::fetch_status(&sock).await.unwrap();
    assert_eq!(status.daemon.usage.unwrap().spent_today_usd, 1.9375);
    let mut alpha = Client::asker(&sock, "alpha").await.unwrap();
    let a = turn(&mut alpha, "s1", "SIM_USAGE in=1000 out=0 cost=2").await;
    assert!(a.end.is_ok(), "{:?}", a.end);
    assert!(wait_until(PROMPTLY, || usage(&sb, "sid").total.turns == 6));
    check((1, 2.0));
    alpha.close();
    stop_up(up);
    sb.assert_no_leaks();
}

/// A hum.json for humd alone (budgets), outside any sandbox.
fn daemon_config(budgets: Value) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hum.json");
    std::fs::write(&path, json!({"budgets": budgets}).to_string()).unwrap();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_sid_budget_refuses_that_sid_and_serves_another() {
    let (_dir, config) = daemon_config(json!({"perSidDailyUsd": 0.5}));
    let stack = Stack::start(
        json!({"HUM_SIM_COST_USD": "0.25"}),
        &["--config", config.to_str().unwrap()],
    );
    stack.wait_worker().await;
    let mut bee = Client::asker(&stack.sock, "budget-test").await.unwrap();
    for _ in 0..2 {
        assert!(turn(&mut bee, "spender", "hello").await.end.is_ok());
    }
    // $0.50 spent: the budget is reached, the next prompt never starts.
    let a = turn(&mut bee, "spender", "one more").await;
    let e = a.end.expect_err("refused");
    assert_eq!(e.code, thrum::ErrorCode::BudgetExceeded, "{e:?}");
    assert_eq!(e.extra["scope"], "sid");
    assert_eq!(e.extra["limitUsd"], 0.5);
    assert_eq!(e.extra["spentUsd"], 0.5);
    let now = hum::usage::unix_ms();
    let midnight = (now / 86_400_000 + 1) * 86_400_000;
    let resets = humantime::parse_rfc3339(e.extra["resetsAt"].as_str().unwrap()).unwrap();
    assert_eq!(
        resets
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
        midnight,
        "resets at the next midnight UTC"
    );
    let retry = e.retry_after_ms.expect("a retry hint") as i64;
    assert!(
        (midnight - now - retry).abs() < 60_000,
        "retry in {retry} ms"
    );
    assert!(a.text.is_empty(), "no cell answered: {:?}", a.text);
    // Another sid of the same bee still works.
    assert!(turn(&mut bee, "frugal", "hello").await.end.is_ok());
    bee.close();

    // The gateway answers 429 in each API's shape, with Retry-After.
    let (mut gw, addr, ollama) =
        stack.gateway_doors(&["--no-auth", "--ollama-listen", "127.0.0.1:0"]);
    let ollama = ollama.expect("the Ollama door");
    let post_to = |addr: &str, path: &str, body: Value| -> (String, Value) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let body = body.to_string();
        write!(s, "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nx-hum-session: spender\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        (
            head.to_lowercase(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    let post = |path: &str, body: Value| post_to(&addr, path, body);
    let msgs = json!([{"role": "user", "content": "more"}]);
    let (head, body) = post(
        "/v1/chat/completions",
        json!({"model": "sim", "messages": msgs}),
    );
    assert!(
        head.starts_with("http/1.0 429") || head.starts_with("http/1.1 429"),
        "{head}"
    );
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    let retry_after: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    // A streaming request is refused before its stream starts, the same way.
    let (head, body) = post(
        "/v1/chat/completions",
        json!({"model": "sim", "stream": true, "messages": msgs}),
    );
    assert!(head.contains(" 429 "), "{head}");
    assert!(head.contains("retry-after: "), "{head}");
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    let (head, body) = post(
        "/v1/messages",
        json!({"model": "sim", "max_tokens": 100, "messages": msgs}),
    );
    assert!(head.contains(" 429 "), "{head}");
    assert!(head.contains("retry-after: "), "{head}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    let (head, body) = post("/v1/responses", json!({"model": "sim", "input": "more"}));
    assert!(head.contains(" 429 "), "{head}");
    assert!(head.contains("retry-after: "), "{head}");
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    for stream in [false, true] {
        let (head, body) = post_to(
            &ollama,
            "/api/chat",
            json!({"model": "sim", "stream": stream, "messages": msgs}),
        );
        assert!(head.contains(" 429 "), "{head}");
        assert!(head.contains("retry-after: "), "{head}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("budget")),
            "{body}"
        );
    }
    stop_child(&mut gw);
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_stop_cancels_the_running_turns_a_spent_budget_covers() {
    let (_dir, config) = daemon_config(json!({"dailyUsd": 0.25, "hardStop": true}));
    // Prompts with STALL stall after their first delta, until cancelled.
    let stack = Stack::start(
        json!({"HUM_SIM_COST_USD": "0.25", "HUM_SIM_STALL_AFTER_CHUNKS": "1",
               "HUM_SIM_FAULT_IF": "STALL"}),
        &["--config", config.to_str().unwrap()],
    );
    stack.wait_worker().await;
    let mut long = Client::asker(&stack.sock, "long").await.unwrap();
    long.send(&sim_prompt("long", "STALL here")).await.unwrap();
    // It runs (its first delta came).
    loop {
        let e = tokio::time::timeout(PROMPTLY, long.event_of("long"))
            .await
            .expect("the long turn starts")
            .unwrap();
        if matches!(e, hum::client::Event::Text { .. }) {
            break;
        }
    }
    // Another bee's turn finishes and spends the day's budget: the long
    // turn is cancelled at once, not left to run.
    let mut short = Client::asker(&stack.sock, "short").await.unwrap();
    assert!(turn(&mut short, "short", "hello").await.end.is_ok());
    let end = tokio::time::timeout(PROMPTLY, long.answer("long"))
        .await
        .expect("the long turn was stopped")
        .unwrap();
    let finish = end.end.expect("a cancelled finish");
    assert_eq!(finish.finish_reason, Some(thrum::FinishReason::Cancelled));
    let status = hum::client::fetch_status(&stack.sock).await.unwrap();
    assert_eq!(status.daemon.usage.unwrap().hard_stopped, 1);
    // And nothing new starts today.
    let refused = turn(&mut short, "short", "again").await;
    assert_eq!(
        refused.end.unwrap_err().code,
        thrum::ErrorCode::BudgetExceeded
    );
    long.close();
    short.close();
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_is_filed_under_the_bee_hum_prompt_or_the_gateway_names() {
    let stack = Stack::start(json!({}), &[]);
    stack.wait_worker().await;
    let sock = stack.sock.to_str().unwrap();
    let prompt = |extra: &[&str]| {
        let mut args = vec!["prompt", "--socket", sock, "--model", "sim"];
        args.extend_from_slice(extra);
        let out = stack.sb.hum(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    prompt(&["--sid", "p1", "--bee", "alpha", "hi"]);
    prompt(&["--sid", "p2", "hi"]);
    let (mut gw, addr) = stack.gateway(&["--no-auth"]);
    let chat = |headers: &str| {
        use std::io::{Read, Write};
        let body =
            json!({"model": "sim", "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "POST /v1/chat/completions HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(
            resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"),
            "{resp}"
        );
    };
    chat("x-hum-bee: gw-client\r\n");
    chat("");
    let usage = || {
        let out = stack
            .sb
            .hum(&["usage", "--json", "--since", "today", "--by", "bee"])
            .output()
            .unwrap();
        serde_json::from_slice::<UsageReport>(&out.stdout).expect("hum usage --json")
    };
    assert!(
        wait_until(PROMPTLY, || usage().total.turns == 4),
        "{:?}",
        usage()
    );
    let r = usage();
    let mut bees: Vec<(String, u64)> = r.rows.iter().map(|x| (x.key.clone(), x.turns)).collect();
    bees.sort();
    assert_eq!(
        bees,
        [
            ("alpha".to_string(), 1),
            ("gw-client".to_string(), 1),
            ("hum gateway".to_string(), 1),
            ("hum prompt".to_string(), 1)
        ]
    );
    stop_child(&mut gw);
    stack.stop();
}
