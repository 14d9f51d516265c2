//! A cluster in one test: a `nats-server` with JetStream and a password
//! (its store in the sandbox, a port of its own choosing), and nodes, each
//! a humd and a sim worker with their own socket and state, all carrying
//! the sandbox's tag so the leak check sees every process.

use super::stack::stop_child;
use super::*;
use serde_json::json;
use std::process::Child;

/// Where the Debian package puts the server (`.ci/run` installs it).
fn nats_server_bin() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "nats-server is missing: the cluster tests need it (Debian: apt-get install nats-server; .ci/run installs it)"
    );
}

/// A NATS server for one test.
pub struct Nats {
    pub child: Child,
    pub url: String,
    pub port: u16,
    /// A credentials file (`user:password`, 0600) it accepts.
    pub credentials: PathBuf,
    /// With TLS: the authority that signed its certificate (PEM).
    pub ca: Option<PathBuf>,
    dir: PathBuf,
    config: PathBuf,
}

/// A private authority and a certificate it signed for `127.0.0.1`, in
/// `dir`: (CA, server certificate, server key) as PEM files.
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "hum test authority");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_pem = server.signed_by(&server_key, &issuer).unwrap().pem();
    let files = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&files.0, ca_pem).unwrap();
    std::fs::write(&files.1, server_pem).unwrap();
    write_secret(&files.2, &server_key.serialize_pem());
    (files.0, files.1, files.2)
}

impl Nats {
    /// Starts one in `sb`, with user `hum` and a random password.
    pub fn start(sb: &Sandbox) -> Nats {
        Nats::start_at(sb, "127.0.0.1")
    }

    /// A server listening on `host` (a bridge's address, for nodes in
    /// network namespaces of their own).
    pub fn start_at(sb: &Sandbox, host: &str) -> Nats {
        Nats::launch(sb, host, false)
    }

    /// [`Nats::start`] with TLS required of every client, its certificate
    /// signed by an authority of the test's own ([`Nats::ca`]); its URL
    /// is `tls://`.
    pub fn start_tls(sb: &Sandbox) -> Nats {
        Nats::launch(sb, "127.0.0.1", true)
    }

    fn launch(sb: &Sandbox, host: &str, tls: bool) -> Nats {
        let dir = sb
            .dir
            .path()
            .join(format!("nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("ports")).unwrap();
        let password = uuid::Uuid::new_v4().simple().to_string();
        let config = dir.join("nats.conf");
        let (ca, tls_block) = if tls {
            let (ca, cert, key) = tls_files(&dir);
            let block = format!("tls {{ cert_file: {cert:?}, key_file: {key:?} }}\n");
            (Some(ca), block)
        } else {
            (None, String::new())
        };
        std::fs::write(
            &config,
            format!(
                "listen: {host}:-1\nmax_payload: 8MB\nports_file_dir: {ports:?}\n\
                 jetstream {{ store_dir: {store:?}, max_memory_store: 64MB, max_file_store: 256MB }}\n\
                 authorization {{ users = [ {{ user: hum, password: {password:?} }} ] }}\n{tls_block}",
                ports = dir.join("ports"),
                store = dir.join("js"),
            ),
        )
        .unwrap();
        let credentials = dir.join("creds");
        write_secret(&credentials, &format!("hum:{password}\n"));
        let mut nats = Nats {
            child: Nats::spawn(sb, &config, &dir),
            url: String::new(),
            port: 0,
            credentials,
            ca,
            dir,
            config,
        };
        nats.port = nats.wait_port(None);
        let scheme = if tls { "tls" } else { "nats" };
        nats.url = format!("{scheme}://{host}:{}", nats.port);
        nats
    }

    fn spawn(sb: &Sandbox, config: &Path, dir: &Path) -> Child {
        Command::new(nats_server_bin())
            .arg("-c")
            .arg(config)
            .env_clear()
            .env(TAG_VAR, &sb.tag)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("nats.log")).unwrap())
            .spawn()
            .expect("nats-server starts")
    }

