//! Foragers: their hellos (tools, capabilities, limits), the catalogue
//! every worker is told, and the tools part of humd's status.

use super::registry::spec_bytes;
use super::*;
use crate::reports::{CapabilityEntry, ForagerEntry, ToolConflict, ToolsStatus};

impl Router {
    /// A forager said hello: its tools join the registry (a name someone
    /// else owns is a conflict, said to it and shown in status), and every
    /// worker hears the new catalogue.
    pub(super) fn forager_hello(&mut self, id: ConnId, hello: &thrum::Hello) {
        // Tool specs as sent; a forager that sent only `toolNames` offers
        // those names with no description or schema.
        let specs = hello.tools.clone().unwrap_or_else(|| {
            hello
                .tool_names
                .iter()
                .flatten()
                .map(|n| json!({"name": n}))
                .collect()
        });
        let bytes: usize = specs.iter().map(spec_bytes).sum();
        if specs.len() > MAX_TOOLS_PER_FORAGER
            || bytes + self.desk.registry.bytes() > MAX_CATALOGUE_BYTES
        {
            tracing::warn!(
                event = "daemon.forager_refused",
                conn = id,
                tools = specs.len(),
                bytes,
                "a forager offered more tools than humd keeps"
            );
            let mut e = Tone::new(thrum::ErrorTone::new(
                thrum::ErrorCode::BadRequest,
                format!(
                    "too many tools: at most {MAX_TOOLS_PER_FORAGER} per forager and {MAX_CATALOGUE_BYTES} bytes of specs in all; none of these were registered"
                ),
            ));
            e.envelope.from = Some("daemon".into());
            self.send(id, e);
            return;
        }
        let refused: Vec<String> = specs
            .iter()
            .filter(|s| thrum::tools::tool_name(s).is_none())
            .map(thrum::tools::shown_name)
            .collect();
        if !refused.is_empty() {
            tracing::warn!(event = "daemon.tools_refused", conn = id, tools = ?refused, "a forager offered tools whose names are not tool names");
            let mut e = Tone::new(thrum::ErrorTone::new(
                thrum::ErrorCode::BadRequest,
                format!(
                    "not registered: {refused:?}: a tool's name is 1-64 letters, digits, _ or - (and not {})",
                    thrum::tools::PERMIT_TOOL
                ),
            ));
            e.envelope.from = Some("daemon".into());
            self.send(id, e);
        }
        let conflicts = self.desk.registry.offer(id, &specs);
        let provides = self.checked_provides(id, hello.provides.as_deref().unwrap_or_default());
        tracing::info!(
            event = "daemon.forager",
            conn = id,
            tools = specs.len(),
            conflicts = conflicts.len(),
            provides = ?provides,
            "forager registered its tools"
        );
        self.desk.registry.provide(id, provides);
        if !conflicts.is_empty() {
            tracing::warn!(event = "daemon.tool_conflict", conn = id, tools = ?conflicts, "tools already offered by another forager");
            let mut warn = Tone::new(thrum::Pulse {
                kind: thrum::PulseKind::ToolConflict,
                extra: match json!({
                    "tools": conflicts,
                    "message": "another forager offers these tools already; calls go to it while it is connected",
                }) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
            });
            warn.envelope.from = Some("daemon".into());
            self.send(id, warn);
        }
        self.announce_tools();
    }

    /// The capability tags of a forager's hello that humd keeps: valid ones,
    /// each once, at most [`MAX_PROVIDES`](crate::hive::capability::MAX_PROVIDES);
    /// the forager is told which were not kept.
    fn checked_provides(&mut self, id: ConnId, tags: &[String]) -> Vec<String> {
        use crate::hive::capability::{valid_tag, MAX_PROVIDES};
        let mut kept: Vec<String> = Vec::new();
        // The refused, named up to as many as are kept (a hello of a line's
        // worth of tags gets a short answer), and counted.
        let mut refused: Vec<String> = Vec::new();
        let mut refused_count = 0usize;
        for tag in tags {
            if !valid_tag(tag) || kept.len() >= MAX_PROVIDES {
                refused_count += 1;
                if refused.len() < MAX_PROVIDES {
                    refused.push(tag.chars().take(80).collect());
                }
            } else if !kept.contains(tag) {
                kept.push(tag.clone());
            }
        }
        if refused_count > 0 {
            tracing::warn!(event = "daemon.provides_refused", conn = id, refused = refused_count, tags = ?refused, "a forager named capabilities humd does not keep");
            let mut e = Tone::new(thrum::ErrorTone::new(
                thrum::ErrorCode::BadRequest,
                format!(
                    "provides: {refused_count} not kept, among them {refused:?}: at most {MAX_PROVIDES} tags of 1-{} printable characters",
                    crate::hive::capability::MAX_TAG_CHARS
                ),
            ));
            e.envelope.from = Some("daemon".into());
            self.send(id, e);
        }
        kept
    }

