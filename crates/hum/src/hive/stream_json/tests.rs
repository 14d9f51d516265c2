use super::*;
use serde_json::json;

fn fixture(name: &str) -> Vec<Line> {
    crate::hive::fixture(name).iter().map(Line::read).collect()
}

#[test]
fn the_captured_turn_reads_as_init_a_message_and_its_result() {
    let lines = fixture("turn1.jsonl");
    let Line::Init(init) = &lines[0] else {
        panic!("{:?}", lines[0])
    };
    assert_eq!(init.model.as_deref(), Some("claude-haiku-4-5"));
    assert!(init.tools.as_ref().is_some_and(Value::is_array));
    assert!(lines.iter().any(|l| matches!(
        l,
        Line::Stream(StreamEvent::MessageStart(m)) if m.id.is_some() && m.usage.is_some()
    )));
    assert!(lines.iter().any(|l| matches!(
        l,
        Line::Stream(StreamEvent::BlockStart {
            kind: BlockKind::Text,
            ..
        })
    )));
    let text: String = lines
        .iter()
        .filter_map(|l| match l {
            Line::Stream(StreamEvent::BlockDelta {
                delta: Delta::Text(Some(t)),
                ..
            }) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "MOCK-REPLY #1: you said <hi>");
    assert!(lines
        .iter()
        .any(|l| matches!(l, Line::Assistant(m) if m.id.is_some())));
    let Some(Line::Result(r)) = lines.last() else {
        panic!("{:?}", lines.last())
    };
    assert!(!r.is_error);
    assert_eq!(
        (r.subtype.as_deref(), r.stop_reason.as_deref()),
        (Some("success"), Some("end_turn"))
    );
    assert!(r.total_cost_usd.is_some() && r.model_usage.is_some());
}

#[test]
fn an_unknown_resume_reads_as_an_error_result_with_its_messages() {
    let lines = fixture("resume-unknown.stdout.jsonl");
    let Line::Result(r) = &lines[0] else {
        panic!("{:?}", lines[0])
    };
    assert!(r.is_error);
    assert!(r.error_list()[0].starts_with("No conversation found"));
}

#[test]
fn odd_shapes_read_as_absent_fields_or_other_never_an_error() {
    assert_eq!(Line::read(&json!([1, 2])), Line::Other);
    assert_eq!(Line::read(&json!({"type": 7})), Line::Other);
    assert_eq!(
        Line::read(&json!({"type": "control_response"})),
        Line::Other
    );
    assert_eq!(
        Line::read(&json!({"type": "system", "subtype": "init", "session_id": 5, "model": ["x"]})),
        Line::Init(Init::default())
    );
    assert_eq!(
        Line::read(&json!({"type": "stream_event", "event": "nope"})),
        Line::Stream(StreamEvent::Other)
    );
    assert_eq!(
        Line::read(
            &json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": "0", "delta": {"type": "text_delta", "text": 3}}})
        ),
        Line::Stream(StreamEvent::BlockDelta {
            index: None,
            delta: Delta::Text(None)
        })
    );
    let Line::Result(r) = Line::read(&json!({"type": "result", "is_error": "yes", "errors": "x"}))
    else {
        panic!()
    };
    assert!(!r.is_error && r.error_list().is_empty());
}
