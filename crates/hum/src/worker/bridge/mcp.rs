//! MCP on a cell's socket, with the `rmcp` SDK: `tools/list` answers the
//! cell's catalogue as it is now, `tools/call` goes to humd as a
//! `tool-call` and comes back as the call's result.

use super::{peer_allowed, Bridge, CellTools, ToolAnswer, MAX_CONNECTIONS_PER_CELL};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::Value;
use std::sync::Arc;

/// One MCP session of one cell.
#[derive(Clone)]
struct CellServer {
    bridge: Arc<Bridge>,
    cell: Arc<CellTools>,
}

impl ServerHandler for CellServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_instructions("Tools lent to this session by hum's bees.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools: Vec<Tool> = self
            .bridge
            .catalogue(&self.cell)
            .into_iter()
            .filter_map(|spec| to_mcp_tool(&spec))
            .collect();
        self.cell.mark_listed();
        tracing::debug!(event = "bridge.listed", sid = %self.cell.sid, tools = tools.len(), "tools listed");
        Ok(ListToolsResult {
            tools,
            ..Default::default()
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        let answer = self.bridge.call(&self.cell, &request.name, args).await;
        Ok(to_mcp_result(answer).into())
    }
}

/// A tool spec (`{name, description, inputSchema}`: a bee's, or the
/// bridge's own permission tool) as MCP's; a spec without a valid name is
/// skipped, one without a schema takes any object.
fn to_mcp_tool(spec: &Value) -> Option<Tool> {
    // (Older specs carry the schema as `parameters` or `input_schema`.)
    let spec = thrum::tools::ToolSpec::read(spec, Some(super::PERMIT_TOOL))?;
    serde_json::from_value(spec.to_value()).ok()
}

/// What the agent reads: the output as text (a string as is, anything else
/// as JSON), flagged as an error when it is one.
fn to_mcp_result(answer: ToolAnswer) -> CallToolResult {
    let text = match answer.output {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let content = vec![ContentBlock::text(text)];
    if answer.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    }
}

/// Accepts the cell's connections (the user's own uid only, a few at a
/// time) and serves MCP on each until it closes.
pub(super) async fn serve_cell(
    listener: tokio::net::UnixListener,
    bridge: Arc<Bridge>,
    cell: Arc<CellTools>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_CELL));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: pause rather than spin.
                tracing::warn!(event = "bridge.accept_failed", sid = %cell.sid, error = %e, "cannot accept on a cell's bridge");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if !peer_allowed(&stream) {
            tracing::warn!(event = "bridge.refused", sid = %cell.sid, "a process of another user tried the tool bridge");
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(event = "bridge.refused", sid = %cell.sid, "too many connections to one cell's bridge");
            continue;
        };
        let server = CellServer {
            bridge: bridge.clone(),
            cell: cell.clone(),
        };
        tokio::spawn(async move {
            let _slot = slot;
            let cell = server.cell.clone();
            match server.serve(stream).await {
                Ok(running) => {
                    cell.add_session(running.peer().clone());
                    let _ = running.waiting().await;
                }
                Err(e) => {
                    tracing::debug!(event = "bridge.session_failed", error = %e, "MCP session did not start")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 26, item 6: a spec's schema under its older names is kept.
    #[test]
    fn a_legacy_schema_field_is_the_tools_input_schema() {
        let schema =
            serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}});
        for key in ["inputSchema", "parameters", "input_schema"] {
            let tool = to_mcp_tool(&serde_json::json!({"name": "weather", key: schema})).unwrap();
            assert_eq!(
                serde_json::to_value(&tool.input_schema).unwrap(),
                schema,
                "{key}"
            );
        }
        let bare = to_mcp_tool(&serde_json::json!({"name": "weather"})).unwrap();
        assert_eq!(
            serde_json::to_value(&bare.input_schema).unwrap()["type"],
            "object"
        );
        assert!(to_mcp_tool(&serde_json::json!({"name": "with space"})).is_none());
        assert_eq!(
            crate::worker::bridge::permit_question(
                "Bash",
                &serde_json::json!({"command": "ls -la\nrm"})
            ),
            "claude wants to run Bash: ls -la rm"
        );
    }
    use rmcp::model::ClientConfig;
    use rmcp::ClientHandler;

    /// A client that reports each `tools/list_changed` it is sent.
    #[derive(Clone)]
    struct Watcher(tokio::sync::mpsc::UnboundedSender<()>);

    impl ClientHandler for Watcher {
        async fn on_tool_list_changed(
            &self,
            _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
        ) {
            let _ = self.0.send(());
        }

        fn get_info(&self) -> ClientConfig {
            ClientConfig::default()
        }
    }

    async fn names(
        client: &rmcp::service::RunningService<rmcp::RoleClient, Watcher>,
    ) -> Vec<String> {
        let mut n: Vec<String> = client
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        n.sort();
        n
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_cli_is_told_when_its_catalogue_changes_and_lists_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let bridge = Bridge::new(
            dir.path().join("bridge"),
            crate::worker::uplink::Uplink::new(),
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let cell = CellTools::new("s", None, false);
        let socket = bridge.open(cell.clone()).unwrap();
        let stream = tokio::net::UnixStream::connect(socket.path())
            .await
            .unwrap();
        let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
        let client = Watcher(tx).serve(stream).await.unwrap();
        assert_eq!(names(&client).await, ["permission_prompt"]);
        // The session is registered once the server side has started it.
        let within = std::time::Duration::from_secs(5);
        let mut told = false;
        for _ in 0..100 {
            let _ = cell.set_turn_tools(Some(&serde_json::json!([{"name": "lookup"}])));
            if tokio::time::timeout(std::time::Duration::from_millis(50), changed.recv())
                .await
                .is_ok()
            {
                told = true;
                break;
            }
            let _ = cell.set_turn_tools(None);
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(50), changed.recv()).await;
        }
        assert!(told, "no list_changed for a new turn's tools");
        assert_eq!(names(&client).await, ["lookup", "permission_prompt"]);
        // The same tools again: nothing to tell.
        assert_eq!(
            cell.set_turn_tools(Some(&serde_json::json!([{"name": "lookup"}]))),
            None
        );
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(200), changed.recv())
                .await
                .is_err()
        );
        // The foragers' tools change: every cell is told.
        bridge.set_forager_tools(vec![
            serde_json::json!({"name": "echo", "inputSchema": {"type": "object"}}),
        ]);
        tokio::time::timeout(within, changed.recv())
            .await
            .expect("told of the foragers' tools");
        assert_eq!(
            names(&client).await,
            ["echo", "lookup", "permission_prompt"]
        );
        drop(socket);
    }

    #[test]
    fn a_bees_tool_spec_becomes_an_mcp_tool() {
        let spec = serde_json::json!({"name": "echo", "description": "d", "inputSchema": {"type": "object"}});
        let r: Result<Tool, _> = serde_json::from_value(spec.clone());
        assert!(r.is_ok(), "{r:?}");
        let t = to_mcp_tool(&spec).expect("converted");
        assert_eq!(t.name, "echo");
    }
}
