//! [`Tone`]: one message of the wire — an [`Envelope`] plus a [`Body`].
//!
//! Decoding takes a JSON object apart: `chi` picks the body type, the envelope
//! fields are lifted out, and everything else goes to the body (unknown fields
//! into its `extra`). A `chi` this crate does not know becomes
//! [`Body::Unknown`]. Encoding writes `chi`, then the envelope, then the body,
//! so a decode/encode round trip keeps every field and value.
//!
//! Limits of "untouched": a field whose value is `null` reads as absent, and
//! integers beyond 64 bits come back as floats (JSON itself does not promise
//! more).

use crate::bodies::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields any tone may carry, whatever its `chi`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Request id; tones that carry one are acknowledged with `echo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// Session id, picked by the asker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `sigil(nest, sid)`, added by the daemon when forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigil: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wane: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Value>,
    /// Absolute expiry, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dusk: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<Value>,
}

/// The wire names of the envelope fields, as lifted out of a decoded object.
const ENVELOPE_FIELDS: [&str; 9] = [
    "rid", "sid", "from", "to", "sigil", "wane", "sentAt", "dusk", "ext",
];

/// The typed body of a tone; its variant is the tone's `chi`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Body {
    Hello(Hello),
    Breath(Breath),
    Echo(Echo),
    Prompt(Prompt),
    Cancel(Cancel),
    Cleanup(Cleanup),
    ToolResult(ToolResult),
    ToolCall(ToolCall),
    ToolInfo(ToolInfo),
    PermissionAsk(PermissionAsk),
    ReleasePermit(ReleasePermit),
    SessionReady(SessionReady),
    Chunk(Chunk),
    Finish(Finish),
    Error(ErrorTone),
    Pulse(Pulse),
    Unknown(Unknown),
}

impl Body {
    /// The `chi` this body travels under.
    pub fn chi(&self) -> &str {
        match self {
            Body::Hello(_) => "hello",
            Body::Breath(_) => "breath",
            Body::Echo(_) => "echo",
            Body::Prompt(_) => "prompt",
            Body::Cancel(_) => "cancel",
            Body::Cleanup(_) => "cleanup",
            Body::ToolResult(_) => "tool-result",
            Body::ToolCall(_) => "tool-call",
            Body::ToolInfo(_) => "tool-info",
            Body::PermissionAsk(_) => "permission-ask",
            Body::ReleasePermit(_) => "release-permit",
            Body::SessionReady(_) => "session-ready",
            Body::Chunk(_) => "chunk",
            Body::Finish(_) => "finish",
            Body::Error(_) => "error",
            Body::Pulse(_) => "pulse",
            Body::Unknown(u) => &u.chi,
        }
    }

    /// Builds the body for `chi` from the fields left after the envelope.
    fn from_fields(chi: String, fields: Map<String, Value>) -> Result<Body, DecodeError> {
        fn typed<T: serde::de::DeserializeOwned>(
            chi: &str,
            fields: Map<String, Value>,
        ) -> Result<T, DecodeError> {
            serde_json::from_value(Value::Object(fields)).map_err(|e| DecodeError::Invalid {
                chi: chi.to_owned(),
                reason: e.to_string(),
            })
        }
        Ok(match chi.as_str() {
            "hello" => Body::Hello(typed(&chi, fields)?),
            "breath" => Body::Breath(typed(&chi, fields)?),
            "echo" => Body::Echo(typed(&chi, fields)?),
            "prompt" => Body::Prompt(typed(&chi, fields)?),
            "cancel" => Body::Cancel(typed(&chi, fields)?),
            "cleanup" => Body::Cleanup(typed(&chi, fields)?),
            "tool-result" => Body::ToolResult(typed(&chi, fields)?),
            "tool-call" => Body::ToolCall(typed(&chi, fields)?),
            "tool-info" => Body::ToolInfo(typed(&chi, fields)?),
            "permission-ask" => Body::PermissionAsk(typed(&chi, fields)?),
            "release-permit" => Body::ReleasePermit(typed(&chi, fields)?),
            "session-ready" => Body::SessionReady(typed(&chi, fields)?),
            "chunk" => Body::Chunk(typed(&chi, fields)?),
            "finish" => Body::Finish(typed(&chi, fields)?),
            "error" => Body::Error(typed(&chi, fields)?),
            "pulse" => Body::Pulse(typed(&chi, fields)?),
            _ => Body::Unknown(Unknown { chi, fields }),
        })
    }
}

/// Why a line is not a tone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("line is not JSON: {0}")]
    NotJson(String),
    #[error("line is JSON but not an object")]
    NotObject,
    #[error("object has no string field `chi`")]
    MissingChi,
    /// A known `chi` whose fields have the wrong shape. The object was a tone
    /// attempt, so the sender deserves an answer (`bad_request`).
    #[error("bad `{chi}` tone: {reason}")]
    Invalid { chi: String, reason: String },
    /// More object members than [`MAX_MEMBERS`]: refused before parsing, as
    /// a tree of that many small values costs far more memory than its
    /// line (700k tiny fields in 7 MB would take a quarter GiB).
    #[error("line has more than {limit} object members")]
    TooManyMembers { limit: usize },
}

/// The most object members (`"key": value` pairs, at any depth) a tone may
/// have. A prompt or tool result of megabytes carries its bulk in strings;
/// only a flood of tiny fields comes near this.
pub const MAX_MEMBERS: usize = 100_000;

/// Whether `line` has at most `limit` object members, counted as the `:`
/// separators outside strings: one pass over the bytes, no allocation.
pub fn members_at_most(line: &[u8], limit: usize) -> bool {
    // Every member has a `:`; so do some strings. When there are few colons
    // at all (every ordinary tone) one vectorised count settles it.
    if memchr::memchr_iter(b':', line).count() <= limit {
        return true;
    }
    let (mut in_string, mut escaped, mut members) = (false, false, 0usize);
    for &b in line {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b':' {
            members += 1;
            if members > limit {
                return false;
            }
        }
    }
    true
}

/// The fields a tone is routed by, read from its line without decoding the
/// rest: a router that forwards a tone as it came needs no more. Other
/// fields are skipped, not built (a `Value` tree costs far more than a
/// skip).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Head {
    pub chi: String,
    pub rid: Option<String>,
    pub sid: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl Head {
    /// Reads the head of one line (without its newline). A line that is not
    /// a tone gets the error a full [`Tone::decode`] gives it, so both
    /// paths refuse the same lines the same way.
    pub fn read(line: &[u8]) -> Result<Head, DecodeError> {
        use std::borrow::Cow;
        #[derive(Deserialize)]
        struct Form<'a> {
            #[serde(borrow)]
            chi: Option<Cow<'a, str>>,
            #[serde(borrow)]
            rid: Option<Cow<'a, str>>,
            #[serde(borrow)]
            sid: Option<Cow<'a, str>>,
            #[serde(borrow)]
            from: Option<Cow<'a, str>>,
            #[serde(borrow)]
            to: Option<Cow<'a, str>>,
        }
        if !members_at_most(line, MAX_MEMBERS) {
            return Err(DecodeError::TooManyMembers { limit: MAX_MEMBERS });
        }
        match serde_json::from_slice::<Form>(line) {
            Ok(Form {
                chi: Some(chi),
                rid,
                sid,
                from,
                to,
            }) => Ok(Head {
                chi: chi.into_owned(),
                rid: rid.map(Cow::into_owned),
                sid: sid.map(Cow::into_owned),
                from: from.map(Cow::into_owned),
                to: to.map(Cow::into_owned),
            }),
            // Rare: let the full decoder name what is wrong.
            _ => match Tone::decode(line) {
                Ok(tone) => Ok(Head {
                    chi: tone.chi().to_owned(),
                    rid: tone.envelope.rid,
                    sid: tone.envelope.sid,
                    from: tone.envelope.from,
                    to: tone.envelope.to,
                }),
                Err(e) => Err(e),
            },
        }
    }
}

/// A tone as it came: its [`Head`] and its line, for forwarding unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTone {
    pub head: Head,
    /// The line, without its newline.
    pub line: Vec<u8>,
}

impl RawTone {
    /// Decodes the whole tone, for a receiver that acts on its body.
    pub fn decode(&self) -> Result<Tone, DecodeError> {
        Tone::decode(&self.line)
    }

    /// The line with its newline, ready to be written again.
    pub fn into_line(mut self) -> Vec<u8> {
        self.line.push(b'\n');
        self.line
    }
}

/// Why a tone could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("encoded tone is {len} bytes, over the line limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("tone does not serialize: {0}")]
    Json(#[from] serde_json::Error),
}

/// One message of the thrum wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Tone {
    pub envelope: Envelope,
    pub body: Body,
}

impl Tone {
    /// A tone with an empty envelope.
    pub fn new(body: impl Into<Body>) -> Self {
        Self {
            envelope: Envelope::default(),
            body: body.into(),
        }
    }

    /// Sets the request id.
    pub fn with_rid(mut self, rid: impl Into<String>) -> Self {
        self.envelope.rid = Some(rid.into());
        self
    }

    /// Sets the session id.
    pub fn with_sid(mut self, sid: impl Into<String>) -> Self {
        self.envelope.sid = Some(sid.into());
        self
    }

    /// The tone's discriminator.
    pub fn chi(&self) -> &str {
        self.body.chi()
    }

    pub fn rid(&self) -> Option<&str> {
        self.envelope.rid.as_deref()
    }

    pub fn sid(&self) -> Option<&str> {
        self.envelope.sid.as_deref()
    }

    /// Decodes one line (without its newline).
    pub fn decode(line: &[u8]) -> Result<Tone, DecodeError> {
        if !members_at_most(line, MAX_MEMBERS) {
            return Err(DecodeError::TooManyMembers { limit: MAX_MEMBERS });
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(map)) => Tone::from_map(map),
            Ok(_) => Err(DecodeError::NotObject),
            Err(e) => Err(DecodeError::NotJson(e.to_string())),
        }
    }

    /// Takes a JSON object apart into envelope and body.
    pub fn from_map(mut map: Map<String, Value>) -> Result<Tone, DecodeError> {
        let chi = match map.remove("chi") {
            Some(Value::String(chi)) => chi,
            _ => return Err(DecodeError::MissingChi),
        };
        let mut envelope_fields = Map::new();
        for key in ENVELOPE_FIELDS {
            if let Some(v) = map.remove(key) {
                envelope_fields.insert(key.to_owned(), v);
            }
        }
        let envelope = serde_json::from_value(Value::Object(envelope_fields)).map_err(|e| {
            DecodeError::Invalid {
                chi: chi.clone(),
                reason: format!("envelope: {e}"),
            }
        })?;
        let body = Body::from_fields(chi, map)?;
        Ok(Tone { envelope, body })
    }

    /// Encodes as one line, `\n` included, refusing lines over `max_line`
    /// bytes (the peer would discard them).
    pub fn encode_line(&self, max_line: usize) -> Result<Vec<u8>, EncodeError> {
        let mut out = serde_json::to_vec(self)?;
        if out.len() > max_line {
            return Err(EncodeError::TooLong {
                len: out.len(),
                limit: max_line,
            });
        }
        out.push(b'\n');
        Ok(out)
    }

    /// The tone as a JSON value (for tests and tools).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a tone always serializes")
    }
}

/// The order fields are written in: `chi`, envelope, body.
#[derive(Serialize)]
struct WireForm<'a> {
    chi: &'a str,
    #[serde(flatten)]
    envelope: &'a Envelope,
    #[serde(flatten)]
    body: &'a Body,
}

impl Serialize for Tone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireForm {
            chi: self.chi(),
            envelope: &self.envelope,
            body: &self.body,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tone {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        Tone::from_map(map).map_err(serde::de::Error::custom)
    }
}

macro_rules! body_from {
    ($($ty:ident => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for Body {
            fn from(b: $ty) -> Body { Body::$variant(b) }
        })*
    };
}

body_from!(
    Hello => Hello, Breath => Breath, Echo => Echo, Prompt => Prompt, Cancel => Cancel,
    Cleanup => Cleanup, ToolResult => ToolResult, ToolCall => ToolCall, ToolInfo => ToolInfo,
    PermissionAsk => PermissionAsk, ReleasePermit => ReleasePermit,
    SessionReady => SessionReady,
    Chunk => Chunk, Finish => Finish, ErrorTone => Error, Pulse => Pulse, Unknown => Unknown,
);

#[cfg(test)]
mod tests;
