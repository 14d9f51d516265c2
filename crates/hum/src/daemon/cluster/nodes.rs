//! The nodes of the cluster as this node knows them: each one's last
//! report and when it was heard, and where a new sid goes. A plain value:
//! no NATS, no clock (the time is passed in), so every rule is a unit test.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a node says about itself with every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub node: String,
    /// Cells its workers may keep at once.
    pub cap: usize,
    /// Cells alive now.
    pub cells: usize,
    /// Turns it holds (running, or queued at its workers).
    pub turns: usize,
    /// Cells starting.
    pub bootstrapping: usize,
    /// Resident memory of its cells' trees.
    pub rss_bytes: u64,
    /// The models its workers serve.
    pub models: Vec<String>,
    /// It is stopping: it takes no new sids, and its sids move.
    pub draining: bool,
    /// Reports of one humd count up (a newer report wins over a late
    /// one); a restarted humd starts again with a new `boot`.
    pub seq: u64,
    pub boot: String,
}

impl NodeReport {
    /// Turns it could start without queueing (negative: it queues).
    pub fn free(&self) -> i64 {
        self.cap as i64 - self.turns as i64
    }

    fn serves(&self, model: Option<&str>) -> bool {
        model.is_none_or(|m| self.models.iter().any(|x| x == m))
    }
}

/// Where a new sid goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Placement {
    /// This node.
    Here,
    /// Another node, by name.
    Node(String),
}

struct Known {
    report: NodeReport,
    heard: Instant,
}

/// Every other node heard from, and this node's own latest report.
pub struct Nodes {
    me: String,
    known: BTreeMap<String, Known>,
    /// New sids this node sent to each node since that node last
    /// reported: counted against its free room, so a burst of first
    /// prompts does not all go to the node that looked emptiest.
    sent: BTreeMap<String, usize>,
    /// A node not heard from for this long is gone.
    timeout: Duration,
    /// A node whose report is older than this gets no new sids.
    fresh: Duration,
}

impl Nodes {
    pub fn new(me: &str, timeout: Duration) -> Nodes {
        Nodes {
            me: me.to_owned(),
            known: BTreeMap::new(),
            sent: BTreeMap::new(),
            timeout,
            // Three heartbeats' worth at the default, and never more than
            // the timeout.
            fresh: (timeout * 3 / 5).max(Duration::from_millis(1)),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// A report heard at `now` (this node's own too). One from an older
    /// humd of that node, or older than the one held, is ignored. Returns
    /// whether the node is new to this table.
    pub fn heard(&mut self, report: NodeReport, now: Instant) -> bool {
        if let Some(k) = self.known.get(&report.node) {
            if k.report.boot == report.boot && k.report.seq >= report.seq {
                return false;
            }
        }
        self.sent.remove(&report.node);
        self.known
            .insert(report.node.clone(), Known { report, heard: now })
            .is_none()
    }

    /// Nodes not heard from within the timeout: forgotten here, returned
    /// so their links can end.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .known
            .iter()
            .filter(|(name, k)| {
                **name != self.me && now.saturating_duration_since(k.heard) > self.timeout
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            self.known.remove(name);
            self.sent.remove(name);
        }
        gone
    }

    /// When the first of the other nodes goes silent for longer than the
    /// timeout, if none is heard before: a dead node's turns end then,
    /// not up to a heartbeat later.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.known
            .iter()
            .filter(|(name, _)| **name != self.me)
            .map(|(_, k)| k.heard + self.timeout + Duration::from_millis(1))
            .min()
    }

    /// A node that said it left: forgotten now. Returns whether it was known.
    pub fn forget(&mut self, node: &str) -> bool {
        self.sent.remove(node);
        self.known.remove(node).is_some()
    }

    /// Whether `node` is in the table (heard, not expired, not left).
    pub fn knows(&self, node: &str) -> bool {
        self.known.contains_key(node)
    }

    /// Whether `node` is alive and takes sids: heard within the timeout
    /// and not draining. This node always is, unless it drains.
    pub fn holds(&self, node: &str, now: Instant) -> bool {
        match self.known.get(node) {
            Some(k) => {
                !k.report.draining
                    && (node == self.me || now.saturating_duration_since(k.heard) <= self.timeout)
            }
            None => false,
        }
    }

    /// Where a new sid for `model` goes: the fresh, not draining node
    /// serving the model with the most free room (less what this node
    /// already sent it since its report); ties go to this node, then by
    /// name. Only nodes `reachable` says this node has a link to count. No
    /// such node: here (the local worker answers for itself).
    pub fn place(
        &mut self,
        model: Option<&str>,
        now: Instant,
        reachable: impl Fn(&str) -> bool,
    ) -> Placement {
        let best = self
            .known
            .iter()
            .filter(|(name, k)| {
                reachable(name)
                    && !k.report.draining
                    && k.report.serves(model)
                    && (**name == self.me || now.saturating_duration_since(k.heard) <= self.fresh)
            })
            .map(|(name, k)| {
                let sent = self.sent.get(name).copied().unwrap_or(0) as i64;
                (k.report.free() - sent, *name == self.me, name.clone())
            })
            // Most room; then this node; then the first name.
            .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(b.2.cmp(&a.2)));
        let Some((_, _, name)) = best else {
            return Placement::Here;
        };
        *self.sent.entry(name.clone()).or_default() += 1;
        if name == self.me {
            Placement::Here
        } else {
            Placement::Node(name)
        }
    }

