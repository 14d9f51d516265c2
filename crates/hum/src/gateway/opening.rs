//! Where a request's turn comes from, the same for both APIs: the parked
//! turn its results answer, a new turn of a released one's sid, or a new
//! turn under the sid affinity picks (a parked conversation's, when the
//! request goes on from one); and a repair turn of structured output.

use super::calls::{NotParked, Owner, Resumed, ToolAnswer};
use super::functions::{with_instruction, Choice, FunctionSpec};
use super::released;
use super::turn::{Failure, Turn};
use serde_json::Value;

/// What a request brings to its turn.
pub struct Opening<'a> {
    /// Results of a previous response's calls (the request continues that
    /// turn when there are any).
    pub answers: Vec<ToolAnswer>,
    /// The explicit session header and the body's user id, for affinity.
    pub header: Option<String>,
    /// `x-hum-bee`: whom the turn's usage is filed under.
    pub bee: Option<String>,
    pub user: Option<&'a str>,
    pub messages: &'a [super::affinity::Message],
    pub model: &'a str,
    pub system: Option<String>,
    pub offered: &'a [FunctionSpec],
    pub choice: &'a Choice,
    /// The shape the final answer must have.
    pub format: Option<&'a super::structured::Wanted>,
    /// Results that name no call answer the calls of the conversation's
    /// waiting turn in order (Ollama's, whose calls carry no id).
    pub by_position: bool,
}

/// The turn a request gets: its sid, whether it was parked before, and the
/// conversation it belongs to (whoever may answer the calls it ends with).
pub struct Opened {
    pub sid: String,
    pub turn: Turn,
    pub resumed: bool,
    pub owner: Owner,
}

/// The turn a request continues or starts, the same for both APIs: the
/// parked one its `answers` answer (a wrong id is a `bad_request`), else a
/// new one under the sid affinity picks, once any turn of that sid still
/// waiting for results has been cancelled.
pub async fn open(gw: &super::Gateway, o: Opening<'_>) -> Result<Opened, Failure> {
    let owner = Owner::of(o.header.as_deref(), o.user, o.messages);
    if !o.answers.is_empty() {
        // The turn's own conversation, or its sid named outright (the
        // session header, or a previous response's id).
        let from = |sid: &str, w: &Owner| {
            o.header.as_deref() == Some(sid)
                || w.continued_by(o.header.as_deref(), o.user, o.messages)
        };
        let mut answers = o.answers.clone();
        if o.by_position && answers.iter().any(|a| a.call_id.is_empty()) {
            // Only the conversation itself may claim a turn this way: a
            // session header alone names a sid, not which calls.
            let conversation =
                |_: &str, w: &Owner| w.continued_by(o.header.as_deref(), o.user, o.messages);
            let bad = |why: String| Failure {
                code: thrum::ErrorCode::BadRequest,
                message: why,
                retry_after_ms: None,
            };
            let calls = gw
                .parked
                .calls_continued_by(conversation)
                .map_err(|NotParked(why)| bad(why))?;
            name_answers(&mut answers, &calls).map_err(bad)?;
        }
        return match gw.parked.resume(answers.clone(), from).await {
            Ok(Resumed::Parked(sid, turn)) => Ok(Opened {
                sid,
                turn: *turn,
                resumed: true,
                owner,
            }),
            // The turn had given its cell back: a new turn of its sid hands
            // the agent the results.
            Ok(Resumed::Late(late)) => {
                let text = released::continuation(&late.calls, &answers);
                let claim = gw.in_flight.claim(&late.sid);
                let mut turn = start(gw, &o, &late.sid, &text).await?;
                turn.hold(claim);
                Ok(Opened {
                    sid: late.sid,
                    turn,
                    resumed: false,
                    owner,
                })
            }
            Err(NotParked(why)) => Err(Failure {
                code: thrum::ErrorCode::BadRequest,
                message: why,
                retry_after_ms: None,
            }),
        };
    }
    // Decided and claimed under the affinity lock: two requests of one
    // history cannot both find its sid free.
    let (decision, claim, taken) = {
        let mut affinity = gw.affinity.lock().expect("affinity lock");
        let mut decision = affinity.decide(o.header.as_deref(), o.user, o.messages, |sid| {
            gw.in_flight.busy(sid)
        });
        // A later message of a conversation whose turn waits for results
        // (or gave its cell back) belongs to that conversation's sid,
        // header or not: the cell holds it all, so only the new message
        // goes. Taken here too: of two such messages at once that name no
        // session (no header, no user), the second finds the sid busy and
        // gets its own, its history replayed; a named session is the
        // client's choice, and its messages queue on it.
        let taken = gw
            .parked
            .take_conversation(o.header.as_deref(), o.user, o.messages);
        if let Some((sid, _)) = &taken {
            decision.sid = sid.clone();
            decision.prompt = o
                .messages
                .last()
                .map(|m| m.text.clone())
                .unwrap_or_default();
        }
        let claim = gw.in_flight.claim(&decision.sid);
        (decision, claim, taken)
    };
    if let Some((_, waiting)) = taken {
        gw.parked.cancel(&decision.sid, waiting).await;
    }
    gw.parked.abandon(&decision.sid).await;
    let mut turn = start(gw, &o, &decision.sid, &decision.prompt).await?;
    turn.hold(claim);
    Ok(Opened {
        sid: decision.sid,
        turn,
        resumed: false,
        owner,
    })
}

