//! The structure check on the small crates in `testdata/`: each holds one kind of
//! cycle, one kind of non-cycle, or files and functions around the size limits.

use std::path::PathBuf;
use std::process::Command;

use kaas_structure::{EdgeOptions, Report, check_crate};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn check(name: &str, options: EdgeOptions) -> Report {
    check_crate(&fixture(name), options).unwrap_or_else(|e| panic!("checking {name}: {e}"))
}

/// The top-level cycles as module sets.
fn cycle_sets(report: &Report) -> Vec<Vec<&str>> {
    report
        .cycles
        .iter()
        .map(|c| c.modules.iter().map(String::as_str).collect())
        .collect()
}

/// Every edge as `parent: from -> to`, sorted.
fn edges(report: &Report) -> Vec<String> {
    let mut edges: Vec<String> = report
        .edges
        .iter()
        .map(|(_, parent, e)| format!("{parent}: {} -> {}", e.from, e.to))
        .collect();
    edges.sort();
    edges
}

#[test]
fn a_ring_of_use_lines_is_one_cycle_without_the_module_that_only_depends_on_it() {
    let report = check("use_cycle", EdgeOptions::default());
    assert_eq!(cycle_sets(&report), [["a", "b", "c"]]);
    let cycle = &report.cycles[0];
    assert_eq!(cycle.krate, "src/lib.rs");
    let examples: Vec<String> = cycle
        .edges
        .iter()
        .map(|e| {
            format!(
                "{} -> {} at {}:{} {}",
                e.from, e.to, e.example.file, e.example.line, e.example.text
            )
        })
        .collect();
    assert_eq!(
        examples,
        [
            "a -> b at src/a.rs:2 use crate::b::B",
            "b -> c at src/b.rs:2 use crate::c::C",
            "c -> a at src/c.rs:2 use super::a::*",
        ]
    );
    assert_eq!(
        edges(&report),
        [": a -> b", ": b -> c", ": c -> a", ": d -> a", ": d -> c"]
    );
}

#[test]
fn paths_in_expressions_types_and_macros_make_a_cycle_without_use_lines() {
    let report = check("expr_cycle", EdgeOptions::default());
    assert_eq!(cycle_sets(&report), [["a", "b", "c"]]);
    let texts: Vec<&str> = report.cycles[0]
        .edges
        .iter()
        .map(|e| e.example.text.as_str())
        .collect();
    assert_eq!(texts, ["crate::b::g", "super::c::Value", "crate::a::Thing"]);
}

#[test]
fn re_exports_by_the_root_by_a_module_and_by_a_glob_are_followed() {
    let report = check("reexport_cycle", EdgeOptions::default());
    assert_eq!(cycle_sets(&report), [["a", "b"], ["c", "d"], ["e", "f"]]);
    let b_to_a = &report.cycles[0].edges[1];
    assert_eq!((b_to_a.from.as_str(), b_to_a.to.as_str()), ("b", "a"));
    assert_eq!(b_to_a.example.text, "use crate::Thing");
    assert_eq!(b_to_a.example.via.as_deref(), Some("crate root"));
    let f_to_e = &report.cycles[2].edges[1];
    assert_eq!(
        (
            f_to_e.from.as_str(),
            f_to_e.to.as_str(),
            f_to_e.example.text.as_str()
        ),
        ("f", "e", "crate::e::Made")
    );
}

#[test]
fn names_in_comments_strings_characters_and_attributes_make_no_edge() {
    let report = check("comments_strings", EdgeOptions::default());
    assert!(report.cycles.is_empty(), "{report}");
    assert_eq!(edges(&report), [": a -> b"]);
}

#[test]
fn references_between_a_module_and_its_submodules_make_no_top_level_edge() {
    let report = check("parent_child", EdgeOptions::default());
    assert!(report.cycles.is_empty(), "{report}");
    assert_eq!(edges(&report), [": b -> a"]);
    assert!(report.nested_cycles.is_empty());
}

