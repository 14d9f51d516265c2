//! The agent's tools: text before a call, rounds of MCP calls, and the
//! permission prompt tool, as claude uses them.

use super::*;

impl Agent {
    /// One message of text alone (what claude writes before it calls a
    /// tool).
    pub(super) fn say(&self, turn: &Turn, text: &str, partial: bool) {
        let usage = Usage::tokens(10, 1);
        if partial {
            emit_line(&turn.message_start(usage));
            emit_line(&turn.block_start(0, BlockKind::Text));
            emit_line(&turn.delta(0, BlockKind::Text, text));
            emit_line(&turn.block_stop(0));
            emit_line(&turn.message_delta(usage));
            emit_line(&turn.message_stop());
        }
        emit_line(&turn.assistant(None, text, usage));
    }

    /// Runs the tool calls a prompt asks for, as one assistant message of
    /// `tool_use` blocks, then one user message of their results (what
    /// claude prints when the model calls several tools at once). Returns
    /// (tool, output, is_error) per call.
    pub(super) fn use_tools(
        &mut self,
        turn: &Turn,
        calls: &[(String, Value)],
        partial: bool,
    ) -> Vec<(String, String, bool)> {
        let usage = Usage::tokens(10, calls.len() as u64);
        let full_name = |n: &str| {
            if n.starts_with("mcp__") {
                n.to_owned()
            } else {
                format!("mcp__{}__{n}", crate::hive::argv::BRIDGE_SERVER)
            }
        };
        let uses: Vec<(String, String, Value)> = calls
            .iter()
            .map(|(name, args)| {
                let id = format!(
                    "toolu_sim_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..20]
                );
                (id, full_name(name), args.clone())
            })
            .collect();
        if partial {
            emit_line(&turn.message_start(usage));
            for (i, (id, name, input)) in uses.iter().enumerate() {
                emit_line(&turn.tool_use_start(i, id, name));
                emit_line(&turn.input_delta(i, &input.to_string()));
                emit_line(&turn.block_stop(i));
            }
            emit_line(&turn.message_delta_tool_use(usage));
            emit_line(&turn.message_stop());
        }
        emit_line(&turn.assistant_tool_uses(&uses, usage));
        let mut results = Vec::new();
        let mut said = Vec::new();
        // All at once, as claude calls the tool uses of one message.
        let named: Vec<(String, Value)> = uses
            .iter()
            .map(|(_, name, input)| (name.clone(), input.clone()))
            .collect();
        let outcomes = match &self.mcp {
            Some(m) => m.call_all(&named),
            None => named
                .iter()
                .map(|(name, _)| mcp::CallOutcome {
                    text: format!("No such tool available: {name}"),
                    is_error: true,
                })
                .collect(),
        };
        for ((id, name, _), outcome) in uses.iter().zip(outcomes) {
            results.push((id.clone(), outcome.text.clone(), outcome.is_error));
            said.push((name.clone(), outcome.text, outcome.is_error));
        }
        emit_line(&turn.tool_results(&results));
        said
    }

    /// Asks `--permission-prompt-tool` whether `tool` may run, as claude
    /// does before a tool that needs permission; what the answer says.
    pub(super) fn ask_permission(&self, tool: &str) -> String {
        let (Some(prompt_tool), Some(m)) = (&self.args.permission_prompt_tool, &self.mcp) else {
            return format!(" [permission for {tool}: deny: no permission prompt tool]");
        };
        let out = m.call(
            prompt_tool,
            serde_json::json!({"tool_name": tool, "input": {}, "tool_use_id": "toolu_sim_permit"}),
        );
        let verdict: Value = serde_json::from_str(&out.text).unwrap_or(Value::Null);
        match verdict["behavior"].as_str() {
            Some("allow") if !out.is_error => format!(" [permission for {tool}: allow]"),
            _ => format!(
                " [permission for {tool}: deny: {}]",
                verdict["message"].as_str().unwrap_or(&out.text)
            ),
        }
    }

    /// What comes before the answer's text: permission asks, schemas
    /// described, then (streaming) the init line and each round of tool
    /// calls. Returns the answer's text so far.
    pub(super) fn tool_rounds(
        &mut self,
        turn: &Turn,
        prompt: &str,
        number: u64,
        rounds: &[Vec<(String, Value)>],
    ) -> String {
        let stream = self.args.output_format == OutputFormat::StreamJson;
        let partial = stream && self.args.include_partial_messages;
        let mut text = answer::answer_text(number, prompt, self.memory.last_prompt.as_deref());
        for tool in mcp::permission_asks_in(prompt) {
            text.push_str(&self.ask_permission(&tool));
        }
        for tool in mcp::describes_in(prompt) {
            let schema = self.mcp.as_ref().and_then(|m| m.schema_of(&tool));
            if schema.is_none() && self.tools.contains(&tool) {
                text.push_str(&answer::tool_built_in(&tool));
            } else {
                text.push_str(&answer::tool_takes(&tool, schema.as_ref()));
            }
        }
        if stream && !rounds.is_empty() {
            let mut tools = self.tools.clone();
            if let Some(m) = &self.mcp {
                tools.extend(m.tool_names());
            }
            emit_line(&turn.init(&self.cwd, &tools, &self.mcp_names));
            emit_line(&turn.status());
            if let Some(said) = mcp::say_first_in(prompt) {
                self.say(turn, &said, partial);
            }
            for round in rounds {
                for (name, output, is_error) in self.use_tools(turn, round, partial) {
                    text.push_str(&answer::tool_said(&name, &output, is_error));
                }
            }
        } else if stream {
            emit_line(&turn.init(&self.cwd, &self.tools, &self.mcp_names));
            emit_line(&turn.status());
        }
        text
    }

    /// Starts the escaping Bash tool command once, when a knob asks for it.
    pub(super) fn start_escapee(&self) {
        let escapee = self.args.sim_bash_escapee || self.args.sim_bash_escapee_clean_env;
        if escapee && !self.helpers.lock().expect("helpers lock").has_bash_tool() {
            let clean = self.args.sim_bash_escapee_clean_env;
            if let Err(e) = self
                .helpers
                .lock()
                .expect("helpers lock")
                .spawn_bash_tool(clean)
            {
                eprintln!("sim-agent: cannot start the Bash tool command: {e}");
            }
        }
    }
}
