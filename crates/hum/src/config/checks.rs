//! What hum.json may say: every bound and rule, checked in one order (the
//! first refusal names its key).

use super::*;

impl Config {
    /// Every rule, in order; the first broken one, as (key, why).
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        self.check_counts()?;
        self.check_places()?;
        self.check_times()?;
        self.check_accounting()?;
        self.cluster.check()?;
        acp::check(&self.acp)?;
        self.check_models()
    }

    /// The pool's counts: each at least one.
    fn check_counts(&self) -> Result<(), (String, String)> {
        let n = &self.nest;
        if n.max_active_cells == 0 {
            return bad("nest.maxActiveCells", "must be at least 1");
        }
        if n.max_concurrent_spawns == 0 {
            return bad("nest.maxConcurrentSpawns", "must be at least 1");
        }
        if n.max_queued_prompts == 0 {
            return bad("nest.maxQueuedPrompts", "must be at least 1");
        }
        for (key, v, max) in [
            ("nest.maxActiveCells", n.max_active_cells, MAX_ACTIVE_CELLS),
            (
                "nest.maxConcurrentSpawns",
                n.max_concurrent_spawns,
                MAX_ACTIVE_CELLS,
            ),
            (
                "nest.maxQueuedPrompts",
                n.max_queued_prompts,
                MAX_QUEUED_PROMPTS,
            ),
        ] {
            if v > max {
                return bad(key, &format!("must be at most {max}, not {v}"));
            }
        }
        Ok(())
    }

    /// Where cells run and what they start with.
    fn check_places(&self) -> Result<(), (String, String)> {
        if let Some(cwd) = &self.cwd {
            if !cwd.is_absolute() {
                return bad("cwd", &format!("{} is not an absolute path", cwd.display()));
            }
        }
        for (hive, env) in [("claude", &self.claude.env), ("sim", &self.sim.env)] {
            for (k, v) in env {
                if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                    return bad(
                        &format!("{hive}.env.{}", crate::logsafe::escape(k)),
                        "names and values must not hold a NUL (nor a name an '=' or nothing)",
                    );
                }
            }
        }
        if !crate::hive::argv::PERMISSION_MODES.contains(&self.claude.permission_mode.as_str()) {
            return bad(
                "claude.permissionMode",
                &format!(
                    "must be one of {}",
                    crate::hive::argv::PERMISSION_MODES.join(", ")
                ),
            );
        }
        Ok(())
    }

    /// Timeouts and graces: within their bounds.
    fn check_times(&self) -> Result<(), (String, String)> {
        let n = &self.nest;
        for (key, v) in [
            ("nest.cellIdlePruneThresholdMs", n.idle_prune_ms),
            ("nest.admissionTimeoutMs", n.admission_timeout_ms),
            ("nest.firstEventTimeoutMs", n.first_event_timeout_ms),
            ("nest.turnIdleTimeoutMs", n.turn_idle_timeout_ms),
            ("nest.maxTurnMs", n.max_turn_ms.unwrap_or(1)),
            ("tools.callTimeoutMs", self.tools.call_timeout_ms),
            (
                "tools.permissionTimeoutMs",
                self.tools.permission_timeout_ms,
            ),
            ("gateway.parkedTurnMs", self.gateway.parked_turn_ms),
        ] {
            if v == 0 {
                return bad(key, "must be more than 0");
            }
            if v > MAX_TIMEOUT_MS {
                return bad(
                    key,
                    &format!("must be at most {MAX_TIMEOUT_MS} (30 days), not {v}"),
                );
            }
        }
        for (key, v) in [
            ("nest.cancelGraceMs", n.cancel_grace_ms),
            ("nest.closeGraceMs", n.close_grace_ms),
            ("nest.termGraceMs", n.term_grace_ms),
            ("nest.evictionHoldMs", n.eviction_hold_ms),
        ] {
            if v > MAX_GRACE_MS {
                return bad(
                    key,
                    &format!("must be at most {MAX_GRACE_MS} (10 minutes), not {v}"),
                );
            }
        }
        Ok(())
    }

    /// Budgets, how long usage is kept, memory limits.
    fn check_accounting(&self) -> Result<(), (String, String)> {
        let n = &self.nest;
        if let Some(key) = self.budgets.invalid() {
            return bad(key, "must be a number of dollars, 0 or more");
        }
        let days = self.usage.retention_days;
        if !(1..=crate::usage::MAX_RETENTION_DAYS).contains(&days) {
            return bad(
                "usage.retentionDays",
                &format!(
                    "must be 1 to {}, not {days}",
                    crate::usage::MAX_RETENTION_DAYS
                ),
            );
        }
        for (key, bytes) in [
            ("nest.maxPoolRssMb", n.max_pool_rss_bytes),
            ("nest.maxCellRssMb", n.max_cell_rss_bytes),
        ] {
            let mib = bytes.map(|b| b >> 20);
            if let Some(v) = mib.filter(|v| !(1..=MAX_RSS_MB).contains(v)) {
                return bad(key, &format!("must be 1 to {MAX_RSS_MB} (MiB), not {v}"));
            }
        }
        Ok(())
    }

    /// The hives and the models they serve.
    fn check_models(&self) -> Result<(), (String, String)> {
        let acp_enabled = self.acp.values().any(|h| h.enabled);
        if !self.claude.enabled && !self.sim.enabled && !acp_enabled {
            return bad(
                "claude.enabled",
                "no hive is enabled (claude and sim are both off)",
            );
        }
        if self.models().is_empty() {
            let key = if self.claude.enabled {
                "claude.models"
            } else {
                "sim.models"
            };
            return bad(key, "is empty: the enabled hives serve no model");
        }
        for (key, models) in [
            ("claude.models", &self.claude.models),
            ("sim.models", &self.sim.models),
        ] {
            if let Some(m) = models
                .iter()
                .find(|m| !crate::hive::argv::valid_model_id(m))
            {
                return bad(key, &format!("{m:?} is not a model id"));
            }
        }
        // A model names one hive: an ACP hive's may not be another's too.
        let all = self.models();
        for (name, hive) in self.acp.iter().filter(|(_, h)| h.enabled) {
            if let Some(m) = hive
                .models
                .iter()
                .find(|m| all.iter().filter(|x| x == m).count() > 1)
            {
                return bad(
                    &format!("acp.{}.models", crate::logsafe::escape(name)),
                    &format!("{m:?} is served by another hive too: a model names one hive"),
                );
            }
        }
        if let Some(m) = &self.default_model {
            if !self.models().iter().any(|x| x == m) {
                return bad(
                    "defaultModel",
                    &format!("{m:?} is not served by an enabled hive"),
                );
            }
        }
        Ok(())
    }
}

/// A refusal of `key`, saying why.
fn bad(key: &str, why: &str) -> Result<(), (String, String)> {
    Err((key.to_owned(), why.to_owned()))
}
