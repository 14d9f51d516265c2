//! Bees of the old system, unchanged (issue 26): each bee here is written
//! from the old `WIRE.md` and `hives/README.md` field tables alone — a raw
//! Unix socket and JSON lines, no hum or thrum code — and reads text the
//! way the old clients did (`chunkType: "text_delta"`, `delta`; the old
//! table's `part` never matched what its own humd sent). Real humd, a sim
//! worker; each test ends with the leak check.
//!
//! Each test fails on main before issue 26 (55419bc): the forager keyed on
//! `name` never answers, the `permitId` answer is refused, the unanswered
//! ask waits the five-minute call timeout, the `parameters` and
//! `input_schema` schemas are lost, `result`/`content` answers read as
//! empty, a re-dial with the same `hid` is a conflict, a prompt before
//! hello is refused, and `provides` leaves the agent's own tools on.

use crate::common::stack::*;
use crate::common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// A bee of the old system: NDJSON over the socket, nothing more.
struct OldBee {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    rids: u64,
}

impl OldBee {
    async fn dial(s: &Stack) -> OldBee {
        let (read, write) = UnixStream::connect(&s.sock).await.unwrap().into_split();
        OldBee {
            lines: BufReader::new(read).lines(),
            write,
            rids: 0,
        }
    }

    /// Sends `tone` with a fresh `rid` (the old table requires one).
    async fn send(&mut self, mut tone: Value) {
        self.rids += 1;
        if tone.get("rid").is_none() {
            tone["rid"] = json!(format!("old-{}", self.rids));
        }
        let mut line = serde_json::to_vec(&tone).unwrap();
        line.push(b'\n');
        self.write.write_all(&line).await.unwrap();
    }

    /// The next tone; `None` once the socket closed.
    async fn recv(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(PROMPTLY, self.lines.next_line())
            .await
            .expect("humd said nothing in time")
            .ok()??;
        // Lines that do not parse are dropped, as the old clients do.
        match serde_json::from_str(&line) {
            Ok(v) => Some(v),
            Err(_) => Box::pin(self.recv()).await,
        }
    }

    /// Tones up to the first that `stop` accepts, which is returned last.
    async fn until(&mut self, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let t = self.recv().await.expect("the connection closed");
            let done = stop(&t);
            seen.push(t);
            if done {
                return seen;
            }
        }
    }

    /// A hello as the old README's table gives it.
    async fn hello(&mut self, bee: Value, extra: Value) {
        let mut hello = json!({"chi": "hello", "bee": bee, "protoVersion": "0.7.0", "version": "0.31.18",
            "chis": ["hello", "prompt", "chunk", "finish", "error", "tool-call", "tool-result",
                     "permission-ask", "release-permit", "breath", "pulse", "session-ready"]});
        for (k, v) in extra.as_object().unwrap() {
            hello[k] = v.clone();
        }
        self.send(hello).await;
        let breath = self.until(|t| t["chi"] == "breath").await;
        assert_eq!(breath.last().unwrap()["chi"], "breath");
    }
}

fn text_of(tones: &[Value]) -> String {
    tones
        .iter()
        .filter(|t| t["chi"] == "chunk" && t["chunkType"] == "text_delta")
        .filter_map(|t| t["delta"].as_str())
        .collect()
}

/// The schema the agent was shown for `tool`, as the sim's answer says it
/// (`[<tool> takes <schema>]`).
fn schema_said(text: &str, tool: &str) -> Option<Value> {
    let marker = format!("[{tool} takes ");
    let rest = &text[text.find(&marker)? + marker.len()..];
    serde_json::Deserializer::from_str(rest)
        .into_iter::<Value>()
        .next()?
        .ok()
}

fn is_end(t: &Value) -> bool {
    t["chi"] == "finish" || t["chi"] == "error"
}

/// A sim worker whose tool calls wait the default five minutes and whose
/// permission asks wait `permit_ms`.
fn stack(permit_ms: u64) -> Stack {
    let mut s = Stack::start(Value::Null, &[]);
    s.worker = Some(s.worker_with(
        json!({"claude": {"enabled": false}, "sim": {"models": ["sim"]}, "cwd": s.sb.work(),
               "tools": {"permissionTimeoutMs": permit_ms}}),
        &[],
    ));
    s
}

/// Waits until the worker starts new cells without the agent's own `Read`.
async fn wait_builtins_off(s: &Stack) {
    assert!(
        crate::common::forager::wait_until_async(PROMPTLY, || async {
            hum::client::fetch_status(&s.sock).await.is_ok_and(|st| {
                st.workers.iter().any(|w| {
                    w.status
                        .as_ref()
                        .is_some_and(|ws| ws.builtins_off.iter().any(|b| b == "Read"))
                })
            })
        })
        .await,
        "the worker never turned the agent's own file tools off"
    );
}

