//! A stack of hum's own processes, for the commands that run one of their
//! own (`hum demo`, `hum bench`): humd on a socket in a directory of the
//! command's, then a worker with a config, each started only once the one
//! before answers, each a child that stops when this process is gone
//! (however it goes: its lifeline, and PR_SET_PDEATHSIG where the OS has
//! it), and stopped in the reverse order.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long humd gets to answer on its socket, and a worker to say hello
/// to it, once started.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// What a stack is made of.
#[derive(Debug, Clone)]
pub struct StackSpec {
    /// Where the socket and the processes' logs go.
    pub dir: PathBuf,
    /// Set in every process's environment.
    pub env: Vec<(String, String)>,
    /// The worker's hum.json; none for humd alone.
    pub worker_config: Option<PathBuf>,
    /// More of humd's arguments (a cluster node's `--cluster …`).
    pub daemon_args: Vec<String>,
}

/// humd (and a worker), running.
pub struct Stack {
    pub socket: PathBuf,
    spec: StackSpec,
    exe: PathBuf,
    daemon: Child,
    worker: Option<Child>,
}

impl Stack {
    /// Starts humd, waits until it answers, then the worker (if the spec
    /// has one) and waits until humd knows it.
    pub async fn start(spec: StackSpec) -> std::io::Result<Stack> {
        let exe = std::env::current_exe()?;
        let socket = spec.dir.join("thrum.sock");
        let daemon = start_daemon(&exe, &spec, &socket).await?;
        let mut stack = Stack {
            socket,
            spec,
            exe,
            daemon,
            worker: None,
        };
        if let Some(config) = stack.spec.worker_config.clone() {
            let args = [
                "worker".to_owned(),
                format!("--config={}", config.display()),
                format!("--socket={}", stack.socket.display()),
            ];
            let log = stack.spec.dir.join("worker.log");
            match spawn(&stack.exe, &args, &stack.spec.env, &log) {
                Ok(worker) => stack.worker = Some(worker),
                Err(e) => {
                    stack.stop().await;
                    return Err(e);
                }
            }
            stack.wait_for_worker().await;
        }
        Ok(stack)
    }

    /// Waits (bounded) until humd knows a worker.
    async fn wait_for_worker(&self) {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        while tokio::time::Instant::now() < deadline {
            if crate::client::fetch_status(&self.socket)
                .await
                .is_ok_and(|s| s.daemon.workers > 0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// humd's and the worker's pids.
    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        (self.daemon.id(), self.worker.as_ref().and_then(Child::id))
    }

    /// SIGKILLs humd (no goodbye to anyone) and starts a new one on the
    /// same socket; returns once it answers. The worker stays.
    pub async fn kill_and_restart_daemon(&mut self) -> std::io::Result<()> {
        if let Some(pid) = self
            .daemon
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = self.daemon.wait().await;
        self.daemon = start_daemon(&self.exe, &self.spec, &self.socket).await?;
        Ok(())
    }

    /// Stops the worker (it tears every cell down), then humd.
    pub async fn stop(mut self) {
        if let Some(w) = &mut self.worker {
            stop(w).await;
        }
        stop(&mut self.daemon).await;
    }
}

async fn start_daemon(exe: &Path, spec: &StackSpec, socket: &Path) -> std::io::Result<Child> {
    let mut args = vec![
        "daemon".to_owned(),
        format!("--socket={}", socket.display()),
        "--no-metrics".into(),
    ];
    args.extend(spec.daemon_args.iter().cloned());
    let daemon = spawn(exe, &args, &spec.env, &spec.dir.join("daemon.log"))?;
    crate::client::wait_answering(socket, READY_WITHIN).await;
    Ok(daemon)
}

/// Starts hum's own `exe` with `args`, its stderr appended to `log`,
/// stopping when this process is gone.
fn spawn(
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
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
async fn stop(child: &mut Child) {
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
