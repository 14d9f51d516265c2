//! `hum doctor`: which containment mechanisms this machine offers, why the
//! others are not available, and where hum keeps its state.

use crate::cell::{self, cgroup::CgroupRoot, CgroupMode, ContainmentMode, Procs};
use crate::client::Answering;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    available: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    /// `auto` or `portable`: the backend a worker started now would use.
    containment: &'static str,
    /// The OS's mechanisms the backend leaves out (portable on Linux).
    not_used: Vec<String>,
    /// What this backend cannot do, in words.
    limits: Vec<String>,
    checks: Vec<Check>,
    active: String,
    state_dir: String,
    socket: String,
}

fn check(name: &'static str, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            available: true,
            detail,
        },
        Err(detail) => Check {
            name,
            available: false,
            detail,
        },
    }
}

/// The MCP shim every cell's CLI starts: its own binary beside `hum`, or
/// else `hum mcp-bridge` (which works, at twice the CPU per cell start).
fn shim_check() -> Result<String, String> {
    use crate::worker::bridge::shim;
    let exe = std::env::current_exe().map_err(|e| format!("cannot tell where hum is: {e}"))?;
    match shim::beside(&exe) {
        Some(bin) => Ok(format!("cells start {}", bin.display())),
        None => Err(format!(
            "no {} beside {}: cells start `hum mcp-bridge`, which costs twice the CPU at each cell's start (`cargo install --path crates/hum` installs it)",
            shim::BINARY,
            exe.display()
        )),
    }
}

/// The simulator sim cells run: its own binary beside `hum`, or else
/// `hum sim-agent` (the same simulator, at a heavier start per cell).
/// With the sim hive off, none runs, and nothing is missing.
fn sim_check(config: Option<&crate::config::Config>) -> Result<String, String> {
    if config.is_some_and(|c| !c.sim.enabled) {
        return Ok("the sim hive is off (hum.json's sim.enabled): no simulator runs".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot tell where hum is: {e}"))?;
    match crate::os::installed::beside(&exe, crate::os::installed::SIM) {
        Some(bin) => Ok(format!("sim cells start {}", bin.display())),
        None => Err(format!(
            "no {} beside {}: sim cells start `hum sim-agent`, which costs half again the CPU at each cell's start (`cargo install --path crates/hum` installs it)",
            crate::os::installed::SIM,
            exe.display()
        )),
    }
}

/// The `claude` binary: the config's, else the one on PATH, and its version.
fn claude_check(config: Option<&crate::config::Config>) -> Result<String, String> {
    let configured = config
        .filter(|c| c.claude.enabled)
        .map(|c| c.claude.path.clone());
    let path = match configured.filter(|p| p.components().count() > 1) {
        Some(p) => Some(p),
        None => crate::os::paths::find_on_path("claude"),
    };
    let Some(path) = path else {
        return Err("no `claude` on PATH; install it with `npm i -g @anthropic-ai/claude-code@2.1.332` (the sim hive works without it)".into());
    };
    let mut child = std::process::Command::new(&path)
        .arg("--version")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{} cannot run: {e}", path.display()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} --version did not answer in 10 s",
                    path.display()
                ));
            }
        }
    }
    let mut version = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut version);
    }
    Ok(format!("{} ({})", path.display(), version.trim()))
}

/// Which permission mode claude's cells run in, and what it means for a
/// bee (the old system ran claude with every permission granted).
fn permissions_line(mode: &str, default: crate::config::PermitDefault) -> String {
    let unanswered = match default {
        crate::config::PermitDefault::Allow => "allow",
        crate::config::PermitDefault::Deny => "deny",
    };
    match mode {
        "bypassPermissions" => "claude.permissionMode bypassPermissions: every tool runs without asking (as the old system ran claude)".into(),
        m => format!(
            "claude.permissionMode {m}: a tool that needs permission is asked of the turn's asker (if it answers permission-ask), unanswered: {unanswered}; `\"permissionMode\": \"bypassPermissions\"` runs every tool without asking"
        ),
    }
}

