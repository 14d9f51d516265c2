//! The simulator's MCP client, as claude's: each stdio server named in
//! `--mcp-config` is started (its child, in the agent's process group) and
//! spoken to with the `rmcp` SDK; its tools are `mcp__<server>__<tool>`.
//! The rest of the simulator is synchronous; this module owns a small
//! runtime and blocks on it for each request.

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use std::process::Stdio;

/// The client side of a session: like claude, it lists the server's tools
/// again when told they changed.
#[derive(Clone)]
struct Relister;

impl rmcp::ClientHandler for Relister {
    async fn on_tool_list_changed(&self, context: rmcp::service::NotificationContext<RoleClient>) {
        let peer = context.peer.clone();
        tokio::spawn(async move {
            let _ = peer.list_all_tools().await;
        });
    }
}

/// One connected server.
struct Server {
    name: String,
    client: RunningService<RoleClient, Relister>,
    _child: tokio::process::Child,
}

/// The MCP servers of one agent.
pub struct McpClients {
    rt: tokio::runtime::Runtime,
    servers: Vec<Server>,
}

/// What a tool call gave back.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub text: String,
    pub is_error: bool,
}

/// `--mcp-config` values: JSON, or the path of a JSON file (as claude takes).
fn read_config(value: &str) -> Result<Value, String> {
    let text = if value.trim_start().starts_with('{') {
        value.to_owned()
    } else {
        std::fs::read_to_string(value)
            .map_err(|e| format!("cannot read MCP config {value}: {e}"))?
    };
    serde_json::from_str(&text).map_err(|e| format!("invalid MCP config: {e}"))
}

impl McpClients {
    /// Starts and connects every stdio server the configs name.
    pub fn connect(configs: &[String]) -> Result<McpClients, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the MCP runtime: {e}"))?;
        let mut servers = Vec::new();
        for value in configs {
            let cfg = read_config(value)?;
            let Some(map) = cfg.get("mcpServers").and_then(Value::as_object) else {
                continue;
            };
            for (name, spec) in map {
                let Some(command) = spec.get("command").and_then(Value::as_str) else {
                    eprintln!("sim-agent: MCP server {name} is not a stdio server; skipped");
                    continue;
                };
                let args: Vec<String> = spec
                    .get("args")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let server = rt.block_on(async {
                    let mut child = tokio::process::Command::new(command)
                        .args(&args)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::inherit())
                        .kill_on_drop(true)
                        .spawn()
                        .map_err(|e| format!("cannot start MCP server {name}: {e}"))?;
                    let (Some(out), Some(inp)) = (child.stdout.take(), child.stdin.take()) else {
                        return Err(format!("MCP server {name} has no stdio"));
                    };
                    let client = Relister
                        .serve((out, inp))
                        .await
                        .map_err(|e| format!("MCP server {name} did not initialize: {e}"))?;
                    Ok(Server {
                        name: name.clone(),
                        client,
                        _child: child,
                    })
                })?;
                servers.push(server);
            }
        }
        Ok(McpClients { rt, servers })
    }

    /// The connected servers' names.
    pub fn server_names(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.name.clone()).collect()
    }

    /// Every tool now, as the model sees it: `mcp__<server>__<tool>`.
    pub fn tool_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for s in &self.servers {
            match self.rt.block_on(s.client.list_all_tools()) {
                Ok(tools) => {
                    names.extend(tools.iter().map(|t| format!("mcp__{}__{}", s.name, t.name)))
                }
                Err(e) => eprintln!(
                    "sim-agent: MCP server {} did not list its tools: {e}",
                    s.name
                ),
            }
        }
        names
    }

    /// The input schema the model is shown for a tool, named as for
    /// [`McpClients::call`]; none when no server offers it.
    pub fn schema_of(&self, name: &str) -> Option<Value> {
        let (server, tool) = match name.strip_prefix("mcp__").and_then(|r| r.split_once("__")) {
            Some((server, tool)) => (self.servers.iter().find(|s| s.name == server)?, tool),
            None => (self.servers.first()?, name),
        };
        let tools = self.rt.block_on(server.client.list_all_tools()).ok()?;
        let found = tools.into_iter().find(|t| t.name == tool)?;
        Some(Value::Object((*found.input_schema).clone()))
    }

    /// Calls a tool by its full name (`mcp__hum__echo`) or, when one server
    /// serves it, by its own (`echo`).
    pub fn call(&self, name: &str, args: Value) -> CallOutcome {
        self.call_all(&[(name.to_owned(), args)])
            .pop()
            .expect("one call, one outcome")
    }

    /// Calls every tool of `calls` at once, as claude does with the tool
    /// uses of one message (none waits for another's result); the outcomes
    /// in the same order.
    pub fn call_all(&self, calls: &[(String, Value)]) -> Vec<CallOutcome> {
        let mut running = tokio::task::JoinSet::new();
        for (i, (name, args)) in calls.iter().enumerate() {
            let (server, tool) = match name.strip_prefix("mcp__").and_then(|r| r.split_once("__")) {
                Some((server, tool)) => (self.servers.iter().find(|s| s.name == server), tool),
                None => (self.servers.first(), name.as_str()),
            };
            let Some(server) = server else {
                let text = format!("no MCP server serves {name}");
                running.spawn_on(async move { (i, Err(text)) }, self.rt.handle());
                continue;
            };
            let mut params = CallToolRequestParams::new(tool.to_owned());
            if let Value::Object(map) = args.clone() {
                params = params.with_arguments(map);
            }
            let peer = server.client.peer().clone();
            running.spawn_on(
                async move {
                    (
                        i,
                        peer.call_tool(params)
                            .await
                            .map_err(|e| format!("MCP error: {e}")),
                    )
                },
                self.rt.handle(),
            );
        }
        let mut outcomes: Vec<Option<CallOutcome>> = vec![None; calls.len()];
        self.rt.block_on(async {
            while let Some(done) = running.join_next().await {
                if let Ok((i, result)) = done {
                    outcomes[i] = Some(outcome(result));
                }
            }
        });
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(CallOutcome {
                    text: "the call's task failed".to_owned(),
                    is_error: true,
                })
            })
            .collect()
    }
}

