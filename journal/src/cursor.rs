//! Cursors: where an entry is, in journald's own text form, and the order of entries.
//!
//! A cursor names an entry by its sequence-number space (`s`, the file header's
//! `seqnum_id`), sequence number (`i`), boot id (`b`), monotonic (`m`) and wall-clock
//! (`t`) timestamps and xor hash (`x`), written as journald writes them:
//! `s=<32 hex>;i=<hex>;b=<32 hex>;m=<hex>;t=<hex>;x=<hex>`. So a cursor this reader
//! writes can be handed to `journalctl --after-cursor` and back.
//!
//! Entries are ordered the way journald interleaves files: by sequence number when they
//! share a sequence-number space (exact, since one journald instance numbers all its
//! files from one counter), else by monotonic time when they share a boot, else by
//! wall-clock time, then xor hash. The last two are only as good as the clocks; within
//! one file the reader never relies on them.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::error::JournalError;
use crate::id128::Id128;

/// The longest cursor text accepted: six fields of at most 32 hex digits plus keys and
/// separators fit in well under this; anything longer is not a cursor.
const MAX_CURSOR_LEN: usize = 256;

/// The position of one entry, as journald's cursor describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Cursor {
    /// The sequence-number space (file header `seqnum_id`).
    pub seqnum_id: Id128,
    /// The entry's sequence number.
    pub seqnum: u64,
    /// The boot the entry belongs to.
    pub boot_id: Id128,
    /// Monotonic time of the boot, microseconds.
    pub monotonic: u64,
    /// Wall-clock time, microseconds since the epoch.
    pub realtime: u64,
    /// The xor of the entry's data hashes, journald's tie breaker.
    pub xor_hash: u64,
}

impl Cursor {
    /// Orders two entries as journald interleaves them (see the module notes).
    pub fn journal_order(&self, other: &Cursor) -> Ordering {
        if self.seqnum_id == other.seqnum_id {
            return self.seqnum.cmp(&other.seqnum);
        }
        if self.boot_id == other.boot_id {
            let by_monotonic = self.monotonic.cmp(&other.monotonic);
            if by_monotonic != Ordering::Equal {
                return by_monotonic;
            }
        }
        self.realtime
            .cmp(&other.realtime)
            .then(self.xor_hash.cmp(&other.xor_hash))
    }

    /// Whether this entry comes after `cursor`.
    pub fn is_after(&self, cursor: &Cursor) -> bool {
        self.journal_order(cursor) == Ordering::Greater
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s={};i={:x};b={};m={:x};t={:x};x={:x}",
            self.seqnum_id, self.seqnum, self.boot_id, self.monotonic, self.realtime, self.xor_hash
        )
    }
}

impl FromStr for Cursor {
    type Err = JournalError;

    /// Parses journald's cursor text; every one of the six fields is required, in any
    /// order, and each may appear once.
    fn from_str(text: &str) -> Result<Cursor, JournalError> {
        let bad = |reason| JournalError::BadCursor { reason };
        if text.len() > MAX_CURSOR_LEN {
            return Err(bad("longer than a cursor can be"));
        }
        let mut cursor = Cursor::default();
        let mut seen = 0u8;
        for part in text.split(';') {
            let (key, value) = part.split_once('=').ok_or(bad("a part has no '='"))?;
            let bit = match key {
                "s" => {
                    cursor.seqnum_id = Id128::parse(value).ok_or(bad("s is not 32 hex digits"))?;
                    1
                }
                "b" => {
                    cursor.boot_id = Id128::parse(value).ok_or(bad("b is not 32 hex digits"))?;
                    2
                }
                "i" | "m" | "t" | "x" => {
                    let number = u64::from_str_radix(value, 16)
                        .map_err(|_| bad("i, m, t and x must be hex numbers"))?;
                    match key {
                        "i" => cursor.seqnum = number,
                        "m" => cursor.monotonic = number,
                        "t" => cursor.realtime = number,
                        _ => cursor.xor_hash = number,
                    }
                    match key {
                        "i" => 4,
                        "m" => 8,
                        "t" => 16,
                        _ => 32,
                    }
                }
                _ => return Err(bad("unknown key (expected s, i, b, m, t, x)")),
            };
            if seen & bit != 0 {
                return Err(bad("a key appears twice"));
            }
            seen |= bit;
        }
        if seen != 63 {
            return Err(bad("missing one of s, i, b, m, t, x"));
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(seqnum_id: u8, seqnum: u64, boot: u8, monotonic: u64, realtime: u64) -> Cursor {
        Cursor {
            seqnum_id: Id128([seqnum_id; 16]),
            seqnum,
            boot_id: Id128([boot; 16]),
            monotonic,
            realtime,
            xor_hash: 0x1234,
        }
    }

    #[test]
    fn text_form_is_journalds_and_round_trips() {
        let original = cursor(0xab, 0x2a, 0xcd, 0x10, 0x5f00);
        let text = original.to_string();
        assert_eq!(
            text,
            format!(
                "s={};i=2a;b={};m=10;t=5f00;x=1234",
                "ab".repeat(16),
                "cd".repeat(16)
            )
        );
        assert_eq!(text.parse::<Cursor>().expect("parses"), original);
    }

    #[test]
    fn malformed_cursors_are_refused_with_a_reason() {
        let good = cursor(1, 2, 3, 4, 5).to_string();
        let cases = [
            (good.replace(";x=1234", ""), "missing one of"),
            (format!("{good};i=3"), "appears twice"),
            (good.replace("i=2", "i=zz"), "hex numbers"),
            (good.replace("s=", "q="), "unknown key"),
            (format!("{good};{}", "a".repeat(300)), "longer than"),
            ("garbage".to_string(), "no '='"),
        ];
        for (text, expected) in cases {
            let error = text.parse::<Cursor>().expect_err(&text);
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn order_uses_seqnum_then_monotonic_then_realtime() {
        // Same seqnum space: seqnum decides even against the clocks.
        assert!(cursor(1, 5, 1, 0, 0).is_after(&cursor(1, 4, 1, 9, 9)));
        // Other space, same boot: monotonic decides.
        assert!(cursor(2, 1, 1, 10, 0).is_after(&cursor(1, 9, 1, 9, 99)));
        // Other space and boot: wall clock decides.
        assert!(cursor(2, 1, 2, 0, 100).is_after(&cursor(1, 9, 1, 99, 99)));
        assert!(!cursor(1, 4, 1, 0, 0).is_after(&cursor(1, 4, 1, 0, 0)));
    }
}
