//! `/metrics` (Prometheus text) and `/status` (the `hum status --json`
//! answer) on a loopback HTTP endpoint. Both are built from one status
//! snapshot: the router's counters and each worker's latest `worker-status`
//! (whose `metrics` carry the worker's cumulative counters and histograms),
//! summed per hive.

use super::router::RouterMsg;
use crate::pool::CellState;
use crate::reports::{DaemonStatus, Histogram};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Labels = Vec<(String, String)>;

/// One metric family: its help and its series.
#[derive(Debug)]
struct Family<V> {
    help: &'static str,
    series: Vec<(Labels, V)>,
}

impl<V> Family<V> {
    fn new(help: &'static str) -> Self {
        Family {
            help,
            series: Vec::new(),
        }
    }
}

/// A histogram series: sum, count, per-bucket counts (the encoder
/// accumulates them).
type HistogramValue = (f64, u64, Vec<(f64, u64)>);

/// Metrics read off one snapshot.
#[derive(Debug, Default)]
struct Snapshot {
    gauges: BTreeMap<&'static str, Family<f64>>,
    counters: BTreeMap<&'static str, Family<u64>>,
    /// Counters of amounts that are not whole (dollars).
    amounts: BTreeMap<&'static str, Family<f64>>,
    histograms: BTreeMap<&'static str, Family<HistogramValue>>,
}

/// Adds to the series with these labels: two workers of one hive give one
/// series with their sum (cells, memory, capacity, queue), never two series
/// with the same labels.
fn add<V: std::ops::AddAssign>(
    families: &mut BTreeMap<&'static str, Family<V>>,
    name: &'static str,
    help: &'static str,
    labels: Labels,
    v: V,
) {
    let series = &mut families
        .entry(name)
        .or_insert_with(|| Family::new(help))
        .series;
    match series.iter_mut().find(|(l, _)| *l == labels) {
        Some((_, total)) => *total += v,
        None => series.push((labels, v)),
    }
}

impl Snapshot {
    fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        add(&mut self.gauges, name, help, labels, v);
    }

    fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, v: u64) {
        add(&mut self.counters, name, help, labels, v);
    }

    fn amount(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        add(&mut self.amounts, name, help, labels, v);
    }

    fn histogram(&mut self, name: &'static str, help: &'static str, labels: Labels, h: &Histogram) {
        // Per-bucket counts: the encoder accumulates them.
        let buckets: Vec<(f64, u64)> = h
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| (h.bounds.get(i).copied().unwrap_or(f64::INFINITY), *c))
            .collect();
        let (sum, count) = (h.sum, h.count);
        let series = &mut self
            .histograms
            .entry(name)
            .or_insert_with(|| Family::new(help))
            .series;
        match series.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, (s, n, b))) if b.len() == buckets.len() => {
                *s += sum;
                *n += count;
                for (mine, theirs) in b.iter_mut().zip(&buckets) {
                    mine.1 += theirs.1;
                }
            }
            _ => series.push((labels, (sum, count, buckets))),
        }
    }
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn read(status: &DaemonStatus) -> Snapshot {
    let mut m = Snapshot::default();
    let d = &status.daemon;
    for (role, n) in [("workers", d.workers), ("askers", d.askers)] {
        m.gauge(
            "hum_connections",
            "Peers connected to humd, by role.",
            l(&[("role", role)]),
            n as f64,
        );
    }
    let stats = &d.stats;
    for (name, n, help) in [
        (
            "hum_prompts_routed_total",
            stats.prompts_routed,
            "Prompts humd forwarded to a worker.",
        ),
        (
            "hum_no_worker_total",
            stats.no_worker,
            "Prompts no worker could serve.",
        ),
        (
            "hum_bad_requests_total",
            stats.bad_requests,
            "Requests refused as malformed.",
        ),
        (
            "hum_worker_lost_total",
            stats.worker_lost,
            "Turns ended because their worker went away.",
        ),
        (
            "hum_turns_adopted_total",
            stats.turns_adopted,
            "Turns a returning asker took back by sending their rid again.",
        ),
        (
            "hum_dropped_tones_total",
            stats.dropped_for_gone_askers,
            "Worker tones for askers that had gone.",
        ),
        (
            "hum_lines_dropped_busy_total",
            stats.lines_dropped_busy,
            "Lines dropped because humd's budget for unfinished lines was spent.",
        ),
    ] {
        m.counter(name, help, Vec::new(), n);
    }
    for (reason, n) in [
        ("asker_gone", stats.cancelled_gone_askers),
        ("slow_asker", stats.cancelled_slow_askers),
        ("humd_gone", stats.abandoned_humd_gone),
    ] {
        m.counter(
            "hum_turns_abandoned_total",
            "Turns cancelled because nobody waited for them any more (humd_gone: by a worker while no humd was there).",
            l(&[("reason", reason)]),
            n,
        );
    }
    if let Some(c) = &d.cluster {
        cluster::read_cluster(&mut m, c, stats);
    }
    let tools = &d.tools;
    m.gauge(
        "hum_foragers",
        "Foragers connected (bees that lend tools).",
        Vec::new(),
        tools.foragers.len() as f64,
    );
    m.gauge(
        "hum_tool_calls_in_flight",
        "Tool calls waiting for their owner's result.",
        Vec::new(),
        tools.calls_in_flight as f64,
    );
    m.gauge(
        "hum_parked_turns",
        "Turns waiting for their own asker's tool results (each holds a busy cell).",
        Vec::new(),
        tools.parked_turns as f64,
    );
    for (outcome, n) in &tools.calls.by_outcome {
        m.counter(
            "hum_tool_calls_total",
            "Tool calls humd routed, by how they ended.",
            l(&[("outcome", outcome)]),
            *n,
        );
    }
    m.histogram(
        "hum_tool_call_duration_seconds",
        "From a tool call to its owner's result.",
        Vec::new(),
        &tools.calls.seconds,
    );
    if let Some(u) = &d.usage {
        read_usage(&mut m, u);
    }
    for w in &status.workers {
        read_worker(&mut m, w);
    }
    m
}

