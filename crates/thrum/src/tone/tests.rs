use crate::ChunkType;

#[test]
fn members_are_counted_outside_strings_only() {
    assert!(members_at_most(br#"{"a":1,"b":{"c":2}}"#, 3));
    assert!(!members_at_most(br#"{"a":1,"b":{"c":2}}"#, 2));
    assert!(members_at_most(br#"{"t":"a:b:c:d \" : e"}"#, 1));
    let many: String = (0..700_000).map(|i| format!(",\"f{i}\":0")).collect();
    let line = format!("{{\"chi\":\"x\"{many}}}");
    assert_eq!(
        Tone::decode(line.as_bytes()),
        Err(DecodeError::TooManyMembers { limit: MAX_MEMBERS })
    );
}

use super::*;
use serde_json::json;

fn round_trip(v: Value) -> Value {
    let line = serde_json::to_vec(&v).unwrap();
    let tone = Tone::decode(&line).unwrap();
    let out = tone.encode_line(usize::MAX).unwrap();
    assert_eq!(out.last(), Some(&b'\n'));
    serde_json::from_slice(&out[..out.len() - 1]).unwrap()
}

#[test]
fn worker_hello_decodes_typed_and_round_trips() {
    let v = json!({
        "chi": "hello", "rid": "abc-0", "bee": ["worker"], "hive": "claude-cli",
        "models": ["sonnet"], "propensity": {"statefulness": "stateful_session", "wire": "claude-cli", "x": 1},
        "chis": ["prompt"], "version": "0.1.0", "protoVersion": "0.7.0", "novel": {"a": [1, 2.5, null]}
    });
    let tone = Tone::decode(&serde_json::to_vec(&v).unwrap()).unwrap();
    let Body::Hello(h) = &tone.body else {
        panic!("not a hello: {tone:?}")
    };
    assert!(h.bee.as_ref().unwrap().contains("worker"));
    assert_eq!(h.hive.as_deref(), Some("claude-cli"));
    assert_eq!(h.extra["novel"], json!({"a": [1, 2.5, null]}));
    assert_eq!(tone.rid(), Some("abc-0"));
    assert_eq!(round_trip(v.clone()), v);
}

#[test]
fn unknown_chi_survives_with_its_envelope() {
    let v = json!({"chi": "future-thing", "sid": "s", "dusk": 17, "payload": {"deep": [true]}, "n": -3});
    let tone = Tone::decode(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(tone.chi(), "future-thing");
    assert_eq!(tone.sid(), Some("s"));
    assert_eq!(tone.envelope.dusk, Some(17));
    assert_eq!(round_trip(v.clone()), v);
}

#[test]
fn field_order_is_chi_envelope_body() {
    let v = json!({"zeta": 1, "sid": "s", "chi": "cleanup", "rid": "r"});
    let out = serde_json::to_string(&Tone::decode(v.to_string().as_bytes()).unwrap()).unwrap();
    assert_eq!(out, r#"{"chi":"cleanup","rid":"r","sid":"s","zeta":1}"#);
}

#[test]
fn unknown_chunk_type_is_kept_by_name() {
    let v = json!({"chi": "chunk", "sid": "s", "chunkType": "image_delta", "blockIdx": 2});
    let tone = Tone::decode(v.to_string().as_bytes()).unwrap();
    let Body::Chunk(c) = &tone.body else { panic!() };
    assert_eq!(c.chunk_type, ChunkType::Other("image_delta".into()));
    assert_eq!(round_trip(v.clone()), v);
}

#[test]
fn decode_errors_say_what_is_wrong() {
    assert!(matches!(
        Tone::decode(b"{nope"),
        Err(DecodeError::NotJson(_))
    ));
    assert_eq!(Tone::decode(b"[1,2]"), Err(DecodeError::NotObject));
    assert_eq!(
        Tone::decode(b"{\"sid\":\"x\"}"),
        Err(DecodeError::MissingChi)
    );
    assert_eq!(Tone::decode(b"{\"chi\":5}"), Err(DecodeError::MissingChi));
    let err = Tone::decode(br#"{"chi":"chunk","sid":"s"}"#).unwrap_err();
    assert!(
        matches!(&err, DecodeError::Invalid { chi, reason } if chi == "chunk" && reason.contains("chunkType")),
        "{err}"
    );
    let err = Tone::decode(br#"{"chi":"future","sid":7}"#).unwrap_err();
    assert!(
        matches!(&err, DecodeError::Invalid { reason, .. } if reason.contains("envelope")),
        "{err}"
    );
}

#[test]
fn encode_refuses_lines_over_the_limit() {
    let tone = Tone::new(ErrorTone::new("x".into(), "y".repeat(100)));
    assert!(matches!(
        tone.encode_line(50),
        Err(EncodeError::TooLong { limit: 50, .. })
    ));
    assert!(tone.encode_line(200).is_ok());
}

#[test]
fn a_tool_result_reads_from_output_or_result_as_senders_differ() {
    let with = |line: &str| match Tone::decode(line.as_bytes()).unwrap().body {
        Body::ToolResult(r) => r,
        other => panic!("{other:?}"),
    };
    let out = with(r#"{"chi":"tool-result","callId":"c","output":"o","isError":false}"#);
    assert_eq!(out.output(), Some(&Value::from("o")));
    let res = with(r#"{"chi":"tool-result","callId":"c","result":{"n":1}}"#);
    assert_eq!(res.output(), Some(&serde_json::json!({"n": 1})));
    let both = with(r#"{"chi":"tool-result","callId":"c","output":"o","result":"r"}"#);
    assert_eq!(both.output(), Some(&Value::from("o")), "output wins");
    // Fields the old system sends and hum does not read are kept.
    let kept =
        with(r#"{"chi":"tool-result","callId":"c","output":"o","title":"t","metadata":{"k":1}}"#);
    assert_eq!(kept.extra["title"], "t");
    assert_eq!(kept.extra["metadata"], serde_json::json!({"k": 1}));
}

#[test]
fn prompt_text_comes_from_text_or_content() {
    let p: Prompt = serde_json::from_value(json!({"content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]})).unwrap();
    assert_eq!(p.user_text().as_deref(), Some("ab"));
    let p: Prompt = serde_json::from_value(json!({"content": "c", "text": "t"})).unwrap();
    assert_eq!(p.user_text().as_deref(), Some("t"));
    let p: Prompt = serde_json::from_value(json!({"content": 5})).unwrap();
    assert_eq!(p.user_text(), None);
}

#[test]
fn head_reads_the_routing_fields_as_a_full_decode_does() {
    let line = br#"{"chi":"chunk","sid":"s\u00e9\"q","rid":"r1","from":"worker","to":"x","chunkType":"text_delta","delta":"hi","extra":{"deep":[1,2,{"a":null}]}}"#;
    let head = Head::read(line).unwrap();
    let tone = Tone::decode(line).unwrap();
    assert_eq!(head.chi, tone.chi());
    assert_eq!(
        head.sid.as_deref(),
        Some("s\u{e9}\"q"),
        "escapes are decoded"
    );
    assert_eq!(head.sid, tone.envelope.sid);
    assert_eq!(head.rid, tone.envelope.rid);
    assert_eq!(head.from, tone.envelope.from);
    assert_eq!(head.to, tone.envelope.to);
    let raw = RawTone {
        head,
        line: line.to_vec(),
    };
    assert_eq!(raw.decode().unwrap(), tone);
    let mut again = line.to_vec();
    again.push(b'\n');
    assert_eq!(raw.into_line(), again, "forwarded byte for byte");
}

#[test]
fn head_refuses_what_a_full_decode_refuses_the_same_way() {
    let many: String = (0..100_001).map(|i| format!(",\"f{i}\":0")).collect();
    let too_many = format!("{{\"chi\":\"x\"{many}}}");
    let cases: [&[u8]; 6] = [
        b"not json",
        b"[1,2]",
        br#"{"sid":"a"}"#,
        br#"{"chi":5}"#,
        br#"{"chi":"chunk","sid":5}"#,
        too_many.as_bytes(),
    ];
    for line in cases {
        let full = Tone::decode(line).map(|t| t.chi().to_owned());
        assert!(full.is_err());
        assert_eq!(Head::read(line).map(|h| h.chi), full);
    }
}

#[test]
fn a_bad_body_still_has_a_head_its_receiver_refuses_it() {
    let line = br#"{"chi":"chunk","sid":"s","chunkType":7}"#;
    assert_eq!(Head::read(line).unwrap().sid.as_deref(), Some("s"));
    assert!(matches!(
        Tone::decode(line),
        Err(DecodeError::Invalid { .. })
    ));
}
