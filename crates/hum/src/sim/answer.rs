//! The answer to a prompt, and how it is cut into deltas. Pure functions.

/// `SIM-REPLY #<n>: you said <prompt>`, plus `; before that <previous>` when
/// the session has history: enough for a test to check both routing (which
/// prompt reached which cell) and continuity (that a resumed cell remembers).
///
/// A scripted answer wins: `SIM_ANSWER <text>` answers exactly `<text>`
/// (the rest of its line); `SIM_ANSWERS <a> || <b>` answers `<a>`, and the
/// session's next turn, whatever it says, `<b>` (a repair, say).
pub fn answer_text(turn: u64, prompt: &str, previous: Option<&str>) -> String {
    if let Some(scripted) = scripted(prompt, previous) {
        return scripted;
    }
    match previous {
        Some(prev) => format!("SIM-REPLY #{turn}: you said <{prompt}>; before that <{prev}>"),
        None => format!("SIM-REPLY #{turn}: you said <{prompt}>"),
    }
}

/// The answer a prompt scripts, if it does (see [`answer_text`]).
fn scripted(prompt: &str, previous: Option<&str>) -> Option<String> {
    let line_after = |text: &str, key: &str| {
        text.find(key).map(|at| {
            text[at + key.len()..]
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
    };
    if let Some(both) = line_after(prompt, "SIM_ANSWERS ") {
        return Some(both.split("||").next().unwrap_or("").trim().to_owned());
    }
    if let Some(both) = previous.and_then(|p| line_after(p, "SIM_ANSWERS ")) {
        return Some(both.split("||").nth(1).unwrap_or("").trim().to_owned());
    }
    line_after(prompt, "SIM_ANSWER ")
}

/// What the answer says about one tool call: ` [<tool> said <output>]`, or
/// ` [<tool> failed: <output>]`.
pub fn tool_said(tool: &str, output: &str, is_error: bool) -> String {
    if is_error {
        format!(" [{tool} failed: {output}]")
    } else {
        format!(" [{tool} said {output}]")
    }
}

/// What the answer says about a tool's schema, as the model was shown it:
/// ` [<tool> takes <schema>]`, or ` [<tool> is not offered]`.
pub fn tool_takes(tool: &str, schema: Option<&serde_json::Value>) -> String {
    match schema {
        Some(s) => format!(" [{tool} takes {s}]"),
        None => format!(" [{tool} is not offered]"),
    }
}

/// What the answer says about one of the agent's own tools it has:
/// ` [<tool> is built in]`.
pub fn tool_built_in(tool: &str) -> String {
    format!(" [{tool} is built in]")
}

/// What the model "thought" before answering, for --sim-thinking.
pub fn thinking_text(prompt: &str) -> String {
    format!("The user said <{prompt}>. I will echo it.")
}

/// Cuts `text` into deltas. Without `chunks`, one delta per word, the space
/// going with the word after it (as the captured turn shows: "MOCK-REPLY",
/// " #1:", " you", …). With `chunks = Some(n)`, exactly `n` non-empty deltas,
/// the text first padded with '.' to at least `n × chunk_size` bytes.
/// Returns the (possibly padded) full text and its deltas.
pub fn deltas(text: &str, chunks: Option<usize>, chunk_size: usize) -> (String, Vec<String>) {
    let Some(n) = chunks.filter(|n| *n > 0) else {
        let mut out = Vec::new();
        for (i, word) in text.split(' ').enumerate() {
            out.push(if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            });
        }
        out.retain(|d| !d.is_empty());
        return (text.to_owned(), out);
    };
    let mut full = text.to_owned();
    let target_bytes = n.saturating_mul(chunk_size.max(1));
    if full.len() < target_bytes {
        full.push_str(&".".repeat(target_bytes - full.len()));
    }
    let mut chars = full.chars().count();
    if chars < n {
        full.push_str(&".".repeat(n - chars));
        chars = n;
    }
    // Byte offset of every char boundary, the end included.
    let bounds: Vec<usize> = full
        .char_indices()
        .map(|(i, _)| i)
        .chain([full.len()])
        .collect();
    let pieces = (0..n)
        .map(|k| {
            let start = bounds[k * chars / n];
            let end = bounds[(k + 1) * chars / n];
            full[start..end].to_owned()
        })
        .collect();
    (full, pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn words_like_the_captured_turn() {
        let (full, d) = deltas("MOCK-REPLY #1: you said <hi>", None, 16);
        assert_eq!(full, "MOCK-REPLY #1: you said <hi>");
        assert_eq!(d, ["MOCK-REPLY", " #1:", " you", " said", " <hi>"]);
    }

    #[test]
    fn answer_mentions_the_prompt_and_the_history() {
        assert_eq!(answer_text(1, "hi", None), "SIM-REPLY #1: you said <hi>");
        assert_eq!(
            answer_text(1, "SIM_ANSWER {\"a\": 1}\n\n(Answer with JSON.)", None),
            "{\"a\": 1}"
        );
        let first = "SIM_ANSWERS prose || {\"a\": 2}";
        assert_eq!(answer_text(1, first, None), "prose");
        assert_eq!(answer_text(2, "fix it", Some(first)), "{\"a\": 2}");
        assert_eq!(
            answer_text(3, "b", Some("a")),
            "SIM-REPLY #3: you said <b>; before that <a>"
        );
    }

    #[test]
    fn fixed_chunks_pad_to_size() {
        let (full, d) = deltas("abc", Some(4), 5);
        assert_eq!(d.len(), 4);
        assert!(d.iter().all(|p| p.len() == 5));
        assert!(full.starts_with("abc.."));
    }

    proptest! {
        #[test]
        fn chunks_are_exact_non_empty_and_rejoin(text in ".{0,60}", n in 1usize..40, size in 0usize..20) {
            let (full, d) = deltas(&text, Some(n), size);
            prop_assert_eq!(d.len(), n);
            prop_assert!(d.iter().all(|p| !p.is_empty()));
            prop_assert_eq!(d.concat(), full.clone());
            prop_assert!(full.starts_with(&text));
            prop_assert!(full.len() >= n * size.max(1));
        }

        #[test]
        fn words_rejoin(text in "[a-z <>#]{0,60}") {
            let (full, d) = deltas(&text, None, 16);
            prop_assert_eq!(d.concat(), full);
        }
    }
}