/// Gives results that name no call (Ollama's) the ids of the calls they
/// answer, in order: the `n`th result answers the `n`th call of the
/// conversation's turn that waits for them.
pub fn name_answers(answers: &mut [ToolAnswer], calls: &[thrum::ToolCall]) -> Result<(), String> {
    if answers.iter().any(|a| !a.call_id.is_empty()) {
        return Err("some tool results name their call and some do not: name all or none".into());
    }
    if calls.is_empty() {
        return Err("no call of this conversation is waiting for a result (unknown, already answered or expired)".into());
    }
    if answers.len() != calls.len() {
        return Err(format!(
            "{} tool results answer {} calls: send one `tool` message per call, in the order of the calls",
            answers.len(),
            calls.len()
        ));
    }
    for (a, c) in answers.iter_mut().zip(calls) {
        a.call_id.clone_from(&c.call_id);
    }
    Ok(())
}

/// A new turn of `sid` saying `text`, with the request's functions.
async fn start(
    gw: &super::Gateway,
    o: &Opening<'_>,
    sid: &str,
    text: &str,
) -> Result<Turn, Failure> {
    let tools = (!o.offered.is_empty())
        .then(|| Value::Array(o.offered.iter().map(FunctionSpec::asker_tool).collect()));
    let text = with_instruction(text, o.choice.instruction(o.offered));
    let text = with_instruction(&text, o.format.and_then(super::structured::instruction));
    let prompt = thrum::Prompt {
        system_prompt: o.system.clone(),
        tools,
        // Only the client's functions, unless hum.json lets the agent's
        // own tools serve HTTP callers too.
        builtin_tools: serde_json::to_value(&gw.builtin_tools).ok(),
        ..crate::client::Client::text_prompt(&text, Some(o.model))
    };
    Turn::send(&gw.socket, sid, prompt, o.bee.as_deref()).await
}

/// A further turn of `sid` saying `text` (a repair of its answer), with
/// the request's functions and the gateway's set of the agent's own tools.
pub async fn follow_up(
    gw: &super::Gateway,
    sid: &str,
    model: &str,
    text: &str,
    offered: &[FunctionSpec],
    bee: Option<&str>,
) -> Result<Turn, Failure> {
    let tools = (!offered.is_empty())
        .then(|| Value::Array(offered.iter().map(FunctionSpec::asker_tool).collect()));
    let prompt = thrum::Prompt {
        tools,
        builtin_tools: serde_json::to_value(&gw.builtin_tools).ok(),
        ..crate::client::Client::text_prompt(text, Some(model))
    };
    let claim = gw.in_flight.claim(sid);
    let mut turn = Turn::send(&gw.socket, sid, prompt, bee).await?;
    turn.hold(claim);
    Ok(turn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> thrum::ToolCall {
        thrum::ToolCall {
            call_id: id.into(),
            tool_name: "t".into(),
            args: Value::Null,
            usage: None,
            extra: Default::default(),
        }
    }

    fn unnamed(output: &str) -> ToolAnswer {
        ToolAnswer {
            call_id: String::new(),
            output: output.into(),
            is_error: false,
        }
    }

    #[test]
    fn unnamed_results_answer_the_waiting_calls_in_order() {
        let mut answers = vec![unnamed("a"), unnamed("b")];
        name_answers(&mut answers, &[call("c1"), call("c2")]).unwrap();
        assert_eq!(answers[0].call_id, "c1");
        assert_eq!(answers[1].call_id, "c2");
        let e = name_answers(&mut [unnamed("a")], &[call("c1"), call("c2")]).unwrap_err();
        assert!(e.contains("1 tool results answer 2 calls"), "{e}");
        let e = name_answers(&mut [unnamed("a")], &[]).unwrap_err();
        assert!(e.contains("no call"), "{e}");
        let mut mixed = vec![unnamed("a"), unnamed("b")];
        mixed[0].call_id = "c2".into();
        let e = name_answers(&mut mixed, &[call("c1"), call("c2")]).unwrap_err();
        assert!(e.contains("name all or none"), "{e}");
        assert_eq!(mixed[0].call_id, "c2", "a named result is never renamed");
    }
}
