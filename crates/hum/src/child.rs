//! A child process of hum's own (humd, a worker, a gateway, for `hum
//! demo` and `hum bench`) that stops when the process that started it is
//! gone, however it goes: its lifeline, and PR_SET_PDEATHSIG where the OS
//! has it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Starts hum's own `exe` with `args`, its stderr in `log`, stopping when
/// this process is gone.
pub fn spawn(
    exe: &Path,
    args: &[String],
    env: &[(&str, String)],
    log: &Path,
) -> std::io::Result<Child> {
    let log = std::fs::File::create(log)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).stdout(Stdio::null()).stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The child stops when its parent is gone, however it goes: its lifeline
    // (held in the returned `Child`'s stdin until it is waited on), and on
    // Linux outside the portable backend PR_SET_PDEATHSIG too.
    crate::lifeline::attach(&mut cmd);
    if crate::cell::ContainmentMode::from_env() != crate::cell::ContainmentMode::Portable {
        crate::os::die_with_parent(&mut cmd, rustix::process::Signal::TERM);
    }
    Command::from(cmd).spawn()
}

/// SIGTERM, then up to 30 s for it to exit, then SIGKILL.
pub async fn stop(child: &mut Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
