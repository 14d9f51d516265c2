//! `hum prompt`: one turn from the shell. Streams the answer's text to
//! stdout as it arrives; on an error prints its code and message to stderr
//! and exits non-zero.
//!
//! Exit codes: 0 the turn finished; 1 the turn ended with an error (its code
//! on stderr); 3 humd could not be reached or went away; 130 interrupted
//! (SIGINT or SIGTERM: the turn is cancelled first, its end awaited for up
//! to [`CANCEL_WAIT`]; a second signal exits at once).

use crate::client::{Client, ClientError, Event};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use thrum::{Prompt, Tone};

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
    let mut client = match Client::asker(&socket, "hum prompt").await {
        Ok(c) => c,
        Err(ClientError::Unreachable(e)) => {
            eprintln!("hum prompt: cannot reach humd at {}: {e}", socket.display());
            return ExitCode::from(3);
        }
        Err(_) => {
            eprintln!("hum prompt: humd closed the connection");
            return ExitCode::from(3);
        }
    };
    let cwd = args
        .cwd
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .map(|p| p.display().to_string());
    let sid = args
        .sid
        .clone()
        .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4().simple()));
    let prompt = Prompt {
        cwd,
        ..Client::text_prompt(&text, args.model.as_deref())
    };
    if client
        .request(Tone::new(prompt).with_sid(&sid))
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
            n = client.event_of(&sid) => n,
            _ = stop.next() => {
                if cancelling.is_some() {
                    eprintln!("\nhum prompt: interrupted again; exiting without waiting");
                    return ExitCode::from(INTERRUPTED);
                }
                let _ = out.flush();
                eprintln!("\nhum prompt: interrupted; cancelling the turn (again to exit at once)");
                if client.cancel(&sid).await.is_err() {
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
        let event = match next {
            Ok(e) => e,
            Err(_) if cancelling.is_some() => return ExitCode::from(INTERRUPTED),
            Err(_) => {
                eprintln!("hum prompt: humd went away before the turn ended");
                return ExitCode::from(3);
            }
        };
        match event {
            Event::Text { text, .. } => {
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            Event::Finish { finish, .. } => {
                let _ = writeln!(out);
                if cancelling.is_some() {
                    eprintln!(
                        "hum prompt: turn ended ({})",
                        finish.finish_reason.as_deref().unwrap_or("finished")
                    );
                    return ExitCode::from(INTERRUPTED);
                }
                if finish.finish_reason.as_deref() == Some("cancelled") {
                    eprintln!("hum prompt: cancelled");
                    return ExitCode::from(1);
                }
                return ExitCode::SUCCESS;
            }
            Event::Error { error, .. } if cancelling.is_some() => {
                eprintln!("hum prompt: turn ended ({})", error.code);
                return ExitCode::from(INTERRUPTED);
            }
            Event::Error { error, .. } => {
                let _ = out.flush();
                eprintln!(
                    "hum prompt: error {}: {}",
                    error.code,
                    error.message.unwrap_or_default()
                );
                return ExitCode::from(1);
            }
            _ => {}
        }
    }
}
