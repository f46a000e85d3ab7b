//! Mentions of `crate::a::make` that are not code. See [`crate::a::make`].

/// Doc comment: [`crate::a`] and `super::a::make()`.
pub struct B;

// Line comment: use crate::a::make;

/* Block comment /* nested: crate::a::make() */ still a comment: use crate::a; */

/** Outer block doc comment: crate::a::make() */
pub const PLAIN: &str = "crate::a::make() and an escaped quote \" crate::a::make()";
pub const RAW: &str = r#"a raw string: "crate::a::make()" "#;
pub const RAW_TWO: &str = r##"two hashes: "# crate::a::make() "##;
pub const BYTES: &[u8] = b"crate::a::make()";
pub const RAW_BYTES: &[u8] = br"crate::a::make()";
pub const QUOTE: char = '"';
pub const AFTER_QUOTE: &str = "crate::a::make()";
pub const APOSTROPHE: char = '\'';

#[doc = "crate::a::make"]
#[allow(clippy::all, reason = "crate::a::make")]
pub fn lifetimes<'a>(text: &'a str) -> &'a str {
    text
}
