//! What the actor sends humd: pulses, refusals, the worker's own turn ends,
//! and its status on every change, all through the [`Uplink`] the cells'
//! output takes too.

use super::*;

impl Actor {
    /// `worker-status` (a thrum extension chi): the pool and every cell, for
    /// `hum status`. Sent every second while linked; humd keeps the latest.
    ///
    /// ```json
    /// {"chi": "worker-status", "hive": "sim", "models": ["sim"],
    ///  "containment": {"kind": "cgroup", "root": "…"},
    ///  "pool": {"live": 3, "cap": 8, "queued": 0, "bootstrapping": 1},
    ///  "cells": [{"sid": "…", "hive": "sim", "state": "idle", "pid": 42,
    ///             "pids": [42, 43], "rssBytes": 1, "cpuMs": 2, "ageMs": 3,
    ///             "idleMs": 4, "turnsServed": 1, "cellId": "…"}]}
    /// ```
    ///
    /// The process trees come from the last sample (taken once a second
    /// off this thread, see [`Actor::start_sampling`]), so a push on each
    /// state change costs no /proc scan.
    /// Samples every live cell's process tree on a blocking thread (one
    /// /proc scan reads a file per process on the machine).
    pub(super) fn start_sampling(&self) -> tokio::task::JoinHandle<Samples> {
        let cells = self.cells.clone();
        let handles = self.table.handles();
        tokio::task::spawn_blocking(move || {
            let samples = cells.sample_all(handles.iter().map(|(_, h)| h));
            handles.iter().map(|(id, _)| *id).zip(samples).collect()
        })
    }

    /// A fresh sample: the pool weighs each cell's memory, and OOM kills
    /// are counted.
    pub(super) fn memory_sampled(&mut self, samples: Samples) {
        let seen = self.table.sampled(samples);
        for (cell, _, oom) in &seen {
            self.note_oom_kills(*cell, *oom);
        }
        self.flush_prompts();
        let now = self.now();
        let events = seen
            .into_iter()
            .map(|(cell, bytes, _)| Event::Rss { cell, bytes });
        for cmd in self.pool.handle_all(now, events) {
            self.command(cmd);
        }
    }

    pub(super) fn report_status(&mut self) {
        self.dirty = false;
        if !self.uplink.is_linked() {
            return;
        }
        let now = self.now();
        let views = self.pool.cells();
        let procs = self.cells.procs();
        let cells = self.table.rows(&views, now, |info| {
            let leader = info.pid.and_then(|p| procs.stat(p));
            crate::cell::observe::summarize(
                info.cell_id.as_deref().unwrap_or(""),
                info.pid.unwrap_or(0),
                leader.into_iter().collect(),
                info.spawned_at.elapsed(),
            )
        });
        let status = WorkerStatus {
            hive: self.hives.first().map(|h| h.name.clone()),
            models: self.config.models(),
            containment: Some(self.cells.mechanism().clone()),
            pool: PoolStatus {
                live: views.len(),
                cap: self.pool.config().max_active_cells,
                queued: self.pool.queued(),
                bootstrapping: views
                    .iter()
                    .filter(|c| c.state == crate::pool::CellState::Bootstrapping)
                    .count(),
                max_concurrent_spawns: self.pool.config().max_concurrent_spawns,
                max_pool_rss_bytes: self.pool.config().max_pool_rss_bytes,
                max_cell_rss_bytes: self.pool.config().max_cell_rss_bytes,
            },
            cells,
            metrics: self.metrics.clone(),
            builtins_off: self.builtins_off.clone(),
        };
        match status.to_line() {
            Ok(bytes) => self.uplink.push(bytes),
            Err(e) => {
                tracing::error!(event = "worker.status_unencodable", error = %e, "worker-status did not serialize")
            }
        }
    }

    /// Sends a tone to humd, in order with everything else sent to it;
    /// never waits (see [`Uplink`]).
    pub(super) fn send(&mut self, tone: Tone) {
        match tone.encode_line(thrum::DEFAULT_MAX_LINE) {
            Ok(line) => self.uplink.push(line),
            Err(e) => {
                tracing::warn!(event = "worker.send_failed", error = %e, chi = tone.chi(), "tone not sent")
            }
        }
    }

    /// Sends a tone about `sid`, with the rid of the turn when known.
    pub(super) fn send_for(&mut self, body: impl Into<Body>, sid: &str, rid: Option<&str>) {
        let mut tone = Tone::new(body).with_sid(sid);
        tone.envelope.rid = rid.map(str::to_owned);
        tone.envelope.from = Some("worker".into());
        self.send(tone);
    }

    pub(super) fn pulse(&mut self, kind: thrum::PulseKind, sid: &str, fields: Value) {
        self.uplink.pulse(kind, sid, fields);
    }

    pub(super) fn reject(
        &mut self,
        sid: Option<&str>,
        rid: Option<&str>,
        code: ErrorCode,
        message: String,
    ) {
        tracing::info!(event = "turn.rejected", sid, code = code.as_str(), detail = %message, "request refused");
        let mut tone = Tone::new(ErrorTone::new(code, message));
        tone.envelope.sid = sid.map(str::to_owned);
        tone.envelope.rid = rid.map(str::to_owned);
        self.send(tone);
    }
}
