//! Property tests: tones survive decode → encode untouched, whatever their
//! chi and whatever unknown fields they carry; the framer splits any byte
//! stream the way a reference splitter does, within its bound.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use thrum::{FrameEvent, LineFramer, Tone};

/// Any JSON value, nested a few levels (nulls included: only top-level nulls
/// read as absent).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z_]{1,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn non_null_json() -> impl Strategy<Value = Value> {
    any_json().prop_filter("top-level null reads as absent", |v| !v.is_null())
}

fn string() -> impl Strategy<Value = Value> {
    ".{0,16}".prop_map(Value::from)
}

/// Unknown field names: never one of the envelope's or a body's own.
fn extra_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(("x[A-Za-z0-9_]{0,8}", non_null_json()), 0..4)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    Bool,
    U64,
    Json,
    JsonList,
    StrList,
    Bees,
    Propensity,
    /// A word of one of thrum's vocabularies: a known one or any other.
    Word(fn() -> Vec<String>),
}

fn error_codes() -> Vec<String> {
    thrum::ErrorCode::KNOWN
        .iter()
        .map(|w| w.to_string())
        .collect()
}

fn pulse_kinds() -> Vec<String> {
    thrum::PulseKind::KNOWN
        .iter()
        .map(|w| w.to_string())
        .collect()
}

fn finish_reasons() -> Vec<String> {
    thrum::FinishReason::KNOWN
        .iter()
        .map(|w| w.to_string())
        .collect()
}

fn decisions() -> Vec<String> {
    thrum::Decision::KNOWN
        .iter()
        .map(|w| w.to_string())
        .collect()
}

fn chunk_types() -> Vec<String> {
    thrum::ChunkType::KNOWN
        .iter()
        .map(|w| w.to_string())
        .collect()
}

fn roles() -> Vec<String> {
    thrum::Role::KNOWN.iter().map(|w| w.to_string()).collect()
}

fn value_of(kind: Kind) -> BoxedStrategy<Value> {
    match kind {
        Kind::Str => string().boxed(),
        Kind::Word(known) => prop_oneof![
            prop::sample::select(known()).prop_map(Value::from),
            string(),
        ]
        .boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::from).boxed(),
        Kind::U64 => any::<u64>().prop_map(Value::from).boxed(),
        Kind::Json => non_null_json().boxed(),
        Kind::JsonList => prop::collection::vec(non_null_json(), 0..3)
            .prop_map(|v| json!(v))
            .boxed(),
        Kind::StrList => prop::collection::vec(".{0,6}", 0..3)
            .prop_map(|v| json!(v))
            .boxed(),
        Kind::Bees => {
            // A role of thrum's vocabulary, or any other word.
            let role = prop_oneof![
                prop::sample::select(roles()),
                "[a-z]{1,8}".prop_map(String::from),
            ];
            prop_oneof![
                role.clone().prop_map(Value::from),
                prop::collection::vec(role, 0..3).prop_map(|v| json!(v)),
            ]
            .boxed()
        }
        Kind::Propensity => (
            prop::option::of(string()),
            prop::option::of(string()),
            extra_fields(),
        )
            .prop_map(|(s, w, extra)| {
                let mut m: Map<String, Value> = extra.into_iter().collect();
                if let Some(s) = s {
                    m.insert("statefulness".into(), s);
                }
                if let Some(w) = w {
                    m.insert("wire".into(), w);
                }
                Value::Object(m)
            })
            .boxed(),
    }
}

