//! Cells: the pool's commands carried out (spawn, send, interrupt, tear
//! down) and what each cell's runner reports back.

use super::*;

impl Actor {
    pub(super) fn command(&mut self, cmd: Command) {
        self.dirty = true;
        match &cmd {
            Command::Spawn { turn, .. } => self.admitted(*turn, "spawn"),
            Command::Send { turn, .. } => self.admitted(*turn, "reuse"),
            _ => {}
        }
        match cmd {
            Command::Spawn { cell, sid, turn } => self.spawn(cell, sid, turn),
            Command::Send { cell, turn } => {
                let prompt = self.take_prompt(turn);
                // New tools for this turn: the message waits until the CLI
                // has listed them.
                let relist = self
                    .table
                    .get(cell)
                    .and_then(|i| i.tools.as_ref())
                    .and_then(|(tools, _)| {
                        let seen =
                            tools.set_turn_tools(prompt.as_ref().and_then(|p| p.tools.as_ref()))?;
                        Some((tools.clone(), seen))
                    });
                let line = prompt
                    .map(|p| crate::hive::launch::user_line(&p))
                    .unwrap_or_default();
                let rid = self.serve_turn(turn, cell);
                if let Some(info) = self.table.get(cell) {
                    tracing::info!(event = "cell.reused", sid = %info.sid, pid = info.pid, turn, "warm cell serves the turn");
                    info.serving.start(turn, &info.sid, rid.as_deref());
                    if let Some((tools, _)) = &info.tools {
                        tools.set_turn_rid(rid.as_deref());
                    }
                    let _ = info.runner.send(CellCmd::Write(line, relist));
                }
            }
            Command::Interrupt { cell, turn } => {
                if let Some(info) = self.table.get(cell) {
                    tracing::info!(event = "turn.interrupting", sid = %info.sid, pid = info.pid, turn, "asking the agent to stop its turn");
                    // From now on its output is not forwarded; the worker's
                    // `cancelled` finish ends the turn instead.
                    info.serving.interrupt(turn);
                    let _ = info.runner.send(CellCmd::Interrupt);
                }
                self.turns.interrupted(turn);
            }
            Command::Teardown { cell, reason } => {
                if let Some(info) = self.table.get(cell) {
                    if matches!(reason, Reason::Memory | Reason::MemoryPressure) {
                        let rss = self.pool.cell(cell).map(|c| c.rss_bytes).unwrap_or(0);
                        tracing::info!(event = "cell.memory", sid = %info.sid, pid = info.pid, reason = %reason, rss_bytes = rss,
                            "tearing a cell down for memory");
                    }
                    if reason == Reason::Evicted {
                        let idle_ms = self
                            .pool
                            .cell(cell)
                            .map(|c| self.now().saturating_sub(c.since))
                            .unwrap_or(0);
                        tracing::info!(event = "cell.evicted", sid = %info.sid, pid = info.pid, reason = %reason, idle_ms, "evicting an idle cell");
                    }
                    let _ = info.runner.send(CellCmd::Teardown(reason));
                }
            }
            Command::End {
                turn,
                sid,
                outcome,
                waited_ms,
            } => self.end(turn, sid, outcome, waited_ms),
        }
    }

