//! `hum bench cluster`: what the cluster costs, on loopback. For each
//! size (nodes on one `nats-server`, each its own humd and worker):
//!
//! - a warm turn asked on the sid's own node against the same turn asked
//!   on another node (forwarded), interleaved, as a ratio;
//! - chunks per second of one long answer, local against forwarded;
//! - how long placing a new sid took (humd's own histogram);
//! - a herd, `bees` per node at once on `cap` each, its makespan against
//!   the ideal for all the nodes' slots and against the one-node run.

use super::*;

/// Every node of one size, and the server they share.
struct Cluster {
    nodes: Vec<System>,
}

/// A `nats-server` of the bench's own: JetStream on, loopback, a random
/// port, a password only the bench's nodes are given.
struct NatsServer {
    child: std::process::Child,
    dir: PathBuf,
    url: String,
    credentials: PathBuf,
}

impl NatsServer {
    fn start() -> Result<NatsServer, String> {
        let exe = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("hum bench cluster needs nats-server (Debian: apt install nats-server)")?;
        let dir =
            std::env::temp_dir().join(format!("hum-bench-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // A port free a moment ago: the bench is the only one choosing.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let password = uuid::Uuid::new_v4().simple().to_string();
        let credentials = dir.join("creds");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&credentials)
                .map_err(|e| e.to_string())?;
            writeln!(f, "bench:{password}").map_err(|e| e.to_string())?;
        }
        let log = std::fs::File::create(dir.join("nats.log")).map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(exe);
        // A bench stopped by ^C (or killed) takes its NATS server with it
        // (its nodes have their lifelines); the runtime thread that starts
        // it lives as long as the bench.
        crate::os::die_with_parent(&mut cmd, rustix::process::Signal::TERM);
        let child = cmd
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--user",
                "bench",
                "--pass",
                &password,
                "-sd",
            ])
            .arg(dir.join("js"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("nats-server: {e}"))?;
        let server = NatsServer {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
            credentials,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("nats-server did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn stop(mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// `n` nodes of cluster `name`, every one linked to every other.
    async fn start(nats: &NatsServer, name: &str, n: usize, config: &Value) -> Cluster {
        let mut nodes = Vec::new();
        for i in 0..n {
            let args = [
                "--cluster",
                &nats.url,
                "--node",
                &format!("n{i}"),
                "--cluster-name",
                name,
                "--cluster-credentials",
                &nats.credentials.display().to_string(),
            ]
            .map(String::from)
            .to_vec();
            let node = System::start_with(Some(config.clone()), args)
                .await
                .expect("a node starts");
            nodes.push(node);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let linked = crate::client::fetch_status(&node.socket)
                    .await
                    .ok()
                    .and_then(|s| s.daemon.cluster)
                    .is_some_and(|c| c.nodes.iter().filter(|v| v.linked).count() == n);
                if linked || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Cluster { nodes }
    }

    async fn stop(self) {
        for n in self.nodes {
            n.stop().await;
        }
    }
}

/// One turn's time to its end, and its text chunks.
async fn timed_turn(socket: &Path, sid: &str, text: &str) -> (f64, usize) {
    let mut c = asker(socket).await;
    let t = Instant::now();
    c.prompt(sid, Client::text_prompt(text, Some("sim")))
        .await
        .expect("prompt sent");
    let mut chunks = 0;
    loop {
        match c.event_of(sid).await {
            Ok(Event::Text { .. }) => chunks += 1,
            Ok(Event::Finish { .. }) => break,
            Ok(e) if e.ends_turn() => panic!("a bench turn failed: {e:?}"),
            Ok(_) => {}
            Err(e) => panic!("a bench turn failed: {e}"),
        }
    }
    (t.elapsed().as_secs_f64(), chunks)
}

/// The herd: `per_node` bees on each node at once, each a new sid.
async fn herd_on(cluster: &Cluster, per_node: usize, tag: &str) -> (f64, usize) {
    let bees = per_node * cluster.nodes.len();
    let barrier = Arc::new(tokio::sync::Barrier::new(bees + 1));
    let mut tasks = Vec::new();
    for b in 0..bees {
        let socket = cluster.nodes[b % cluster.nodes.len()].socket.clone();
        let (barrier, sid) = (barrier.clone(), format!("{tag}-{b}"));
        tasks.push(tokio::spawn(async move {
            let mut conn = asker(&socket).await;
            barrier.wait().await;
            turn(&mut conn, &sid, "sim", "go").await
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap_or(false));
    }
    (started.elapsed().as_secs_f64(), ok)
}

/// How the herd spread: cells each node started, and turns the nodes
/// forwarded to another (balance decides the makespan: one node with a
/// round more than the others sets it).
async fn herd_spread(cluster: &Cluster) -> (Vec<u64>, u64) {
    let (mut spawns, mut forwarded) = (Vec::new(), 0);
    for node in &cluster.nodes {
        let status = crate::client::fetch_status(&node.socket).await.ok();
        spawns.push(
            status
                .as_ref()
                .map_or(0, |s| s.metrics().map(|m| m.spawns).sum()),
        );
        forwarded += status
            .and_then(|s| s.daemon.cluster)
            .map_or(0, |c| c.timings.forwarded_turns);
    }
    (spawns, forwarded)
}

/// What one size of cluster measured.
async fn one_size(nats: &NatsServer, n: usize, a: &Args) -> Value {
    let config = json!({
        "nest": {"maxActiveCells": a.cap},
        "claude": {"enabled": false},
        "sim": {"models": ["sim"], "env": {"HUM_SIM_TURN_DELAY_MS": "0"}},
    });
    let cluster = Cluster::start(nats, &format!("bench{n}"), n, &config).await;
    let home = &cluster.nodes[0].socket;
    // The sid's first prompt on node 0: it lives there (a tie stays on the
    // asker's node).
    timed_turn(home, "warm", "warm up").await;
    let (mut local, mut forwarded) = (Vec::new(), Vec::new());
    for i in 0..a.turns {
        local.push(timed_turn(home, "warm", &format!("turn {i}")).await.0 * 1000.0);
        if let Some(other) = cluster.nodes.get(1) {
            forwarded.push(
                timed_turn(&other.socket, "warm", &format!("turn {i}"))
                    .await
                    .0
                    * 1000.0,
            );
        }
    }
    // One long answer, local and forwarded: a delta per word, 16 bytes each.
    let long = format!("SIM_ANSWER {}", "0123456789abcde ".repeat(a.chunks));
    timed_turn(home, "long", "warm up").await;
    let (t_local, c_local) = timed_turn(home, "long", &long).await;
    let forwarded_rate = match cluster.nodes.get(1) {
        Some(other) => {
            let (t, c) = timed_turn(&other.socket, "long", &long).await;
            json!(c as f64 / t)
        }
        None => Value::Null,
    };
    let placement = {
        let mut sum = (0.0, 0u64);
        for node in &cluster.nodes {
            if let Some(c) = crate::client::fetch_status(&node.socket)
                .await
                .ok()
                .and_then(|s| s.daemon.cluster)
            {
                sum.0 += c.timings.placement_seconds.sum;
                sum.1 += c.timings.placement_seconds.count;
            }
        }
        if sum.1 == 0 {
            Value::Null
        } else {
            json!(sum.0 / sum.1 as f64 * 1000.0)
        }
    };
    cluster.stop().await;
    // The herds, each on fresh nodes whose turns take `turn_ms`: one herd
    // is as noisy as the machine it shares, their median less so.
    let mut config = config;
    config["sim"]["env"]["HUM_SIM_TURN_DELAY_MS"] = json!(a.turn_ms.to_string());
    let ideal = (a.bees_per_node * n).div_ceil(n * a.cap) as f64 * a.turn_ms as f64 / 1000.0;
    let mut herds = Vec::new();
    for h in 0..a.herds.max(1) {
        let cluster = Cluster::start(nats, &format!("bench{n}herd{h}"), n, &config).await;
        let (makespan, ok) = herd_on(&cluster, a.bees_per_node, "herd").await;
        let (spawns, forwarded) = herd_spread(&cluster).await;
        cluster.stop().await;
        herds.push(
            json!({"makespan_s": makespan, "ratio_to_ideal": makespan / ideal, "turns_ok": ok,
                          "spawns_per_node": spawns, "forwarded_turns": forwarded}),
        );
    }
    let makespan = percentile(
        herds
            .iter()
            .filter_map(|h| h["makespan_s"].as_f64())
            .collect(),
        0.5,
    );
    let ok = herds
        .iter()
        .filter_map(|h| h["turns_ok"].as_u64())
        .min()
        .unwrap_or(0);
    let (l50, f50) = (
        percentile(local.clone(), 0.5),
        (!forwarded.is_empty()).then(|| percentile(forwarded.clone(), 0.5)),
    );
    let ideal_slots = n * a.cap;
    json!({
        "nodes": n,
        "warm_turn_ms": {
            "local_p50": l50, "local_p99": percentile(local, 0.99),
            "forwarded_p50": f50, "forwarded_p99": (!forwarded.is_empty()).then(|| percentile(forwarded, 0.99)),
            "forwarded_to_local_p50": f50.map(|f| f / l50),
        },
        "long_answer_chunks_per_s": {"chunks": c_local, "local": c_local as f64 / t_local, "forwarded": forwarded_rate},
        "placement_mean_ms": placement,
        "herd": {"bees": a.bees_per_node * n, "cap_per_node": a.cap, "turn_ms": a.turn_ms, "turns_ok": ok,
                 "makespan_s": makespan, "slots": ideal_slots, "ideal_s": ideal, "ratio_to_ideal": makespan / ideal,
                 "runs": herds},
    })
}

/// The bench's knobs.
pub(super) struct Args {
    pub sizes: Vec<usize>,
    pub turns: usize,
    pub bees_per_node: usize,
    pub cap: usize,
    pub turn_ms: u64,
    pub chunks: usize,
    /// Herds per size; the makespan reported is their median.
    pub herds: usize,
}

pub(super) async fn cluster(mut a: Args) -> Value {
    // A percentile of no turns, an ideal of no slots: at least one of each.
    a.turns = a.turns.max(1);
    a.cap = a.cap.max(1);
    let nats = match NatsServer::start() {
        Ok(n) => n,
        Err(e) => return json!({"bench": "cluster", "error": e}),
    };
    let mut sizes = Vec::new();
    for &n in &a.sizes {
        sizes.push(one_size(&nats, n.max(1), &a).await);
    }
    nats.stop();
    // The herd against the one-node run's, per node (the same bees per
    // node and cap: perfect scaling keeps the makespan).
    let base = sizes
        .iter()
        .find(|s| s["nodes"] == 1)
        .and_then(|s| s["herd"]["makespan_s"].as_f64());
    for s in &mut sizes {
        if let (Some(b), Some(m)) = (base, s["herd"]["makespan_s"].as_f64()) {
            s["herd"]["makespan_to_one_node"] = json!(m / b);
        }
    }
    json!({"bench": "cluster", "turns": a.turns, "sizes": sizes})
}