    /// Tells every worker the foragers' catalogue: at once, unless it was
    /// told less than [`ANNOUNCE_EVERY`] ago; then once when that has
    /// passed, with the catalogue as it is by then. A herd of foragers
    /// coming and going makes a few announcements, not one each, so the
    /// (up to 2 MiB) catalogue cannot pile up in a worker's link.
    pub(super) fn announce_tools(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.desk.announced_at {
            if now < last + ANNOUNCE_EVERY {
                self.desk.announce_due.get_or_insert(last + ANNOUNCE_EVERY);
                return;
            }
        }
        self.desk.announced_at = Some(now);
        self.desk.announce_due = None;
        // The other nodes' cells hear of this node's own foragers; a
        // cluster not taking news now hears at the next announcement.
        let local = self.desk.registry.local_catalogue();
        if let Some(placing) = &mut self.placing {
            if !placing.share_catalogue(local) {
                self.desk.announce_due = Some(now + ANNOUNCE_EVERY);
            }
        }
        let workers: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.role, Role::Worker { .. }))
            .map(|(c, _)| *c)
            .collect();
        for w in workers {
            self.tell_tools(w);
        }
    }

    pub(super) fn tell_tools(&mut self, worker: ConnId) {
        let mut t = Tone::new(thrum::ToolInfo {
            tools: Some(self.desk.registry.catalogue()),
            provides: Some(self.desk.registry.provided()),
            extra: Map::new(),
        });
        t.envelope.from = Some("daemon".into());
        self.send(worker, t);
    }

    /// Foragers, their tools, conflicts and calls, for status.
    pub(super) fn tools_status(&self) -> ToolsStatus {
        let foragers = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.role, Role::Forager))
            .map(|(conn, p)| ForagerEntry {
                conn: *conn,
                name: p.name.clone(),
                tools: self.desk.registry.owned_by(*conn),
                provides: self.desk.registry.provided_by(*conn),
            })
            .collect();
        let provided = self.desk.registry.provided();
        let capabilities = crate::hive::capability::CAPABILITIES
            .iter()
            .map(|c| CapabilityEntry {
                name: c.name.to_owned(),
                builtins: c.builtins.iter().map(|b| (*b).to_owned()).collect(),
                served: provided.iter().any(|p| p == c.name),
            })
            .chain(
                provided
                    .iter()
                    .filter(|p| crate::hive::capability::find(p).is_none())
                    .map(|p| CapabilityEntry {
                        name: p.clone(),
                        builtins: Vec::new(),
                        served: true,
                    }),
            )
            .collect();
        let conflicts = self
            .desk
            .registry
            .conflicts()
            .into_iter()
            .map(|(tool, owner, others)| ToolConflict {
                tool,
                owner,
                others,
            })
            .collect();
        ToolsStatus {
            foragers,
            conflicts,
            calls_in_flight: self.desk.in_flight(),
            parked_turns: self.parked_turns(),
            calls: self.desk.stats.clone(),
            unanswered_permits: self.desk.permits.lapsed().clone(),
            capabilities,
        }
    }
}

/// How often, at most, humd sends its workers the foragers' catalogue.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);

/// Tools one forager may offer: more than any real tool server has, few
/// enough that every cell's catalogue stays small.
const MAX_TOOLS_PER_FORAGER: usize = 512;

/// Bytes of tool specs humd keeps across foragers: the catalogue goes to
/// every worker in one `tool-info` line, which must stay well under the
/// line limit.
const MAX_CATALOGUE_BYTES: usize = 2 * 1024 * 1024;
