//! One cell's side of the bridge: the tools of the turn it serves, the
//! MCP sessions its CLI opened, the usage its calls carry, and its socket.

use super::*;

/// While a call waits, the pool is told the cell is busy this often (an
/// agent waiting on a tool prints nothing, and a silent turn times out).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub cell: crate::pool::CellId,
    pub actor: tokio::sync::mpsc::Sender<crate::worker::msg::Msg>,
    pub every: Duration,
}

impl Heartbeat {
    pub(super) fn beat(&self) {
        let _ = self.actor.try_send(crate::worker::msg::Msg::Cell(
            self.cell,
            Box::new(crate::worker::msg::CellMsg::Activity),
        ));
    }
}

/// How a turn's wait for its CLI to list changed tools ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relist {
    /// The CLI listed them.
    Listed,
    /// It did not within the wait.
    TimedOut,
    /// Not waited for: the CLI let an earlier wait run out and has not
    /// listed since.
    Skipped,
}

/// What one cell's bridge knows: its sid, the tools of the prompt it
/// serves (replaced at each turn), and what an unanswered permission ask
/// gets.
pub struct CellTools {
    pub sid: String,
    pub(super) asker: RwLock<Vec<Value>>,
    pub(super) heartbeat: Option<Heartbeat>,
    pub(super) permit_by_default: bool,
    /// The MCP sessions open on this cell's socket, told when its
    /// catalogue changes (`notifications/tools/list_changed`).
    pub(super) sessions: Mutex<Vec<rmcp::Peer<rmcp::RoleServer>>>,
    /// Counts the `tools/list` requests served, so a turn whose tools
    /// changed can wait for the CLI to have listed them.
    pub(super) listed: tokio::sync::watch::Sender<u64>,
    /// The count of lists served before a notice whose wait ran out, until
    /// the CLI lists again: while it has listed nothing since, it is taken
    /// to ignore the notice, and later turns do not wait for it.
    pub(super) relist_missed: Mutex<Option<u64>>,
    /// The usage of the CLI's last model call (its last `assistant`
    /// message), which a `tool-call` carries: the call came from that
    /// model call, and an HTTP response that ends with the call reports it.
    pub(super) model_usage: Mutex<Option<(Option<String>, Value)>>,
    /// The rid of the turn the cell serves (its last, once it ended): a
    /// call carries it, so humd routes it to that turn's asker and no
    /// other prompt's.
    pub(super) turn_rid: Mutex<Option<String>>,
}

impl std::fmt::Debug for CellTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellTools").field("sid", &self.sid).finish()
    }
}

impl CellTools {
    pub fn new(sid: &str, heartbeat: Option<Heartbeat>, permit_by_default: bool) -> Arc<CellTools> {
        Arc::new(CellTools {
            sid: sid.to_owned(),
            asker: RwLock::default(),
            heartbeat,
            permit_by_default,
            sessions: Mutex::default(),
            listed: tokio::sync::watch::Sender::new(0),
            relist_missed: Mutex::default(),
            model_usage: Mutex::default(),
            turn_rid: Mutex::default(),
        })
    }

    /// Notes usage the CLI printed for model call (message) `id`: a new id
    /// starts over, the same id (or none: a `message_delta`) adds to what
    /// is known, each count only ever rising — claude prints a message's
    /// input tokens at its start and its output tokens in its
    /// `message_delta`, while its `assistant` lines repeat the start's
    /// numbers with output 0.
    pub fn note_usage(&self, id: Option<&str>, usage: &Value) {
        let Value::Object(fields) = usage else { return };
        let mut known = self.model_usage.lock().unwrap_or_else(|p| p.into_inner());
        let same = match (&*known, id) {
            (Some(_), None) => true,
            (Some((Some(k), _)), Some(id)) => k == id,
            _ => false,
        };
        if !same {
            *known = Some((id.map(str::to_owned), Value::Object(Default::default())));
        }
        let Some((_, Value::Object(into))) = known.as_mut() else {
            return;
        };
        for (k, v) in fields {
            let higher = match (into.get(k).and_then(Value::as_u64), v.as_u64()) {
                (Some(old), Some(new)) => new > old,
                (None, _) => true,
                (Some(_), None) => false,
            };
            if higher {
                into.insert(k.clone(), v.clone());
            }
        }
    }

