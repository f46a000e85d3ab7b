//! Tests of the scanner on small sources.

use super::*;
use crate::lexer::lex;

fn scan_source(source: &str) -> FileScan {
    scan(&lex(source).unwrap())
}

fn leaves(source: &str) -> Vec<(String, UseBinding)> {
    scan_source(source).modules[0]
        .uses
        .iter()
        .map(|u| (u.path.join("::"), u.binding.clone()))
        .collect()
}

fn name(bound: &str) -> UseBinding {
    UseBinding::Name(bound.to_owned())
}

fn paths(source: &str) -> Vec<String> {
    scan_source(source).modules[0]
        .paths
        .iter()
        .map(|p| p.segments.join("::"))
        .collect()
}

#[test]
fn use_trees_are_flattened_with_self_globs_and_renames() {
    let source = "pub(crate) use crate::a::{self, b::{c as d, e}, f::*};\nuse super::g;";
    assert_eq!(
        leaves(source),
        [
            ("crate::a".to_owned(), name("a")),
            ("crate::a::b::c".to_owned(), name("d")),
            ("crate::a::b::e".to_owned(), name("e")),
            ("crate::a::f".to_owned(), UseBinding::Glob),
            ("super::g".to_owned(), name("g")),
        ]
    );
}

#[test]
fn use_of_an_absolute_path_keeps_its_marker() {
    assert_eq!(
        leaves("use ::std::fmt;"),
        [("::::std::fmt".to_owned(), name("fmt"))]
    );
}

#[test]
fn a_malformed_use_tree_does_not_hang() {
    assert_eq!(leaves("use a::{1, b};"), [("a::b".to_owned(), name("b"))]);
}

#[test]
fn paths_in_expressions_and_types_are_found_but_not_method_turbofish() {
    let source = "fn f(x: crate::a::T) -> super::b::U { let v = $crate::c::g(); v.collect::<Vec<_>>(); <X as self::d::Y>::z() }";
    assert_eq!(
        paths(source),
        ["crate::a::T", "super::b::U", "crate::c::g", "self::d::Y"]
    );
}

#[test]
fn paths_in_comments_strings_and_attributes_are_not_read() {
    let source = r##"// crate::a::x
        /* crate::b /* nested */ crate::c */
        #[doc = "crate::d"]
        #[serde(with = "crate::e")]
        const S: &str = r#"crate::f"#;"##;
    assert!(paths(source).is_empty());
}

#[test]
fn out_of_line_and_inline_modules_with_path_attributes() {
    let source =
        "mod a;\n#[path = \"x/y.rs\"]\npub mod b;\nmod c { mod d; fn f() { crate::a::g() } }";
    let scanned = scan_source(source);
    let decls: Vec<(&str, Option<&str>)> = scanned.modules[0]
        .decls
        .iter()
        .map(|d| (d.name.as_str(), d.path.as_deref()))
        .collect();
    assert_eq!(decls, [("a", None), ("b", Some("x/y.rs"))]);
    assert_eq!(scanned.modules[1].name, "c");
    assert_eq!(scanned.modules[1].parent, Some(0));
    assert_eq!(scanned.modules[1].decls[0].name, "d");
    assert_eq!(scanned.modules[1].paths[0].segments, ["crate", "a", "g"]);
}

#[test]
fn test_code_is_marked_by_cfg_test_and_test_attributes() {
    let source = "use crate::a::X;\n#[cfg(test)]\nuse crate::b::Y;\n#[cfg(all(test, unix))]\nfn helper() { crate::c::z() }\n#[tokio::test(flavor = \"current_thread\")]\nasync fn t() { crate::d::w() }\nfn real() { crate::e::v() }\n#[cfg(test)]\nmod tests;\n#[cfg(not(test))]\nfn other() { crate::f::u() }";
    let scanned = scan_source(source);
    let module = &scanned.modules[0];
    let uses: Vec<bool> = module.uses.iter().map(|u| u.test).collect();
    assert_eq!(uses, [false, true]);
    let paths: Vec<(String, bool)> = module
        .paths
        .iter()
        .map(|p| (p.segments[1].clone(), p.test))
        .collect();
    assert_eq!(
        paths,
        [
            ("c".to_owned(), true),
            ("d".to_owned(), true),
            ("e".to_owned(), false),
            ("f".to_owned(), false)
        ]
    );
    assert!(module.decls[0].test);
    let fns: Vec<(&str, bool)> = scanned
        .fns
        .iter()
        .map(|f| (f.name.as_str(), f.test))
        .collect();
    assert_eq!(
        fns,
        [
            ("helper", true),
            ("t", true),
            ("real", false),
            ("other", false)
        ]
    );
}

#[test]
fn an_inner_cfg_test_marks_the_whole_file() {
    let scanned = scan_source("#![cfg(test)]\nfn f() { crate::a::b() }");
    assert!(scanned.modules[0].test);
    assert!(scanned.modules[0].paths[0].test);
    assert!(scanned.fns[0].test);
}

#[test]
fn inline_test_modules_are_counted_from_their_attribute_to_their_brace() {
    let source = "fn a() {}\n\n#[cfg(test)]\n#[allow(clippy::x)]\nmod tests {\n    #[cfg(test)]\n    mod inner {}\n    fn b() {}\n}\n";
    let scanned = scan_source(source);
    assert_eq!(scanned.test_module_lines, 7);
    assert_eq!(scanned.modules[1].name, "tests");
    assert!(scanned.modules[1].test);
    assert!(scanned.fns[1].test);
}

#[test]
fn functions_are_named_by_their_blocks_and_span_fn_to_brace() {
    let source = "impl<T: Into<String>> Store<T> where T: Clone {\n    pub async fn open(\n        x: u8,\n    ) -> Result<(), E> {\n        let f = |y| { y };\n    }\n}\nimpl fmt::Display for Batch<'_> { fn fmt(&self) { fn inner() {} } }\nunsafe impl<T> Send for Box<dyn Foo<T>> {}\ntrait Encode { fn encode(&self); fn size(&self) -> usize { 0 } }\nmod wire { pub const fn f() -> [u8; 2] { [0; 2] } }";
    let scanned = scan_source(source);
    let fns: Vec<(&str, u32, u32)> = scanned
        .fns
        .iter()
        .map(|f| (f.name.as_str(), f.start, f.end))
        .collect();
    assert_eq!(
        fns,
        [
            ("Store::open", 2, 6),
            ("<Batch as Display>::fmt", 8, 8),
            ("<Batch as Display>::fmt::inner", 8, 8),
            ("Encode::size", 10, 10),
            ("wire::f", 11, 11),
        ]
    );
    assert_eq!(scanned.fns[0].lines(), 5);
}

#[test]
fn function_types_and_macro_fragments_are_not_functions() {
    let source = "type F = fn(u8) -> u8;\nfn g(f: impl Fn() -> u8) {}\nmacro_rules! m { ($n:ident) => { fn $n() {} }; }";
    let scanned = scan_source(source);
    let names: Vec<&str> = scanned.fns.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["g"]);
    assert_eq!(scanned.modules[0].items, ["F", "g", "m"]);
}

#[test]
fn items_are_recorded_only_at_module_scope() {
    let source = "pub struct A; enum B {} pub(crate) static mut C: u8 = 0; const _: () = (); trait D {} impl A { const E: u8 = 0; fn h() { struct F; } }";
    assert_eq!(scan_source(source).modules[0].items, ["A", "B", "C", "D"]);
}

#[test]
fn keywords_followed_by_a_path_separator_start_paths() {
    assert_eq!(paths("fn f() { default::g(); }"), ["default::g"]);
}