/// The typed fields of each known chi: (name, kind, required).
fn schema(chi: &str) -> Vec<(&'static str, Kind, bool)> {
    use Kind::*;
    match chi {
        "hello" => vec![
            ("bee", Bees, false),
            ("protoVersion", Str, false),
            ("version", Str, false),
            ("propensity", Propensity, false),
            ("chis", StrList, false),
            ("source", Str, false),
            ("hid", Str, false),
            ("hive", Str, false),
            ("models", StrList, false),
            ("tools", JsonList, false),
            ("toolNames", StrList, false),
        ],
        "breath" => vec![("protoVersion", Str, false)],
        "echo" => vec![("ok", Bool, true)],
        "prompt" => vec![
            ("content", Json, false),
            ("text", Str, false),
            ("modelId", Str, false),
            ("cwd", Str, false),
            ("systemPrompt", Str, false),
            ("tools", Json, false),
            ("allowedTools", StrList, false),
            ("disallowedTools", StrList, false),
            ("resume", Json, false),
            ("builtinTools", Json, false),
        ],
        "cancel" => vec![("callId", Str, false)],
        "tool-result" => vec![
            ("callId", Str, true),
            ("toolName", Str, false),
            ("output", Json, false),
            ("result", Json, false),
            ("isError", Bool, false),
        ],
        "tool-call" => vec![
            ("callId", Str, true),
            ("toolName", Str, true),
            ("args", Json, false),
            ("usage", Json, false),
        ],
        "tool-info" => vec![("tools", JsonList, false)],
        "permission-ask" => vec![
            ("callId", Str, true),
            ("toolName", Str, true),
            ("input", Json, false),
            ("options", Json, false),
        ],
        "release-permit" => vec![
            ("callId", Str, true),
            ("decision", Word(decisions), false),
            ("message", Str, false),
            ("updatedInput", Json, false),
            ("optionId", Str, false),
        ],
        "session-ready" => vec![
            ("nestId", Str, false),
            ("model", Str, false),
            ("tools", Json, false),
        ],
        "chunk" => vec![
            ("chunkType", Word(chunk_types), true),
            ("blockIdx", U64, false),
            ("delta", Str, false),
            ("partialJson", Str, false),
            ("usage", Json, false),
        ],
        "finish" => vec![
            ("finishReason", Word(finish_reasons), false),
            ("usage", Json, false),
        ],
        "error" => vec![
            ("code", Word(error_codes), true),
            ("message", Str, false),
            ("subtype", Str, false),
            ("usage", Json, false),
            ("retryAfterMs", U64, false),
        ],
        "pulse" => vec![("kind", Word(pulse_kinds), true)],
        _ => vec![],
    }
}

const KNOWN: [&str; 16] = [
    "hello",
    "breath",
    "echo",
    "prompt",
    "cancel",
    "cleanup",
    "tool-result",
    "tool-call",
    "tool-info",
    "permission-ask",
    "release-permit",
    "session-ready",
    "chunk",
    "finish",
    "error",
    "pulse",
];

fn chi() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KNOWN.to_vec()).prop_map(str::to_owned),
        "[a-z][a-z-]{0,12}".prop_filter("unknown", |c| !KNOWN.contains(&c.as_str())),
    ]
}

fn envelope() -> impl Strategy<Value = Vec<(String, Value)>> {
    let field = |name: &'static str, v: BoxedStrategy<Value>| {
        prop::option::of(v).prop_map(move |v| v.map(|v| (name.to_owned(), v)))
    };
    (
        field("rid", string().boxed()),
        field("sid", string().boxed()),
        field("from", string().boxed()),
        field("to", string().boxed()),
        field("sigil", string().boxed()),
        field("wane", non_null_json().boxed()),
        field("sentAt", non_null_json().boxed()),
        field("dusk", any::<u64>().prop_map(Value::from).boxed()),
        field("ext", non_null_json().boxed()),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i)| {
            [a, b, c, d, e, f, g, h, i].into_iter().flatten().collect()
        })
}

/// A well-formed tone as a JSON object.
fn tone_object() -> impl Strategy<Value = Map<String, Value>> {
    chi()
        .prop_flat_map(|chi| {
            let typed: Vec<BoxedStrategy<Option<(String, Value)>>> = schema(&chi)
                .into_iter()
                .map(|(name, kind, required)| {
                    if required {
                        value_of(kind)
                            .prop_map(move |v| Some((name.to_owned(), v)))
                            .boxed()
                    } else {
                        prop::option::of(value_of(kind))
                            .prop_map(move |v| v.map(|v| (name.to_owned(), v)))
                            .boxed()
                    }
                })
                .collect();
            (
                Just(chi),
                envelope(),
                typed,
                extra_fields(),
                any::<prop::sample::Index>(),
            )
        })
        .prop_map(|(chi, env, typed, extra, chi_at)| {
            let mut fields: Vec<(String, Value)> = env
                .into_iter()
                .chain(typed.into_iter().flatten())
                .chain(extra)
                .collect();
            // chi may stand anywhere in the object.
            let at = chi_at.index(fields.len() + 1);
            fields.insert(at, ("chi".to_owned(), Value::from(chi)));
            let mut m = Map::new();
            for (k, v) in fields {
                m.entry(k).or_insert(v);
            }
            m
        })
}

