//! The MCP bridge: how a cell's agent calls the tools bees lend it.
//!
//! Each cell gets a Unix socket of its own (0600, in the worker's private
//! 0700 directory next to humd's socket) and its CLI is started with one
//! MCP server, `hum`, whose command is `hum-mcp-bridge <that socket>` (or
//! `hum mcp-bridge <that socket>` where only `hum` is installed; [`shim`]):
//! a byte pipe between the CLI's stdio and the socket. The
//! worker speaks MCP on the socket (`mcp.rs`, with the `rmcp` SDK): the
//! catalogue is the foragers' tools (as humd last announced them) plus the
//! tools of the prompt the cell is serving; a call becomes a `tool-call`
//! tone to humd and waits for its `tool-result`.
//!
//! Nobody else gets in: the directory and socket are the user's alone, and
//! a connection whose peer is another uid is closed before a byte is read.
//! The shim is the CLI's child, in the cell's process group and cgroup: it
//! ends with the cell like every other process of it.

mod cell;
mod mcp;
mod permit_args;
mod permits;
pub mod shim;

use super::uplink::Uplink;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// Connections one cell's socket serves at once: the CLI opens one; a few
/// more allow a restart of its MCP client without letting a runaway
/// process hold thousands of tasks.
pub(super) const MAX_CONNECTIONS_PER_CELL: usize = 4;

/// How a call ended, as the agent will see it.
#[derive(Debug, Clone)]
pub struct ToolAnswer {
    pub output: Value,
    pub is_error: bool,
}

impl ToolAnswer {
    pub fn error(message: impl Into<String>) -> ToolAnswer {
        ToolAnswer {
            output: Value::String(message.into()),
            is_error: true,
        }
    }
}

/// What humd sends back for a call or a permission ask.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A tool's result.
    Result(ToolAnswer),
    /// The asker's answer to a permission ask.
    Permit(thrum::ReleasePermit),
}

/// What the worker's cells share: the foragers' catalogue, the calls
/// waiting for their results, the way to humd.
pub struct Bridge {
    dir: PathBuf,
    uplink: Arc<Uplink>,
    call_timeout: Duration,
    /// A permission ask's wait: never longer than a call's.
    permit_timeout: Duration,
    /// The foragers' tools, as humd last announced them (`tool-info`).
    foragers: RwLock<Vec<Value>>,
    /// Calls sent to humd and not yet answered, by callId.
    pending: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    /// Every cell with a socket, to tell when the foragers' tools change.
    cells: Mutex<Vec<std::sync::Weak<CellTools>>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("dir", &self.dir).finish()
    }
}

pub use cell::{CellSocket, CellTools, Heartbeat, Relist};
pub use thrum::tools::{tool_name, PERMIT_TOOL};

