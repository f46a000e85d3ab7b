//! Scanning PromQL text without parsing it: skipping string literals and bracketed
//! parts, shared by the rule and dashboard checks (`alerts_and_dashboards.rs`) and the
//! alert-input check (`alert_inputs.rs`).

/// Index just past the bracket that closes the one at `open` (`(`, `{` or `[`),
/// skipping string literals; the end of input if unbalanced.
pub fn skip_balanced(bytes: &[u8], open: usize) -> usize {
    let (opening, closing) = match bytes[open] {
        b'(' => (b'(', b')'),
        b'{' => (b'{', b'}'),
        _ => (b'[', b']'),
    };
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(bytes, i);
                continue;
            }
            c if c == opening => depth += 1,
            c if c == closing => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

/// Index just past the string literal starting at `start`.
pub fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}
