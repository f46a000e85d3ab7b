//! journald's 128-bit ids (file, machine, boot and seqnum ids) and their text form,
//! 32 lowercase hex digits, as cursors and `journalctl` show them.

use std::fmt;

/// A 128-bit id as journald uses them (file, machine, boot and seqnum ids).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id128(pub [u8; 16]);

impl fmt::Display for Id128 {
    /// Formats as 32 lowercase hex digits, as journald does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Id128 {
    /// Parses 32 hex digits.
    pub fn parse(text: &str) -> Option<Id128> {
        let bytes = text.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (slot, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            *slot = u8::try_from(high << 4 | low).ok()?;
        }
        Some(Id128(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id128_round_trips_through_hex() {
        let id = Id128([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text, "ab".repeat(16));
        assert_eq!(Id128::parse(&text), Some(id));
        assert_eq!(Id128::parse("xy"), None);
        assert_eq!(Id128::parse(&"g".repeat(32)), None);
    }
}