/// Tokens, dollars and budgets.
fn read_usage(m: &mut Snapshot, u: &crate::reports::UsageStatus) {
    for series in &u.since_start {
        let (hive, model) = (series.hive.as_str(), series.model.as_str());
        for (kind, n) in crate::usage::record::TOKEN_KINDS
            .iter()
            .zip(series.tally.tokens())
        {
            m.counter(
                "hum_tokens_total",
                "Tokens the agents reported, by hive, model and kind (input, output, cache_read, cache_creation), since humd started.",
                l(&[("hive", hive), ("model", model), ("kind", kind)]),
                n,
            );
        }
        m.amount(
            "hum_cost_usd_total",
            "US dollars the agents reported their turns cost, by hive and model, since humd started.",
            l(&[("hive", hive), ("model", model)]),
            series.tally.cost_usd,
        );
    }
    m.gauge(
        "hum_spent_today_usd",
        "US dollars spent today (UTC), every bee together.",
        Vec::new(),
        u.spent_today_usd,
    );
    for (scope, limit) in [
        ("daily", u.budgets.daily_usd),
        ("bee", u.budgets.per_bee_daily_usd),
        ("sid", u.budgets.per_sid_daily_usd),
    ] {
        if let Some(limit) = limit {
            m.gauge(
                "hum_budget_usd",
                "Daily budgets in US dollars, by scope.",
                l(&[("scope", scope)]),
                limit,
            );
        }
    }
    m.counter(
        "hum_budget_refusals_total",
        "Prompts refused with budget_exceeded.",
        Vec::new(),
        u.refused,
    );
    m.counter(
        "hum_usage_dropped_total",
        "Turns whose usage could not be written to the usage database.",
        Vec::new(),
        u.dropped,
    );
}

/// One worker's cells, pool and counters.
fn read_worker(m: &mut Snapshot, w: &crate::reports::WorkerEntry) {
    let hive = w.hive.as_str();
    let s = w.status.clone().unwrap_or_default();
    let mut rss = 0u64;
    // Cells by their own hive (a worker may run several), every state of
    // the worker's first hive present, zeros included.
    let mut cells: BTreeMap<(&str, &str), u64> = CellState::ALL
        .iter()
        .map(|k| ((hive, k.as_str()), 0))
        .collect();
    for c in &s.cells {
        *cells
            .entry((c.hive.as_str(), c.state.as_str()))
            .or_default() += 1;
        rss += c.rss_bytes;
    }
    for ((cell_hive, state), n) in cells {
        m.gauge(
            "hum_cells",
            "Cells by state and hive.",
            l(&[("hive", cell_hive), ("state", state)]),
            n as f64,
        );
    }
    m.gauge(
        "hum_cell_tree_rss_bytes",
        "Resident memory of every cell's process tree.",
        l(&[("hive", hive)]),
        rss as f64,
    );
    m.gauge(
        "hum_cells_cap",
        "maxActiveCells of the worker.",
        l(&[("hive", hive)]),
        s.pool.cap as f64,
    );
    m.gauge(
        "hum_queued_prompts",
        "Prompts waiting for a cell.",
        l(&[("hive", hive)]),
        s.pool.queued as f64,
    );
    let mx = &s.metrics;
    m.counter(
        "hum_cell_spawns_total",
        "Cells spawned.",
        l(&[("hive", hive)]),
        mx.spawns,
    );
    m.counter(
        "hum_cell_reuses_total",
        "Turns served by a warm cell.",
        l(&[("hive", hive)]),
        mx.reuses,
    );
    m.counter(
        "hum_cell_oom_kills_total",
        "Processes the kernel's OOM killer ended inside cells, at their memory limit.",
        l(&[("hive", hive)]),
        mx.oom_kills,
    );
    m.counter(
        "hum_orphans_swept_total",
        "Processes of dead instances ended at start-up.",
        l(&[("hive", hive)]),
        mx.orphans_swept,
    );
    for (key, n) in &mx.teardowns {
        let (reason, rung) = key.split_once('/').unwrap_or((key, "?"));
        m.counter(
            "hum_cell_teardowns_total",
            "Cells torn down, by reason (evictions among them) and by the rung that ended them.",
            l(&[("hive", hive), ("reason", reason), ("rung", rung)]),
            *n,
        );
    }
    for (outcome, n) in &mx.turns {
        m.counter(
            "hum_turns_total",
            "Turns ended, by outcome (overloaded rejections among them).",
            l(&[("hive", hive), ("outcome", outcome)]),
            *n,
        );
    }
    m.histogram(
        "hum_teardown_duration_seconds",
        "How long teardowns took.",
        l(&[("hive", hive)]),
        &mx.teardown_seconds,
    );
    m.histogram(
        "hum_admission_wait_seconds",
        "How long prompts waited for a cell.",
        l(&[("hive", hive)]),
        &mx.admission_wait_seconds,
    );
    m.histogram(
        "hum_turn_duration_seconds",
        "How long turns took, arrival to end.",
        l(&[("hive", hive)]),
        &mx.turn_seconds,
    );
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, f) in &self.gauges {
            let mut family = encoder.encode_descriptor(name, f.help, None, MetricType::Gauge)?;
            for (labels, v) in &f.series {
                family.encode_family(labels)?.encode_gauge(v)?;
            }
        }
        for (name, f) in &self.counters {
            // The registry adds `_total`; the descriptor takes the base name.
            let base = name.strip_suffix("_total").unwrap_or(name);
            let mut family = encoder.encode_descriptor(base, f.help, None, MetricType::Counter)?;
            for (labels, v) in &f.series {
                family
                    .encode_family(labels)?
                    .encode_counter::<NoLabelSet, _, u64>(v, None)?;
            }
        }
        for (name, f) in &self.amounts {
            let base = name.strip_suffix("_total").unwrap_or(name);
            let mut family = encoder.encode_descriptor(base, f.help, None, MetricType::Counter)?;
            for (labels, v) in &f.series {
                family
                    .encode_family(labels)?
                    .encode_counter::<NoLabelSet, _, f64>(v, None)?;
            }
        }
        for (name, f) in &self.histograms {
            let mut family =
                encoder.encode_descriptor(name, f.help, None, MetricType::Histogram)?;
            for (labels, (sum, count, buckets)) in &f.series {
                family
                    .encode_family(labels)?
                    .encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
            }
        }
        Ok(())
    }
}

