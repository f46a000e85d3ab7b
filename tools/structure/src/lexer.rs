//! A small Rust lexer: just enough to tell code from comments and literals.
//!
//! It turns a source file into identifiers, lifetimes, literals and punctuation, each
//! with its line, and drops everything the structure check must not read: line
//! comments (doc comments included), nested block comments, and the inside of string,
//! byte-string, C-string, raw-string and character literals. A lifetime (`'a`) is told
//! from a character literal (`'a'`) by whether a quote follows the first character.
//! Punctuation is one character per token except `::`, `->` and `=>`, which the scanner
//! needs whole (a path separator; arrows so that `>` still closes generics).

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An identifier or keyword, such as `crate`, `mod` or `Store`.
    Ident,
    /// A raw identifier (`r#type`); its text is the name without `r#`, and it is never
    /// a keyword.
    RawIdent,
    /// A lifetime or loop label, `'a` (text includes the quote).
    Lifetime,
    /// A string-like literal: `"…"`, `b"…"`, `c"…"`, `r#"…"#` and their kin.
    Str,
    /// A character or byte literal, `'x'` or `b'x'`.
    Char,
    /// A numeric literal.
    Number,
    /// Punctuation: one character, or `::`, `->`, `=>`.
    Punct,
}

/// One token and the line it starts on (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    /// What it is.
    pub kind: Kind,
    /// Its text as written (for a raw identifier, without `r#`).
    pub text: &'a str,
    /// The line it starts on, counting from 1.
    pub line: u32,
}

impl Token<'_> {
    /// Whether this is the identifier or keyword `word` (never true for `r#word`).
    pub fn is_ident(&self, word: &str) -> bool {
        self.kind == Kind::Ident && self.text == word
    }

    /// Whether this is the punctuation `punct`.
    pub fn is_punct(&self, punct: &str) -> bool {
        self.kind == Kind::Punct && self.text == punct
    }

    /// Whether this is a name: an identifier or raw identifier.
    pub fn is_name(&self) -> bool {
        matches!(self.kind, Kind::Ident | Kind::RawIdent)
    }

    /// The value of a plain or raw string literal without escapes, such as the file of
    /// `#[path = "x.rs"]`; `None` for other tokens and for strings with escapes.
    pub fn str_value(&self) -> Option<&str> {
        if self.kind != Kind::Str {
            return None;
        }
        if let Some(rest) = self.text.strip_prefix('r') {
            let hashes = rest.len() - rest.trim_start_matches('#').len();
            return rest.get(hashes + 1..rest.len() - hashes - 1);
        }
        let inner = self.text.strip_prefix('"')?.strip_suffix('"')?;
        (!inner.contains('\\')).then_some(inner)
    }
}

/// A file the lexer cannot read: an unterminated comment or literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    /// The line where the unterminated comment or literal starts.
    pub line: u32,
    /// What is unterminated.
    pub what: &'static str,
}

/// Splits `source` into tokens, dropping comments and whitespace.
pub fn lex(source: &str) -> Result<Vec<Token<'_>>, LexError> {
    let mut lexer = Lexer {
        src: source,
        bytes: source.as_bytes(),
        pos: 0,
        line: 1,
        counted: 0,
    };
    lexer.skip_shebang();
    let mut tokens = Vec::with_capacity(source.len() / 4);
    while let Some(token) = lexer.next_token()? {
        tokens.push(token);
    }
    Ok(tokens)
}

struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// The line at byte `counted`; lines are counted lazily up to each token's start.
    line: u32,
    counted: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self, ahead: usize) -> u8 {
        self.bytes.get(self.pos + ahead).copied().unwrap_or(0)
    }

    fn line_at(&mut self, pos: usize) -> u32 {
        let newlines = self.bytes[self.counted..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += u32::try_from(newlines).unwrap_or(u32::MAX);
        self.counted = pos;
        self.line
    }

    fn skip_shebang(&mut self) {
        if self.src.starts_with("#!") && !self.src.starts_with("#![") {
            self.pos = self.src.find('\n').unwrap_or(self.src.len());
        }
    }

    fn error(&mut self, start: usize, what: &'static str) -> LexError {
        LexError {
            line: self.line_at(start),
            what,
        }
    }

    fn token(&mut self, kind: Kind, start: usize) -> Token<'a> {
        let line = self.line_at(start);
        Token {
            kind,
            text: &self.src[start..self.pos],
            line,
        }
    }

    fn next_token(&mut self) -> Result<Option<Token<'a>>, LexError> {
        loop {
            let start = self.pos;
            let Some(&byte) = self.bytes.get(start) else {
                return Ok(None);
            };
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                b'/' if self.peek(1) == b'/' => {
                    self.pos = self.src[start..]
                        .find('\n')
                        .map_or(self.src.len(), |n| start + n);
                }
                b'/' if self.peek(1) == b'*' => self.block_comment(start)?,
                b'"' => return self.quoted(start, 0, Kind::Str).map(Some),
                b'\'' => return self.quote_or_lifetime(start).map(Some),
                b'0'..=b'9' => return Ok(Some(self.number(start))),
                b'r' | b'b' | b'c' => return self.prefixed(start).map(Some),
                _ if is_ident_start(byte) => return Ok(Some(self.ident(start, Kind::Ident))),
                _ => return Ok(Some(self.punct(start))),
            }
        }
    }

    fn block_comment(&mut self, start: usize) -> Result<(), LexError> {
        let mut depth = 0usize;
        while self.pos < self.bytes.len() {
            if self.peek(0) == b'/' && self.peek(1) == b'*' {
                depth += 1;
                self.pos += 2;
            } else if self.peek(0) == b'*' && self.peek(1) == b'/' {
                depth -= 1;
                self.pos += 2;
                if depth == 0 {
                    return Ok(());
                }
            } else {
                self.pos += 1;
            }
        }
        Err(self.error(start, "block comment"))
    }

    /// A literal whose body starts at `self.pos + skip` with a `"` (or `'` for chars)
    /// and ends at the next unescaped one.
    fn quoted(&mut self, start: usize, skip: usize, kind: Kind) -> Result<Token<'a>, LexError> {
        let quote = if kind == Kind::Char { b'\'' } else { b'"' };
        self.pos += skip + 1;
        while let Some(&byte) = self.bytes.get(self.pos) {
            self.pos += 1;
            if byte == b'\\' {
                self.pos += 1;
            } else if byte == quote {
                return Ok(self.token(kind, start));
            }
        }
        Err(self.error(
            start,
            if kind == Kind::Char {
                "character literal"
            } else {
                "string"
            },
        ))
    }

    /// A raw string: `prefix` bytes (`r`, `br`, `cr`), then hashes, a quote, the body,
    /// a quote and as many hashes.
    fn raw_string(&mut self, start: usize, prefix: usize) -> Result<Token<'a>, LexError> {
        self.pos += prefix;
        let hashes = self.bytes[self.pos..]
            .iter()
            .take_while(|&&b| b == b'#')
            .count();
        self.pos += hashes + 1;
        let closing = format!("\"{}", "#".repeat(hashes));
        match self.src[self.pos..].find(&closing) {
            Some(offset) => {
                self.pos += offset + closing.len();
                Ok(self.token(Kind::Str, start))
            }
            None => Err(self.error(start, "raw string")),
        }
    }

    /// `'x'`, `'\n'` and `'é'` are characters; `'a` and `'static` are lifetimes.
    fn quote_or_lifetime(&mut self, start: usize) -> Result<Token<'a>, LexError> {
        if self.peek(1) == b'\\' {
            return self.quoted(start, 0, Kind::Char);
        }
        let width = self.src[start + 1..]
            .chars()
            .next()
            .map_or(1, char::len_utf8);
        if self.bytes.get(start + 1 + width) == Some(&b'\'') {
            self.pos = start + 2 + width;
            return Ok(self.token(Kind::Char, start));
        }
        self.pos += 1;
        if self.peek(0) == b'r' && self.peek(1) == b'#' {
            self.pos += 2;
        }
        while self
            .bytes
            .get(self.pos)
            .is_some_and(|&b| is_ident_continue(b))
        {
            self.pos += 1;
        }
        let kind = if self.pos > start + 1 {
            Kind::Lifetime
        } else {
            Kind::Punct
        };
        Ok(self.token(kind, start))
    }

    /// Identifiers that may start a literal: `r"…"`, `r#"…"#`, `r#ident`, `b'x'`,
    /// `b"…"`, `br"…"`, `c"…"`, `cr"…"`.
    fn prefixed(&mut self, start: usize) -> Result<Token<'a>, LexError> {
        let (first, second, third) = (self.peek(0), self.peek(1), self.peek(2));
        let raw_after =
            |at: u8, next: u8| at == b'"' || (at == b'#' && (next == b'"' || next == b'#'));
        match (first, second) {
            (b'r', b'#') if is_ident_start(third) => {
                let line = self.line_at(start);
                let mut token = self.ident(start + 2, Kind::RawIdent);
                token.line = line;
                Ok(token)
            }
            (b'r', _) if raw_after(second, third) => self.raw_string(start, 1),
            (b'b', b'\'') => self.quoted(start, 1, Kind::Char),
            (b'b' | b'c', b'"') => self.quoted(start, 1, Kind::Str),
            (b'b' | b'c', b'r') if raw_after(third, self.peek(3)) => self.raw_string(start, 2),
            _ => Ok(self.ident(start, Kind::Ident)),
        }
    }

    fn ident(&mut self, start: usize, kind: Kind) -> Token<'a> {
        self.pos = start;
        while self
            .bytes
            .get(self.pos)
            .is_some_and(|&b| is_ident_continue(b))
        {
            self.pos += 1;
        }
        self.token(kind, start)
    }

    /// Digits, letters and underscores (`0x1F`, `1_000u64`), a fraction when a digit
    /// follows the dot (so `0..10` stays a range), and a signed exponent.
    fn number(&mut self, start: usize) -> Token<'a> {
        let hex = self.peek(1) == b'x';
        let mut seen_dot = false;
        loop {
            let byte = self.peek(0);
            if byte.is_ascii_alphanumeric() || byte == b'_' {
                self.pos += 1;
            } else if byte == b'.' && !seen_dot && self.peek(1).is_ascii_digit() {
                seen_dot = true;
                self.pos += 1;
            } else if (byte == b'+' || byte == b'-')
                && !hex
                && matches!(self.bytes[self.pos - 1], b'e' | b'E')
                && self.peek(1).is_ascii_digit()
            {
                self.pos += 1;
            } else {
                return self.token(Kind::Number, start);
            }
        }
    }

    fn punct(&mut self, start: usize) -> Token<'a> {
        let pair = [self.peek(0), self.peek(1)];
        let width = match &pair {
            b"::" | b"->" | b"=>" => 2,
            _ => self.src[start..].chars().next().map_or(1, char::len_utf8),
        };
        self.pos += width;
        self.token(Kind::Punct, start)
    }
}

