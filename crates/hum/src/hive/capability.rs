//! Capabilities a forager can serve in the agent's stead, and the agent's
//! own built-in tools each one turns off: the one table humd shows in
//! `hum status` and the worker starts cells from.
//!
//! A forager that says `provides: ["fs"]` in its hello serves the
//! filesystem (its own `read_file`, `write_file`, … tools): while it is
//! connected, cells start without claude's Read, Write, Edit, … so the
//! agent works on the forager's files, not the host's. A tag with no row
//! here (the old system's `"session"`, `"x402:quote"`) is kept and shown,
//! and turns nothing off.

/// One capability: its tag and the built-in tools it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    pub name: &'static str,
    /// claude's tools that reach what the capability names.
    pub builtins: &'static [&'static str],
}

/// Every capability hum knows. `fs` is the old system's row (Read, Write,
/// Edit, MultiEdit, Glob, Grep, Bash) plus NotebookEdit, which claude
/// 2.1.332 offers and which writes the host's files as well.
pub const CAPABILITIES: &[Capability] = &[Capability {
    name: "fs",
    builtins: &[
        "Bash",
        "Edit",
        "Glob",
        "Grep",
        "MultiEdit",
        "NotebookEdit",
        "Read",
        "Write",
    ],
}];

/// Tags one forager may list: more than any forager needs, few enough that
/// the union stays small.
pub const MAX_PROVIDES: usize = 16;

/// The longest tag kept.
pub const MAX_TAG_CHARS: usize = 64;

/// A tag is 1–64 printable characters.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.chars().count() <= MAX_TAG_CHARS && !tag.chars().any(char::is_control)
}

/// The row of `tag`, if hum knows it.
pub fn find(tag: &str) -> Option<&'static Capability> {
    CAPABILITIES.iter().find(|c| c.name == tag)
}

/// The built-in tools a cell starts without while `provided` are served,
/// sorted and each named once (so two sets compare equal exactly when a
/// cell started with one would start the same with the other).
pub fn builtins_off<S: AsRef<str>>(provided: &[S]) -> Vec<String> {
    let mut off: Vec<String> = provided
        .iter()
        .filter_map(|tag| find(tag.as_ref()))
        .flat_map(|c| c.builtins.iter().map(|b| (*b).to_owned()))
        .collect();
    off.sort_unstable();
    off.dedup();
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_turns_off_every_file_and_shell_tool_of_the_agent() {
        let off = builtins_off(&["fs"]);
        for t in ["Read", "Write", "Edit", "MultiEdit", "Glob", "Grep", "Bash"] {
            assert!(off.contains(&t.to_owned()), "{t} stays on: {off:?}");
        }
        assert!(!off.contains(&"WebFetch".to_owned()));
    }

    #[test]
    fn unknown_tags_turn_nothing_off_and_repeats_count_once() {
        assert!(builtins_off(&["session", "x402:quote"]).is_empty());
        assert_eq!(
            builtins_off(&["fs", "fs", "session"]),
            builtins_off(&["fs"])
        );
        assert!(builtins_off::<&str>(&[]).is_empty());
    }

    #[test]
    fn the_table_is_sorted_so_sets_compare_by_value() {
        for c in CAPABILITIES {
            let mut sorted = c.builtins.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted, c.builtins, "{}", c.name);
        }
    }

    #[test]
    fn tags_are_short_and_printable() {
        assert!(valid_tag("fs") && valid_tag("x402:quote"));
        assert!(!valid_tag("") && !valid_tag("a\nb") && !valid_tag(&"x".repeat(65)));
    }
}