/// Prometheus text for one status snapshot.
pub fn render(status: &DaemonStatus) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(read(status)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("text encoding into a String");
    out
}

async fn snapshot(router: &mpsc::Sender<RouterMsg>) -> Option<DaemonStatus> {
    let (tx, rx) = oneshot::channel();
    router.send(RouterMsg::Snapshot(tx)).await.ok()?;
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .ok()?
        .ok()
}

async fn metrics(State(router): State<mpsc::Sender<RouterMsg>>) -> impl IntoResponse {
    match snapshot(&router).await {
        Some(s) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(&s),
        )
            .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// `/status` names sessions, pids and working directories: only the
/// daemon's own user (or root) may read it, told by the kernel's socket
/// table, not by anything the client says. `/metrics` holds only counts by
/// hive, for a scraper that may run as another user.
async fn status(
    State(router): State<mpsc::Sender<RouterMsg>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    axum::Extension(Bound(ours)): axum::Extension<Bound>,
    owner: Option<axum::Extension<crate::http_serve::PeerOwner>>,
) -> impl IntoResponse {
    let own = rustix::process::getuid().as_raw();
    // /proc/net/tcp is one line per socket on the machine: read once per
    // connection, off the daemon's one thread.
    let who = owner
        .unwrap_or_default()
        .0
        .get_or_find(move || crate::http_guard::loopback_peer_uid(peer, ours))
        .await;
    match who {
        Some(uid) if thrum::peer::allowed(uid, own) => {}
        who => {
            tracing::warn!(event = "daemon.status_refused", peer = %peer, uid = ?who, "another user asked for /status");
            return (
                StatusCode::FORBIDDEN,
                "/status is for the daemon's own user\n",
            )
                .into_response();
        }
    }
    match snapshot(&router).await {
        // The same answer as `hum status --json`: the status tone.
        Some(s) => axum::Json(s.to_tone(None).to_value()).into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The address the endpoint listens on, for the peer lookup.
#[derive(Debug, Clone, Copy)]
struct Bound(SocketAddr);

/// Binds `addr` and serves `/metrics` and `/status` until the process ends.
/// Returns the address actually bound (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    router: mpsc::Sender<RouterMsg>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/status", axum::routing::get(status))
        .with_state(router)
        .layer(axum::Extension(Bound(bound)))
        .layer(axum::middleware::from_fn_with_state(
            crate::http_guard::Listening(bound),
            crate::http_guard::guard,
        ));
    // Bounded: a flood of idle connections fills this endpoint's own
    // slots, never the descriptors humd keeps for its thrum socket.
    tokio::spawn(crate::http_serve::serve(
        listener,
        app,
        crate::http_serve::METRICS,
        std::future::pending(),
    ));
    Ok(bound)
}

#[cfg(test)]
mod tests;

mod cluster;