/// What a call's result says, as text.
fn outcome(result: Result<rmcp::model::CallToolResult, String>) -> CallOutcome {
    match result {
        Ok(result) => CallOutcome {
            text: result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect::<Vec<_>>()
                .join(""),
            is_error: result.is_error.unwrap_or(false),
        },
        Err(text) => CallOutcome {
            text,
            is_error: true,
        },
    }
}

impl Drop for McpClients {
    fn drop(&mut self) {
        // Closing each session closes its server's stdin: a server that
        // honours EOF ends on its own; the rest are killed with the agent.
        for s in self.servers.drain(..) {
            let _ = self.rt.block_on(s.client.cancel());
        }
    }
}

/// The rounds of tool calls a prompt asks for: its calls split at each
/// `NEXT_ROUND`. The calls of one round are made together (one message of
/// tool uses); a round starts after the previous one's results came back.
pub fn rounds_in(prompt: &str) -> Vec<Vec<(String, Value)>> {
    prompt
        .split("NEXT_ROUND")
        .map(calls_in)
        .filter(|r| !r.is_empty())
        .collect()
}

/// Text the agent writes before its first tool call: what follows
/// `SAY_FIRST ` up to the first `CALL_TOOL`.
pub fn say_first_in(prompt: &str) -> Option<String> {
    let rest = &prompt[prompt.find("SAY_FIRST ")? + "SAY_FIRST ".len()..];
    let said = rest[..rest.find("CALL_TOOL").unwrap_or(rest.len())].trim();
    (!said.is_empty()).then(|| said.to_owned())
}

/// The tool calls a prompt asks for: every `CALL_TOOL <name> <json>` in it,
/// in order (the JSON is optional; without it the arguments are `{}`).
pub fn calls_in(prompt: &str) -> Vec<(String, Value)> {
    let mut calls = Vec::new();
    let mut rest = prompt;
    while let Some(at) = rest.find("CALL_TOOL ") {
        rest = &rest[at + "CALL_TOOL ".len()..];
        let name: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
        rest = &rest[name.len()..];
        let trimmed = rest.trim_start();
        let mut args = Value::Object(Default::default());
        if trimmed.starts_with('{') {
            let mut stream = serde_json::Deserializer::from_str(trimmed).into_iter::<Value>();
            if let Some(Ok(v)) = stream.next() {
                let used = stream.byte_offset();
                args = v;
                rest = &trimmed[used..];
            }
        }
        if !name.is_empty() {
            calls.push((name, args));
        }
    }
    calls
}

/// The tools whose schema the answer shows: every `DESCRIBE_TOOL <tool>`.
pub fn describes_in(prompt: &str) -> Vec<String> {
    prompt
        .split("DESCRIBE_TOOL ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The permission asks a prompt makes: every `ASK_PERMISSION <tool>`.
pub fn permission_asks_in(prompt: &str) -> Vec<String> {
    prompt
        .split("ASK_PERMISSION ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_split_at_next_round_and_say_first_stops_at_the_first_call() {
        let p = r#"SAY_FIRST Let me look. CALL_TOOL a {"x": 1} CALL_TOOL b NEXT_ROUND CALL_TOOL c"#;
        let rounds = rounds_in(p);
        assert_eq!(rounds.len(), 2);
        assert_eq!(
            rounds[0]
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(rounds[0][0].1, serde_json::json!({"x": 1}));
        assert_eq!(rounds[1][0].0, "c");
        assert_eq!(say_first_in(p).as_deref(), Some("Let me look."));
        assert_eq!(say_first_in("CALL_TOOL a"), None);
        assert!(rounds_in("no calls NEXT_ROUND here").is_empty());
    }

    #[test]
    fn calls_are_read_in_order_with_their_arguments() {
        let got = calls_in(
            r#"please CALL_TOOL echo {"text": "hi there"} then CALL_TOOL mcp__hum__add {"a": 2, "b": 3} and CALL_TOOL ping"#,
        );
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            ("echo".into(), serde_json::json!({"text": "hi there"}))
        );
        assert_eq!(
            got[1],
            ("mcp__hum__add".into(), serde_json::json!({"a": 2, "b": 3}))
        );
        assert_eq!(got[2], ("ping".into(), serde_json::json!({})));
        assert!(calls_in("no calls here").is_empty());
        assert_eq!(
            permission_asks_in("ASK_PERMISSION Bash then ASK_PERMISSION Write"),
            ["Bash", "Write"]
        );
    }
}
