//! `hum prompt`: one turn from the shell. Streams the answer's text to
//! stdout as it arrives; on an error prints its code and message to stderr
//! and exits non-zero.
//!
//! Exit codes: 0 the turn finished; 1 the turn ended with an error (its code
//! on stderr); 3 humd could not be reached or went away; 130 interrupted
//! (SIGINT or SIGTERM: the turn is cancelled first, its end awaited for up
//! to [`CANCEL_WAIT`]; a second signal exits at once).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use thrum::{Bees, Body, ChunkType, Connection, Hello, Inbound, Limits, Prompt, Tone};

/// How long an interrupted `hum prompt` waits for its cancelled turn to end.
pub const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The exit code of an interrupted command (128 + SIGINT).
const INTERRUPTED: u8 = 130;

#[derive(Debug, Clone, clap::Args)]
pub struct PromptArgs {
    /// Model id (default: the daemon's default hive).
    #[arg(long)]
    pub model: Option<String>,
    /// Session id: the same sid continues the same conversation (default: a
    /// new one each time).
    #[arg(long)]
    pub sid: Option<String>,
    /// Working directory of the agent (default: this one).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// humd's socket (default: the thrum socket path rules).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The prompt; `-` reads it from stdin.
    pub text: String,
}

pub fn run(args: PromptArgs) -> ExitCode {
    let text = if args.text == "-" {
        let mut buf = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut buf) {
            eprintln!("hum prompt: cannot read stdin: {e}");
            return ExitCode::from(2);
        }
        buf
    } else {
        args.text.clone()
    };
    let rt = crate::stop::runtime(crate::stop::Threads::One);
    rt.block_on(ask(args, text))
}

async fn ask(args: PromptArgs, text: String) -> ExitCode {
    let socket = args.socket.clone().unwrap_or_else(thrum::socket_path);
    let stream = match thrum::connect(&socket).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hum prompt: cannot reach humd at {}: {e}", socket.display());
            return ExitCode::from(3);
        }
    };
    let Connection { mut inbox, outbox } = Connection::unix(stream, Limits::default(), "humd");
    let cwd = args
        .cwd
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .map(|p| p.display().to_string());
    let hello = Hello {
        bee: Some(Bees::Many(vec!["asker".into()])),
        proto_version: Some(thrum::PROTO_VERSION.into()),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        source: Some("hum prompt".into()),
        ..Default::default()
    };
    let sid = args
        .sid
        .clone()
        .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4().simple()));
    let rid = thrum::rid();
    let prompt = Prompt {
        text: Some(text),
        model_id: args.model.clone(),
        cwd,
        ..Default::default()
    };
    if outbox.send(&Tone::new(hello)).await.is_err()
        || outbox
            .send(&Tone::new(prompt).with_sid(&sid).with_rid(&rid))
            .await
            .is_err()
    {
        eprintln!("hum prompt: humd closed the connection");
        return ExitCode::from(3);
    }
    let mut out = std::io::stdout().lock();
    let mut stop = crate::stop::StopSignals::install();
    // Set once interrupted: the cancel was sent, wait this long for its end.
    let mut cancelling: Option<tokio::time::Instant> = None;
    loop {
        let next = tokio::select! {
            n = inbox.recv() => n,
            _ = stop.next() => {
                if cancelling.is_some() {
                    eprintln!("\nhum prompt: interrupted again; exiting without waiting");
                    return ExitCode::from(INTERRUPTED);
                }
                let _ = out.flush();
                eprintln!("\nhum prompt: interrupted; cancelling the turn (again to exit at once)");
                let cancel = Tone::new(thrum::Cancel::default()).with_sid(&sid).with_rid(&rid);
                if outbox.send(&cancel).await.is_err() {
                    return ExitCode::from(INTERRUPTED);
                }
                cancelling = Some(tokio::time::Instant::now() + CANCEL_WAIT);
                continue;
            }
            _ = async {
                match cancelling {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                eprintln!("hum prompt: the turn did not end within {CANCEL_WAIT:?} of the cancel; exiting");
                return ExitCode::from(INTERRUPTED);
            }
        };
        let tone = match next {
            Ok(Some(Inbound::Tone(t))) => t,
            Ok(Some(Inbound::Rejected(r))) => {
                eprintln!("hum prompt: humd sent something unreadable: {r}");
                continue;
            }
            Ok(None) | Err(_) if cancelling.is_some() => return ExitCode::from(INTERRUPTED),
            Ok(None) | Err(_) => {
                eprintln!("hum prompt: humd went away before the turn ended");
                return ExitCode::from(3);
            }
        };
        let mine = tone.sid() == Some(sid.as_str()) || tone.rid() == Some(rid.as_str());
        match tone.body {
            Body::Chunk(c) if mine && c.chunk_type == ChunkType::TextDelta => {
                let _ = out.write_all(c.delta.unwrap_or_default().as_bytes());
                let _ = out.flush();
            }
            Body::Finish(f) if mine => {
                let _ = writeln!(out);
                if cancelling.is_some() {
                    eprintln!(
                        "hum prompt: turn ended ({})",
                        f.finish_reason.as_deref().unwrap_or("finished")
                    );
                    return ExitCode::from(INTERRUPTED);
                }
                if f.finish_reason.as_deref() == Some("cancelled") {
                    eprintln!("hum prompt: cancelled");
                    return ExitCode::from(1);
                }
                return ExitCode::SUCCESS;
            }
            Body::Error(e) if cancelling.is_some() && (mine || tone.sid().is_none()) => {
                eprintln!("hum prompt: turn ended ({})", e.code);
                return ExitCode::from(INTERRUPTED);
            }
            Body::Error(e) if mine || tone.sid().is_none() => {
                let _ = out.flush();
                eprintln!(
                    "hum prompt: error {}: {}",
                    e.code,
                    e.message.unwrap_or_default()
                );
                return ExitCode::from(1);
            }
            _ => {}
        }
    }
}
