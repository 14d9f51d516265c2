//! How every hum process logs: to stderr, as text or JSON, filtered by
//! `HUM_LOG`; and which format this process chose, for the helpers it
//! starts (the sentinel logs into the worker's log in the worker's format).

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The log format of this process, for helpers it starts (the sentinel
/// logs into the worker's log in the worker's format).
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// `text` or `json`: what `--log-format` this process runs with.
pub fn log_format_name() -> &'static str {
    match LOG_FORMAT.get() {
        Some(LogFormat::Json) => "json",
        _ => "text",
    }
}

/// Logs to stderr filtered by `HUM_LOG` (default `info`): plain text, with
/// colour only on a terminal, or one JSON object per line.
pub fn init_logging(format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
    use std::io::IsTerminal;
    let filter =
        // rmcp warns about every MCP method it does not serve (claude
        // 2.1.332 asks for one on each session): errors only from it.
        tracing_subscriber::EnvFilter::try_from_env("HUM_LOG")
            .unwrap_or_else(|_| "info,rmcp=error".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(crate::logsafe::text_fields())
            .try_init(),
    };
}
