//! `hum bench acp`: what speaking ACP costs. The same simulator as a
//! stream-json cell and as an ACP cell (`hum sim-agent --acp`, which runs
//! it as its child), in one system, turn for turn interleaved: a cold
//! cell's spawn to its first answer text, and a warm turn's round trip.

use super::{asker, percentile, System};
use crate::client::{Client, Event};
use serde_json::{json, Value};
use std::time::Instant;

/// The model of the ACP side.
const ACP_MODEL: &str = "simacp";

/// From sending `text` to `sid` to the first text of its answer, and to
/// its end (ms); `None` when the turn failed.
async fn timed_turn(conn: &mut Client, sid: &str, model: &str) -> Option<(f64, f64)> {
    let t = Instant::now();
    conn.prompt(sid, Client::text_prompt("hi", Some(model)))
        .await
        .ok()?;
    let mut first = None;
    loop {
        match conn.event_of(sid).await.ok()? {
            Event::Text { .. } if first.is_none() => {
                first = Some(t.elapsed().as_secs_f64() * 1000.0)
            }
            Event::Finish { .. } => {
                let end = t.elapsed().as_secs_f64() * 1000.0;
                return Some((first.unwrap_or(end), end));
            }
            Event::Error { .. } => return None,
            _ => {}
        }
    }
}

pub(super) async fn acp(cells: usize, turns: usize) -> Value {
    let exe = std::env::current_exe().expect("this program");
    let config = json!({"claude": {"enabled": false}, "sim": {},
        "acp": {"simacp": {"command": [exe, "sim-agent", "--acp"], "models": [ACP_MODEL]}},
        "nest": {"maxActiveCells": 2 * cells + 2, "maxConcurrentSpawns": 4}});
    let system = System::start(Some(config)).await.expect("system starts");
    let mut conn = asker(&system.socket).await;
    let (mut cold, mut warm) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let mut failed = 0;
    for i in 0..cells {
        for (side, model) in ["sim", ACP_MODEL].into_iter().enumerate() {
            match timed_turn(&mut conn, &format!("cold-{model}-{i}"), model).await {
                Some((first, _)) => cold[side].push(first),
                None => failed += 1,
            }
        }
    }
    for _ in 0..turns {
        for (side, model) in ["sim", ACP_MODEL].into_iter().enumerate() {
            match timed_turn(&mut conn, &format!("warm-{model}"), model).await {
                Some((_, end)) => warm[side].push(end),
                None => failed += 1,
            }
        }
    }
    system.stop().await;
    let ms = |v: &[f64]| json!({"p50": percentile(v.to_vec(), 0.5), "p95": percentile(v.to_vec(), 0.95)});
    let ratio = |v: &[Vec<f64>; 2]| percentile(v[1].clone(), 0.5) / percentile(v[0].clone(), 0.5);
    json!({"bench": "acp", "cells": cells, "turns": turns, "failed": failed,
           "spawn_to_first_answer_ms": {"stream_json": ms(&cold[0]), "acp": ms(&cold[1])},
           "warm_turn_ms": {"stream_json": ms(&warm[0]), "acp": ms(&warm[1])},
           "acp_over_stream_json_p50": {"spawn_to_first_answer": ratio(&cold), "warm_turn": ratio(&warm)}})
}
