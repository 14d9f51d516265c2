//! The simulator's command line: claude's flags (as hum passes them, in both
//! `--flag value` and `--flag=value` form) and the knobs that reproduce the
//! failures hum must survive. Every knob can also come from the environment,
//! so a worker that builds a claude-shaped argv can still steer its cells.

use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};

const KNOBS: &str = "Simulation knobs (flag or environment variable)";
const IGNORED: &str = "Accepted like claude, otherwise ignored";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// All of stdin is one prompt; one turn, then exit.
    Text,
    /// One JSON user message per line; one turn each.
    StreamJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The result text of each turn.
    Text,
    /// The result object of each turn.
    Json,
    /// Every event, one JSON object per line (claude's stream-json).
    StreamJson,
}

/// What this process is: the agent itself, or one of the helper processes it
/// starts (they are the same binary so tests need nothing else installed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Agent,
    /// A stdio "MCP server": reads stdin until EOF, then exits (or not, with
    /// --sim-mcp-ignore-eof).
    McpServer,
    /// A "Bash tool" command: a new session, SIGTERM ignored, runs forever.
    BashTool,
}

/// Flags of `hum sim-agent` (its help text is on the subcommand in `cli`).
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// A prompt for a single turn (with --input-format text); stdin otherwise.
    pub prompt: Option<String>,

    /// Print mode (the only mode the simulator has).
    #[arg(short = 'p', long)]
    pub print: bool,

    /// Required with --output-format stream-json, as claude requires it.
    #[arg(long)]
    pub verbose: bool,

    #[arg(long, value_enum, default_value = "text")]
    pub input_format: InputFormat,

    #[arg(long, value_enum, default_value = "text")]
    pub output_format: OutputFormat,

    /// Emit stream_event lines (message_start, deltas, …) in stream-json.
    #[arg(long)]
    pub include_partial_messages: bool,

    /// Model name reported in system/init, the assistant message and usage
    /// (the simulator's own by default: its turns are not filed as a real
    /// model's).
    #[arg(long, default_value = "sim")]
    pub model: String,

    /// Continue an existing session; unknown ids fail like claude's.
    #[arg(short = 'r', long)]
    pub resume: Option<String>,

    /// Start a session with this id (a UUID not already in use).
    #[arg(long)]
    pub session_id: Option<String>,

    /// Tools used without asking (claude's permission rules); as in claude,
    /// they do not narrow the tools offered.
    #[arg(long = "allowed-tools", alias = "allowedTools", action = clap::ArgAction::Append)]
    pub allowed_tools: Vec<String>,

    /// Removed from the tools listed in system/init.
    #[arg(long = "disallowed-tools", alias = "disallowedTools", action = clap::ArgAction::Append)]
    pub disallowed_tools: Vec<String>,

    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub system_prompt: Option<String>,
    /// The system prompt in a file: read at start (a missing file is an
    /// error, as claude's is), then ignored like --system-prompt.
    #[arg(long, value_name = "FILE")]
    pub system_prompt_file: Option<std::path::PathBuf>,
    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub append_system_prompt: Option<String>,
    /// As claude's: the built-in tools offered, `""` for none, `default`
    /// for the default set, or names.
    #[arg(long, action = clap::ArgAction::Append)]
    pub tools: Vec<String>,
    /// MCP servers (JSON or a file of it): the stdio ones are started and
    /// connected at start, as claude does; `CALL_TOOL <name> <json>` in a
    /// prompt calls one of their tools (the calls of a prompt together, in
    /// rounds split by `NEXT_ROUND`; `SAY_FIRST <text>` before the first
    /// `CALL_TOOL` is written before any call; `DESCRIBE_TOOL <name>` puts
    /// the tool's input schema, as listed, in the answer).
    #[arg(long, action = clap::ArgAction::Append)]
    pub mcp_config: Vec<String>,
    /// Ignored (only --mcp-config servers are used anyway).
    #[arg(long, help_heading = IGNORED)]
    pub strict_mcp_config: bool,
    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub permission_mode: Option<String>,
    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub dangerously_skip_permissions: bool,
    /// The MCP tool `ASK_PERMISSION <tool>` in a prompt asks, as claude
    /// asks it before a tool that needs permission.
    #[arg(long)]
    pub permission_prompt_tool: Option<String>,
    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub max_turns: Option<String>,
    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub max_thinking_tokens: Option<String>,
    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub fallback_model: Option<String>,
    /// Ignored.
    #[arg(long, help_heading = IGNORED, action = clap::ArgAction::Append)]
    pub add_dir: Vec<String>,
    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub settings: Option<String>,
    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub setting_sources: Option<String>,
    /// Ignored.
    #[arg(short = 'c', long = "continue", help_heading = IGNORED)]
    pub continue_: bool,
    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub fork_session: bool,
    /// Ignored.
    #[arg(long, help_heading = IGNORED)]
    pub replay_user_messages: bool,
    /// Ignored.
    #[arg(long, help_heading = IGNORED, num_args = 0..=1, default_missing_value = "")]
    pub debug: Option<String>,

    /// Wait this long after start before reading the first message (claude
    /// takes ~600 ms from spawn to its first event).
    #[arg(long, env = "HUM_SIM_BOOTSTRAP_DELAY_MS", default_value_t = 0, value_name = "MS", help_heading = KNOBS)]
    pub sim_bootstrap_delay_ms: u64,

    /// Wait this long in each turn between system/status and the answer
    /// (a slow model API).
    #[arg(long, env = "HUM_SIM_TURN_DELAY_MS", default_value_t = 0, value_name = "MS", help_heading = KNOBS)]
    pub sim_turn_delay_ms: u64,

    /// Wait this long after each text delta.
    #[arg(long, env = "HUM_SIM_CHUNK_DELAY_MS", default_value_t = 0, value_name = "MS", help_heading = KNOBS)]
    pub sim_chunk_delay_ms: u64,

    /// Stream the answer as exactly N text deltas, padding it with filler up
    /// to N × --sim-chunk-size bytes. Without it, one delta per word.
    #[arg(long, env = "HUM_SIM_CHUNKS", value_name = "N", help_heading = KNOBS)]
    pub sim_chunks: Option<usize>,

    /// Bytes per text delta with --sim-chunks.
    #[arg(long, env = "HUM_SIM_CHUNK_SIZE", default_value_t = 16, value_name = "BYTES", help_heading = KNOBS)]
    pub sim_chunk_size: usize,

    /// Begin each answer with a thinking block (reasoning deltas).
    #[arg(long, env = "HUM_SIM_THINKING", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_thinking: bool,

    /// Stall forever mid-turn after N text deltas (stdin EOF does not end a
    /// stalled turn, as it does not end claude's).
    #[arg(long, env = "HUM_SIM_STALL_AFTER_CHUNKS", value_name = "N", help_heading = KNOBS)]
    pub sim_stall_after_chunks: Option<usize>,

    /// Read messages but never print anything: not even system/init.
    #[arg(long, env = "HUM_SIM_NEVER_ANSWER", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_never_answer: bool,

    /// Exit with --sim-crash-code mid-turn after N text deltas.
    #[arg(long, env = "HUM_SIM_CRASH_AFTER_CHUNKS", value_name = "N", help_heading = KNOBS)]
    pub sim_crash_after_chunks: Option<usize>,

    /// Exit code of a crash.
    #[arg(long, env = "HUM_SIM_CRASH_CODE", default_value_t = 3, value_name = "CODE", help_heading = KNOBS)]
    pub sim_crash_code: i32,

    /// End turns with an is_error result instead of a success.
    #[arg(long, env = "HUM_SIM_ERROR_RESULT", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_error_result: bool,

    /// The message of an is_error result.
    #[arg(long, env = "HUM_SIM_ERROR_MESSAGE", default_value = "API Error: simulated failure", value_name = "TEXT", help_heading = KNOBS)]
    pub sim_error_message: String,

    /// The first turn of this process (counting from 1) that the stall,
    /// crash and error knobs apply to; earlier turns are normal.
    #[arg(long, env = "HUM_SIM_FAULT_TURN", default_value_t = 1, value_name = "N", help_heading = KNOBS)]
    pub sim_fault_turn: u64,

    /// Apply the stall, never-answer, crash and error knobs only to turns
    /// whose prompt contains TEXT (others answer normally).
    #[arg(long, env = "HUM_SIM_FAULT_IF", value_name = "TEXT", help_heading = KNOBS)]
    pub sim_fault_if: Option<String>,

    /// Know no session: every --resume fails as unknown, every --session-id
    /// is accepted (a CLI whose session store is not where its caller looks).
    #[arg(long, env = "HUM_SIM_FORGET_SESSIONS", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_forget_sessions: bool,

    /// Hold this many MiB resident for the life of the process.
    #[arg(long, env = "HUM_SIM_BALLAST_MB", default_value_t = 0, value_name = "MIB", help_heading = KNOBS)]
    pub sim_ballast_mb: usize,

    /// Grow by this many MiB (resident) at the start of every turn, and
    /// keep it: a cell whose memory climbs turn after turn. A prompt's
    /// `SIM_GROW_MB <n>` grows that turn by n instead.
    #[arg(long, env = "HUM_SIM_GROW_MB", default_value_t = 0, value_name = "MIB", help_heading = KNOBS)]
    pub sim_grow_mb: usize,

    /// Input tokens every turn's `result` reports (default: 10 per turn
    /// number plus a quarter of the prompt's bytes). A prompt's
    /// `SIM_USAGE in=N out=N cache_read=N cache_creation=N cost=USD` sets
    /// any of these for its turn.
    #[arg(long, env = "HUM_SIM_INPUT_TOKENS", value_name = "N", help_heading = KNOBS)]
    pub sim_input_tokens: Option<u64>,

    /// Output tokens every turn's `result` reports (default: one per delta).
    #[arg(long, env = "HUM_SIM_OUTPUT_TOKENS", value_name = "N", help_heading = KNOBS)]
    pub sim_output_tokens: Option<u64>,

    /// Cache-read input tokens every turn's `result` reports.
    #[arg(long, env = "HUM_SIM_CACHE_READ_TOKENS", default_value_t = 0, value_name = "N", help_heading = KNOBS)]
    pub sim_cache_read_tokens: u64,

    /// Cache-creation input tokens every turn's `result` reports.
    #[arg(long, env = "HUM_SIM_CACHE_CREATION_TOKENS", default_value_t = 0, value_name = "N", help_heading = KNOBS)]
    pub sim_cache_creation_tokens: u64,

    /// `total_cost_usd` of every turn (default: the tokens at Sonnet's list
    /// prices).
    #[arg(long, env = "HUM_SIM_COST_USD", value_name = "USD", help_heading = KNOBS)]
    pub sim_cost_usd: Option<f64>,

    /// Start N stdio "MCP server" children in our process group before the
    /// first message; each exits when its stdin closes.
    #[arg(long, env = "HUM_SIM_MCP_SERVERS", default_value_t = 0, value_name = "N", help_heading = KNOBS)]
    pub sim_mcp_servers: usize,

    /// The MCP server children ignore stdin EOF (only a signal ends them).
    #[arg(long, env = "HUM_SIM_MCP_IGNORE_EOF", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_mcp_ignore_eof: bool,

    /// During the first turn, run a "Bash tool" command: a grandchild-to-be
    /// that calls setsid (own session and process group, so a signal to our
    /// group misses it) and ignores SIGTERM.
    #[arg(long, env = "HUM_SIM_BASH_ESCAPEE", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_bash_escapee: bool,

    /// Like `--sim-bash-escapee`, and the command also starts with an empty
    /// environment (no tag inherited): what only a cgroup or the parent
    /// chain can find.
    #[arg(long, env = "HUM_SIM_BASH_ESCAPEE_CLEAN_ENV", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_bash_escapee_clean_env: bool,

    /// Ignore SIGTERM (only SIGKILL ends the agent). Without this, SIGTERM
    /// behaves like claude's: kill the Bash tool children, SIGTERM the MCP
    /// servers, exit 143.
    #[arg(long, env = "HUM_SIM_IGNORE_SIGTERM", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_ignore_sigterm: bool,

    /// Ignore interrupts (`control_request` of subtype interrupt): a turn
    /// runs or stalls on as if none came, so a cancel must tear the cell
    /// down. Without this, an interrupt ends the turn as claude's does.
    #[arg(long, env = "HUM_SIM_IGNORE_INTERRUPT", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_ignore_interrupt: bool,

    /// Mid-turn, after the first text delta, wait until FILE exists (an
    /// interrupt still ends the wait): a turn a test holds open until it
    /// says so. Like the other fault knobs, only for turns
    /// --sim-fault-if and --sim-fault-turn pick.
    #[arg(long, env = "HUM_SIM_HOLD_UNTIL_FILE", value_name = "FILE", help_heading = KNOBS)]
    pub sim_hold_until_file: Option<std::path::PathBuf>,

    /// Append a JSON line to FILE when a turn starts and when it ends
    /// (`start`, `done`, `error`, `interrupted`), with the time, pid,
    /// session and prompt: how a test counts the turns an agent really ran,
    /// as a mock API counts claude's model calls.
    #[arg(long, env = "HUM_SIM_TURN_LOG", value_name = "FILE", help_heading = KNOBS)]
    pub sim_turn_log: Option<std::path::PathBuf>,

    /// Speak the Agent Client Protocol on stdin/stdout instead of claude's
    /// stream-json: an ACP agent (the way claude-agent-acp puts claude
    /// behind ACP) whose sessions are this simulator's, run as a child
    /// with every other flag and knob; `ASK_PERMISSION <tool>` is asked of
    /// the client with `session/request_permission`.
    #[arg(long, env = "HUM_SIM_ACP", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub acp: bool,

    /// With --acp: do not offer `loadSession` (an agent whose sessions do
    /// not outlive its process).
    #[arg(long, env = "HUM_SIM_ACP_NO_LOAD", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_acp_no_load: bool,

    /// With --acp: replay a loaded session's history after answering
    /// `session/load` (50 ms later), as Gemini CLI does, not before.
    #[arg(long, env = "HUM_SIM_ACP_LATE_REPLAY", help_heading = KNOBS, value_parser = BoolishValueParser::new())]
    pub sim_acp_late_replay: bool,

    /// Internal: which helper process this is.
    #[arg(long, value_enum, default_value = "agent", hide = true)]
    pub sim_role: Role,
}