    pub(super) fn spawn(&mut self, cell: CellId, sid: String, turn: TurnId) {
        let prompt = self.take_prompt(turn).unwrap_or_default();
        let Some(hive) = self.hive_for(prompt.model_id.as_deref()).cloned() else {
            // Checked at arrival; a config without hives cannot start.
            return self.event(Event::SpawnFailed { cell });
        };
        let worker_cwd = std::env::current_dir().ok();
        let builtin = crate::hive::launch::builtin_for(&prompt, &hive);
        let mut plan = crate::hive::launch::plan(
            &prompt,
            &hive,
            crate::hive::launch::Defaults {
                cwd: self.config.cwd.as_deref().or(worker_cwd.as_deref()),
                model: self.config.default_model.as_deref(),
            },
            |k| std::env::var_os(k),
        );
        let tools = self.open_bridge(cell, &sid, prompt.tools.as_ref(), hive.permit_by_default);
        // The foragers serve what these tools would reach: only a cell
        // that can call the foragers starts without them.
        let builtins_off = if tools.is_some() {
            self.builtins_off.clone()
        } else {
            Vec::new()
        };
        for t in &builtins_off {
            if !plan.args.disallowed_tools.contains(t) {
                plan.args.disallowed_tools.push(t.clone());
            }
        }
        if let Some((_, socket)) = &tools {
            match Bridge::mcp_config(socket.path()) {
                Ok(cfg) => {
                    plan.args.mcp_config = Some(cfg);
                    plan.args.permission_prompt_tool = Some(format!(
                        "mcp__{}__{}",
                        crate::hive::argv::BRIDGE_SERVER,
                        crate::worker::bridge::PERMIT_TOOL
                    ));
                }
                Err(e) => {
                    tracing::warn!(event = "bridge.unavailable", sid = %sid, error = %e, "cell starts without the tool bridge")
                }
            }
        }
        let rid = self.serve_turn(turn, cell);
        let serving = Arc::new(Serving::default());
        serving.start(turn, &sid, rid.as_deref());
        if let Some((t, _)) = &tools {
            t.set_turn_rid(rid.as_deref());
        }
        let transcripts = (plan.config_dir.clone(), plan.cwd.clone());
        let restore = prompt
            .extra
            .get(crate::reports::PROMPT_RESTORE_TRANSCRIPT)
            .and_then(|v| v.as_str())
            .map(std::path::PathBuf::from);
        let launch = Launch {
            restore,
            uplink: self.uplink.clone(),
            serving: serving.clone(),
            activity_every: self.activity_every(),
            cells: self.cells.clone(),
            args: plan.args,
            hive,
            sid: sid.clone(),
            cwd: plan.cwd,
            env: plan.env,
            config_dir: plan.config_dir,
            tools: tools.as_ref().map(|(t, _)| t.clone()),
            meters: self.meters.clone(),
            bridge: self.bridge.clone(),
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let hive_name = launch.hive.name.clone();
        let model = launch.args.model.clone();
        self.table.insert(
            cell,
            CellInfo {
                sid,
                hive: hive_name,
                pid: None,
                cell_id: None,
                handle: None,
                ready_once: false,
                spawned_at: Instant::now(),
                turns_served: 0,
                oom_kills_seen: 0,
                runner: cmd_tx,
                serving,
                tools,
                builtins_off,
                builtin,
                wants_other_builtins: false,
                history_not_carried: false,
                model,
                transcripts,
            },
        );
        runner::supervise(
            cell,
            launch,
            crate::hive::launch::user_line(&prompt),
            cmd_rx,
            self.tx.clone(),
        );
    }

    /// Opens a new cell's tool bridge, with the tools of its first turn.
    fn open_bridge(
        &self,
        cell: CellId,
        sid: &str,
        turn_tools: Option<&Value>,
        permit_by_default: bool,
    ) -> Option<(Arc<CellTools>, CellSocket)> {
        let bridge = self.bridge.as_ref()?;
        let tools = CellTools::new(
            sid,
            Some(crate::worker::bridge::Heartbeat {
                cell,
                actor: self.tx.clone(),
                every: self.activity_every(),
            }),
            permit_by_default,
        );
        // No CLI is connected yet: it lists the tools when it starts.
        let _ = tools.set_turn_tools(turn_tools);
        match bridge.open(tools.clone()) {
            Ok(socket) => Some((tools, socket)),
            Err(e) => {
                tracing::warn!(event = "bridge.unavailable", sid, error = %e, "cell starts without the tool bridge");
                None
            }
        }
    }

    /// Counts, logs and tells humd (pulse `cell-oom`) the kernel's OOM
    /// kills in a cell that were not seen yet: `total` so far.
    pub(super) fn note_oom_kills(&mut self, cell: CellId, total: u64) {
        let Some(news) = self.table.oom_seen(cell, total) else {
            return;
        };
        self.metrics.oom_kills += news.new;
        tracing::warn!(event = "cell.oom_killed", sid = %news.sid, pid = news.pid, oom_kills = total, "the kernel's OOM killer ended a process of the cell at its memory limit");
        self.pulse(
            thrum::PulseKind::CellOom,
            &news.sid,
            json!({"pid": news.pid, "oomKills": total}),
        );
    }

    pub(super) fn cell_msg(&mut self, cell: CellId, msg: CellMsg) {
        if !matches!(msg, CellMsg::Activity) {
            self.dirty = true;
        }
        match msg {
            CellMsg::Spawned {
                handle,
                pid,
                cell_id,
                session,
            } => {
                self.metrics.spawns += 1;
                let Some(info) = self.table.spawned(cell, handle, pid, &cell_id) else {
                    return;
                };
                tracing::info!(event = "cell.spawned", sid = %info.sid, pid, cell = %cell_id, session = %session, "cell started");
            }
            CellMsg::SpawnFailed { error } => {
                let sid = self.table.get(cell).map(|i| i.sid.clone());
                tracing::error!(event = "cell.spawn_failed", sid = sid.as_deref(), error = %error, "cell could not start");
                if let Some(sid) = sid {
                    self.spawn_errors.insert(sid, error);
                }
                self.event(Event::SpawnFailed { cell });
            }
            CellMsg::Started => {
                // The runner sent the event itself; `cell-ready` follows it.
                if let Some((_, sid, _)) = self.serving(cell) {
                    if let Some(pid) = self.table.first_ready(cell) {
                        self.pulse(thrum::PulseKind::CellReady, &sid, json!({"pid": pid}));
                    }
                }
                self.event(Event::FirstEvent { cell });
            }
            CellMsg::Activity => self.event(Event::Activity { cell }),
            CellMsg::HistoryNotCarried => {
                if let Some(info) = self.table.get_mut(cell) {
                    info.history_not_carried = true;
                }
            }
            CellMsg::Ended(line) => {
                if let Some((_, sid, _)) = self.serving(cell) {
                    // Still this turn's (the worker did not end it first):
                    // its last event, then the cell's new state, together.
                    if let Some(line) = line {
                        self.uplink.push(line);
                    }
                    let pid = self.table.turn_served(cell).flatten();
                    self.event(Event::TurnDone { cell });
                    self.pulse(thrum::PulseKind::CellIdle, &sid, json!({"pid": pid}));
                }
            }
            CellMsg::Exited { oom_kills } => {
                self.note_oom_kills(cell, oom_kills);
                if oom_kills > 0 {
                    self.event(Event::CellOomKilled { cell })
                } else {
                    self.event(Event::CellExited { cell })
                }
            }
            CellMsg::TornDown(report) => {
                let key = format!("{}/{}", report.reason, report.rung);
                *self.metrics.teardowns.entry(key).or_default() += 1;
                self.metrics.teardown_seconds.observe_ms(report.elapsed_ms);
                let info = self.table.remove(cell);
                if let Some(info) = info {
                    tracing::info!(event = "cell.torn_down", sid = %info.sid, pid = info.pid, reason = %report.reason,
                        rung = %report.rung, ms = report.elapsed_ms, pids = ?report.signalled, "cell gone");
                    self.pulse(
                        table::gone_pulse(report.reason),
                        &info.sid,
                        json!({"pid": info.pid, "cellId": info.cell_id, "reason": report.reason, "rung": report.rung,
                               "ms": report.elapsed_ms, "pids": report.signalled}),
                    );
                }
                self.event(Event::TeardownDone { cell });
            }
        }
    }
}
