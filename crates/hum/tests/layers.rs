//! The house's layers, drawn from the code's own imports: every
//! `crate::<module>` a module's code (not its tests, not its comments)
//! names must sit in a lower layer than the module itself. So there is no
//! import circle, and nothing low reaches up into a program or a command.
//! A new top-level module fails this test until it is given its layer
//! here (and in `docs/architecture.md`). And no source file grows past
//! 550 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer, lowest first.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: no hum imports, or only each other.
    ("backoff", 0),
    ("http_serve", 0),
    ("human", 0),
    ("lifeline", 0),
    ("logsafe", 0),
    ("private_fs", 0),
    ("http_guard", 1),
    ("logging", 1),
    ("stop", 1),
    // What the OS offers; cells in it.
    ("os", 2),
    ("cell", 3),
    // The pure and shared layers: the pool's policy, the agent CLIs, what
    // turns cost, hum.json, the typed status.
    ("pool", 4),
    ("hive", 4),
    ("usage", 4),
    ("config", 5),
    ("reports", 5),
    // The one client, and a stack of hum's own processes (which asks it
    // whether they are up).
    ("client", 6),
    ("stack", 7),
    // The programs.
    ("sim", 8),
    ("worker", 8),
    ("daemon", 8),
    ("gateway", 8),
    // The commands: leaves that import layers, never each other.
    ("status", 9),
    ("top", 9),
    ("prompt", 9),
    ("demo", 9),
    ("bench", 9),
    ("doctor", 9),
    ("drain", 9),
    ("acp_agent", 9),
    ("up", 9),
    ("cellhost", 9),
    ("cli", 10),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code: its test module (a trailing `#[cfg(test)] mod …`) and
/// its comments cut away.
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    for (i, line) in lines.iter().enumerate() {
        let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
        if line.trim() == "#[cfg(test)]" && next.is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            end = i;
            break;
        }
    }
    lines[..end]
        .iter()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<name>` in `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::{x, y}, b}`: each name that starts an entry at
            // the group's own depth (nested groups are one entry each).
            for name in group_heads(group) {
                found.insert(name);
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

/// The first name of each entry of a `{…}` group (`group` starts just
/// after its `{`), down to its matching `}`.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let (mut depth, mut entry_start) = (0usize, true);
    let mut chars = group.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => entry_start = true,
            c if entry_start && (c.is_ascii_lowercase() || c == '_') => {
                let name: String = group[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                for _ in 1..name.chars().count() {
                    chars.next();
                }
                heads.push(name);
                entry_start = false;
            }
            c if !c.is_whitespace() => entry_start = false,
            _ => {}
        }
    }
    heads
}

#[test]
fn a_groups_heads_are_read_at_its_own_depth() {
    assert_eq!(group_heads("a::x, b}"), ["a", "b"]);
    assert_eq!(group_heads("a::{x, y}, b::z, c} d"), ["a", "b", "c"]);
    assert_eq!(group_heads("\n    a::{x::{y}},\n    b,\n}"), ["a", "b"]);
    assert_eq!(group_heads("Big, a}"), ["a"]);
}

/// The crate's source files that are not tests: (path below `src/`, text).
fn code_files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            (rel, f)
        })
        .filter(|(rel, _)| !rel.ends_with("tests.rs") && !rel.contains("/tests/"))
        .map(|(rel, f)| (rel, std::fs::read_to_string(f).unwrap()))
        .collect()
}

/// Module → the modules its code names, with one file that does.
fn imports() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (rel, text) in code_files() {
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        // The crate root and the binaries' entry points (`main.rs`,
        // `bin/`) sit above every layer.
        if top == "lib" || top == "main" || top == "bin" {
            continue;
        }
        let code = code_of(&text);
        let entry = edges.entry(top.clone()).or_default();
        for to in crate_paths(&code) {
            if to != top {
                entry.entry(to).or_insert_with(|| rel.clone());
            }
        }
    }
    edges
}

#[test]
fn every_import_goes_down_a_layer_so_there_is_no_circle() {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let edges = imports();
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        let Some(&own) = layer.get(from.as_str()) else {
            wrong.push(format!("{from} has no layer in LAYERS"));
            continue;
        };
        for (to, file) in tos {
            match layer.get(to.as_str()) {
                Some(&theirs) if theirs < own => {}
                Some(&theirs) => wrong.push(format!(
                    "{from} (layer {own}) imports {to} (layer {theirs}) in {file}"
                )),
                // Not a module of the crate (a macro's `crate::` of another
                // name would show here): named so it is looked at.
                None => wrong.push(format!(
                    "{from} names crate::{to} in {file}, which is no module"
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The longest a source file may grow: one concern per file, read whole.
const MAX_FILE_LINES: usize = 550;

#[test]
fn no_source_file_is_longer_than_550_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("../thrum/src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, n)| *n > MAX_FILE_LINES)
        .map(|(f, n)| format!("{}: {n} lines", f.display()))
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}

/// The modules `lib.rs` makes `pub`: the command line `main` runs, and
/// the layers the integration tests and fuzz targets drive. Everything
/// else is the crate's own (`pub(crate)`).
const FACES: &[&str] = &[
    "cell",
    "cli",
    "client",
    "daemon",
    "gateway",
    "hive",
    "pool",
    "private_fs",
    "prompt",
    "reports",
    "usage",
];

#[test]
fn only_the_faces_of_the_layers_are_pub() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let public: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert_eq!(
        public, FACES,
        "a module made pub belongs in FACES, with why"
    );
}

/// The longest a function may grow (tests excepted).
const MAX_FN_LINES: usize = 120;

/// Functions still over [`MAX_FN_LINES`], to be split (issue 25): the list
/// only shrinks. A function not named here that grows past the limit fails.
const LONG_FNS_LEFT: &[&str] = &[];

/// Each function of `code` (its test module cut) and its length in lines:
/// from its `fn` line to the `}` at the same indentation.
fn functions(code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let rest = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
            .unwrap_or(trimmed);
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        if let Some(sig) = rest.strip_prefix("fn ") {
            let name: String = sig
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let close = format!("{}}}", " ".repeat(indent));
            let end = (i + 1..lines.len())
                .find(|j| lines[*j].trim_end() == close)
                .unwrap_or(i);
            out.push((name, end + 1 - i));
            i = end;
        }
        i += 1;
    }
    out
}

#[test]
fn no_function_is_longer_than_120_lines_but_the_ones_named_to_split() {
    let mut long = Vec::new();
    let mut still_long = BTreeSet::new();
    for (rel, text) in code_files() {
        let cut = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
        for (name, n) in functions(&text[..cut]) {
            let key = format!("{rel}:{name}");
            if n > MAX_FN_LINES {
                if LONG_FNS_LEFT.contains(&key.as_str()) {
                    still_long.insert(key);
                } else {
                    long.push(format!("{key}: {n} lines"));
                }
            }
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
    let split: Vec<&&str> = LONG_FNS_LEFT
        .iter()
        .filter(|k| !still_long.contains(**k))
        .collect();
    assert!(
        split.is_empty(),
        "split already (take them off LONG_FNS_LEFT): {split:?}"
    );
}

#[test]
fn the_checker_sees_imports_and_not_comments_or_tests() {
    let code = code_of(
        "use crate::cell::Reason;\n// crate::cli in a comment\nuse crate::{pool::Pool, hive};\nfn f() { crate::os::x(); }\n#[cfg(test)]\nmod tests {\n use crate::up::x;\n}\n",
    );
    assert_eq!(
        crate_paths(&code),
        ["cell", "hive", "os", "pool"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
