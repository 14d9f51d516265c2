//! `hum bench tools`: what lending tools costs. A cell with the MCP bridge
//! against one without (time to its first event, its tree's size), and a
//! warm turn that calls a forager's tool against a plain one.

use super::{asker, percentile, turn, System};
use crate::client::{Client, Event};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use thrum::{Body, Connection, Inbound, Limits, Tone, ToolResult};

/// Cold starts: `cells` sids, one after another, each to its first event.
/// Returns the times (ms) and the mean tree (processes, RSS bytes) of the
/// cells once all are up.
async fn cold_starts(bridge: bool, cells: usize) -> (Vec<f64>, f64, f64) {
    let config = json!({"claude": {"enabled": false}, "sim": {},
                        "nest": {"maxActiveCells": cells, "maxConcurrentSpawns": cells},
                        "tools": {"bridge": bridge}});
    let system = System::start(Some(config)).await.expect("system starts");
    let mut conn = asker(&system.socket).await;
    let mut times = Vec::with_capacity(cells);
    for i in 0..cells {
        let sid = format!("cold-{i}");
        let t = Instant::now();
        conn.prompt(&sid, Client::text_prompt("hi", Some("sim")))
            .await
            .expect("prompt sent");
        loop {
            match conn.event_of(&sid).await.expect("humd is up") {
                Event::Ready { .. } => times.push(t.elapsed().as_secs_f64() * 1000.0),
                e if e.ends_turn() => break,
                _ => {}
            }
        }
    }
    // A second for the worker's next process sample.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = crate::client::fetch_status(&system.socket)
        .await
        .expect("status");
    let trees: Vec<(usize, u64)> = status
        .cells()
        .map(|c| (c.pids.len(), c.rss_bytes))
        .collect();
    let n = trees.len().max(1) as f64;
    let procs = trees.iter().map(|t| t.0 as f64).sum::<f64>() / n;
    let rss = trees.iter().map(|t| t.1 as f64).sum::<f64>() / n;
    system.stop().await;
    (times, procs, rss)
}

/// A forager serving `echo` until the connection closes.
async fn forager(socket: &std::path::Path) -> tokio::task::JoinHandle<()> {
    let stream = thrum::connect(socket).await.expect("humd is up");
    let Connection { mut inbox, outbox } = Connection::unix(stream, Limits::default(), "forager");
    let echo = thrum::tools::ToolSpec::new("echo", Some("echo".into()));
    let hello = crate::client::Client::forager_hello("hum bench", &[echo], &[]);
    outbox.send(&Tone::new(hello)).await.expect("hello");
    tokio::spawn(async move {
        while let Ok(Some(Inbound::Tone(t))) = inbox.recv().await {
            if let Body::ToolCall(call) = &t.body {
                let mut r = ToolResult::error(&call.call_id, Some("echo"), "");
                r.output = Some(call.args["text"].clone());
                r.is_error = Some(false);
                let reply = Tone::new(r).with_sid(t.sid().unwrap_or_default());
                if outbox.send(&reply).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// Warm turns on one cell: plain, then each calling the forager's `echo`.
async fn tool_turns(turns: usize) -> (Vec<f64>, Vec<f64>) {
    let config = json!({"claude": {"enabled": false}, "sim": {}});
    let system = System::start(Some(config)).await.expect("system starts");
    let serving = forager(&system.socket).await;
    for _ in 0..500 {
        if crate::client::fetch_status(&system.socket)
            .await
            .is_ok_and(|s| !s.daemon.tools.foragers.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut conn = asker(&system.socket).await;
    assert!(turn(&mut conn, "warm", "sim", "warm up").await);
    let mut plain = Vec::with_capacity(turns);
    let mut called = Vec::with_capacity(turns);
    for i in 0..turns {
        let t = Instant::now();
        assert!(turn(&mut conn, "warm", "sim", &format!("turn {i}")).await);
        plain.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let text = format!(r#"turn {i} CALL_TOOL echo {{"text": "x{i}"}}"#);
        assert!(turn(&mut conn, "warm", "sim", &text).await);
        called.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    serving.abort();
    system.stop().await;
    (plain, called)
}

pub(super) async fn tools(cells: usize, turns: usize) -> Value {
    let (off, off_procs, off_rss) = cold_starts(false, cells).await;
    let (on, on_procs, on_rss) = cold_starts(true, cells).await;
    let (plain, called) = tool_turns(turns).await;
    let ms = |v: &[f64]| json!({"p50": percentile(v.to_vec(), 0.5), "p99": percentile(v.to_vec(), 0.99)});
    json!({"bench": "tools", "cells": cells, "turns": turns,
           "cold_start_to_first_event_ms": {"without_bridge": ms(&off), "with_bridge": ms(&on)},
           "cell_tree": {"without_bridge": {"procs": off_procs, "rss_mib": off_rss / 1048576.0},
                         "with_bridge": {"procs": on_procs, "rss_mib": on_rss / 1048576.0}},
           "warm_turn_ms": {"plain": ms(&plain), "one_forager_call": ms(&called)},
           "tool_call_overhead_p50_ms": percentile(called, 0.5) - percentile(plain, 0.5)})
}
