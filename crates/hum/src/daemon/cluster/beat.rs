//! This node's heartbeat: its load as the router sees it, written to the
//! nodes bucket every beat (from a task of its own), the nodes gone silent
//! forgotten, the view status shows, and leaving.

use super::*;

impl Node {
    /// Says this node is alive and what it carries; forgets nodes gone
    /// silent, ending their links (their turns end `worker_lost` here).
    pub(super) async fn heartbeat(&mut self, js: &Js) {
        let now = Instant::now();
        self.expire_silent();
        let Some((report, held)) = self.report().await else {
            return;
        };
        self.nodes.heard(report.clone(), now);
        let view = self.view(now);
        let _ = self.router.send(RouterMsg::ClusterView(view)).await;
        let Ok(value) = serde_json::to_vec(&report) else {
            return;
        };
        // Written from a task of its own: the loop goes on handing other
        // nodes' lines to their links while JetStream stores it.
        let (store, me, within) = (
            js.nodes.clone(),
            self.settings.node.clone(),
            self.settings.heartbeat,
        );
        let written = self.beats.0.clone();
        // Finished writes are reaped here; at most one a beat (or a change)
        // is in flight, each bounded by its timeout.
        while self.puts.try_join_next().is_some() {}
        self.puts.spawn(async move {
            match tokio::time::timeout(within, store.put(&me, value.into())).await {
                Ok(Ok(_)) => {
                    let _ = written.send((now, held));
                }
                Ok(Err(e)) => {
                    tracing::debug!(event = "cluster.heartbeat_failed", error = %e, "heartbeat not written")
                }
                Err(_) => {
                    tracing::debug!(event = "cluster.heartbeat_failed", "heartbeat timed out")
                }
            }
        });
    }

    /// Forgets the nodes silent for longer than the timeout, ending
    /// their links (their turns end `worker_lost` here).
    pub(super) fn expire_silent(&mut self) {
        let now = Instant::now();
        let gone = self.nodes.expire(now);
        for node in &gone {
            tracing::warn!(event = "cluster.node_gone", node = %node, "a node went silent; its turns here end and its sids move");
            self.drop_links(node);
        }
        if !gone.is_empty() {
            // Status shows it gone now, not at the next beat (a full
            // queue only leaves that to the beat).
            let _ = self.router.try_send(RouterMsg::ClusterView(self.view(now)));
        }
    }

    /// A heartbeat (taken at `at`, with the sids of the cells here then)
    /// was written: after a long silence, this node checks its cells.
    pub(super) fn beat_written(&mut self, js: &Js, at: Instant, held: Vec<String>) {
        if at <= self.beat_written {
            return;
        }
        let away = at.saturating_duration_since(self.beat_written);
        self.beat_written = at;
        if away > self.settings.node_timeout {
            self.after_being_away(js, held, away);
        }
    }

    /// The cluster as this node sees it, for status.
    pub(super) fn view(&self, now: Instant) -> crate::reports::ClusterStatus {
        let me = &self.settings.node;
        crate::reports::ClusterStatus {
            name: self.settings.name.clone(),
            node: me.clone(),
            connected: self.client.connection_state() == async_nats::connection::State::Connected,
            nodes: self
                .nodes
                .view(now)
                .into_iter()
                .map(|(r, ago)| crate::reports::NodeView {
                    linked: r.node == *me || self.ready.has(&r.node),
                    node: r.node,
                    cap: r.cap,
                    cells: r.cells,
                    turns: r.turns,
                    rss_bytes: r.rss_bytes,
                    draining: r.draining,
                    heard_ms_ago: ago.as_millis() as u64,
                })
                .collect(),
            // Filled in by the router, which times turns and routes sids.
            ..Default::default()
        }
    }

    /// This node leaves the cluster: its entry is deleted, so the others
    /// forget it now and move its sids on their next prompts.
    pub(super) async fn leave(&mut self, js: &Js) {
        let me = self.settings.node.clone();
        // A heartbeat still being written would land after the delete and
        // bring this node back to the others' tables until it times out.
        while self.puts.join_next().await.is_some() {}
        match tokio::time::timeout(Duration::from_secs(2), js.nodes.delete(&me)).await {
            Ok(Ok(())) => {
                tracing::info!(event = "cluster.left", node = %me, "this node left the cluster")
            }
            _ => {
                tracing::warn!(event = "cluster.left", node = %me, "leaving was not said; the others see this node go silent")
            }
        }
        let _ = self.client.flush().await;
    }

    /// This node's load, from the router's view of its own workers.
    pub(super) async fn report(&mut self) -> Option<(NodeReport, Vec<String>)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.router.send(RouterMsg::Snapshot(tx)).await.ok()?;
        let status = rx.await.ok()?;
        self.seq += 1;
        let mut r = NodeReport {
            node: self.settings.node.clone(),
            seq: self.seq,
            boot: self.boot.clone(),
            draining: self.draining,
            ..Default::default()
        };
        for w in status.workers.iter().filter(|w| w.conn < REMOTE_CONNS) {
            r.turns += w.in_flight;
            r.models.extend(w.models.iter().cloned());
            if let Some(s) = &w.status {
                r.cap += s.pool.cap;
                r.cells += s.pool.live;
                r.bootstrapping += s.pool.bootstrapping;
                r.rss_bytes += s.cells.iter().map(|c| c.rss_bytes).sum::<u64>();
            }
        }
        r.models.sort();
        r.models.dedup();
        let sids = status
            .workers
            .iter()
            .filter(|w| w.conn < REMOTE_CONNS)
            .filter_map(|w| w.status.as_ref())
            .flat_map(|s| s.cells.iter().map(|c| c.sid.clone()))
            .collect();
        Some((r, sids))
    }
}