/// The old forager's loop: answers each call it owns, keyed on `name`
/// (as the old `paid-oracle` forager is): `quote` with `result`, `lookup`
/// with `content`.
async fn serve_old_calls(mut forager: OldBee) -> Vec<Value> {
    let mut calls = Vec::new();
    while let Some(t) = forager.recv().await {
        if t["chi"] != "tool-call" {
            continue;
        }
        calls.push(t.clone());
        let (sid, call) = (t["sid"].clone(), t["callId"].clone());
        let answer = match t["name"].as_str() {
            Some("quote") => {
                json!({"chi": "tool-result", "sid": sid, "callId": call, "result": format!("{} is 42.00", t["args"]["ticker"].as_str().unwrap_or("?"))})
            }
            Some("lookup") => {
                json!({"chi": "tool-result", "sid": sid, "callId": call, "content": format!("found {}", t["args"]["key"].as_str().unwrap_or("?"))})
            }
            // Not ours: an old forager ignores it.
            _ => continue,
        };
        forager.send(answer).await;
        if calls.len() == 2 {
            break;
        }
    }
    calls
}

/// Items 1, 4 and 6: an old forager's `parameters` and `input_schema`
/// specs keep their schemas, its calls carry `name`, its `result` and
/// `content` answers reach the agent, and its `provides: ["fs"]` takes the
/// agent's own file tools away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_forager_keyed_on_name_serves_its_legacy_specs_and_answers() {
    let s = stack(60_000);
    s.wait_worker().await;
    let mut forager = OldBee::dial(&s).await;
    forager
        .hello(
            json!(["forager"]),
            json!({"hive": "paid-oracle", "hid": format!("fbee_{}", "ab".repeat(32)),
                   "provides": ["fs"],
                   "tools": [
                       {"name": "quote", "description": "a price",
                        "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]}},
                       {"name": "lookup", "description": "a key",
                        "input_schema": {"type": "object", "properties": {"key": {"type": "string"}}}}]}),
        )
        .await;
    wait_builtins_off(&s).await;
    let served = tokio::spawn(serve_old_calls(forager));
    let mut asker = OldBee::dial(&s).await;
    asker.hello(json!("old-asker"), json!({})).await;
    asker
        .send(json!({"chi": "prompt", "sid": "old-1", "modelId": "sim",
                     "text": "DESCRIBE_TOOL mcp__hum__quote DESCRIBE_TOOL mcp__hum__lookup CALL_TOOL quote {\"ticker\": \"HUM\"} CALL_TOOL lookup {\"key\": \"k1\"}"}))
        .await;
    let tones = asker.until(is_end).await;
    assert_eq!(tones.last().unwrap()["chi"], "finish", "{tones:?}");
    let text = text_of(&tones);
    assert_eq!(
        schema_said(&text, "mcp__hum__quote"),
        Some(
            json!({"type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]})
        ),
        "the parameters schema was lost: {text}"
    );
    assert_eq!(
        schema_said(&text, "mcp__hum__lookup"),
        Some(json!({"type": "object", "properties": {"key": {"type": "string"}}})),
        "the input_schema was lost: {text}"
    );
    assert!(
        text.contains("[mcp__hum__quote said HUM is 42.00]"),
        "{text}"
    );
    assert!(
        text.contains("[mcp__hum__lookup said found k1]"),
        "{text}\ndaemon:\n{}\nworker:\n{}",
        s.log("daemon.log"),
        s.log("worker.log")
    );
    let calls = tokio::time::timeout(PROMPTLY, served)
        .await
        .expect("the forager's loop ended")
        .unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for c in &calls {
        assert_eq!(c["name"], c["toolName"], "{c}");
        assert_eq!(c["sid"], "old-1");
    }
    let ready: Vec<&Value> = tones
        .iter()
        .filter(|t| t["chi"] == "session-ready")
        .collect();
    let tools = ready
        .first()
        .map(|r| r["tools"].to_string())
        .unwrap_or_default();
    assert!(
        tools.contains("mcp__hum__quote") && !tools.contains("\"Read\""),
        "the agent still has its own file tools: {tools}"
    );
    drop(asker);
    s.stop();
}

/// Items 2 and 3: an old asker gets permission asks in the old shape and
/// answers by `permitId`; one it never answers lapses after
/// `tools.permissionTimeoutMs`, not the five-minute call timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_asker_answers_permits_by_permit_id_and_an_unanswered_one_lapses_soon() {
    let s = stack(1_500);
    s.wait_worker().await;
    let mut asker = OldBee::dial(&s).await;
    asker.hello(json!("old-asker"), json!({})).await;
    asker
        .send(json!({"chi": "prompt", "sid": "perm-1", "modelId": "sim", "text": "ASK_PERMISSION Bash"}))
        .await;
    let seen = asker
        .until(|t| t["chi"] == "permission-ask" || is_end(t))
        .await;
    let ask = seen.last().unwrap().clone();
    assert_eq!(ask["chi"], "permission-ask", "{seen:?}");
    assert_eq!(ask["sid"], "perm-1");
    let permit_id = ask["permitId"].as_str().expect("permitId").to_owned();
    assert!(
        ask["question"].as_str().is_some_and(|q| q.contains("Bash")),
        "{ask}"
    );
    assert_eq!(ask["context"]["toolName"], "Bash", "{ask}");
    asker
        .send(json!({"chi": "release-permit", "sid": "perm-1", "permitId": permit_id, "decision": "allow"}))
        .await;
    let tones = asker.until(is_end).await;
    assert!(
        !tones.iter().any(|t| t["chi"] == "error"),
        "the permitId answer was refused: {tones:?}"
    );
    assert!(
        text_of(&tones).contains("[permission for Bash: allow]"),
        "{tones:?}"
    );

    // It lists permission-ask (old bees copied the whole list) and never
    // answers this one: the agent is denied after 1.5 s.
    asker
        .send(json!({"chi": "prompt", "sid": "perm-1", "modelId": "sim", "text": "ASK_PERMISSION Write"}))
        .await;
    let tones = asker.until(is_end).await;
    assert!(
        text_of(&tones).contains(
            "[permission for Write: deny: nobody answered the permission ask within 1500 ms]"
        ),
        "{tones:?}"
    );
    drop(asker);
    s.stop();
}

/// Item 5: a forager that re-dials with its `hid` before its old
/// connection closed takes its own place; the old one is told and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_forager_that_redials_with_its_hid_replaces_its_old_connection() {
    let s = stack(60_000);
    s.wait_worker().await;
    let hid = format!("fbee_{}", "cd".repeat(32));
    let hello = json!({"hive": "paid-oracle", "hid": hid,
                       "tools": [{"name": "quote", "parameters": {"type": "object"}}]});
    let mut old = OldBee::dial(&s).await;
    old.hello(json!(["forager"]), hello.clone()).await;
    let mut new = OldBee::dial(&s).await;
    new.hello(json!(["forager"]), hello).await;
    // The old connection's last word, then its end.
    let mut said = Vec::new();
    while let Some(t) = old.recv().await {
        said.push(t);
    }
    assert!(
        said.iter()
            .any(|t| t["chi"] == "error" && t["code"] == "replaced"),
        "{said:?}"
    );
    let status = hum::client::fetch_status(&s.sock).await.unwrap();
    assert_eq!(status.daemon.tools.foragers.len(), 1, "{status:?}");
    assert!(status.daemon.tools.conflicts.is_empty(), "{status:?}");
    // Calls go to the new connection.
    let served = tokio::spawn(serve_old_calls(new));
    let mut asker = OldBee::dial(&s).await;
    asker.hello(json!("old-asker"), json!({})).await;
    asker
        .send(json!({"chi": "prompt", "sid": "redial", "modelId": "sim",
                     "text": "CALL_TOOL quote {\"ticker\": \"X\"}"}))
        .await;
    let tones = asker.until(is_end).await;
    assert!(
        text_of(&tones).contains("[mcp__hum__quote said X is 42.00]"),
        "{tones:?}"
    );
    served.abort();
    drop(asker);
    s.stop();
}

/// Item 7: a bee that prompts before any hello is served (an implicit
/// asker) rather than refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_bee_that_prompts_before_hello_gets_its_answer() {
    let s = stack(60_000);
    s.wait_worker().await;
    let mut bee = OldBee::dial(&s).await;
    bee.send(json!({"chi": "prompt", "sid": "no-hello", "modelId": "sim", "text": "straight in"}))
        .await;
    let tones = bee.until(is_end).await;
    assert_eq!(tones.last().unwrap()["chi"], "finish", "{tones:?}");
    assert!(
        text_of(&tones).contains("you said <straight in>"),
        "{tones:?}"
    );
    assert!(s.log("daemon.log").contains("daemon.implicit_hello"));
    drop(bee);
    s.stop();
}