impl Bridge {
    /// Removes the socket directories of workers that are gone (a SIGKILLed
    /// worker cannot clean up after itself); `dir`'s siblings named
    /// `bridge-<pid>` whose pid is not running.
    fn sweep_stale(dir: &Path) {
        let Some(parent) = dir.parent() else { return };
        let Ok(entries) = std::fs::read_dir(parent) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("bridge-"))
                .and_then(|p| p.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let gone = rustix::process::Pid::from_raw(pid).is_none_or(|p| {
                rustix::process::test_kill_process(p).is_err_and(|e| e == rustix::io::Errno::SRCH)
            });
            // Only this user's own directories: a name anyone can make in
            // a shared directory says nothing about whose it is.
            let own = e.metadata().is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.is_dir() && m.uid() == thrum::peer::own_uid()
            });
            if gone && own && e.path() != dir {
                tracing::info!(event = "bridge.swept", dir = %e.path().display(), "removed a gone worker's bridge sockets");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// A bridge whose sockets live in `dir`: made here, 0700, and refused
    /// if it was there already (another user may have made it first, to
    /// swap the cells' sockets). A call waits `call_timeout` for its
    /// result, a permission ask `permit_timeout` (at most as long).
    pub fn new(
        dir: PathBuf,
        uplink: Arc<Uplink>,
        call_timeout: Duration,
        permit_timeout: Duration,
    ) -> std::io::Result<Arc<Bridge>> {
        Self::sweep_stale(&dir);
        if let Some(parent) = dir.parent().filter(|p| !p.exists()) {
            crate::private_fs::create_private_dir(parent)?;
        }
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)?;
        // Made by us just now; said again through the checks every
        // private directory gets.
        crate::private_fs::create_private_dir(&dir)?;
        Ok(Arc::new(Bridge {
            dir,
            uplink,
            call_timeout,
            permit_timeout: permit_timeout.min(call_timeout),
            foragers: RwLock::default(),
            pending: Mutex::default(),
            cells: Mutex::default(),
        }))
    }

    /// The directory for a worker whose humd socket is `socket`:
    /// `bridge-<pid>-<random>`, a name nobody can make ahead of it.
    pub fn dir_for(socket: &Path) -> PathBuf {
        let random = uuid::Uuid::new_v4().simple().to_string();
        socket.parent().unwrap_or(Path::new("/tmp")).join(format!(
            "bridge-{}-{}",
            std::process::id(),
            &random[..12]
        ))
    }

    /// Removes the (by now empty) socket directory, at the worker's exit.
    pub fn remove_dir(&self) {
        let _ = std::fs::remove_dir(&self.dir);
    }

    /// The `--mcp-config` that starts the shim on `socket` as the cell's
    /// one MCP server.
    pub fn mcp_config(socket: &Path) -> std::io::Result<String> {
        let exe = std::env::current_exe()?;
        Ok(shim::config(&exe, shim::beside(&exe), socket)?.to_string())
    }

    /// humd announced the foragers' tools.
    pub fn set_forager_tools(&self, tools: Vec<Value>) {
        {
            let mut foragers = self.foragers.write().unwrap_or_else(|p| p.into_inner());
            if *foragers == tools {
                return;
            }
            *foragers = tools;
        }
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.retain(|c| c.strong_count() > 0);
        for cell in cells.iter().filter_map(std::sync::Weak::upgrade) {
            cell.tools_changed();
        }
    }

    /// The catalogue a cell sees now: the permission prompt tool, its
    /// asker's tools (they win a name both offer, as humd routes them),
    /// then the foragers'.
    pub fn catalogue(&self, cell: &CellTools) -> Vec<Value> {
        let mut names: std::collections::HashSet<String> = [PERMIT_TOOL.to_owned()].into();
        let mut permit = thrum::tools::ToolSpec::new(
            PERMIT_TOOL,
            Some("hum: asks the user whether a tool may run (claude's permission prompt tool; not for the model)".into()),
        );
        permit.input_schema.insert(
            "properties".into(),
            serde_json::json!({"tool_name": {"type": "string"}, "input": {"type": "object"},
                               "tool_use_id": {"type": "string"}}),
        );
        let mut all = vec![permit.to_value()];
        let asker = cell.asker.read().unwrap_or_else(|p| p.into_inner()).clone();
        let foragers = self
            .foragers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for t in asker.into_iter().chain(foragers) {
            if let Some(n) = tool_name(&t) {
                if names.insert(n.to_owned()) {
                    all.push(t);
                }
            }
        }
        all
    }

    /// A `tool-result` from humd: the waiting call gets it. Returns whether
    /// a call was waiting.
    pub fn answer(&self, call_id: &str, answer: Answer) -> bool {
        let waiting = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(call_id);
        match waiting {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// Opens a cell's socket and serves MCP on it until the cell is gone.
    pub fn open(self: &Arc<Self>, cell: Arc<CellTools>) -> std::io::Result<CellSocket> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let path = self.dir.join(format!("{}.sock", &token[..16]));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)?;
        // The umask already makes it 0600; said again, in case it is not.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        self.cells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&cell));
        let task = tokio::spawn(mcp::serve_cell(listener, self.clone(), cell));
        Ok(CellSocket { path, task })
    }

    /// Sends a call to humd and waits for its result, the timeout, or the
    /// caller going away (then humd is told to cancel it).
    pub(super) async fn call(&self, cell: &CellTools, tool: &str, args: Value) -> ToolAnswer {
        if tool == PERMIT_TOOL {
            return self.ask_permission(cell, args).await;
        }
        let call_id = call_id("call");
        let mut body = thrum::ToolCall {
            call_id: call_id.clone(),
            tool_name: tool.to_owned(),
            args,
            usage: cell.last_usage(),
            extra: Default::default(),
        };
        // thrum 0.7 named the tool `name` (its WIRE.md) as well as
        // `toolName`: bees of the old system key on either.
        body.extra
            .insert("name".into(), Value::String(tool.to_owned()));
        tracing::info!(event = "tool.called", sid = %cell.sid, call = %call_id, tool, "agent called a tool");
        match self
            .round_trip(cell, &call_id, body.into(), self.call_timeout)
            .await
        {
            Some(Answer::Result(answer)) => answer,
            Some(Answer::Permit(_)) => {
                ToolAnswer::error("a permission answer came for a tool call")
            }
            None => {
                tracing::info!(event = "tool.timed_out", sid = %cell.sid, call = %call_id, tool, "no result in time");
                ToolAnswer::error(format!(
                    "tool {tool} gave no result within {} ms",
                    self.call_timeout.as_millis()
                ))
            }
        }
    }

    /// Sends `body` (about `call_id`) to humd and waits for its answer,
    /// telling the pool meanwhile that the cell is busy. `None` when no
    /// answer came in time (humd is then told to cancel it).
    pub(super) async fn round_trip(
        &self,
        cell: &CellTools,
        call_id: &str,
        body: thrum::Body,
        timeout: Duration,
    ) -> Option<Answer> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(call_id.to_owned(), tx);
        let guard = PendingCall {
            bridge: self,
            call_id,
            sid: &cell.sid,
            done: false,
        };
        let mut tone = thrum::Tone::new(body).with_sid(&cell.sid);
        tone.envelope.rid = cell.turn_rid();
        tone.envelope.from = Some("worker".into());
        match tone.encode_line(thrum::DEFAULT_MAX_LINE) {
            Ok(line) => self.uplink.push(line),
            Err(e) => {
                return Some(guard.finish(Answer::Result(ToolAnswer::error(format!(
                    "the call could not be sent: {e}"
                )))))
            }
        }
        let waited = async {
            let mut rx = rx;
            let Some(hb) = &cell.heartbeat else {
                return rx.await;
            };
            let mut beat = tokio::time::interval(hb.every);
            loop {
                tokio::select! {
                    r = &mut rx => return r,
                    _ = beat.tick() => hb.beat(),
                }
            }
        };
        match tokio::time::timeout(timeout, waited).await {
            Ok(Ok(answer)) => Some(guard.finish(answer)),
            Ok(Err(_)) => Some(guard.finish(Answer::Result(ToolAnswer::error(
                "the call was dropped by the worker",
            )))),
            // Not `finish`: the guard tells humd to cancel it.
            Err(_) => None,
        }
    }
}