    /// Every node and how long ago it was heard, for status.
    pub fn view(&self, now: Instant) -> Vec<(NodeReport, Duration)> {
        self.known
            .values()
            .map(|k| (k.report.clone(), now.saturating_duration_since(k.heard)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, cap: usize, turns: usize) -> NodeReport {
        NodeReport {
            node: node.into(),
            cap,
            turns,
            models: vec!["sim".into()],
            boot: "b1".into(),
            seq: 1,
            ..Default::default()
        }
    }

    fn table(now: Instant) -> Nodes {
        let mut n = Nodes::new("a", Duration::from_secs(5));
        n.heard(report("a", 4, 0), now);
        n.heard(report("b", 4, 0), now);
        n.heard(report("c", 4, 0), now);
        n
    }

    #[test]
    fn a_tie_goes_to_this_node() {
        let now = Instant::now();
        assert_eq!(
            table(now).place(Some("sim"), now, |_| true),
            Placement::Here
        );
    }

    #[test]
    fn a_new_sid_goes_to_the_node_with_the_most_room() {
        let now = Instant::now();
        let mut n = table(now);
        let mut r = report("a", 4, 3);
        r.seq = 2;
        n.heard(r, now);
        let mut r = report("c", 4, 1);
        r.seq = 2;
        n.heard(r, now);
        assert_eq!(
            n.place(Some("sim"), now, |_| true),
            Placement::Node("b".into())
        );
    }

    #[test]
    fn a_burst_spreads_over_the_nodes_before_their_next_reports() {
        let now = Instant::now();
        let mut n = table(now);
        let mut to = BTreeMap::<Placement, usize>::new();
        for _ in 0..12 {
            *to.entry(n.place(None, now, |_| true)).or_default() += 1;
        }
        assert_eq!(
            to.values().copied().collect::<Vec<_>>(),
            vec![4, 4, 4],
            "{to:?}"
        );
        // A fresh report of b clears what was sent to it.
        let mut r = report("b", 4, 4);
        r.seq = 2;
        n.heard(r, now);
        let mut r = report("b", 4, 0);
        r.seq = 3;
        n.heard(r, now);
        assert_eq!(n.place(None, now, |_| true), Placement::Node("b".into()));
    }

    #[test]
    fn a_stale_or_draining_node_gets_no_new_sids() {
        let now = Instant::now();
        let mut n = Nodes::new("a", Duration::from_secs(5));
        n.heard(report("a", 1, 1), now);
        n.heard(report("b", 8, 0), now);
        let mut c = report("c", 8, 0);
        c.draining = true;
        n.heard(c, now + Duration::from_secs(4));
        // b's report is 4 s old: past fresh (3 s), not yet gone (5 s).
        let later = now + Duration::from_secs(4);
        assert_eq!(n.place(None, later, |_| true), Placement::Here);
        assert!(n.holds("b", later));
        assert!(!n.holds("c", later), "a draining node holds no sids");
    }

    #[test]
    fn a_node_not_serving_the_model_is_not_chosen() {
        let now = Instant::now();
        let mut n = Nodes::new("a", Duration::from_secs(5));
        n.heard(report("a", 1, 1), now);
        let mut b = report("b", 8, 0);
        b.models = vec!["other".into()];
        n.heard(b, now);
        assert_eq!(n.place(Some("sim"), now, |_| true), Placement::Here);
        assert_eq!(
            n.place(Some("other"), now, |_| true),
            Placement::Node("b".into())
        );
    }

    #[test]
    fn a_silent_node_expires_and_no_longer_holds_its_sids() {
        let now = Instant::now();
        let mut n = table(now);
        let mut b = report("b", 4, 0);
        b.seq = 2;
        n.heard(b, now + Duration::from_secs(3));
        let gone = n.expire(now + Duration::from_millis(5001));
        assert_eq!(
            gone,
            vec!["c".to_string()],
            "this node never expires, b was heard"
        );
        assert!(!n.holds("c", now + Duration::from_secs(6)));
        assert!(n.holds("a", now + Duration::from_secs(60)));
    }

    #[test]
    fn the_next_expiry_is_the_silent_nodes_last_word_plus_the_timeout() {
        let now = Instant::now();
        let mut n = Nodes::new("a", Duration::from_secs(5));
        n.heard(report("a", 4, 0), now);
        assert_eq!(n.next_expiry(), None, "this node never expires");
        n.heard(report("b", 4, 0), now + Duration::from_secs(2));
        n.heard(report("c", 4, 0), now + Duration::from_secs(1));
        let due = n.next_expiry().expect("c is due");
        assert!(n.expire(due - Duration::from_millis(2)).is_empty());
        assert_eq!(n.expire(due), vec!["c".to_string()]);
        assert_eq!(n.expire(n.next_expiry().unwrap()), vec!["b".to_string()]);
        assert_eq!(n.next_expiry(), None);
    }

    #[test]
    fn a_node_that_left_takes_no_sids_and_holds_none() {
        let now = Instant::now();
        let mut n = table(now);
        assert!(n.forget("b"));
        assert!(!n.forget("b"));
        assert!(!n.holds("b", now));
        for _ in 0..8 {
            assert_ne!(n.place(None, now, |_| true), Placement::Node("b".into()));
        }
    }

    #[test]
    fn a_late_report_does_not_replace_a_newer_one_but_a_new_boot_does() {
        let now = Instant::now();
        let mut n = table(now);
        let mut late = report("b", 4, 4);
        late.seq = 0;
        n.heard(late, now);
        assert_eq!(
            n.view(now)
                .iter()
                .find(|(r, _)| r.node == "b")
                .unwrap()
                .0
                .turns,
            0
        );
        let mut reborn = report("b", 4, 4);
        reborn.seq = 0;
        reborn.boot = "b2".into();
        n.heard(reborn, now);
        assert_eq!(
            n.view(now)
                .iter()
                .find(|(r, _)| r.node == "b")
                .unwrap()
                .0
                .turns,
            4
        );
    }
}
