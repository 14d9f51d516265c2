//! `hum sim-agent`: a stand-in for `claude -p --verbose --input-format
//! stream-json --output-format stream-json --include-partial-messages`.
//!
//! It speaks claude's stdin/stdout protocol, keeps sessions the way claude
//! does, lives and dies like claude (alive after `result`, exit 0 on stdin EOF
//! once the current turn is done, claude's SIGTERM behaviour), and has a knob
//! for every failure hum must survive. Synchronous on purpose: one thread
//! reads, answers and writes, as a CLI does.
//!
//! - [`args`]: flags and knobs.
//! - [`answer`]: what the answer says and how it is cut into deltas.
//! - [`events`]: the stream-json events of a turn.
//! - [`session`]: transcripts, resume and session-id rules.
//! - [`helpers`]: the child processes (MCP servers, Bash tool commands).

pub mod answer;
pub mod args;
pub mod events;
pub mod helpers;
pub mod session;

pub use args::SimArgs;

use args::{InputFormat, OutputFormat, Role};
use events::{BlockKind, Turn, Usage};
use helpers::{Helpers, SharedHelpers};
use serde_json::Value;
use session::{Memory, Transcript};
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thrum::{each_line, RawLine, DEFAULT_MAX_LINE};

/// Runs the simulator (or one of its helper roles) to completion.
pub fn run(args: SimArgs) -> ExitCode {
    match args.sim_role {
        Role::McpServer => return helpers::run_mcp_server(args.sim_mcp_ignore_eof),
        Role::BashTool => return helpers::run_bash_tool(),
        Role::Agent => {}
    }
    match Agent::start(args) {
        Ok(agent) => agent.serve(),
        Err(code) => code,
    }
}

struct Agent {
    args: SimArgs,
    cwd: String,
    transcript: Transcript,
    memory: Memory,
    helpers: SharedHelpers,
    tools: Vec<String>,
    mcp_names: Vec<String>,
    /// Turns run by this process, for --sim-fault-turn.
    turns_here: u64,
    /// Held, never read: the resident memory of --sim-ballast-mb.
    _ballast: Vec<u8>,
}

/// Prints a message on stderr and gives exit code 1, as claude's refusals do.
fn refuse(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(1)
}

impl Agent {
    fn start(args: SimArgs) -> Result<Agent, ExitCode> {
        if args.output_format == OutputFormat::StreamJson && !args.verbose {
            return Err(refuse(
                "Error: When using --print, --output-format=stream-json requires --verbose",
            ));
        }
        let config_dir = session::config_dir().map_err(|e| refuse(&format!("Error: {e}")))?;
        let cwd = std::env::current_dir()
            .map_err(|e| refuse(&format!("Error: no current directory: {e}")))?
            .to_string_lossy()
            .into_owned();

        let (transcript, memory) = if let Some(id) = &args.resume {
            let t = Transcript::new(&config_dir, &cwd, id);
            if !session::is_session_id(id) || !t.exists() || args.sim_forget_sessions {
                if args.output_format != OutputFormat::Text {
                    emit_line(&events::resume_not_found(id));
                }
                return Err(refuse(&format!(
                    "No conversation found with session ID: {id}"
                )));
            }
            let memory = t
                .recall()
                .map_err(|e| refuse(&format!("Error: cannot read session {id}: {e}")))?;
            (t, memory)
        } else if let Some(id) = &args.session_id {
            if !session::is_session_id(id) {
                return Err(refuse("Error: Invalid session ID. Must be a valid UUID."));
            }
            let t = Transcript::new(&config_dir, &cwd, id);
            if t.exists() && !args.sim_forget_sessions {
                return Err(refuse(&format!(
                    "Error: Session ID {id} is already in use."
                )));
            }
            (t, Memory::default())
        } else {
            let id = uuid::Uuid::new_v4().to_string();
            (Transcript::new(&config_dir, &cwd, &id), Memory::default())
        };

        let helpers: SharedHelpers = Arc::new(Mutex::new(Helpers::default()));
        if let Err(e) = helpers::handle_sigterm(helpers.clone(), args.sim_ignore_sigterm) {
            return Err(refuse(&format!(
                "Error: cannot install SIGTERM handling: {e}"
            )));
        }
        if args.sim_mcp_servers > 0 {
            let spawned = helpers
                .lock()
                .expect("helpers lock")
                .spawn_mcp_servers(args.sim_mcp_servers, args.sim_mcp_ignore_eof);
            if let Err(e) = spawned {
                helpers.lock().expect("helpers lock").shutdown();
                return Err(refuse(&format!("Error: cannot start MCP servers: {e}")));
            }
        }
        // vec! of a non-zero byte writes every page, so it is resident.
        let ballast = vec![0x5a_u8; args.sim_ballast_mb << 20];

        let mut tools: Vec<String> = if args.allowed_tools.is_empty() {
            events::DEFAULT_TOOLS
                .iter()
                .map(|t| t.to_string())
                .collect()
        } else {
            split_list(&args.allowed_tools)
        };
        let disallowed = split_list(&args.disallowed_tools);
        tools.retain(|t| !disallowed.contains(t));
        let mcp_names = (1..=args.sim_mcp_servers)
            .map(|i| format!("sim-mcp-{i}"))
            .collect();

        Ok(Agent {
            cwd,
            transcript,
            memory,
            helpers,
            tools,
            mcp_names,
            turns_here: 0,
            _ballast: ballast,
            args,
        })
    }

