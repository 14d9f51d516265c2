//! What a cell is started with, decided from the prompt that starts it, the
//! hive and the worker's config — a pure function, tested without
//! processes — and the stream-json line each prompt becomes on its stdin.

use super::argv::CellArgs;
use super::builtin::BuiltinTools;
use super::Hive;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use thrum::Prompt;

/// Everything a cell's start depends on besides the cell layer itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchPlan {
    pub args: CellArgs,
    /// Where the agent runs: the prompt's cwd, else the config's, else the
    /// worker's own.
    pub cwd: PathBuf,
    /// The hive's configured environment (added to the allow-listed one).
    pub env: Vec<(OsString, OsString)>,
    /// Where the CLI keeps its transcripts (`$CLAUDE_CONFIG_DIR`, else
    /// `$HOME/.claude`, the hive's env first), to choose resume or create.
    pub config_dir: PathBuf,
}

/// Where the worker itself stands, for what a prompt leaves open.
#[derive(Debug, Clone, Copy)]
pub struct Defaults<'a> {
    pub cwd: Option<&'a Path>,
    pub model: Option<&'a str>,
}

/// The plan for a cell that `prompt` starts in `hive`. `process_env` reads
/// the worker's environment (passed in, so the function stays pure).
pub fn plan(
    prompt: &Prompt,
    hive: &Hive,
    defaults: Defaults<'_>,
    process_env: impl Fn(&str) -> Option<OsString>,
) -> LaunchPlan {
    let var = |k: &str| {
        hive.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| PathBuf::from(v))
            .or_else(|| process_env(k).map(PathBuf::from))
    };
    let config_dir = var("CLAUDE_CONFIG_DIR").unwrap_or_else(|| {
        var("HOME")
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(".claude")
    });
    let cwd = prompt
        .cwd
        .clone()
        .map(PathBuf::from)
        .or_else(|| defaults.cwd.map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/"));
    LaunchPlan {
        args: CellArgs {
            model: prompt
                .model_id
                .clone()
                .or_else(|| defaults.model.map(str::to_owned)),
            system_prompt: prompt.system_prompt.clone(),
            system_prompt_file: None,
            allowed_tools: prompt.allowed_tools.clone().unwrap_or_default(),
            disallowed_tools: prompt.disallowed_tools.clone().unwrap_or_default(),
            mcp_config: None,
            permission_mode: hive.permission_mode.clone(),
            permission_prompt_tool: None,
            tools: builtin_for(prompt, hive).flag(),
        },
        cwd,
        env: hive
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect(),
        config_dir,
    }
}

/// The agent's own tools a cell of `hive` started for `prompt` has: the
/// hive's, narrowed to what the prompt asks (a request that does not read
/// as a set, refused at arrival, would get none).
pub fn builtin_for(prompt: &Prompt, hive: &Hive) -> BuiltinTools {
    let asked = match &prompt.builtin_tools {
        None => BuiltinTools::Default,
        Some(v) => BuiltinTools::read(v).unwrap_or_else(|_| BuiltinTools::none()),
    };
    hive.builtin_tools.narrowed_by(&asked)
}

/// The stream-json line (newline included) that gives `prompt` to the CLI:
/// its content blocks as they came, else its text.
pub fn user_line(prompt: &Prompt) -> Vec<u8> {
    let content = match (&prompt.content, prompt.user_text()) {
        (Some(c @ Value::Array(_)), _) => c.clone(),
        (_, Some(text)) => Value::String(text),
        (Some(c), None) => c.clone(),
        (None, None) => Value::String(String::new()),
    };
    let msg = json!({"type": "user", "message": {"role": "user", "content": content}, "parent_tool_use_id": null});
    format!("{msg}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(env: &[(&str, &str)]) -> Hive {
        Hive {
            name: "sim".into(),
            program: PathBuf::from("/bin/hum"),
            prefix_args: vec!["sim-agent".into()],
            models: vec!["sim".into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            permission_mode: None,
            permit_by_default: false,
            builtin_tools: BuiltinTools::Default,
            protocol: Default::default(),
        }
    }

    #[test]
    fn the_prompt_wins_then_the_config_then_the_worker() {
        let prompt = Prompt {
            model_id: Some("opus".into()),
            cwd: Some("/work/a".into()),
            allowed_tools: Some(vec!["Read".into()]),
            ..Default::default()
        };
        let defaults = Defaults {
            cwd: Some(Path::new("/srv")),
            model: Some("sonnet"),
        };
        let p = plan(&prompt, &sim(&[]), defaults, |_| None);
        assert_eq!(
            (p.args.model.as_deref(), p.cwd.as_path()),
            (Some("opus"), Path::new("/work/a"))
        );
        assert_eq!(p.args.allowed_tools, ["Read"]);
        let bare = plan(&Prompt::default(), &sim(&[]), defaults, |_| None);
        assert_eq!(
            (bare.args.model.as_deref(), bare.cwd.as_path()),
            (Some("sonnet"), Path::new("/srv"))
        );
    }

    #[test]
    fn transcripts_live_where_the_hive_env_says_before_the_workers() {
        let env = |k: &str| (k == "HOME").then(|| OsString::from("/home/w"));
        let d = Defaults {
            cwd: None,
            model: None,
        };
        let from_home = plan(&Prompt::default(), &sim(&[]), d, env);
        assert_eq!(from_home.config_dir, Path::new("/home/w/.claude"));
        let hive = sim(&[("CLAUDE_CONFIG_DIR", "/etc/cc"), ("HOME", "/home/h")]);
        let from_hive = plan(&Prompt::default(), &hive, d, env);
        assert_eq!(from_hive.config_dir, Path::new("/etc/cc"));
        assert_eq!(from_hive.env.len(), 2, "the hive's env goes to the cell");
    }

    #[test]
    fn a_prompt_becomes_one_user_line() {
        let p = Prompt {
            text: Some("hi \"there\"\nyou".into()),
            ..Default::default()
        };
        let line = user_line(&p);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["message"]["content"], "hi \"there\"\nyou");
        assert_eq!(v["type"], "user");
    }
}
