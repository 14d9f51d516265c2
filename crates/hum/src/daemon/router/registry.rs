//! Tools offered by foragers, and the capabilities they serve: a plain
//! value with no I/O, owned by the router.

use super::ConnId;
use serde_json::Value;
use std::collections::BTreeMap;

/// Tools offered by foragers: each name's offers in the order they came;
/// the first is the owner, the others are conflicts (visible in status)
/// that take over if the owner leaves.
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
            owned |= offers.first().is_some_and(|(c, _, _)| *c == conn);
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
        self.offers.get(name)?.first().map(|(c, _, _)| *c)
    }

    /// Each name's owning spec, by name.
    pub(super) fn catalogue(&self) -> Vec<Value> {
        self.offers
            .values()
            .filter_map(|o| o.first().map(|(_, s, _)| s.clone()))
            .collect()
    }

    /// The names `conn` owns.
    pub(super) fn owned_by(&self, conn: ConnId) -> Vec<String> {
        self.offers
            .iter()
            .filter(|(_, o)| o.first().is_some_and(|(c, _, _)| *c == conn))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Names offered by more than one forager: (name, owner, the others).
    pub(super) fn conflicts(&self) -> Vec<(String, ConnId, Vec<ConnId>)> {
        self.offers
            .iter()
            .filter(|(_, o)| o.len() > 1)
            .map(|(n, o)| {
                (
                    n.clone(),
                    o[0].0,
                    o[1..].iter().map(|(c, _, _)| *c).collect(),
                )
            })
            .collect()
    }
}

/// A spec's size as it travels (JSON).
pub(super) fn spec_bytes(spec: &Value) -> usize {
    serde_json::to_vec(spec).map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests;
