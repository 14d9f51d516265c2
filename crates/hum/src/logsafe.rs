//! Log lines that cannot be forged. A sid, a model name or an error message
//! comes from a peer; written raw into a text log, a `\n` in it would start
//! a line of the writer's choosing. Every field of a text log line goes
//! through [`escape`] (the JSON format escapes by itself).

use std::fmt::{self, Write};

/// Whether `c` may not appear raw in a log line: control characters, and
/// whatever else Rust's own `Debug` would escape as unprintable (line and
/// paragraph separators such as U+2028, bidirectional overrides such as
/// U+202E, zero-width and other format characters), which could break a
/// line or make it read differently from what it holds.
fn needs_escape(c: char) -> bool {
    c.is_control() || (!matches!(c, '\'' | '"' | '\\') && c.escape_debug().len() > 1)
}

/// `s` with every control or invisible character (newline, carriage
/// return, NUL, escape, the C1 range, U+2028, U+202E, …) written as a
/// `\u{…}`-style escape; `\n`, `\r` and `\t` keep their short forms.
/// Borrowed when there is nothing to escape.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether `v` is one quoted string already (as `Debug` writes a `&str`:
/// every inner quote escaped).
fn is_quoted(v: &str) -> bool {
    let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return false;
    };
    let mut escaped = false;
    for c in inner.chars() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return false,
            _ => {}
        }
    }
    !escaped
}

/// A field's value as logfmt wants it: bare when it is one word, else in
/// quotes with its quotes and backslashes escaped, so a value (a sid, a
/// model name) can never add a field of its own to the line.
pub fn logfmt_value(raw: &str) -> std::borrow::Cow<'_, str> {
    // A `Debug` string is quoted and escaped already (and an attacker's
    // value that reads as one quoted string is one value all the same).
    if is_quoted(raw) {
        return escape(raw);
    }
    let bare = !raw.is_empty()
        && !raw
            .chars()
            .any(|c| c.is_whitespace() || c == '=' || c == '"');
    if bare {
        return escape(raw);
    }
    let mut quoted = String::with_capacity(raw.len() + 2);
    quoted.push('"');
    for c in raw.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    std::borrow::Cow::Owned(escape(&quoted).into_owned())
}

/// Displays a string escaped.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// The text formatter's field writer: `name=value` pairs separated by
/// spaces, every value escaped and quoted by logfmt's rules, the message
/// (always a literal of hum's) bare.
pub fn text_fields(
) -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let raw = format!("{value:?}");
        if field.name() == "message" {
            write!(w, "{}", escape(&raw))
        } else {
            write!(w, "{}={}", field.name(), logfmt_value(&raw))
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_start_a_line() {
        assert_eq!(escape("plain sid"), "plain sid");
        assert_eq!(
            escape("a\nINFO forged=1\r\0\u{1b}[31m"),
            "a\\nINFO forged=1\\r\\u{0}\\u{1b}[31m"
        );
        assert!(!escape("x\u{85}y").contains('\u{85}'));
    }

    #[test]
    fn a_value_cannot_add_a_field_or_hide_what_it_holds() {
        let forged = "victim event=\"daemon.peer_refused\" uid=1234";
        assert_eq!(
            logfmt_value(forged),
            "\"victim event=\\\"daemon.peer_refused\\\" uid=1234\""
        );
        assert_eq!(logfmt_value("plain-sid"), "plain-sid");
        assert_eq!(logfmt_value(""), "\"\"");
        // A Debug string is quoted already; one that only looks so is not.
        assert_eq!(logfmt_value("\"cgroup v1\""), "\"cgroup v1\"");
        assert_eq!(
            logfmt_value("\"x\" uid=\"0\""),
            "\"\\\"x\\\" uid=\\\"0\\\"\""
        );
        // Escaped once: a newline reads `\n`, not `\\n`.
        assert_eq!(logfmt_value("evil\nINFO x=1"), "\"evil\\nINFO x=1\"");
        for sneaky in ["a\u{2028}b", "a\u{202e}b", "a\u{2029}b", "a\u{200b}b"] {
            let out = logfmt_value(sneaky);
            assert!(out.chars().all(|c| !needs_escape(c)), "{out}");
            assert!(out.contains("\\u{"), "{out}");
        }
    }

    /// Through a real subscriber, as humd logs: the forged sid stays one
    /// quoted value, no field `uid` appears, the separators are escaped.
    #[test]
    fn a_forged_sid_in_a_text_log_line_stays_one_value() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(text_fields())
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let sid = "victim event=\"daemon.peer_refused\" uid=1234\u{2028}INFO x=1\u{202e}";
            tracing::info!(event = "daemon.refused", sid = %sid, "request refused");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            !out.contains('\u{2028}') && !out.contains('\u{202e}'),
            "{out}"
        );
        // Outside quoted values, the only fields are the two logged.
        let mut fields = Vec::new();
        let (mut quoted, mut escaped) = (false, false);
        let mut word = String::new();
        for c in out.chars() {
            match (quoted, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, false, '"') => quoted = !quoted,
                (false, _, ' ') => {
                    fields.push(std::mem::take(&mut word));
                    continue;
                }
                _ => {}
            }
            word.push(c);
        }
        fields.push(word);
        let keys: Vec<&str> = fields
            .iter()
            .filter_map(|f| f.split_once('=').map(|(k, _)| k))
            .collect();
        assert_eq!(keys, ["event", "sid"], "{out}");
    }
}
