//! The placeholder syntax inside a template's strings: `%{name}` stands for the value
//! bound to `name`, `%%{` is a literal `%{`, and every other character (`%` alone,
//! `$`, `{`, `}`) is itself. See the [module doc](super) for why this syntax.
//!
//! Since `%%{` is always the escape, a literal `%` directly before a placeholder
//! cannot be written (`%%{a}` is the text `%{a}`); put the `%` into the bound value.
//!
//! A string is [parsed](parse) once into literal text and placeholders; [`substitute`]
//! joins the pieces with the bound values in a single pass, so a value that itself
//! contains `%{...}` (or `%%{`) is inserted as it is and never expanded again.

/// Opens a placeholder.
pub const OPEN: &str = "%{";
/// Stands for a literal `%{`.
pub const ESCAPE: &str = "%%{";
/// Longest placeholder name: a DNS label's length, so a name fits wherever names go.
pub const MAX_PLACEHOLDER_NAME_LEN: usize = 63;

/// One piece of a template string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Literal text, escapes already resolved.
    Text(String),
    /// A placeholder, by name.
    Placeholder(String),
}

/// Whether `name` is a placeholder name: a letter, then letters, digits or `_`, at
/// most [`MAX_PLACEHOLDER_NAME_LEN`] bytes.
pub fn is_placeholder_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_PLACEHOLDER_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits `text` into literal pieces and placeholders, or says why a `%{` in it is not
/// a placeholder (the reason quotes the offending placeholder text, never the rest).
pub fn parse(text: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        literal.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix(ESCAPE) {
            literal.push_str(OPEN);
            rest = after;
        } else if let Some(inner) = tail.strip_prefix(OPEN) {
            let Some(end) = inner.find('}') else {
                return Err(format!(
                    "\"%{{\" opens a placeholder that is never closed with \"}}\"; write \
                     \"%%{{\" for a literal \"%{{\" (found {:?})",
                    shorten(tail)
                ));
            };
            let name = &inner[..end];
            if !is_placeholder_name(name) {
                return Err(format!(
                    "%{{{}}} is not a placeholder: a name is a letter followed by letters, \
                     digits or '_', at most {MAX_PLACEHOLDER_NAME_LEN} long; write \"%%{{\" \
                     for a literal \"%{{\"",
                    shorten(name)
                ));
            }
            if !literal.is_empty() {
                segments.push(Segment::Text(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Placeholder(name.to_owned()));
            rest = &inner[end + 1..];
        } else {
            literal.push('%');
            rest = &tail[1..];
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() || segments.is_empty() {
        segments.push(Segment::Text(literal));
    }
    Ok(segments)
}

/// At most 40 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Joins `segments` with each placeholder replaced by `value(name)`, in one pass: the
/// values are not parsed, so placeholder syntax inside them stays as it is.
pub fn substitute<'a>(segments: &[Segment], value: impl Fn(&str) -> &'a str) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Text(text) => out.push_str(text),
            Segment::Placeholder(name) => out.push_str(value(name)),
        }
    }
    out
}

/// The template text that stands for `text` exactly: every `%{` written `%%{`. Turns
/// a pipeline's strings into a template's without changing their meaning.
pub fn escape(text: &str) -> String {
    text.replace(OPEN, ESCAPE)
}

/// The placeholder names in `segments`, in order, repeats included.
pub fn names(segments: &[Segment]) -> impl Iterator<Item = &str> {
    segments.iter().filter_map(|segment| match segment {
        Segment::Placeholder(name) => Some(name.as_str()),
        Segment::Text(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, value: &str) -> String {
        substitute(&parse(text).expect("parses"), |_| value)
    }

    #[test]
    fn placeholders_are_replaced_and_everything_else_kept() {
        assert_eq!(render("https://%{host}:4317", "otel"), "https://otel:4317");
        for kept in [
            "${1}",
            "$1",
            "$$",
            "${name}_x",
            "logs-%Y.%m.%d",
            "100%",
            "a{2,3}",
            "https://x.example/a%20b",
            "{{ .name }}",
            "$(( 1 + 1 ))",
            "",
        ] {
            assert_eq!(render(kept, "VALUE"), kept, "{kept:?}");
        }
    }

    #[test]
    fn the_escape_is_a_literal_open() {
        assert_eq!(render("%%{name}", "x"), "%{name}");
        // `%%{` is always the escape, so the `%` before it is plain text.
        assert_eq!(render("%%%{name}", "x"), "%%{name}");
        assert_eq!(render("%%%%{name}", "x"), "%%%{name}");
        assert_eq!(render("%N%{name}", "x"), "%Nx");
        assert_eq!(render("100%%{a}%{a}", "x"), "100%{a}x");
    }

    #[test]
    fn substitution_is_a_single_pass() {
        let segments = parse("a-%{first}-%{second}").unwrap();
        let out = substitute(&segments, |name| match name {
            "first" => "%{second}",
            _ => "%%{escaped}",
        });
        assert_eq!(out, "a-%{second}-%%{escaped}");
    }

    #[test]
    fn escape_round_trips_every_short_string() {
        let alphabet = ['%', '{', '}', 'a', '$'];
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(longer);
            texts.sort();
            texts.dedup();
        }
        for text in texts {
            let segments = parse(&escape(&text)).expect("an escaped text parses");
            assert_eq!(names(&segments).count(), 0, "{text:?}");
            assert_eq!(substitute(&segments, |_| "!"), text, "{text:?}");
        }
    }

    #[test]
    fn malformed_placeholders_are_refused() {
        for (text, part) in [
            ("%{endpoint", "never closed"),
            ("%{}", "%{} is not a placeholder"),
            ("%{na-me}", "%{na-me} is not a placeholder"),
            ("%{ name }", "%{ name } is not a placeholder"),
            ("%{2}", "%{2} is not a placeholder"),
            ("%{+YYYY.MM.dd}", "is not a placeholder"),
        ] {
            let reason = parse(text).unwrap_err();
            assert!(reason.contains(part), "{text:?}: {reason}");
        }
        assert!(parse(&format!("%{{{}}}", "a".repeat(64))).is_err());
        assert!(parse(&format!("%{{{}}}", "a".repeat(63))).is_ok());
    }

    #[test]
    fn no_valid_regex_contains_an_open_followed_by_a_name() {
        // A `{` after an atom opens a counted repetition, which takes digits only: the
        // model's regexes (Rust regex, RE2 syntax) can never hold `%{name}`.
        for pattern in ["%{name}", "x%{a}", "%{a1_b}"] {
            assert!(regex::Regex::new(pattern).is_err(), "{pattern}");
        }
        assert!(regex::Regex::new("%{2}").is_ok());
    }
}
