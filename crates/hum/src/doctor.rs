//! `hum doctor`: which containment mechanisms this machine offers, why the
//! others are not available, and where hum keeps its state.

use crate::cell::{self, cgroup::CgroupRoot, containment, CgroupMode};
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

fn report() -> Report {
    let mode = CgroupMode::from_env();
    let cgroup = match mode {
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
    };
    let active = match &cgroup {
        Ok(_) => {
            "cgroup v2 per cell, plus process group, tag, subreaper, pdeathsig, sentinel".to_owned()
        }
        Err(_) => "process group, tag, subreaper, pdeathsig, sentinel (no cgroup)".to_owned(),
    };
    let subreaper = rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map(|_| "orphaned descendants come back to the worker".to_owned())
        .map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER) failed: {e}"));
    let pidfd = if containment::pidfd_available() {
        Ok("leaders are signalled and watched through pidfds".to_owned())
    } else {
        Err(
            "pidfd_open failed (Linux 5.3+ needed); falling back to polling unreaped pids"
                .to_owned(),
        )
    };
    let state_dir = cell::default_state_dir();
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
            check("child subreaper", subreaper),
            check("pdeathsig", Ok("cell leaders die with the worker".into())),
            check("pidfd", pidfd),
            check("cgroup v2", cgroup),
            check("state dir", state),
        ],
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
pub fn run(json: bool) -> ExitCode {
    let report = report();
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
        println!("  active containment: {}", report.active);
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
