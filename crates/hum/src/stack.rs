//! hum's own processes as children: [`HumChild`] starts one (its log, a
//! clean environment, stopping when this process is gone however it goes:
//! its lifeline, and PR_SET_PDEATHSIG where the OS has it) and stops it
//! (SIGTERM, a wait, SIGKILL), for `hum up`'s supervisor and for
//! [`Stack`]: humd on a socket in a directory of a command's own (`hum
//! demo`, `hum bench`), then a worker with a config, each started only once
//! the one before answers, and stopped in the reverse order.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long humd gets to answer on its socket, and a worker to say hello
/// to it, once started.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How long humd and a worker get to stop after SIGTERM (a worker tears
/// every cell down first) before they are killed.
const STOP_WITHIN: Duration = Duration::from_secs(30);

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
    daemon: HumChild,
    worker: Option<HumChild>,
}

impl Stack {
    /// Starts humd, waits until it answers, then the worker (if the spec
    /// has one) and waits until humd knows it.
    pub async fn start(spec: StackSpec) -> std::io::Result<Stack> {
        let socket = spec.dir.join("thrum.sock");
        let daemon = start_daemon(&spec, &socket).await?;
        let mut stack = Stack {
            socket,
            spec,
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
            match HumChild::start(&args, &stack.spec.env, &log, HumChild::pdeathsig_here()) {
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
        (
            self.daemon.id(),
            self.worker.as_ref().and_then(HumChild::id),
        )
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
        let _ = self.daemon.child.wait().await;
        self.daemon = start_daemon(&self.spec, &self.socket).await?;
        Ok(())
    }

    /// Stops the worker (it tears every cell down), then humd.
    pub async fn stop(self) {
        if let Some(w) = self.worker {
            w.stop(STOP_WITHIN).await;
        }
        self.daemon.stop(STOP_WITHIN).await;
    }
}

async fn start_daemon(spec: &StackSpec, socket: &Path) -> std::io::Result<HumChild> {
    let mut args = vec![
        "daemon".to_owned(),
        format!("--socket={}", socket.display()),
        "--no-metrics".into(),
    ];
    args.extend(spec.daemon_args.iter().cloned());
    let log = spec.dir.join("daemon.log");
    let daemon = HumChild::start(&args, &spec.env, &log, HumChild::pdeathsig_here())?;
    crate::client::wait_answering(socket, READY_WITHIN).await;
    Ok(daemon)
}

/// A child that is one of hum's own programs: its process, and the write
/// end of its lifeline, held (never written) while it runs (apart from the
/// `Child`: waiting on a `Child` closes its stdin).
#[derive(Debug)]
pub struct HumChild {
    pub child: Child,
    lifeline: Option<tokio::process::ChildStdin>,
}

impl HumChild {
    /// Starts `hum <args>` with `env` added, its stdout and stderr
    /// appended to `log`. It stops when this process is gone, however it
    /// goes: its lifeline, and PR_SET_PDEATHSIG where asked (Linux outside
    /// the portable backend; what macOS has is the lifeline alone). No
    /// secret of this process's environment goes with it but what `env`
    /// says, and it gets the user's umask back for what it starts.
    pub fn start(
        args: &[String],
        env: &[(String, String)],
        log: &Path,
        pdeathsig: bool,
    ) -> std::io::Result<HumChild> {
        let exe = std::env::current_exe()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = std::process::Command::new(exe);
        cmd.env_remove("HUM_GATEWAY_TOKEN")
            .envs(env.iter().map(|(k, v)| (k, v)));
        cmd.args(args).stdout(log.try_clone()?).stderr(log);
        crate::lifeline::attach(&mut cmd);
        if pdeathsig {
            crate::os::die_with_parent(&mut cmd, rustix::process::Signal::TERM);
        }
        // The children set 077 for themselves; what they remember as the
        // user's umask (and give their cells) must be the user's, not ours.
        crate::private_fs::restore_umask_in_child(&mut cmd);
        let mut child = Command::from(cmd).spawn()?;
        let lifeline = child.stdin.take();
        Ok(HumChild { child, lifeline })
    }

    /// Whether PR_SET_PDEATHSIG is used on this machine for this process's
    /// children (not with the portable backend).
    pub fn pdeathsig_here() -> bool {
        crate::cell::ContainmentMode::from_env() != crate::cell::ContainmentMode::Portable
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM, then up to `within` for it to exit, then SIGKILL; whether
    /// it exited in time. Its lifeline goes once it is gone (cut first,
    /// the child would take its parent for dead).
    pub async fn stop(mut self, within: Duration) -> bool {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let in_time = tokio::time::timeout(within, self.child.wait())
            .await
            .is_ok();
        if !in_time {
            let _ = self.child.kill().await;
        }
        self.lifeline = None;
        in_time
    }
}