#[test]
fn cycles_among_submodules_are_reported_when_asked_for_but_not_gated() {
    let report = check(
        "parent_child",
        EdgeOptions {
            nested: true,
            ..EdgeOptions::default()
        },
    );
    assert!(report.cycles.is_empty());
    assert!(report.violations().is_empty());
    let nested: Vec<(&str, Vec<&str>)> = report
        .nested_cycles
        .iter()
        .map(|c| {
            (
                c.parent.as_str(),
                c.modules.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(nested, [("a", vec!["x", "y"])]);
    assert_eq!(
        edges(&report),
        [": b -> a", "a: inline -> y", "a: x -> y", "a: y -> x"]
    );
}

#[test]
fn a_module_file_named_by_a_path_attribute_and_its_children_are_followed() {
    let report = check("path_attr", EdgeOptions::default());
    assert_eq!(cycle_sets(&report), [["a", "b"]]);
    let b_to_a = &report.cycles[0].edges[1];
    assert_eq!(b_to_a.example.file, "src/elsewhere/inner.rs");
}

/// `count` statements, each on its own line, indented by `indent` spaces.
fn filler(indent: usize, count: usize) -> String {
    (0..count)
        .map(|i| format!("{:indent$}let _v{i} = {i};\n", ""))
        .collect()
}

/// `count` constants, one a line.
fn constants(prefix: &str, indent: usize, count: usize) -> String {
    (0..count)
        .map(|i| format!("{:indent$}const {prefix}{i}: u32 = {i};\n", ""))
        .collect()
}

/// A crate with files and functions at and over the size limits, and the places the
/// limits do not apply (test modules, test functions, test files, generated code),
/// written into `dir`: thousands of lines of filler, made here rather than committed.
fn long_code_crate(dir: &std::path::Path) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("gen")).expect("create the fixture crate");
    let write = |file: &str, text: String| {
        std::fs::write(src.join(file), text).expect("write a fixture file")
    };
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"long_code\"\nversion = \"0.0.0\"\nedition = \"2024\"\n",
    )
    .expect("write the fixture manifest");
    write(
        "lib.rs",
        "//! Files and functions at and over the size limits.\nmod at_limit;\nmod functions;\n\
         mod gen;\nmod long_file;\nmod long_tests_only;\n#[cfg(test)]\nmod tests;\n"
            .to_owned(),
    );
    // 900 lines: at the limit.
    write(
        "at_limit.rs",
        format!("//! At the limit.\n{}", constants("C", 0, 899)),
    );
    // 901 lines before the inline test module: over it.
    write(
        "long_file.rs",
        format!(
            "//! Over the limit.\n{}#[cfg(test)]\nmod tests {{\n    #[test]\n    fn t() {{}}\n}}\n",
            constants("C", 0, 900)
        ),
    );
    write(
        "long_tests_only.rs",
        format!(
            "//! Short, with a long inline test module.\npub fn f() {{}}\n\n#[cfg(test)]\nmod tests {{\n{}}}\n",
            constants("T", 4, 1000)
        ),
    );
    write(
        "gen/mod.rs",
        format!(
            "//! Generated code.\npub fn generated() {{\n{}}}\n",
            filler(4, 998)
        ),
    );
    write(
        "tests.rs",
        format!("//! A test file.\npub fn huge() {{\n{}}}\n", filler(4, 998)),
    );
    // `too_long` spans lines 4-124 (121 lines), `at_limit` 127-246 (120),
    // `Holder::method` 252-381 (130); the test function and test module are exempt.
    write(
        "functions.rs",
        format!(
            "//! Functions around the limit.\n\n/// Over.\npub fn too_long() {{\n{}}}\n\n\
             /// At the limit.\npub fn at_limit() {{\n{}}}\n\npub struct Holder;\n\n\
             impl Holder {{\n    /// Over, named by its type.\n    pub fn method() {{\n{}    }}\n}}\n\n\
             #[test]\npub fn test_function() {{\n{}}}\n\n#[cfg(test)]\nmod tests {{\n    \
             pub fn helper() {{\n{}    }}\n}}\n",
            filler(4, 119),
            filler(4, 118),
            filler(8, 128),
            filler(4, 198),
            filler(8, 198),
        ),
    );
}

#[test]
fn long_files_and_functions_are_found_and_tests_and_generated_code_are_exempt() {
    let dir = tempfile::tempdir().unwrap();
    long_code_crate(dir.path());
    let report = check_crate(dir.path(), EdgeOptions::default()).expect("checking long_code");
    let files: Vec<(&str, u32)> = report
        .long_files
        .iter()
        .map(|f| (f.path.as_str(), f.lines))
        .collect();
    assert_eq!(files, [("src/long_file.rs", 901)]);
    let fns: Vec<(&str, &str, u32, u32)> = report
        .long_fns
        .iter()
        .map(|f| (f.path.as_str(), f.name.as_str(), f.line, f.lines))
        .collect();
    assert_eq!(
        fns,
        [
            ("src/functions.rs", "too_long", 4, 121),
            ("src/functions.rs", "Holder::method", 252, 130)
        ]
    );
    let keys: Vec<String> = report.violations().iter().map(|v| v.key()).collect();
    assert_eq!(
        keys,
        [
            "long-file src/long_file.rs",
            "long-fn src/functions.rs too_long",
            "long-fn src/functions.rs Holder::method"
        ]
    );
}

#[test]
fn the_command_exits_non_zero_and_prints_the_cycle_with_its_edges() {
    let output = Command::new(env!("CARGO_BIN_EXE_kaas-structure"))
        .arg("--crate")
        .arg(fixture("use_cycle"))
        .output()
        .expect("run kaas-structure");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("src/lib.rs: {a, b, c} depend on each other:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("c -> a: src/c.rs:2 `use super::a::*`"),
        "{stdout}"
    );
}

#[test]
fn the_command_exits_zero_on_a_crate_without_violations() {
    let output = Command::new(env!("CARGO_BIN_EXE_kaas-structure"))
        .arg("--crate")
        .arg(fixture("comments_strings"))
        .output()
        .expect("run kaas-structure");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