    /// The cell starts serving the turn with rid `rid`.
    pub fn set_turn_rid(&self, rid: Option<&str>) {
        *self.turn_rid.lock().unwrap_or_else(|p| p.into_inner()) = rid.map(str::to_owned);
    }

    pub(super) fn turn_rid(&self) -> Option<String> {
        self.turn_rid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn last_usage(&self) -> Option<Value> {
        self.model_usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, u)| u.clone())
    }

    /// An MCP session opened on the cell's socket.
    pub(super) fn add_session(&self, peer: rmcp::Peer<rmcp::RoleServer>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|p| !p.is_transport_closed());
        sessions.push(peer);
    }

    /// A `tools/list` was served.
    pub(super) fn mark_listed(&self) {
        self.listed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves once a `tools/list` after `seen` was served (see
    /// [`CellTools::set_turn_tools`]).
    pub async fn listed_after(&self, seen: u64) {
        let mut rx = self.listed.subscribe();
        let _ = rx.wait_for(|n| *n != seen).await;
    }

    /// Waits at most `within` for a `tools/list` after `seen`. A CLI that
    /// let one such wait run out and has listed nothing since is not waited
    /// for again: one that ignores the notice costs its cell one wait, not
    /// one per turn, and one that was only slow (it listed late) is waited
    /// for again.
    pub async fn await_listed(&self, seen: u64, within: Duration) -> Relist {
        {
            let mut missed = self.relist_missed.lock().unwrap_or_else(|p| p.into_inner());
            match *missed {
                Some(at) if *self.listed.borrow() == at => return Relist::Skipped,
                Some(_) => *missed = None,
                None => {}
            }
        }
        if tokio::time::timeout(within, self.listed_after(seen))
            .await
            .is_ok()
        {
            return Relist::Listed;
        }
        // The count before the notice: a listing that comes after the
        // wait ran out still shows the CLI answers.
        *self.relist_missed.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
        Relist::TimedOut
    }

    /// Tells the cell's MCP sessions its catalogue changed, so the CLI
    /// lists it again (without waiting for the notifications to go out).
    /// Returns whether any session was told.
    pub(super) fn tools_changed(&self) -> bool {
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut told = false;
        for peer in sessions.into_iter().filter(|p| !p.is_transport_closed()) {
            told = true;
            tokio::spawn(async move {
                let _ = peer.notify_tool_list_changed().await;
            });
        }
        told
    }

    /// The tools of the turn starting now (a prompt's `tools`). When they
    /// differ from the last turn's and a CLI is connected, it is told, and
    /// the count of lists served so far comes back: the turn's message
    /// should wait for [`CellTools::listed_after`] it (the CLI re-lists on
    /// the notice; a message sent before could reach the model without
    /// the new tools).
    pub fn set_turn_tools(&self, tools: Option<&Value>) -> Option<u64> {
        let list: Vec<Value> = match tools {
            Some(Value::Array(a)) => a
                .iter()
                .filter(|t| tool_name(t).is_some())
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let changed = {
            let mut asker = self.asker.write().unwrap_or_else(|p| p.into_inner());
            let changed = *asker != list;
            *asker = list;
            changed
        };
        if !changed {
            return None;
        }
        let seen = *self.listed.borrow();
        self.tools_changed().then_some(seen)
    }
}

/// One cell's socket; closing it (drop) stops its task and removes the file.
#[derive(Debug)]
pub struct CellSocket {
    pub(super) path: PathBuf,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl CellSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CellSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
