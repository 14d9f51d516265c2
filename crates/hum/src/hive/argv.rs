//! The CLI's command line. No shell: a vector of arguments, and every value
//! attached as `--flag=value`, so a value starting with `-` can never become
//! a flag of its own. Model ids are checked against a strict pattern first.

use super::session::SessionStart;

/// What one cell is started with (fixed for the life of the cell).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CellArgs {
    pub model: Option<String>,
    /// The system prompt: checked here, given to the CLI only as the file
    /// below (argv is readable by every local user).
    pub system_prompt: Option<String>,
    /// Where the system prompt was written (`--system-prompt-file`).
    pub system_prompt_file: Option<std::path::PathBuf>,
    pub allowed_tools: Vec<String>,
    pub disallowed_tools: Vec<String>,
    /// The MCP configuration naming the `hum` server (the bees' tools),
    /// as JSON; its tools are allowed without asking.
    pub mcp_config: Option<String>,
    /// `--permission-mode`.
    pub permission_mode: Option<String>,
    /// The MCP tool claude asks for permissions (`--permission-prompt-tool`).
    pub permission_prompt_tool: Option<String>,
    /// `--tools`: the agent's own tools, when not its default set (`""`:
    /// none).
    pub tools: Option<String>,
}

/// The permission modes claude 2.1.332 accepts (`--permission-mode`).
pub const PERMISSION_MODES: [&str; 5] = [
    "default",
    "acceptEdits",
    "bypassPermissions",
    "plan",
    "dontAsk",
];

/// The MCP server name the bridge uses: the agent sees `mcp__hum__<tool>`.
pub const BRIDGE_SERVER: &str = "hum";

/// Why a request cannot become a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("modelId {0:?} is not a model name (letters, digits and . _ : @ / - only, starting with a letter or digit)")]
    BadModel(String),
    #[error("{field} contains a NUL byte")]
    Nul { field: &'static str },
    #[error("tool name {0:?} is not a tool name")]
    BadTool(String),
    #[error("permission mode {0:?} is not one claude knows")]
    BadPermissionMode(String),
    #[error("{0} would go into the CLI's argv, where every local user can read it")]
    SecretInArgv(&'static str),
}

/// `^[A-Za-z0-9][A-Za-z0-9._:@/-]*$`, as the spec requires.
pub fn valid_model_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._:@/-".contains(c))
}

/// Tool names and patterns (`Bash(git *)`, `mcp__server__tool`) go into one
/// comma-separated value: no commas, no control characters.
fn valid_tool(t: &str) -> bool {
    !t.is_empty() && !t.contains(',') && !t.chars().any(char::is_control)
}

/// The arguments every stream-json cell starts with: print mode, JSON in
/// and out, partial messages for streaming.
pub const STREAM_JSON_ARGS: [&str; 5] = [
    "-p",
    "--verbose",
    "--input-format=stream-json",
    "--output-format=stream-json",
    "--include-partial-messages",
];