/// The socket's directory: whether another user could take the socket's
/// path first (a shared directory), or owns it.
fn socket_dir_check(path: &std::path::Path) -> Result<String, String> {
    use crate::daemon::listen::DirSafety;
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok("the current directory".into());
    };
    match DirSafety::of(dir) {
        Err(_) => Ok(format!("{} (made 0700 by humd at start)", dir.display())),
        Ok(DirSafety::Private) => Ok(format!("{} (nobody else may write in it)", dir.display())),
        Ok(DirSafety::SharedSticky) => Err(format!(
            "{} is shared (sticky, world-writable): another user could bind the socket's path first; \
             every hum client checks who serves it and refuses another user's, humd refuses a socket there it does not own, \
             and hum writes nothing there without checking; a directory of your own ($XDG_RUNTIME_DIR) is better",
            dir.display()
        )),
        Ok(DirSafety::Foreign(uid)) => Err(format!(
            "{} belongs to uid {}: humd refuses to serve there",
            dir.display(),
            thrum::peer::describe(uid)
        )),
        Ok(DirSafety::WritableByOthers(mode)) => Err(format!(
            "{} is mode {mode:o} (writable by others, not sticky): humd refuses to serve there",
            dir.display()
        )),
    }
}

/// The socket: who answers on it, and whether its permissions keep other
/// users out.
fn socket_check(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(format!(
            "{} (no daemon running; `hum up` starts one)",
            path.display()
        ));
    };
    let own = thrum::peer::own_uid();
    if meta.uid() != own {
        return Err(format!(
            "{} belongs to uid {}, not to you: another user bound it first? hum will not use it",
            path.display(),
            thrum::peer::describe(meta.uid())
        ));
    }
    let m = meta.permissions().mode() & 0o777;
    if m & 0o077 != 0 {
        return Err(format!(
            "{} is mode {m:o}; run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    // The one probe every command asks (a full accept queue is a busy
    // daemon, not a stale socket).
    let answering =
        crate::stop::runtime(crate::stop::Threads::One).block_on(crate::client::answering(path));
    match answering {
        Answering::Yes => Ok(format!(
            "{} (a daemon answers; owner-only permissions)",
            path.display()
        )),
        Answering::Busy => Ok(format!(
            "{} (a daemon is there, busy: its accept queue is full; owner-only permissions)",
            path.display()
        )),
        Answering::Stranger(uid) => Err(format!(
            "{}: uid {} answers on it, not you",
            path.display(),
            thrum::peer::describe(uid)
        )),
        Answering::No => Err(format!(
            "{} is stale (nobody answers); the next `hum up` replaces it",
            path.display()
        )),
    }
}

/// Whether hum.json reads, and the limits in force (what a turn may cost
/// in time).
fn config_check(
    loaded: &Result<crate::config::Config, crate::config::ConfigError>,
    config_path: Option<&std::path::Path>,
) -> Result<String, String> {
    let echo = |c: &crate::config::Config| {
        let n = &c.nest;
        format!(
            "maxActiveCells {}, firstEventTimeoutMs {}, turnIdleTimeoutMs {}, maxTurnMs {}, admissionTimeoutMs {}, cellIdlePruneThresholdMs {}",
            n.max_active_cells,
            n.first_event_timeout_ms,
            n.turn_idle_timeout_ms,
            n.max_turn_ms.map_or("none".to_owned(), |m| m.to_string()),
            n.admission_timeout_ms,
            n.idle_prune_ms
        )
    };
    match (loaded, config_path) {
        (Ok(c), Some(p)) => Ok(format!("{} is valid ({})", p.display(), echo(c))),
        (Ok(c), None) => {
            let p = crate::config::Config::default_path();
            if p.exists() {
                Ok(format!("{} is valid ({})", p.display(), echo(c)))
            } else {
                Ok(format!("no {}; defaults apply ({})", p.display(), echo(c)))
            }
        }
        (Err(e), _) => Err(format!("{e}; fix it or remove the key")),
    }
}

/// What each containment mechanism does here, checked.
struct Mechanisms {
    cgroup: Result<String, String>,
    memory: Result<String, String>,
    active: String,
    subreaper: Result<String, String>,
    pdeathsig: Result<String, String>,
    pidfd: Result<String, String>,
    table: Result<String, String>,
}

fn mechanisms(portable: bool, why_portable: &str, procs: Procs) -> Mechanisms {
    let unused = |what: &str| Err(format!("not used: {why_portable} ({what})"));
    let cgroup = if portable {
        unused("no cgroup per cell")
    } else {
        match CgroupMode::from_env() {
            CgroupMode::Off => Err("disabled by HUM_CGROUPS=off".to_owned()),
            CgroupMode::Auto => {
                let probe = format!("doctor-{}", std::process::id());
                CgroupRoot::create(&probe).map(|root| {
                    let dir = root
                        .dir()
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    root.remove();
                    format!("cell cgroups are created under {dir}; cgroup.kill present")
                })
            }
        }
    };
    let memory = match (&cgroup, portable) {
        (_, true) => unused("nest.maxCellRssMb is enforced by hum's sampling alone"),
        (Err(_), false) => Err(
            "no cgroup per cell: nest.maxCellRssMb is enforced by hum's sampling alone".to_owned(),
        ),
        (Ok(_), false) => crate::os::memcg::describe(),
    };
    let active = match (&cgroup, portable) {
        (_, true) => {
            "portable: process group, tag (through the process table), sentinel, ledger".to_owned()
        }
        (Ok(_), false) => {
            "cgroup v2 per cell, plus process group, tag, subreaper, pdeathsig, sentinel".to_owned()
        }
        (Err(_), false) => {
            "process group, tag, subreaper, pdeathsig, sentinel (no cgroup)".to_owned()
        }
    };
    let subreaper = if portable {
        unused("orphans go to pid 1, where the tag scan finds them")
    } else {
        crate::os::set_subreaper()
            .map(|_| "orphaned descendants come back to the worker".to_owned())
            .map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER) failed: {e}"))
    };
    let pdeathsig = if portable {
        unused("the sentinel alone ends cells when the worker dies")
    } else {
        Ok("cell leaders die with the worker".to_owned())
    };
    let pidfd = if portable {
        unused("pids are checked by start time, then signalled")
    } else if procs.uses_pidfd() {
        Ok("leaders are signalled and watched through pidfds".to_owned())
    } else {
        Err(
            "pidfd_open failed (Linux 5.3+ needed); falling back to polling unreaped pids"
                .to_owned(),
        )
    };
    let table = Ok(format!(
        "{}; start times in {}",
        procs.table_name(),
        match procs.clock() {
            cell::StartClock::BootTicks => "clock ticks after boot",
            cell::StartClock::UnixSeconds => "seconds",
        }
    ));
    Mechanisms {
        cgroup,
        memory,
        active,
        subreaper,
        pdeathsig,
        pidfd,
        table,
    }
}

fn report(config_path: Option<&std::path::Path>) -> Report {
    let loaded = crate::config::Config::load(config_path);
    let config_line = config_check(&loaded, config_path);
    let claude = claude_check(loaded.as_ref().ok());
    let permissions = loaded
        .as_ref()
        .map(|c| permissions_line(&c.claude.permission_mode, c.claude.permission_default))
        .map_err(|e| e.to_string());
    let config_portable = loaded
        .as_ref()
        .is_ok_and(|c| c.containment == ContainmentMode::Portable);
    let portable = config_portable
        || ContainmentMode::from_env() == ContainmentMode::Portable
        || crate::os::EXTRA_MECHANISMS.is_empty();
    let why_portable = if crate::os::EXTRA_MECHANISMS.is_empty() {
        "this OS offers nothing beyond the portable floor"
    } else if config_portable {
        "the config's containment is portable"
    } else {
        "HUM_CONTAINMENT=portable"
    };
    let procs = if portable {
        Procs::portable()
    } else {
        Procs::native()
    };
    let not_used: Vec<String> = if portable {
        crate::os::EXTRA_MECHANISMS
            .iter()
            .map(|m| (*m).to_owned())
            .collect()
    } else {
        Vec::new()
    };
    let Mechanisms {
        cgroup,
        memory,
        active,
        subreaper,
        pdeathsig,
        pidfd,
        table,
    } = mechanisms(portable, why_portable, procs);
    let limits = if portable {
        vec![
            "a process that clears its environment and calls setsid is found only while its parent chain to the cell is known; once orphaned it is out of reach".to_owned(),
            "when the worker is SIGKILLed, its cells end by the sentinel's scan (within 5 s), not at once".to_owned(),
            "a cell's leader is waited on through SIGCHLD and waitid, not a pidfd (a 20 ms poll backs it up)".to_owned(),
        ]
    } else {
        Vec::new()
    };
    let state_dir = crate::os::paths::default_state_dir();
    let state = std::fs::create_dir_all(&state_dir)
        .and_then(|_| tempfile_probe(&state_dir))
        .map(|_| format!("{} is writable", state_dir.display()))
        .map_err(|e| format!("{} is not writable: {e}", state_dir.display()));
    Report {
        checks: vec![
            check("process group", Ok("every cell leads its own group".into())),
            check(
                "environment tag",
                Ok("HUM_CELL / HUM_WORKER_INSTANCE on every descendant".into()),
            ),
            check("process table", table),
            check(
                "sentinel",
                Ok("a process per worker ends its cells when it dies".into()),
            ),
            check("child subreaper", subreaper),
            check("pdeathsig", pdeathsig),
            check("pidfd", pidfd),
            check("cgroup v2", cgroup),
            check("memory limit", memory),
            check("state dir", state),
            check("config", config_line),
            check("permissions", permissions),
            check("claude", claude),
            check("mcp shim", shim_check()),
            check("simulator", sim_check(loaded.as_ref().ok())),
            check("socket", socket_check(&thrum::socket_path())),
            check("socket directory", socket_dir_check(&thrum::socket_path())),
        ],
        containment: if portable { "portable" } else { "auto" },
        not_used,
        limits,
        active,
        state_dir: state_dir.display().to_string(),
        socket: thrum::socket_path().display().to_string(),
    }
}

fn tempfile_probe(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Prints the report; exit 0 when the state dir is usable (the only hard
/// requirement), 1 otherwise.
pub fn run(json: bool, config: Option<&std::path::Path>) -> ExitCode {
    let report = report(config);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        println!("hum doctor");
        for c in &report.checks {
            let mark = if c.available { "ok  " } else { "no  " };
            println!("  {mark}{:<16} {}", c.name, c.detail);
        }
        println!("  containment:        {}", report.containment);
        println!("  active containment: {}", report.active);
        if !report.not_used.is_empty() {
            println!("  not used:           {}", report.not_used.join(", "));
        }
        for limit in &report.limits {
            println!("  limit:              {limit}");
        }
        println!("  state dir:          {}", report.state_dir);
        println!("  thrum socket:       {}", report.socket);
    }
    let state_ok = report
        .checks
        .iter()
        .any(|c| c.name == "state dir" && c.available);
    if state_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulator_is_not_missing_when_the_sim_hive_is_off() {
        let mut config = crate::config::Config::default();
        config.sim.enabled = false;
        let off = sim_check(Some(&config)).expect("nothing is missing");
        assert!(off.contains("sim hive is off"), "{off}");
        // On, the check looks beside this test's binary, where no
        // hum-sim is: said missing, with what runs instead.
        config.sim.enabled = true;
        let on = sim_check(Some(&config)).expect_err("no hum-sim beside the test");
        assert!(on.contains("hum sim-agent"), "{on}");
    }
}
