//! JSON string literals written straight into a byte buffer, escaped exactly as
//! `serde_json` escapes them (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control
//! characters as `\u00XX`, everything else as it is), but eight bytes at a time: a log
//! line rarely holds a character that needs escaping, so whole words are tested at once
//! and copied in runs, and a word with one is resumed right after it. In log-bench the
//! per-byte table walk of `serde_json` was an eighth of the agent's instructions (every
//! body, attribute and original line of an Elasticsearch document passes through here).

/// Bytes of the word a SWAR test covers.
const WORD: usize = 8;
/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_le_bytes([0x01; WORD]);
/// `0x80` in every byte of a word.
const HIGHS: u64 = u64::from_le_bytes([0x80; WORD]);
/// `0x20`, the first byte that needs no escape, in every byte of a word.
const SPACES: u64 = u64::from_le_bytes([b' '; WORD]);
/// `"` in every byte of a word.
const QUOTES: u64 = u64::from_le_bytes([b'"'; WORD]);
/// `\` in every byte of a word.
const BACKSLASHES: u64 = u64::from_le_bytes([b'\\'; WORD]);

/// The high bit of every zero byte of `word`, and perhaps of bytes above the lowest
/// zero byte (a borrow carries into them): the lowest bit set is always the lowest
/// zero byte, and no bit is set when no byte is zero.
const fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// The high bit of the bytes of `word` that need escaping (below 0x20, `"` or `\`),
/// as [`zero_bytes`] marks them: none when no byte needs it, and the lowest bit set
/// marks the first byte that does.
const fn escapes(word: u64) -> u64 {
    // A byte below 0x20: bit 7 clear, and set after subtracting 0x20.
    let control = word.wrapping_sub(SPACES) & !word & HIGHS;
    control | zero_bytes(word ^ QUOTES) | zero_bytes(word ^ BACKSLASHES)
}

/// The escape of one byte, `None` when it is written as it is.
fn escape(byte: u8) -> Option<&'static [u8]> {
    const CONTROL: [&[u8]; 32] = [
        b"\\u0000", b"\\u0001", b"\\u0002", b"\\u0003", b"\\u0004", b"\\u0005", b"\\u0006",
        b"\\u0007", b"\\b", b"\\t", b"\\n", b"\\u000b", b"\\f", b"\\r", b"\\u000e", b"\\u000f",
        b"\\u0010", b"\\u0011", b"\\u0012", b"\\u0013", b"\\u0014", b"\\u0015", b"\\u0016",
        b"\\u0017", b"\\u0018", b"\\u0019", b"\\u001a", b"\\u001b", b"\\u001c", b"\\u001d",
        b"\\u001e", b"\\u001f",
    ];
    match byte {
        b'"' => Some(b"\\\""),
        b'\\' => Some(b"\\\\"),
        0..=0x1f => CONTROL.get(usize::from(byte)).copied(),
        _ => None,
    }
}

/// Appends `text` as a JSON string literal, quotes included. Eight bytes are tested at
/// once; a word with a byte to escape is resumed right after that byte, so a string
/// with many quotes (a JSON body) costs a word test per escape, not a byte loop per
/// word.
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Bytes before `run` are written; `at` is the next byte to look at.
    let mut run = 0;
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + WORD) {
        let mut word_bytes = [0; WORD];
        word_bytes.copy_from_slice(word);
        let found = escapes(u64::from_le_bytes(word_bytes));
        if found == 0 {
            at += WORD;
            continue;
        }
        let hit = at + (found.trailing_zeros() / 8) as usize;
        if let Some(escaped) = escape(bytes[hit]) {
            out.extend_from_slice(&bytes[run..hit]);
            out.extend_from_slice(escaped);
            run = hit + 1;
        }
        at = hit + 1;
    }
    for (offset, &byte) in bytes[at..].iter().enumerate() {
        if let Some(escaped) = escape(byte) {
            out.extend_from_slice(&bytes[run..at + offset]);
            out.extend_from_slice(escaped);
            run = at + offset + 1;
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn written(text: &str) -> String {
        let mut out = Vec::new();
        write_json_string(&mut out, text);
        String::from_utf8(out).expect("escaping keeps UTF-8")
    }

    #[test]
    fn every_byte_that_needs_escaping_is_escaped_as_serde_json_does() {
        for code in 0..=0x7f_u8 {
            let text = format!("abcdefg{}hijklmnopq{}", char::from(code), char::from(code));
            assert_eq!(
                written(&text),
                serde_json::to_string(&text).expect("a string serializes"),
                "byte {code:#04x}"
            );
        }
    }

    #[test]
    fn escapes_at_word_edges_and_in_short_tails_are_found() {
        for text in [
            "",
            "\"",
            "1234567\n",
            "12345678\\",
            "123456789\t",
            "é\"ü\u{1f}",
        ] {
            assert_eq!(
                written(text),
                serde_json::to_string(text).expect("a string serializes")
            );
        }
    }

    proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(text in "(?s).{0,80}") {
            prop_assert_eq!(written(&text), serde_json::to_string(&text).expect("a string serializes"));
        }

        #[test]
        fn mostly_ascii_with_controls_is_written_as_serde_json_writes_it(
            text in "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é]{0,64}"
        ) {
            prop_assert_eq!(written(&text), serde_json::to_string(&text).expect("a string serializes"));
        }
    }
}
