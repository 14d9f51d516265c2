//! `hum sim-agent` (and `hum-sim`, the same in a binary of its own): a
//! stand-in for `claude -p --verbose --input-format
//! stream-json --output-format stream-json --include-partial-messages`.
//!
//! It speaks claude's stdin/stdout protocol, keeps sessions the way claude
//! does, lives and dies like claude (alive after `result`, exit 0 on stdin EOF
//! once the current turn is done, claude's SIGTERM behaviour), and has a knob
//! for every failure hum must survive. Synchronous on purpose: one thread
//! reads, answers and writes, as a CLI does.
//!
//! - [`acp`]: `--acp`, the same agent behind the Agent Client Protocol.
//! - [`args`]: flags and knobs.
//! - [`answer`]: what the answer says and how it is cut into deltas.
//! - [`events`]: the stream-json events of a turn.
//! - [`session`]: transcripts, resume and session-id rules.
//! - [`helpers`]: the child processes (MCP servers, Bash tool commands).
//! - [`mcp`]: the MCP client for `--mcp-config` servers (`CALL_TOOL`).
//! - [`directives`]: a prompt's own knobs (`SIM_USAGE`, `SIM_GROW_MB`).

pub mod acp;
pub mod answer;
pub mod args;
pub mod directives;
pub mod events;
mod faults;
pub mod helpers;
pub mod mcp;
mod output;
pub mod session;
mod tool_use;
mod turn_log;

use output::{emit_line, emit_text, sleep_ms, split_list, user_text};