/// A call in flight; if dropped before its result (timeout, the agent's
/// connection gone), humd is asked to cancel it and it is forgotten.
struct PendingCall<'a> {
    bridge: &'a Bridge,
    call_id: &'a str,
    sid: &'a str,
    done: bool,
}

impl PendingCall<'_> {
    fn finish(mut self, answer: Answer) -> Answer {
        self.done = true;
        answer
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.bridge
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.call_id);
        let mut cancel = thrum::Tone::new(thrum::Cancel {
            call_id: Some(self.call_id.to_owned()),
            extra: Default::default(),
        })
        .with_sid(self.sid);
        cancel.envelope.from = Some("worker".into());
        if let Ok(line) = cancel.encode_line(thrum::DEFAULT_MAX_LINE) {
            self.bridge.uplink.push(line);
        }
    }
}

/// What a permission ask says to a person, on one line: `claude wants to
/// run Bash: ls -la` (a command, a path, else the input as JSON), at most
/// 200 characters.
pub fn permit_question(tool: &str, input: &Value) -> String {
    let what = ["command", "file_path", "path", "url", "pattern"]
        .iter()
        .find_map(|k| input.get(k).and_then(Value::as_str))
        .map(str::to_owned)
        .unwrap_or_else(|| input.to_string());
    let line: String = format!("claude wants to run {tool}: {what}")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    line
}

/// A new call's id: `<kind>-` and 32 hex digits of a v4 UUID (122 random
/// bits). Whoever sees calls (a gateway client, a forager) must not be
/// able to guess another's id from its own, as it could a time and a
/// counter.
pub fn call_id(kind: &str) -> String {
    format!("{kind}-{}", uuid::Uuid::new_v4().simple())
}

/// Whether a connection's peer may use the bridge: the worker's own uid.
pub(super) fn peer_allowed(stream: &tokio::net::UnixStream) -> bool {
    let own = rustix::process::geteuid().as_raw();
    stream.peer_cred().is_ok_and(|c| c.uid() == own)
}

#[cfg(test)]
mod tests;