fn is_ident_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte >= 0x80
}

fn is_ident_continue(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(source: &str) -> Vec<&str> {
        lex(source).unwrap().iter().map(|t| t.text).collect()
    }

    fn kinds(source: &str) -> Vec<Kind> {
        lex(source).unwrap().iter().map(|t| t.kind).collect()
    }

    #[test]
    fn comments_are_dropped_including_doc_and_nested_block_comments() {
        let source =
            "a // crate::x\n/// crate::y\n//! crate::z\nb /* one /* two */ still */ c /**/ d";
        assert_eq!(texts(source), ["a", "b", "c", "d"]);
    }

    #[test]
    fn unterminated_block_comment_is_an_error_with_its_line() {
        let error = lex("a\n/* one /* two */\nb").unwrap_err();
        assert_eq!(
            error,
            LexError {
                line: 2,
                what: "block comment"
            }
        );
    }

    #[test]
    fn strings_keep_escaped_quotes_inside() {
        assert_eq!(
            texts(r#"x = "a \" crate::b \\"; y"#),
            ["x", "=", r#""a \" crate::b \\""#, ";", "y"]
        );
    }

    #[test]
    fn raw_strings_end_at_the_quote_with_as_many_hashes() {
        let source = r###"r#"crate::x "quoted" "# r"plain" br##"a"#b"## cr"c" z"###;
        assert_eq!(
            kinds(source),
            [Kind::Str, Kind::Str, Kind::Str, Kind::Str, Kind::Ident]
        );
        assert_eq!(texts(source)[2], r###"br##"a"#b"##"###);
    }

    #[test]
    fn byte_and_c_strings_and_byte_chars_are_literals() {
        let source = r#"b"crate::a" c"crate::b" b'\'' b'x' bar car"#;
        assert_eq!(
            kinds(source),
            [
                Kind::Str,
                Kind::Str,
                Kind::Char,
                Kind::Char,
                Kind::Ident,
                Kind::Ident
            ]
        );
    }

    #[test]
    fn lifetimes_are_told_from_chars() {
        let source = r"fn f<'a>(x: &'a str) -> char { 'a' } '\'' '\\' 'é' '\u{1F600}' 'static 'label: loop {}";
        let tokens = lex(source).unwrap();
        let interesting: Vec<(Kind, &str)> = tokens
            .iter()
            .filter(|t| matches!(t.kind, Kind::Lifetime | Kind::Char))
            .map(|t| (t.kind, t.text))
            .collect();
        assert_eq!(
            interesting,
            [
                (Kind::Lifetime, "'a"),
                (Kind::Lifetime, "'a"),
                (Kind::Char, "'a'"),
                (Kind::Char, r"'\''"),
                (Kind::Char, r"'\\'"),
                (Kind::Char, "'é'"),
                (Kind::Char, r"'\u{1F600}'"),
                (Kind::Lifetime, "'static"),
                (Kind::Lifetime, "'label"),
            ]
        );
    }

    #[test]
    fn a_quote_character_does_not_open_a_string() {
        assert_eq!(
            texts(r#"'"' crate::x '"'"#),
            [r#"'"'"#, "crate", "::", "x", r#"'"'"#]
        );
    }

    #[test]
    fn raw_identifiers_are_names_but_not_keywords() {
        let tokens = lex("r#type r#mod mod").unwrap();
        assert_eq!(tokens[0].kind, Kind::RawIdent);
        assert_eq!(tokens[0].text, "type");
        assert!(!tokens[1].is_ident("mod"));
        assert!(tokens[2].is_ident("mod"));
    }

    #[test]
    fn paths_arrows_and_ranges_are_split_as_the_scanner_needs() {
        assert_eq!(texts("crate::a::b"), ["crate", "::", "a", "::", "b"]);
        assert_eq!(texts("0..10"), ["0", ".", ".", "10"]);
        assert_eq!(texts("1.5e-3 + 0x1f-2"), ["1.5e-3", "+", "0x1f", "-", "2"]);
        assert_eq!(
            texts("Fn() -> u8 => x"),
            ["Fn", "(", ")", "->", "u8", "=>", "x"]
        );
        assert_eq!(
            texts("Vec<Vec<u8>>"),
            ["Vec", "<", "Vec", "<", "u8", ">", ">"]
        );
    }

    #[test]
    fn lines_count_newlines_inside_comments_and_strings() {
        let source = "a\n/* x\ny */ b \"one\ntwo\" c\nr#\"\n\"# d";
        let lines: Vec<(&str, u32)> = lex(source)
            .unwrap()
            .iter()
            .map(|t| (t.text, t.line))
            .collect();
        assert_eq!(lines[0], ("a", 1));
        assert_eq!(lines[1], ("b", 3));
        assert_eq!(lines[3], ("c", 4));
        assert_eq!(lines[5], ("d", 6));
    }

    #[test]
    fn unterminated_literals_are_errors() {
        assert_eq!(lex("\"abc").unwrap_err().what, "string");
        assert_eq!(lex("r#\"abc\"").unwrap_err().what, "raw string");
        assert_eq!(lex("'\\").unwrap_err().what, "character literal");
    }

    #[test]
    fn shebang_is_skipped_but_inner_attributes_are_not() {
        assert_eq!(texts("#!/usr/bin/env run\nx"), ["x"]);
        assert_eq!(texts("#![cfg(test)]")[..3], ["#", "!", "["]);
    }

    #[test]
    fn string_values_of_plain_and_raw_strings() {
        let tokens = lex(r##""a/b.rs" r#"c.rs"# "e\n" x"##).unwrap();
        assert_eq!(tokens[0].str_value(), Some("a/b.rs"));
        assert_eq!(tokens[1].str_value(), Some("c.rs"));
        assert_eq!(tokens[2].str_value(), None);
        assert_eq!(tokens[3].str_value(), None);
    }
}