pub use args::SimArgs;
pub use helpers::started_as_own_binary;

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
    if args.acp {
        return acp::serve(args);
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
    /// The `--mcp-config` servers, connected at start as claude does.
    mcp: Option<mcp::McpClients>,
    /// Turns run by this process, for --sim-fault-turn.
    turns_here: u64,
    /// Stdin lines, read on their own thread so a turn can notice an
    /// interrupt while it streams or waits (`None` for text input).
    input: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
    /// Lines that arrived during a turn, handled after it (claude queues
    /// them the same way).
    queued: std::collections::VecDeque<Vec<u8>>,
    /// Held, never read: the resident memory of --sim-ballast-mb, and of
    /// every turn's growth (--sim-grow-mb, `SIM_GROW_MB`).
    ballast: Vec<Vec<u8>>,
    /// What this process has spent so far: claude reports cost and model
    /// usage per process, not per turn.
    spent: Usage,
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
        if let Some(file) = &args.system_prompt_file {
            if std::fs::read(file).is_err() {
                return Err(refuse(&format!(
                    "Error: System prompt file not found: {}",
                    file.display()
                )));
            }
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

        // As claude: `--allowed-tools` only spares those tools the
        // permission prompt; the tools offered are all but the disallowed.
        // `--tools`: none (""), the default set, or the names given.
        let mut tools: Vec<String> = events::DEFAULT_TOOLS
            .iter()
            .map(|t| t.to_string())
            .filter(|t| {
                args.tools.is_empty()
                    || args.tools.iter().any(|v| v == "default")
                    || split_list(&args.tools).contains(t)
            })
            .collect();
        let disallowed = split_list(&args.disallowed_tools);
        tools.retain(|t| !disallowed.contains(t));
        let mut mcp_names: Vec<String> = (1..=args.sim_mcp_servers)
            .map(|i| format!("sim-mcp-{i}"))
            .collect();
        let mcp = if args.mcp_config.is_empty() {
            None
        } else {
            match mcp::McpClients::connect(&args.mcp_config) {
                Ok(c) => {
                    mcp_names.extend(c.server_names());
                    Some(c)
                }
                // claude starts anyway, the server marked failed.
                Err(e) => {
                    eprintln!("sim-agent: {e}");
                    None
                }
            }
        };

        let spent = memory.spent;
        Ok(Agent {
            spent,
            cwd,
            transcript,
            memory,
            helpers,
            tools,
            mcp_names,
            mcp,
            turns_here: 0,
            input: None,
            queued: std::collections::VecDeque::new(),
            ballast: vec![ballast],

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
        // Bounded: a writer far ahead of the agent waits on the pipe.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
        let reader = std::thread::spawn(move || {
            each_line(io::stdin().lock(), DEFAULT_MAX_LINE, |line| match line {
                RawLine::Line(line) => {
                    let _ = tx.send(line.to_vec());
                }
                RawLine::TooLong { limit } => {
                    eprintln!("sim-agent: skipping an input line over {limit} bytes")
                }
            })
        });
        self.input = Some(rx);
        loop {
            let line = match self.queued.pop_front() {
                Some(l) => l,
                None => match self.input.as_ref().map(|rx| rx.recv()) {
                    Some(Ok(l)) => l,
                    _ => break,
                },
            };
            self.message(&line);
        }
        match reader.join() {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => refuse(&format!("Error: reading stdin: {e}")),
            Err(_) => refuse("Error: reading stdin failed"),
        }
    }

    /// The request id of an interrupt `control_request`, if `line` is one.
    fn interrupt_request(line: &[u8]) -> Option<String> {
        let msg: Value = serde_json::from_slice(line).ok()?;
        (msg["type"] == "control_request" && msg["request"]["subtype"] == "interrupt")
            .then(|| msg["request_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Waits up to `ms` (forever with `None`) for an interrupt, queueing any
    /// other line for after the turn. Returns whether one came (its
    /// control_response already printed). Text input has no interrupts.
    fn wait_for_interrupt(&mut self, ms: Option<u64>) -> bool {
        let deadline = ms.map(|ms| Instant::now() + Duration::from_millis(ms));
        loop {
            let Some(rx) = self.input.as_ref() else {
                match deadline {
                    Some(d) => std::thread::sleep(d.saturating_duration_since(Instant::now())),
                    None => helpers::park_forever(),
                }
                return false;
            };
            let got = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(l) => Some(l),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return false,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            // Stdin closed: claude finishes the turn first.
                            std::thread::sleep(left);
                            return false;
                        }
                    }
                }
                None => match rx.recv() {
                    Ok(l) => Some(l),
                    // A stalled turn outlives stdin EOF, as claude's does.
                    Err(_) => helpers::park_forever(),
                },
            };
            if let Some(line) = got {
                if let Some(request_id) = Self::interrupt_request(&line) {
                    if self.args.sim_ignore_interrupt {
                        continue;
                    }
                    emit_line(&Turn::control_response(&request_id));
                    return true;
                }
                self.queued.push_back(line);
            }
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
        if msg["type"] == "control_request" {
            // Nothing to interrupt between turns; claude still answers.
            let id = msg["request_id"].as_str().unwrap_or_default();
            emit_line(&Turn::control_response(id));
            return;
        }
        if msg["type"] != "user" {
            eprintln!("sim-agent: skipping a message of type {}", msg["type"]);
            return;
        }
        match user_text(&msg["message"]["content"]) {
            Some(prompt) => self.turn(&prompt),
            None => eprintln!("sim-agent: skipping a user message without text content"),
        }
    }

    /// Notes a turn's start or end in --sim-turn-log, if asked.
    fn note_turn(&self, event: &str, prompt: &str) {
        if let Some(path) = &self.args.sim_turn_log {
            turn_log::note(path, event, &self.transcript.session_id, prompt);
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
        self.note_turn("start", prompt);
        let grow = directives::grow_mb_in(prompt).unwrap_or(self.args.sim_grow_mb);
        // (A size past the address space is no growth, not a crash.)
        if let Some(bytes) = grow.checked_mul(1 << 20).filter(|b| *b > 0) {
            // vec! of a non-zero byte writes every page: resident at once.
            self.ballast.push(vec![0x5a_u8; bytes]);
        }
        let faulty = self.faulty(prompt);
        if faulty && self.args.sim_never_answer {
            helpers::park_forever();
        }
        let number = self.memory.turns + 1;
        let rounds = mcp::rounds_in(prompt);
        if let Err(e) = self.transcript.append("user", prompt, None, None) {
            eprintln!(
                "sim-agent: cannot write transcript {}: {e}",
                self.transcript.path.display()
            );
        }
        let turn = Turn::new(&self.transcript.session_id, &self.args.model);
        let stream = self.args.output_format == OutputFormat::StreamJson;
        let partial = stream && self.args.include_partial_messages;
        let text = self.tool_rounds(&turn, prompt, number, &rounds);
        let (text, deltas) = answer::deltas(&text, self.args.sim_chunks, self.args.sim_chunk_size);
        let thinking = self
            .args
            .sim_thinking
            .then(|| answer::thinking_text(prompt));
        let usage = self.usage_of(
            prompt,
            Usage::tokens(10 * number + prompt.len() as u64 / 4, deltas.len() as u64),
        );

        if self.pause(self.args.sim_turn_delay_ms) {
            return self.abort(&turn, usage, "", number, prompt, started);
        }
        self.start_escapee();
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
        let mut said = String::new();
        for (i, delta) in deltas.iter().enumerate() {
            if self.maybe_fail_mid_turn(faulty, i) {
                return self.abort(&turn, usage, &said, number, prompt, started);
            }
            if partial {
                emit_line(&turn.delta(text_block, BlockKind::Text, delta));
            }
            said.push_str(delta);
            if self.pause(self.args.sim_chunk_delay_ms) {
                return self.abort(&turn, usage, &said, number, prompt, started);
            }
        }
        if self.maybe_fail_mid_turn(faulty, deltas.len()) {
            return self.abort(&turn, usage, &said, number, prompt, started);
        }
        if stream {
            emit_line(&turn.assistant(thinking.as_deref(), &text, usage));
        }
        if partial {
            emit_line(&turn.block_stop(text_block));
            emit_line(&turn.message_delta(usage));
            emit_line(&turn.message_stop());
        }
        let elapsed = started.elapsed().as_millis() as u64;
        self.spent = self.spent.plus(&usage);
        let result = if faulty && self.args.sim_error_result {
            turn.failure(&self.args.sim_error_message, usage, self.spent, 1, elapsed)
        } else {
            if let Err(e) =
                self.transcript
                    .append("assistant", &text, Some(&self.args.model), Some(&usage))
            {
                eprintln!("sim-agent: cannot write transcript: {e}");
            }
            turn.success(&text, usage, self.spent, 1, elapsed)
        };
        // Logged before the result is printed: whoever read the result
        // finds the turn's end in the log.
        self.note_turn(
            if faulty && self.args.sim_error_result {
                "error"
            } else {
                "done"
            },
            prompt,
        );
        match self.args.output_format {
            OutputFormat::Text => emit_text(result["result"].as_str().unwrap_or_default()),
            _ => emit_line(&result),
        }
        self.memory.turns = number;
        self.memory.last_prompt = Some(prompt.to_owned());
    }

    /// The usage a turn's `result` reports: the knobs', then the prompt's
    /// `SIM_USAGE`, over the made-up default.
    fn usage_of(&self, prompt: &str, default: Usage) -> Usage {
        let a = &self.args;
        let knobs = Usage {
            input_tokens: a.sim_input_tokens.unwrap_or(default.input_tokens),
            output_tokens: a.sim_output_tokens.unwrap_or(default.output_tokens),
            cache_read_tokens: a.sim_cache_read_tokens,
            cache_creation_tokens: a.sim_cache_creation_tokens,
            cost: a.sim_cost_usd.filter(|c| c.is_finite() && *c >= 0.0),
        };
        directives::usage_in(prompt, knobs)
    }
}