/// claude's argv for a stream-json cell.
pub fn build(args: &CellArgs, session: &SessionStart) -> Result<Vec<String>, ArgError> {
    let mut argv: Vec<String> = STREAM_JSON_ARGS.iter().map(|s| s.to_string()).collect();
    if let Some(model) = &args.model {
        if !valid_model_id(model) {
            return Err(ArgError::BadModel(model.clone()));
        }
        argv.push(format!("--model={model}"));
    }
    if let Some(sp) = &args.system_prompt {
        if sp.contains('\0') {
            return Err(ArgError::Nul {
                field: "systemPrompt",
            });
        }
        // Never the text itself: the runner writes it to a private file.
        let Some(file) = &args.system_prompt_file else {
            return Err(ArgError::SecretInArgv("systemPrompt"));
        };
        argv.push(format!("--system-prompt-file={}", file.display()));
    }
    if let Some(mode) = &args.permission_mode {
        if !PERMISSION_MODES.contains(&mode.as_str()) {
            return Err(ArgError::BadPermissionMode(mode.clone()));
        }
        argv.push(format!("--permission-mode={mode}"));
    }
    if let Some(tool) = &args.permission_prompt_tool {
        if !valid_tool(tool) {
            return Err(ArgError::BadTool(tool.clone()));
        }
        argv.push(format!("--permission-prompt-tool={tool}"));
    }
    if let Some(tools) = &args.tools {
        if let Some(bad) = tools.split(',').find(|t| !t.is_empty() && !valid_tool(t)) {
            return Err(ArgError::BadTool(bad.to_owned()));
        }
        argv.push(format!("--tools={tools}"));
    }
    let mut allowed = args.allowed_tools.clone();
    if let Some(cfg) = &args.mcp_config {
        if cfg.contains('\0') {
            return Err(ArgError::Nul { field: "mcpConfig" });
        }
        argv.push(format!("--mcp-config={cfg}"));
        // Only the bridge's server: a user's own MCP config stays out.
        argv.push("--strict-mcp-config".into());
        allowed.push(format!("mcp__{BRIDGE_SERVER}"));
    }
    for (flag, tools) in [
        ("--allowed-tools", &allowed),
        ("--disallowed-tools", &args.disallowed_tools),
    ] {
        if tools.is_empty() {
            continue;
        }
        if let Some(bad) = tools.iter().find(|t| !valid_tool(t)) {
            return Err(ArgError::BadTool(bad.clone()));
        }
        argv.push(format!("{flag}={}", tools.join(",")));
    }
    argv.push(match session {
        SessionStart::Resume(id) => format!("--resume={id}"),
        SessionStart::Create(id) => format!("--session-id={id}"),
    });
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_follow_the_pattern() {
        for ok in [
            "claude-sonnet-4-5",
            "sonnet",
            "anthropic/claude-3.5:beta",
            "m@1",
            "9x",
        ] {
            assert!(valid_model_id(ok), "{ok}");
        }
        for bad in [
            "",
            "--dangerously-skip-permissions",
            "-x",
            "a b",
            "a\nb",
            "ü",
            "a;b",
            ".hidden",
        ] {
            assert!(!valid_model_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_bridge_is_the_only_mcp_server_and_its_tools_are_allowed() {
        let args = CellArgs {
            allowed_tools: vec!["Read".into()],
            mcp_config: Some(r#"{"mcpServers":{"hum":{}}}"#.into()),
            ..Default::default()
        };
        let argv = build(&args, &SessionStart::Create("u".into())).unwrap();
        assert!(argv.contains(&r#"--mcp-config={"mcpServers":{"hum":{}}}"#.to_owned()));
        assert!(argv.contains(&"--strict-mcp-config".to_owned()));
        assert!(argv.contains(&"--allowed-tools=Read,mcp__hum".to_owned()));
        let nul = CellArgs {
            mcp_config: Some("a\0b".into()),
            ..Default::default()
        };
        assert!(build(&nul, &SessionStart::Create("u".into())).is_err());
    }

    #[test]
    fn every_value_is_attached_to_its_flag() {
        let args = CellArgs {
            model: Some("sonnet".into()),
            system_prompt: Some("--resume=evil".into()),
            system_prompt_file: Some("/state/prompts/1/p.txt".into()),
            allowed_tools: vec!["Read".into(), "Bash(git *)".into()],
            disallowed_tools: vec!["Write".into()],
            ..Default::default()
        };
        let argv = build(&args, &SessionStart::Create("u".into())).unwrap();
        assert_eq!(
            argv,
            [
                "-p",
                "--verbose",
                "--input-format=stream-json",
                "--output-format=stream-json",
                "--include-partial-messages",
                "--model=sonnet",
                "--system-prompt-file=/state/prompts/1/p.txt",
                "--allowed-tools=Read,Bash(git *)",
                "--disallowed-tools=Write",
                "--session-id=u",
            ]
        );
        assert!(
            build(&CellArgs::default(), &SessionStart::Resume("r".into()))
                .unwrap()
                .ends_with(&["--resume=r".to_string()])
        );
    }

    #[test]
    fn a_system_prompt_never_goes_into_argv() {
        let args = CellArgs {
            system_prompt: Some("the launch code is 0000".into()),
            ..Default::default()
        };
        assert_eq!(
            build(&args, &SessionStart::Create("u".into())),
            Err(ArgError::SecretInArgv("systemPrompt"))
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let s = SessionStart::Create("u".into());
        let bad_model = CellArgs {
            model: Some("--dangerously-skip-permissions".into()),
            ..Default::default()
        };
        assert!(matches!(build(&bad_model, &s), Err(ArgError::BadModel(_))));
        let nul = CellArgs {
            system_prompt: Some("a\0b".into()),
            ..Default::default()
        };
        assert!(matches!(build(&nul, &s), Err(ArgError::Nul { .. })));
        let comma = CellArgs {
            allowed_tools: vec!["Read,Write".into()],
            ..Default::default()
        };
        assert!(matches!(build(&comma, &s), Err(ArgError::BadTool(_))));
    }
}
