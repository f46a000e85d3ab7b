//! Shared by the fixture tests: finding the rules a validation states in its sources
//! (each `errors.add` with a message written there) and checking that each has a
//! rejected fixture whose expected message carries it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use kaas_pipeline::document::Document;

/// The YAML and JSON files in `dir`, by name.
pub fn files_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("fixture directory exists")
        .map(|entry| {
            let name = entry.expect("readable directory entry").file_name();
            name.into_string().expect("UTF-8 file name")
        })
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".json"))
        .collect()
}

/// Every error message of `documents`, in order.
pub fn messages<T>(documents: &[Document<T>]) -> Vec<String> {
    documents
        .iter()
        .flat_map(|d| match &d.outcome {
            Ok(_) => Vec::new(),
            Err(errors) => errors.lines(),
        })
        .collect()
}

/// Fails unless the fixtures in `dir` and the names in `table` are the same.
pub fn assert_paired(dir: &Path, table: &[(&str, &[&str])]) {
    let on_disk = files_in(dir);
    let in_table: BTreeSet<String> = table.iter().map(|(name, _)| (*name).to_owned()).collect();
    assert_eq!(
        on_disk.difference(&in_table).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "fixtures without expected messages"
    );
    assert_eq!(
        in_table.difference(&on_disk).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "expected messages without a fixture"
    );
}

/// Fails unless every fixture of `table` in `dir`, read by `parse(name, text)`, is
/// refused with exactly its messages.
pub fn assert_refused<T>(
    dir: &Path,
    table: &[(&str, &[&str])],
    parse: impl Fn(&str, &str) -> Vec<Document<T>>,
) {
    let mut failures = Vec::new();
    for (name, expected) in table {
        let text = fs::read_to_string(dir.join(name)).expect("readable fixture");
        let documents = parse(name, &text);
        assert!(!documents.is_empty(), "{name}: no document found");
        if documents.iter().any(|d| d.outcome.is_ok()) {
            failures.push(format!("{name}: accepted"));
            continue;
        }
        let got = messages(&documents);
        if got != *expected {
            failures.push(format!("{name}:\n  expected {expected:#?}\n  got {got:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The source files of `dir` (relative to the crate).
pub fn sources_in(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    fs::read_dir(&dir)
        .expect("the source directory")
        .map(|entry| entry.expect("a directory entry").path())
        .collect()
}

/// Fails unless each rule of `sources` (at least `at_least` of them) is matched by
/// one of the `expected` messages.
pub fn assert_every_rule_has_a_fixture(sources: &[PathBuf], expected: &[&str], at_least: usize) {
    let mut rules = 0;
    let mut missing = Vec::new();
    for path in sources {
        let source = fs::read_to_string(path).expect("readable source");
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        for fragment in rule_fragments(code) {
            rules += 1;
            if !expected.iter().any(|line| line.contains(&fragment)) {
                missing.push(format!("{}: {fragment:?}", path.display()));
            }
        }
    }
    assert!(
        rules >= at_least,
        "only {rules} rules found in {sources:?}: is the scan still right?"
    );
    assert!(
        missing.is_empty(),
        "rules without a fixture:\n{}",
        missing.join("\n")
    );
}

/// The longest fixed piece of the first string literal that each `errors.add(...)`
/// call in `code` writes as its reason (the path is the first argument).
fn rule_fragments(code: &str) -> Vec<String> {
    let mut fragments = Vec::new();
    for call in code.split("errors.add(").skip(1) {
        let Some(literal) = first_string_literal(call) else {
            continue;
        };
        let text = unescape(&literal);
        let longest = split_placeholders(&text)
            .into_iter()
            .max_by_key(|piece| piece.len())
            .unwrap_or_default();
        if longest.len() >= 8 {
            fragments.push(longest);
        }
    }
    fragments
}

/// The first string literal in the call's arguments after its first (the path),
/// or `None` when the reason is not written there.
fn first_string_literal(call: &str) -> Option<String> {
    let mut depth = 0i32;
    let mut after_path = false;
    let mut chars = call.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return None,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => after_path = true,
            ';' => return None,
            '"' => {
                let rest = &call[i + 1..];
                let mut end = 0;
                let mut escaped = false;
                for (j, d) in rest.char_indices() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == '"' {
                        end = j;
                        break;
                    }
                }
                if after_path {
                    return Some(rest[..end].to_owned());
                }
                for _ in 0..rest[..=end].chars().count() {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    None
}

/// Undoes the escapes a message literal uses: line continuations, `\"`, `\\`.
fn unescape(literal: &str) -> String {
    let mut out = String::new();
    let mut chars = literal.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\n') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The pieces of a format string between its `{...}` placeholders; `{{` and `}}` are
/// the literal braces they stand for.
fn split_placeholders(text: &str) -> Vec<String> {
    let mut pieces = vec![String::new()];
    let mut in_placeholder = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' | '}' if !in_placeholder && chars.peek() == Some(&c) => {
                chars.next();
                pieces.last_mut().expect("never empty").push(c);
            }
            '{' => {
                in_placeholder = true;
                pieces.push(String::new());
            }
            '}' if in_placeholder => in_placeholder = false,
            c if !in_placeholder => pieces.last_mut().expect("never empty").push(c),
            _ => {}
        }
    }
    pieces
}
