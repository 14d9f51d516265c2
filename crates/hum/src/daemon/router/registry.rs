//! Tools offered by foragers, and the capabilities they serve: a plain
//! value with no I/O, owned by the router.

use super::placing::is_remote;
use super::ConnId;
use serde_json::Value;
use std::collections::BTreeMap;

/// Tools offered by foragers: each name's offers in the order they came;
/// the first is the owner, the others are conflicts (visible in status)
/// that take over if the owner leaves. On a cluster node, an offer of a
/// forager here owns a name before any other node's (a call stays on this
/// machine when it can).
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Each name's offers: who, the spec, and the spec's size as JSON.
    offers: BTreeMap<String, Vec<(ConnId, Value, usize)>>,
    /// The sizes above, summed (kept, not recounted per hello).
    bytes: usize,
    /// The capabilities each forager serves (`provides`), checked.
    provides: BTreeMap<ConnId, Vec<String>>,
}

impl Registry {
    /// Registers `conn`'s tools; returns the names another forager owns.
    /// Specs without a valid name are not registered (the caller has told
    /// the forager which).
    pub(super) fn offer(&mut self, conn: ConnId, specs: &[Value]) -> Vec<String> {
        let mut conflicts = Vec::new();
        for spec in specs {
            let Some(name) = thrum::tools::tool_name(spec) else {
                continue;
            };
            let offers = self.offers.entry(name.to_owned()).or_default();
            if offers.iter().any(|(c, _, _)| *c == conn) {
                continue;
            }
            if !offers.is_empty() {
                conflicts.push(name.to_owned());
            }
            let len = spec_bytes(spec);
            self.bytes += len;
            offers.push((conn, spec.clone(), len));
        }
        conflicts
    }

    /// Records the capabilities `conn` serves.
    pub(super) fn provide(&mut self, conn: ConnId, tags: Vec<String>) {
        if tags.is_empty() {
            self.provides.remove(&conn);
        } else {
            self.provides.insert(conn, tags);
        }
    }

    /// Every capability some forager serves, each once, sorted.
    pub(super) fn provided(&self) -> Vec<String> {
        let all: std::collections::BTreeSet<&String> = self.provides.values().flatten().collect();
        all.into_iter().cloned().collect()
    }

    /// The capabilities `conn` serves.
    pub(super) fn provided_by(&self, conn: ConnId) -> Vec<String> {
        self.provides.get(&conn).cloned().unwrap_or_default()
    }

    /// Forgets `conn`'s offers; returns whether what workers are told
    /// changed (it did when `conn` owned a name or served a capability).
    pub(super) fn withdraw(&mut self, conn: ConnId) -> bool {
        let mut owned = self.provides.remove(&conn).is_some();
        let mut freed = 0;
        for offers in self.offers.values_mut() {
            owned |= owning(offers).is_some_and(|(c, _, _)| *c == conn);
            offers.retain(|(c, _, len)| {
                let mine = *c == conn;
                if mine {
                    freed += len;
                }
                !mine
            });
        }
        self.offers.retain(|_, o| !o.is_empty());
        self.bytes -= freed;
        owned
    }

    /// Bytes of every spec offered (owners and conflicts).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn owner(&self, name: &str) -> Option<ConnId> {
        owning(self.offers.get(name)?).map(|(c, _, _)| *c)
    }

    /// The forager *here* that serves `name` (the one a call from another
    /// node goes to: never back to a node).
    pub(super) fn local_owner(&self, name: &str) -> Option<ConnId> {
        self.offers
            .get(name)?
            .iter()
            .find(|(c, _, _)| !is_remote(*c))
            .map(|(c, _, _)| *c)
    }

    /// Each name's owning spec, by name.
    pub(super) fn catalogue(&self) -> Vec<Value> {
        self.offers
            .values()
            .filter_map(|o| owning(o).map(|(_, s, _)| s.clone()))
            .collect()
    }

    /// What this node's own foragers serve, for the other nodes: each name
    /// one of them offers (its first offer's spec), and their capabilities.
    pub(super) fn local_catalogue(&self) -> (Vec<Value>, Vec<String>) {
        let specs = self
            .offers
            .values()
            .filter_map(|o| o.iter().find(|(c, _, _)| !is_remote(*c)))
            .map(|(_, s, _)| s.clone())
            .collect();
        let tags: std::collections::BTreeSet<&String> = self
            .provides
            .iter()
            .filter(|(c, _)| !is_remote(**c))
            .flat_map(|(_, t)| t)
            .collect();
        (specs, tags.into_iter().cloned().collect())
    }

    /// The names `conn` owns.
    pub(super) fn owned_by(&self, conn: ConnId) -> Vec<String> {
        self.offers
            .iter()
            .filter(|(_, o)| owning(o).is_some_and(|(c, _, _)| *c == conn))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Names offered by more than one forager: (name, owner, the others).
    pub(super) fn conflicts(&self) -> Vec<(String, ConnId, Vec<ConnId>)> {
        self.offers
            .iter()
            .filter(|(_, o)| o.len() > 1)
            .filter_map(|(n, o)| {
                let owner = owning(o)?.0;
                let others = o.iter().map(|(c, _, _)| *c).filter(|c| *c != owner);
                Some((n.clone(), owner, others.collect()))
            })
            .collect()
    }
}

/// The offer that owns a name: the first of a forager here, else the first.
fn owning(offers: &[(ConnId, Value, usize)]) -> Option<&(ConnId, Value, usize)> {
    offers
        .iter()
        .find(|(c, _, _)| !is_remote(*c))
        .or(offers.first())
}

/// A spec's size as it travels (JSON).
pub(super) fn spec_bytes(spec: &Value) -> usize {
    serde_json::to_vec(spec).map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests;