/// A tool spec as a bee may offer it: a valid name, a description or
/// none, an object schema, and fields of its own.
fn tool_spec() -> impl Strategy<Value = thrum::tools::ToolSpec> {
    (
        "[A-Za-z0-9_][A-Za-z0-9_-]{0,20}",
        prop::option::of(".{0,24}"),
        prop::collection::vec(("[a-zA-Z_]{1,6}", any_json()), 0..3),
        extra_fields(),
    )
        .prop_filter("a name thrum accepts", |(n, ..)| {
            thrum::tools::valid_tool_name(n)
        })
        .prop_map(
            |(name, description, schema, extra)| thrum::tools::ToolSpec {
                name,
                description,
                input_schema: schema.into_iter().collect(),
                extra: extra.into_iter().collect(),
            },
        )
}

proptest! {
    /// A spec written and read back is the same spec, its own fields kept.
    #[test]
    fn a_tool_spec_round_trips_with_its_own_fields(spec in tool_spec()) {
        let written = serde_json::to_value(&spec).unwrap();
        let read = thrum::tools::ToolSpec::read(&written, None);
        prop_assert_eq!(read.as_ref(), Some(&spec));
        prop_assert_eq!(serde_json::to_value(read.unwrap()).unwrap(), written);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_then_encode_keeps_every_field(obj in tone_object()) {
        let line = serde_json::to_vec(&obj).unwrap();
        let tone = Tone::decode(&line).map_err(|e| TestCaseError::fail(format!("{e} for {obj:?}")))?;
        prop_assert_eq!(tone.chi(), obj["chi"].as_str().unwrap());
        let encoded = tone.encode_line(usize::MAX).unwrap();
        prop_assert_eq!(encoded.iter().filter(|b| **b == b'\n').count(), 1, "one line, one newline");
        let back: Map<String, Value> = serde_json::from_slice(&encoded).unwrap();
        prop_assert_eq!(&back, &obj);
        // And the tone decoded again is the same tone.
        prop_assert_eq!(Tone::decode(&encoded[..encoded.len() - 1]).unwrap(), tone);
    }

    #[test]
    fn decode_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Tone::decode(&bytes);
    }

    /// The typed reading of what a turn used takes any JSON: a count that
    /// is not a count reads as 0, never as an error or a panic.
    #[test]
    fn billing_reads_any_json_and_a_count_only_from_a_count(v in any_json(), n in any::<u64>()) {
        let _ = thrum::Billing::read(&v);
        let _ = thrum::Usage::read(&v);
        let fields = json!({"usage": {"input_tokens": n, "output_tokens": v.clone()}, "costUsd": v});
        let b = thrum::Billing::read(&fields);
        prop_assert_eq!(b.usage.input_tokens, n);
        prop_assert_eq!(b.usage.output_tokens, fields["usage"]["output_tokens"].as_u64().unwrap_or(0));
    }

    #[test]
    fn decode_never_panics_on_any_json_object(v in any_json(), chi in chi()) {
        let mut m = Map::new();
        m.insert("chi".into(), Value::from(chi));
        if let Value::Object(o) = v { m.extend(o); } else { m.insert("sid".into(), v); }
        if let Ok(tone) = Tone::decode(&serde_json::to_vec(&m).unwrap()) {
            let again = Tone::decode(&tone.encode_line(usize::MAX).unwrap()).unwrap();
            prop_assert_eq!(again, tone);
        }
    }

    #[test]
    fn framer_splits_like_a_reference_and_stays_bounded(
        input in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..400),
        max in 0usize..40,
        steps in prop::collection::vec(1usize..50, 1..20),
    ) {
        let mut expected = Vec::new();
        let segments: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
        let last = segments.len() - 1;
        for (i, seg) in segments.iter().enumerate() {
            if i == last && seg.is_empty() { break; }
            if seg.len() > max {
                expected.push(Err(()));
            } else {
                let seg = seg.strip_suffix(b"\r").unwrap_or(seg);
                expected.push(Ok(seg.to_vec()));
            }
        }
        let mut framer = LineFramer::new(max);
        let mut got = Vec::new();
        let mut rest = &input[..];
        let mut step = steps.iter().cycle();
        while !rest.is_empty() {
            let take = (*step.next().unwrap()).min(rest.len());
            let (used, ev) = framer.feed(&rest[..take]);
            prop_assert!(used >= 1 && used <= take);
            prop_assert!(framer.buffered() <= max);
            rest = &rest[used..];
            match ev {
                Some(FrameEvent::Line) => got.push(Ok(framer.line().to_vec())),
                Some(FrameEvent::TooLong { .. }) => got.push(Err(())),
                None => {}
            }
        }
        if framer.finish() == Some(FrameEvent::Line) { got.push(Ok(framer.line().to_vec())); }
        prop_assert_eq!(got, expected);
    }
}
