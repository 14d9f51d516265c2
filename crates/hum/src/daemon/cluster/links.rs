//! Each other node's links on this node: opened when the node is heard
//! (its worker link), on its first line (asker and calls links) or with
//! its catalogue (its tools link, `tools.rs`); all of them dropped when it
//! goes; and the lines from NATS handed to the link the subject names.

use super::link::{Link, LinkEvent, LinkPlan, Side};
use super::{Node, LINK_SOURCE};
use crate::daemon::router::placing::CALLS_HID_PREFIX;

impl Node {
    pub(super) fn open_link(&mut self, node: &str, side: Side, models: Vec<String>) {
        let hid = format!("node:{node}");
        let hello = match side {
            Side::Worker => crate::client::Client::worker_hello(LINK_SOURCE, &hid, models),
            // It answers permission asks: the node behind it hands each to
            // its own asker, or answers it as a humd does when that asker
            // does not.
            Side::Asker => thrum::Hello {
                chis: Some(
                    ["hello", "prompt", "permission-ask", "release-permit"]
                        .map(String::from)
                        .to_vec(),
                ),
                ..crate::client::Client::bee_hello(LINK_SOURCE, Some(&hid))
            },
            // The router knows it by its hid (on a link only).
            Side::Calls => {
                let hid = format!("{CALLS_HID_PREFIX}{node}");
                crate::client::Client::bee_hello(LINK_SOURCE, Some(&hid))
            }
            // Opened with its node's catalogue (`tools.rs`).
            Side::Tools => return,
        };
        let hello = thrum::Hello {
            hid: hello.hid.or(Some(hid)),
            ..hello
        };
        self.open_link_with(node, side, hello);
    }

    pub(super) fn open_link_with(&mut self, node: &str, side: Side, hello: thrum::Hello) {
        let id = self.next_id;
        self.next_id += 1;
        let hello = thrum::Tone::new(hello);
        let plan = LinkPlan {
            id,
            node: node.to_owned(),
            side,
            hello,
            subject: LinkPlan::subject(&self.settings.name, node, side, &self.settings.node),
        };
        let link = Link::open(&self.host, plan, self.client.clone(), self.events.clone());
        tracing::info!(event = "cluster.link_opened", node = %node, side = ?side, conn = id, "linked to a node");
        self.links.insert((node.to_owned(), side), link);
    }

    pub(super) fn drop_links(&mut self, node: &str) {
        self.ready.set(node, false);
        for side in [Side::Worker, Side::Asker, Side::Tools, Side::Calls] {
            self.links.remove(&(node.to_owned(), side));
        }
        self.shared.forget_said(node);
    }

    pub(super) fn link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Ready(node, Side::Worker) => {
                self.ready.set(&node, true);
            }
            LinkEvent::Ready(..) => {}
            LinkEvent::Closed(node, side, id) => {
                // Only if it is still this link (not one opened since).
                if self
                    .links
                    .get(&(node.clone(), side))
                    .is_some_and(|l| l.id == id)
                {
                    self.links.remove(&(node.clone(), side));
                    if side == Side::Worker {
                        self.ready.set(&node, false);
                    }
                }
            }
        }
    }

    /// A line from another node: to its link on the side the subject names
    /// (an asker link is opened on its node's first line).
    pub(super) async fn dispatch(&mut self, msg: async_nats::Message) {
        let mut words = msg.subject.as_str().rsplitn(3, '.');
        let (Some(from), Some(word)) = (words.next(), words.next()) else {
            return;
        };
        let Some(side) = Side::of_word(word) else {
            return;
        };
        let from = from.to_owned();
        if from == self.settings.node {
            return;
        }
        if matches!(side, Side::Asker | Side::Calls)
            && !self.links.contains_key(&(from.clone(), side))
        {
            self.open_link(&from, side, Vec::new());
        }
        match self.links.get(&(from.clone(), side)) {
            Some(link) => {
                link.deliver_all(msg.payload).await;
            }
            None => {
                tracing::debug!(event = "cluster.line_dropped", node = %from, side = ?side, "a line for a link that is gone")
            }
        }
    }
}
