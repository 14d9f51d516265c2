//! Permission asks: claude's through the bridge's permit tool, an ACP
//! agent's through its runner; both asked of the sid's asker (humd routes
//! the ask), else the hive's default.

use super::{call_id, permit_args, permit_question, Answer, Bridge, CellTools, ToolAnswer};
use serde_json::Value;
use std::time::Duration;

/// What claude's permission prompt tool answers: run the tool (with the
/// asker's changes to its input, if any), or do not and say why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "behavior", rename_all = "lowercase")]
pub(super) enum Verdict {
    Allow {
        #[serde(rename = "updatedInput")]
        updated_input: Value,
    },
    Deny {
        message: String,
    },
}

impl Verdict {
    /// The verdict for `tool` with `input`, from the asker's answer (none:
    /// nobody answered in time, `waited` long), else the hive's default.
    pub(super) fn of(
        answer: Option<Answer>,
        tool: &str,
        input: Value,
        by_default: bool,
        waited: Duration,
    ) -> Verdict {
        let (decision, message, updated) = match answer {
            Some(Answer::Permit(p)) => (
                p.decision,
                p.message,
                p.updated_input.filter(Value::is_object),
            ),
            Some(Answer::Result(_)) => (
                Some(thrum::Decision::Deny),
                Some("a tool result came for a permission ask".to_owned()),
                None,
            ),
            None => (
                Some(thrum::Decision::Deny),
                Some(format!(
                    "nobody answered the permission ask within {} ms",
                    waited.as_millis()
                )),
                None,
            ),
        };
        let allow = match decision {
            Some(thrum::Decision::Allow) => true,
            Some(_) => false,
            None => by_default,
        };
        if allow {
            Verdict::Allow {
                updated_input: updated.unwrap_or(input),
            }
        } else {
            Verdict::Deny {
                message: message.unwrap_or_else(|| format!("the user denied {tool}")),
            }
        }
    }
}

impl Bridge {
    /// claude asks whether `args.tool_name` may run with `args.input`: the
    /// sid's asker decides (humd routes the ask), else the hive's default;
    /// no answer in time is a deny. Answers as claude's permission prompt
    /// tool must: `{"behavior": "allow", "updatedInput": …}` or
    /// `{"behavior": "deny", "message": …}`.
    pub(super) async fn ask_permission(&self, cell: &CellTools, args: Value) -> ToolAnswer {
        let (tool, input) = permit_args::PermitArgs::read(args);
        let (answer, call_id) = self.permission_round(cell, &tool, &input, None).await;
        let verdict = Verdict::of(
            answer,
            &tool,
            input,
            cell.permit_by_default,
            self.permit_timeout,
        );
        let allow = matches!(verdict, Verdict::Allow { .. });
        tracing::info!(event = "permit.decided", sid = %cell.sid, call = %call_id, tool = %tool, allow, "permission decided");
        ToolAnswer {
            output: Value::String(serde_json::to_string(&verdict).unwrap_or_default()),
            is_error: false,
        }
    }

    /// An ACP agent's `session/request_permission`, asked of the sid's
    /// asker as claude's are, the agent's `options` beside: allowed or not
    /// (the same rules and default), and the option the asker named by
    /// `optionId`, if it named one.
    pub async fn ask_acp_permission(
        &self,
        cell: &CellTools,
        tool: &str,
        input: Value,
        options: Value,
    ) -> (bool, Option<String>) {
        let (answer, call_id) = self
            .permission_round(cell, tool, &input, Some(options))
            .await;
        let named = match &answer {
            Some(Answer::Permit(p)) => p.option_id.clone(),
            _ => None,
        };
        let verdict = Verdict::of(
            answer,
            tool,
            input,
            cell.permit_by_default,
            self.permit_timeout,
        );
        let allow = matches!(verdict, Verdict::Allow { .. });
        tracing::info!(event = "permit.decided", sid = %cell.sid, call = %call_id, tool = %tool, allow, "permission decided");
        (allow, named)
    }

    /// Sends a `permission-ask` for `tool` and waits for its answer (none
    /// in time: `None`); also its call id.
    async fn permission_round(
        &self,
        cell: &CellTools,
        tool: &str,
        input: &Value,
        options: Option<Value>,
    ) -> (Option<Answer>, String) {
        let call_id = call_id("permit");
        let mut body = thrum::PermissionAsk {
            call_id: call_id.clone(),
            tool_name: tool.to_owned(),
            input: input.clone(),
            options,
            extra: Default::default(),
        };
        // thrum 0.7's shape beside hum's: `permitId`, a one-line
        // `question`, and `context`.
        body.extra
            .insert("permitId".into(), Value::String(call_id.clone()));
        body.extra.insert(
            "question".into(),
            Value::String(permit_question(tool, input)),
        );
        body.extra.insert(
            "context".into(),
            serde_json::json!({"toolName": tool, "input": input}),
        );
        tracing::info!(event = "permit.asking", sid = %cell.sid, call = %call_id, tool = %tool, "agent asks permission");
        let answer = self
            .round_trip(cell, &call_id, body.into(), self.permit_timeout)
            .await;
        (answer, call_id)
    }
}
