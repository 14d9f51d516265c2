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
    /// Lends the agent a tool, NAME=COMMAND: when the agent calls NAME,
    /// COMMAND runs here (`sh -c`) with the call's arguments as JSON on its
    /// stdin; its stdout is the result (a non-zero exit makes it an error,
    /// with its stderr). Repeatable. The agent sees it as `mcp__hum__NAME`.
    #[arg(long = "tool", value_name = "NAME=COMMAND")]
    pub tools: Vec<String>,
    /// The bee this prompt is for: its usage is filed under this name and
    /// `budgets.perBeeDailyUsd` counts it (default: "hum prompt").
    #[arg(long)]
    pub bee: Option<String>,
    /// The prompt; `-` reads it from stdin.
    pub text: String,
}

/// Most bytes of a tool command's output sent back as its result.
const TOOL_OUTPUT_MAX: usize = 1024 * 1024;

/// `--tool` values as (name, command).
fn parse_tools(specs: &[String]) -> Result<Vec<(String, String)>, String> {
    specs
        .iter()
        .map(|spec| {
            let (name, command) = spec
                .split_once('=')
                .ok_or_else(|| format!("--tool {spec:?}: expected NAME=COMMAND"))?;
            let ok_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok_name {
                return Err(format!(
                    "--tool {spec:?}: NAME must be 1-64 letters, digits, _ or -"
                ));
            }
            if command.trim().is_empty() {
                return Err(format!("--tool {spec:?}: COMMAND is empty"));
            }
            Ok((name.to_owned(), command.to_owned()))
        })
        .collect()
}

/// Runs a `--tool` command for one call: (output, is_error).
async fn run_tool(command: &str, args: &serde_json::Value) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (format!("cannot run {command:?}: {e}"), true),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(args.to_string().as_bytes()).await;
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (Some(so), Some(se)) = (child.stdout.take(), child.stderr.take()) else {
        return ("the command has no output pipes".into(), true);
    };
    let limit = TOOL_OUTPUT_MAX as u64;
    let (mut so, mut se) = (so.take(limit), se.take(limit));
    let _ = tokio::join!(so.read_to_end(&mut out), se.read_to_end(&mut err));
    if out.len() as u64 >= limit || err.len() as u64 >= limit {
        // It has more to say than a result may carry: it is not waited on.
        let _ = child.start_kill();
    }
    let ok = child.wait().await.is_ok_and(|s| s.success());
    if ok {
        (String::from_utf8_lossy(&out).into_owned(), false)
    } else {
        let mut msg = String::from_utf8_lossy(&err).into_owned();
        if msg.trim().is_empty() {
            msg = String::from_utf8_lossy(&out).into_owned();
        }
        (format!("{command:?} failed: {}", msg.trim_end()), true)
    }
}

