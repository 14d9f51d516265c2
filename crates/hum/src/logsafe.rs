//! Log lines that cannot be forged. A sid, a model name or an error message
//! comes from a peer; written raw into a text log, a `\n` in it would start
//! a line of the writer's choosing. Every field of a text log line goes
//! through [`escape`] (the JSON format escapes by itself).

use std::fmt::{self, Write};

/// `s` with every control character (newline, carriage return, NUL, escape,
/// the C1 range, …) written as a `\u{…}`-style escape; `\n`, `\r` and `\t`
/// keep their short forms. Borrowed when there is nothing to escape.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Displays a string escaped.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// The text formatter's field writer: `name=value` pairs separated by
/// spaces, every value escaped, the message bare.
pub fn text_fields(
) -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let raw = format!("{value:?}");
        let safe = escape(&raw);
        if field.name() == "message" {
            write!(w, "{safe}")
        } else {
            write!(w, "{}={safe}", field.name())
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
}