    /// The port the server wrote to its ports file (the one of this pid).
    fn wait_port(&self, same_as: Option<u16>) -> u16 {
        let file = self
            .dir
            .join("ports")
            .join(format!("nats-server_{}.ports", self.child.id()));
        let mut port = 0;
        assert!(
            wait_until(PROMPTLY, || {
                let Ok(text) = std::fs::read_to_string(&file) else {
                    return false;
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    return false;
                };
                port = v["nats"][0]
                    .as_str()
                    .and_then(|u| u.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                port != 0
            }),
            "nats-server never said its port ({})",
            file.display()
        );
        if let Some(p) = same_as {
            assert_eq!(port, p);
        }
        port
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        signal(self.child.id() as i32, Signal::KILL);
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self, sb: &Sandbox) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replace("127.0.0.1:-1", &format!("127.0.0.1:{}", self.port));
        std::fs::write(&self.config, text).unwrap();
        self.child = Nats::spawn(sb, &self.config, &self.dir);
        self.wait_port(Some(self.port));
    }

    pub fn stop(mut self) {
        stop_child(&mut self.child);
    }
}

/// Writes a file only its owner can read.
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// One node: a humd of the cluster and a sim worker.
pub struct Node {
    daemon_args: Vec<String>,
    /// The network namespace its humd runs in, if not the test's.
    netns: Option<String>,
    pub name: String,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub daemon: Child,
    pub worker: Child,
}

impl Node {
    /// Starts node `name` of cluster `cluster` on `nats`, its worker with
    /// `cap` cells and `sim_env`.
    pub fn start(
        sb: &Sandbox,
        nats: &Nats,
        cluster: &str,
        name: &str,
        cap: usize,
        sim_env: Value,
    ) -> Node {
        Node::start_with(sb, nats, cluster, name, cap, sim_env, json!({}))
    }

    /// [`Node::start`] with `budgets` (hum.json's section) for its humd.
    pub fn start_with(
        sb: &Sandbox,
        nats: &Nats,
        cluster: &str,
        name: &str,
        cap: usize,
        sim_env: Value,
        budgets: Value,
    ) -> Node {
        Node::launch(sb, nats, cluster, name, cap, sim_env, budgets, None)
    }

    /// [`Node::start`] with its humd in the network namespace `netns` (a
    /// machine of its own address: it reaches NATS over a veth pair).
    pub fn start_in(sb: &Sandbox, nats: &Nats, cluster: &str, name: &str, netns: &str) -> Node {
        Node::start_in_with(sb, nats, cluster, name, netns, json!({}))
    }

    /// [`Node::start_in`] with `sim_env` for its worker's simulator.
    pub fn start_in_with(
        sb: &Sandbox,
        nats: &Nats,
        cluster: &str,
        name: &str,
        netns: &str,
        sim_env: Value,
    ) -> Node {
        let ns = Some(netns.to_owned());
        Node::launch(sb, nats, cluster, name, 2, sim_env, json!({}), ns)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        sb: &Sandbox,
        nats: &Nats,
        cluster: &str,
        name: &str,
        cap: usize,
        sim_env: Value,
        budgets: Value,
        netns: Option<String>,
    ) -> Node {
        let dir = sb.dir.path().join(format!("node-{name}"));
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let sock = dir.join("run/thrum.sock");
        let config = dir.join("hum.json");
        std::fs::write(
            &config,
            json!({"claude": {"enabled": false}, "sim": {"models": ["sim"], "env": sim_env},
                   "cwd": sb.work(), "nest": {"maxActiveCells": cap}, "budgets": budgets})
            .to_string(),
        )
        .unwrap();
        let mut daemon_args: Vec<String> = [
            "daemon",
            "--socket",
            sock.to_str().unwrap(),
            "--metrics-addr=127.0.0.1:0",
            "--cluster",
            &nats.url,
            "--node",
            name,
            "--cluster-name",
            cluster,
            "--cluster-credentials",
            nats.credentials.to_str().unwrap(),
            "--usage-db",
            dir.join("usage.sqlite3").to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        if let Some(ca) = &nats.ca {
            daemon_args.push(format!("--cluster-ca={}", ca.display()));
        }
        let daemon = spawn_daemon(sb, &dir, &sock, name, &daemon_args, netns.as_deref());
        let worker = sb
            .hum(&[
                "worker",
                "--config",
                config.to_str().unwrap(),
                "--socket",
                sock.to_str().unwrap(),
            ])
            .env("HUM_STATE_DIR", dir.join("state"))
            // A home of its own: its agents' transcripts are this node's
            // alone, as on separate machines.
            .env("HOME", dir.join("home"))
            .env("HUM_LOG", "info")
            .stderr(std::fs::File::create(dir.join("worker.log")).unwrap())
            .spawn()
            .unwrap();
        Node {
            daemon_args,
            netns,
            name: name.into(),
            dir,
            sock,
            daemon,
            worker,
        }
    }

    /// A `hum` command in this node's environment.
    pub fn worker_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(hum_bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.join("home"))
            .env("HUM_STATE_DIR", self.dir.join("state"));
        cmd
    }