pub fn run(args: PromptArgs) -> ExitCode {
    if let Err(e) = parse_tools(&args.tools) {
        eprintln!("hum prompt: {e}");
        return ExitCode::from(2);
    }
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
    let (mut client, sid, tools) = match start(&args, &text).await {
        Ok(started) => started,
        Err(code) => return code,
    };
    // Results of the tool commands running now, back to the loop below.
    let (results_tx, mut results) =
        tokio::sync::mpsc::unbounded_channel::<(thrum::ToolCall, String, bool)>();
    let mut out = std::io::stdout().lock();
    let mut stop = crate::stop::StopSignals::install();
    // Set once interrupted: the cancel was sent, wait this long for its end.
    let mut cancelling: Option<tokio::time::Instant> = None;
    loop {
        let next = tokio::select! {
            n = client.event_of(&sid) => n,
            Some((call, output, is_error)) = results.recv() => {
                eprintln!("[tool {} {}]", call.tool_name, if is_error { "failed" } else { "done" });
                if client.tool_result(&sid, &call, serde_json::Value::String(output), is_error).await.is_err() {
                    eprintln!("hum prompt: humd went away before the turn ended");
                    return ExitCode::from(3);
                }
                continue;
            }
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
        if let Some(code) = show(event, &mut out, cancelling.is_some(), &tools, &results_tx) {
            return code;
        }
    }
}

/// Connects, and sends the prompt (with the tools lent): the client, the
/// sid and the tools; the exit code when humd cannot be reached.
async fn start(
    args: &PromptArgs,
    text: &str,
) -> Result<(Client, String, Vec<(String, String)>), ExitCode> {
    let socket = args.socket.clone().unwrap_or_else(thrum::socket_path);
    let hello = Client::bee_hello("hum prompt", args.bee.as_deref());
    let client = match Client::connect(&socket, hello).await {
        Ok(c) => c,
        Err(ClientError::Unreachable(e)) => {
            eprintln!("hum prompt: cannot reach humd at {}: {e}", socket.display());
            return Err(ExitCode::from(3));
        }
        Err(_) => {
            eprintln!("hum prompt: humd closed the connection");
            return Err(ExitCode::from(3));
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
    let tools = parse_tools(&args.tools).unwrap_or_default();
    let specs: Vec<serde_json::Value> = tools
        .iter()
        .map(|(name, command)| {
            thrum::tools::ToolSpec::new(
                name.clone(),
                Some(format!("Runs `{command}` on the user's machine with the arguments as JSON on stdin; answers its output.")),
            )
            .to_value()
        })
        .collect();
    let prompt = Prompt {
        cwd,
        tools: (!specs.is_empty()).then(|| serde_json::Value::Array(specs)),
        ..Client::text_prompt(text, args.model.as_deref())
    };
    if client
        .request(Tone::new(prompt).with_sid(&sid))
        .await
        .is_err()
    {
        eprintln!("hum prompt: humd closed the connection");
        return Err(ExitCode::from(3));
    }
    Ok((client, sid, tools))
}

/// Shows one event of the turn; the exit code once it ended.
fn show(
    event: Event,
    out: &mut impl Write,
    cancelling: bool,
    tools: &[(String, String)],
    results_tx: &tokio::sync::mpsc::UnboundedSender<(thrum::ToolCall, String, bool)>,
) -> Option<ExitCode> {
    match event {
        Event::Text { text, .. } => {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        Event::Finish { finish, .. } => {
            let _ = writeln!(out);
            if cancelling {
                eprintln!(
                    "hum prompt: turn ended ({})",
                    finish
                        .finish_reason
                        .as_ref()
                        .map_or("finished", thrum::FinishReason::as_str)
                );
                return Some(ExitCode::from(INTERRUPTED));
            }
            if finish.finish_reason == Some(thrum::FinishReason::Cancelled) {
                eprintln!("hum prompt: cancelled");
                return Some(ExitCode::from(1));
            }
            return Some(ExitCode::SUCCESS);
        }
        Event::ToolCall { call, .. } => {
            let _ = out.flush();
            eprintln!("[tool {} {}]", call.tool_name, call.args);
            let command = tools
                .iter()
                .find(|(n, _)| *n == call.tool_name)
                .map(|(_, c)| c.clone());
            let tx = results_tx.clone();
            tokio::spawn(async move {
                let (output, is_error) = match command {
                    Some(c) => run_tool(&c, &call.args).await,
                    None => (format!("hum prompt has no tool {}", call.tool_name), true),
                };
                let _ = tx.send((call, output, is_error));
            });
        }
        Event::Chunk { chunk, .. } if chunk.chunk_type == thrum::ChunkType::ToolExecuted => {
            let _ = out.flush();
            let done = thrum::tools::ToolExecuted::of(&chunk).unwrap_or_default();
            let name = Some(done.tool_name.as_str()).filter(|n| !n.is_empty());
            let failed = if done.is_error { ", failed" } else { "" };
            eprintln!("[tool {} ran{failed}]", name.unwrap_or("?"));
        }
        Event::Error { error, .. } if cancelling => {
            eprintln!("hum prompt: turn ended ({})", error.code);
            return Some(ExitCode::from(INTERRUPTED));
        }
        Event::Error { error, .. } => {
            let _ = out.flush();
            eprintln!(
                "hum prompt: error {}: {}",
                error.code,
                error.message.unwrap_or_default()
            );
            return Some(ExitCode::from(1));
        }
        _ => {}
    }
    None
}