    fn serve(mut self) -> ExitCode {
        sleep_ms(self.args.sim_bootstrap_delay_ms);
        let code = match self.args.input_format {
            InputFormat::Text => self.serve_text(),
            InputFormat::StreamJson => self.serve_stream_json(),
        };
        self.helpers.lock().expect("helpers lock").shutdown();
        code
    }

    fn serve_text(&mut self) -> ExitCode {
        let prompt = match self.args.prompt.clone() {
            Some(p) => p,
            None => {
                let mut buf = Vec::new();
                let read = io::stdin()
                    .lock()
                    .take(DEFAULT_MAX_LINE as u64 + 1)
                    .read_to_end(&mut buf);
                if let Err(e) = read {
                    return refuse(&format!("Error: reading stdin: {e}"));
                }
                if buf.len() > DEFAULT_MAX_LINE {
                    return refuse(&format!(
                        "Error: prompt longer than {DEFAULT_MAX_LINE} bytes"
                    ));
                }
                String::from_utf8_lossy(&buf)
                    .trim_end_matches('\n')
                    .to_owned()
            }
        };
        if prompt.is_empty() {
            return refuse("Error: Input must be provided either through stdin or as a prompt argument when using --print");
        }
        self.turn(&prompt);
        ExitCode::SUCCESS
    }

    fn serve_stream_json(&mut self) -> ExitCode {
        let read = each_line(io::stdin().lock(), DEFAULT_MAX_LINE, |line| match line {
            RawLine::Line(line) => self.message(line),
            RawLine::TooLong { limit } => {
                eprintln!("sim-agent: skipping an input line over {limit} bytes")
            }
        });
        match read {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => refuse(&format!("Error: reading stdin: {e}")),
        }
    }

