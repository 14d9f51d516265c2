//! `hum bench gateway`: the same warm turns over thrum and through the HTTP
//! gateway's OpenAI streaming endpoint, side by side.

use super::*;

/// First text chunk of a turn over thrum: milliseconds, and chunks in all.
async fn thrum_turn(socket: &Path, sid: &str) -> (f64, usize, f64) {
    let mut conn = asker(socket).await;
    let t = Instant::now();
    conn.prompt(sid, Client::text_prompt("go", Some("sim")))
        .await
        .unwrap();
    let (mut first, mut n) = (None, 0);
    loop {
        match conn.event_of(sid).await {
            Ok(Event::Text { .. }) => {
                first.get_or_insert(t.elapsed());
                n += 1;
            }
            Ok(e) if e.ends_turn() => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (
        first.unwrap_or_default().as_secs_f64() * 1000.0,
        n,
        t.elapsed().as_secs_f64(),
    )
}

/// The same through the gateway's OpenAI streaming endpoint.
fn http_turn(addr: &str, sid: &str) -> (f64, usize, f64) {
    use std::io::Read;
    let body =
        json!({"model": "sim", "stream": true, "messages": [{"role": "user", "content": "go"}]})
            .to_string();
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("gateway");
    s.write_all(format!("POST /v1/chat/completions HTTP/1.0\r\nx-hum-session: {sid}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    let mut first = None;
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if first.is_none() && seen.windows(12).any(|w| w == b"\"content\":\"S") {
            first = Some(t.elapsed());
        }
    }
    let text = String::from_utf8_lossy(&seen);
    let chunks = text.matches("\"content\":\"").count().saturating_sub(1);
    (
        first.unwrap_or_default().as_secs_f64() * 1000.0,
        chunks,
        t.elapsed().as_secs_f64(),
    )
}

pub(super) async fn gateway(turns: usize, chunks: usize) -> Value {
    let mut results = Map::new();
    for (label, env) in [
        ("short", json!({})),
        (
            "long",
            json!({"HUM_SIM_CHUNKS": chunks.to_string(), "HUM_SIM_CHUNK_SIZE": "8"}),
        ),
    ] {
        let config = json!({"claude": {"enabled": false}, "sim": {"env": env}});
        let system = System::start(Some(config)).await.expect("system starts");
        let mut gw = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "gateway",
                &format!("--socket={}", system.socket.display()),
                "--listen=127.0.0.1:0",
                // A throwaway loopback gateway of the bench's own.
                "--no-auth",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gateway");
        let addr = crate::gateway::read_listening_addr(gw.stdout.take().unwrap())
            .expect("the gateway says where it listens");
        let n = if label == "short" { turns } else { 3 };
        // Warm cells first, one per path.
        thrum_turn(&system.socket, "direct").await;
        let a = addr.clone();
        tokio::task::spawn_blocking(move || http_turn(&a, "via-gateway"))
            .await
            .unwrap();
        let (mut direct, mut via, mut direct_rate, mut via_rate) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let (ms, k, secs) = thrum_turn(&system.socket, "direct").await;
            direct.push(ms);
            direct_rate.push(k as f64 / secs);
            let a = addr.clone();
            let (ms, k, secs) = tokio::task::spawn_blocking(move || http_turn(&a, "via-gateway"))
                .await
                .unwrap();
            via.push(ms);
            via_rate.push(k as f64 / secs);
        }
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(gw.id() as i32).expect("pid"),
            rustix::process::Signal::TERM,
        );
        let _ = gw.wait();
        system.stop().await;
        let p50 = |v: Vec<f64>| percentile(v, 0.5);
        results.insert(
            label.into(),
            json!({"turns": n, "first_text_ms_p50": {"thrum": p50(direct.clone()), "gateway": p50(via.clone())},
                   "added_first_byte_ms_p50": p50(via) - p50(direct),
                   "chunks_per_s_p50": {"thrum": p50(direct_rate), "gateway": p50(via_rate)}}),
        );
    }
    json!({"bench": "gateway", "results": results})
}