    /// `hum drain` on this node with `extra` flags; what it said.
    pub fn drain(&self, extra: &[&str]) -> String {
        let sock = self.sock.display().to_string();
        let mut args = vec!["drain", "--socket", &sock, "--within", "60"];
        args.extend_from_slice(extra);
        let out = self.worker_cmd(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "hum drain {extra:?} on {}: {text}",
            self.name
        );
        text
    }

    /// How many copies of `sid`'s transcript this node says it kept.
    pub fn transcripts_kept(&self, sid: &str) -> usize {
        let mark = format!("sid={sid} ");
        self.log("daemon")
            .lines()
            .filter(|l| l.contains("cluster.transcript_kept") && l.contains(&mark))
            .count()
    }

    pub fn log(&self, which: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{which}.log"))).unwrap_or_default()
    }

    pub fn status(&self, rt: &tokio::runtime::Runtime) -> hum::reports::DaemonStatus {
        rt.block_on(hum::client::fetch_status(&self.sock))
            .expect("status")
    }

    /// Its humd's `/metrics` page (served where `metrics.addr`, beside
    /// its socket, says).
    pub fn metrics(&self) -> String {
        use std::io::Read;
        let addr = std::fs::read_to_string(self.sock.with_file_name("metrics.addr"))
            .expect("humd says where /metrics is");
        let mut s = std::net::TcpStream::connect(addr.trim()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        let _ = s.read_to_string(&mut page);
        page
    }

    /// Cells of `sid` on this node's workers.
    pub fn cells_of(&self, rt: &tokio::runtime::Runtime, sid: &str) -> usize {
        self.status(rt).cells().filter(|c| c.sid == sid).count()
    }

    /// Its humd stops (SIGTERM, a clean stop) and starts again, once it
    /// listens (its worker reconnects by itself).
    pub fn restart_daemon(&mut self, sb: &Sandbox) {
        stop_child(&mut self.daemon);
        self.daemon = spawn_daemon(
            sb,
            &self.dir,
            &self.sock,
            &self.name,
            &self.daemon_args,
            self.netns.as_deref(),
        );
    }

    /// The machine dies: humd and the worker SIGKILLed (their cells die
    /// by containment), reaped.
    pub fn kill(mut self) {
        for child in [&mut self.daemon, &mut self.worker] {
            signal(child.id() as i32, Signal::KILL);
            let _ = child.wait();
        }
    }

    /// Stops the worker, then humd (which must exit 0).
    pub fn stop(mut self) {
        stop_child(&mut self.worker);
        stop_child(&mut self.daemon);
        assert_eq!(
            self.daemon.try_wait().unwrap().and_then(|s| s.code()),
            Some(0),
            "node {}'s humd exit",
            self.name
        );
    }
}

/// A node's humd (its log appended to), once it listens.
fn spawn_daemon(
    sb: &Sandbox,
    dir: &Path,
    sock: &Path,
    name: &str,
    args: &[String],
    netns: Option<&str>,
) -> Child {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .unwrap();
    let mut cmd = match netns {
        Some(ns) => sb.hum_in_netns(ns, &args),
        None => sb.hum(&args),
    };
    let daemon = cmd
        .env("HUM_LOG", "info,hum::daemon::cluster=debug")
        .env("HUM_STATE_DIR", dir.join("state"))
        .env("HOME", dir.join("home"))
        .stderr(log)
        .spawn()
        .unwrap();
    assert!(
        wait_until(PROMPTLY, || std::os::unix::net::UnixStream::connect(sock)
            .is_ok()),
        "node {name}'s humd never listened: {}",
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );
    daemon
}

/// The runtime the cluster tests drive their clients on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One turn of `sid` through `node`'s socket: its whole text.
pub async fn turn(node: &Node, sid: &str, text: &str) -> String {
    turn_at(&node.sock, &node.name, sid, text).await
}

/// One turn of `sid` through the socket `sock` of node `name`.
pub async fn turn_at(sock: &Path, name: &str, sid: &str, text: &str) -> String {
    let mut c = hum::client::Client::asker(sock, "cluster test")
        .await
        .unwrap();
    c.prompt(sid, hum::client::Client::text_prompt(text, Some("sim")))
        .await
        .unwrap();
    let answer = tokio::time::timeout(PROMPTLY * 3, c.answer(sid))
        .await
        .expect("an answer in time")
        .unwrap();
    match answer.end {
        Ok(_) => answer.text,
        Err(e) => panic!("turn {text:?} of {sid} via {name} failed: {e:?}"),
    }
}

/// A turn of `sid` asked through `asked`, its node killed by `kill` once
/// its first words are back: how the turn ended at its asker, and how long
/// after the kill.
pub fn turn_when_its_node_dies(
    rt: &tokio::runtime::Runtime,
    asked: &Node,
    sid: &str,
    text: &str,
    kill: impl FnOnce(),
) -> (Result<thrum::Finish, thrum::ErrorTone>, Duration) {
    rt.block_on(async {
        let mut asker = hum::client::Client::asker(&asked.sock, "cluster test")
            .await
            .unwrap();
        asker
            .prompt(sid, hum::client::Client::text_prompt(text, Some("sim")))
            .await
            .unwrap();
        // Its first delta has come back: the turn runs.
        loop {
            let e = tokio::time::timeout(PROMPTLY, asker.event_of(sid))
                .await
                .expect("the turn's first words")
                .unwrap();
            assert!(!e.ends_turn(), "turn {text:?} ended early: {e:?}");
            if matches!(e, hum::client::Event::Text { .. }) {
                break;
            }
        }
        let killed = std::time::Instant::now();
        kill();
        let answer = tokio::time::timeout(PROMPTLY, asker.answer(sid))
            .await
            .expect("the asker hears of the lost turn")
            .unwrap();
        (answer.end, killed.elapsed())
    })
}

/// A turn of `sid` asked on `asked`, returned once `runs` (the node it
/// runs on) kept its transcript: a copy that lands before the next turn
/// ends is none coalesced, so the sid's next node finds every turn.
pub fn turn_kept(
    rt: &tokio::runtime::Runtime,
    asked: &Node,
    runs: &Node,
    sid: &str,
    text: &str,
) -> String {
    let before = runs.transcripts_kept(sid);
    let said = rt.block_on(turn(asked, sid, text));
    assert!(
        wait_until(PROMPTLY, || runs.transcripts_kept(sid) > before),
        "the transcript of turn {text:?} was kept on {}:\n{}",
        runs.name,
        runs.log("daemon")
    );
    said
}

/// Waits until every node has a worker and a link to every other node.
pub fn wait_linked(rt: &tokio::runtime::Runtime, nodes: &[&Node]) {
    let ok = wait_until(Duration::from_secs(60), || {
        nodes.iter().all(|n| {
            let Ok(s) = rt.block_on(hum::client::fetch_status(&n.sock)) else {
                return false;
            };
            let Some(c) = s.daemon.cluster else {
                return false;
            };
            let has_worker = s.workers.iter().any(|w| w.status.is_some());
            has_worker
                && nodes
                    .iter()
                    .all(|other| c.nodes.iter().any(|v| v.node == other.name && v.linked))
        })
    });
    assert!(
        ok,
        "the nodes never all linked:\n{}",
        nodes
            .iter()
            .map(|n| format!("--- {}:\n{}", n.name, n.log("daemon")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