    /// One stdin line: a user message starts a turn; anything else is noted
    /// on stderr and skipped.
    fn message(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let msg: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("sim-agent: skipping a line that is not JSON: {e}");
                return;
            }
        };
        if msg["type"] != "user" {
            eprintln!("sim-agent: skipping a message of type {}", msg["type"]);
            return;
        }
        match user_text(&msg["message"]["content"]) {
            Some(prompt) => self.turn(&prompt),
            None => eprintln!("sim-agent: skipping a user message without text content"),
        }
    }

    /// Whether the fault knobs apply to this turn.
    fn faulty(&self, prompt: &str) -> bool {
        self.turns_here >= self.args.sim_fault_turn
            && self
                .args
                .sim_fault_if
                .as_deref()
                .is_none_or(|needle| prompt.contains(needle))
    }

    fn turn(&mut self, prompt: &str) {
        let started = Instant::now();
        self.turns_here += 1;
        let faulty = self.faulty(prompt);
        if faulty && self.args.sim_never_answer {
            helpers::park_forever();
        }
        let number = self.memory.turns + 1;
        if let Err(e) = self.transcript.append("user", prompt, None) {
            eprintln!(
                "sim-agent: cannot write transcript {}: {e}",
                self.transcript.path.display()
            );
        }
        let turn = Turn::new(&self.transcript.session_id, &self.args.model);
        let stream = self.args.output_format == OutputFormat::StreamJson;
        let partial = stream && self.args.include_partial_messages;
        let text = answer::answer_text(number, prompt, self.memory.last_prompt.as_deref());
        let (text, deltas) = answer::deltas(&text, self.args.sim_chunks, self.args.sim_chunk_size);
        let thinking = self
            .args
            .sim_thinking
            .then(|| answer::thinking_text(prompt));
        let usage = Usage {
            input_tokens: 10 * number + prompt.len() as u64 / 4,
            output_tokens: deltas.len() as u64,
        };

        if stream {
            emit_line(&turn.init(&self.cwd, &self.tools, &self.mcp_names));
            emit_line(&turn.status());
        }
        sleep_ms(self.args.sim_turn_delay_ms);
        if self.args.sim_bash_escapee && !self.helpers.lock().expect("helpers lock").has_bash_tool()
        {
            if let Err(e) = self.helpers.lock().expect("helpers lock").spawn_bash_tool() {
                eprintln!("sim-agent: cannot start the Bash tool command: {e}");
            }
        }
        if partial {
            emit_line(&turn.message_start(usage));
        }
        let mut text_block = 0;
        if let Some(thinking) = &thinking {
            if partial {
                emit_line(&turn.block_start(0, BlockKind::Thinking));
                emit_line(&turn.delta(0, BlockKind::Thinking, thinking));
                emit_line(&turn.block_stop(0));
            }
            text_block = 1;
        }
        if partial {
            emit_line(&turn.block_start(text_block, BlockKind::Text));
        }
        for (i, delta) in deltas.iter().enumerate() {
            self.maybe_fail_mid_turn(faulty, i);
            if partial {
                emit_line(&turn.delta(text_block, BlockKind::Text, delta));
            }
            sleep_ms(self.args.sim_chunk_delay_ms);
        }
        self.maybe_fail_mid_turn(faulty, deltas.len());
        if stream {
            emit_line(&turn.assistant(thinking.as_deref(), &text, usage));
        }
        if partial {
            emit_line(&turn.block_stop(text_block));
            emit_line(&turn.message_delta(usage));
            emit_line(&turn.message_stop());
        }
        let elapsed = started.elapsed().as_millis() as u64;
        let result = if faulty && self.args.sim_error_result {
            turn.failure(&self.args.sim_error_message, usage, 1, elapsed)
        } else {
            if let Err(e) = self
                .transcript
                .append("assistant", &text, Some(&self.args.model))
            {
                eprintln!("sim-agent: cannot write transcript: {e}");
            }
            turn.success(&text, usage, 1, elapsed)
        };
        match self.args.output_format {
            OutputFormat::Text => emit_text(result["result"].as_str().unwrap_or_default()),
            _ => emit_line(&result),
        }
        self.memory.turns = number;
        self.memory.last_prompt = Some(prompt.to_owned());
    }

    /// Stall or crash after `sent` deltas, when a knob says so.
    fn maybe_fail_mid_turn(&self, faulty: bool, sent: usize) {
        if !faulty {
            return;
        }
        if self.args.sim_stall_after_chunks == Some(sent) {
            helpers::park_forever();
        }
        if self.args.sim_crash_after_chunks == Some(sent) {
            // A crash leaves the children to whoever contains us.
            let _ = io::stdout().flush();
            std::process::exit(self.args.sim_crash_code);
        }
    }
}

/// Tool lists arrive as repeated flags, comma- or space-separated.
fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split([',', ' ']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The text of a user message's content: a string, or its text blocks.
fn user_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

fn sleep_ms(ms: u64) {
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Writes one JSON line and flushes it, so a reader sees events as they
/// happen. A reader that went away ends us, as it ends claude.
fn emit_line(value: &Value) {
    let mut line = serde_json::to_vec(value).expect("events serialize");
    line.push(b'\n');
    write_or_exit(&line);
}

fn emit_text(text: &str) {
    write_or_exit(format!("{text}\n").as_bytes());
}

fn write_or_exit(bytes: &[u8]) {
    let mut out = io::stdout().lock();
    if out.write_all(bytes).and_then(|_| out.flush()).is_err() {
        std::process::exit(1);
    }
}
