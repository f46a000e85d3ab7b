//! Per-stream recombination, bounded by the record cap: partial lines (CRI `P`, Docker
//! `log` without `\n`) joined into their line, then lines joined into multiline records
//! by a first-line pattern with a flush timeout. Each stage remembers the file offset of
//! the first line it holds, which bounds the position that may be committed.

use std::time::Instant;

use crate::config::ValidatedMultiline;
use crate::record::TailCounters;

/// A record in the making, or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The offset of its first line.
    pub offset: u64,
    /// The timestamp of its first line.
    pub time_unix_nano: Option<u64>,
    /// Its bytes so far.
    pub bytes: Vec<u8>,
    /// Whether anything beyond the cap was skipped.
    pub truncated: bool,
}

impl Piece {
    /// Appends `more` up to `cap` bytes in all, counting what is skipped.
    fn append(&mut self, more: &[u8], cap: usize, counters: &mut TailCounters) {
        let room = cap.saturating_sub(self.bytes.len());
        let taken = room.min(more.len());
        self.bytes.extend_from_slice(&more[..taken]);
        if taken < more.len() {
            self.truncated = true;
            counters.skipped_bytes += (more.len() - taken) as u64;
        }
    }

    fn new(
        offset: u64,
        time_unix_nano: Option<u64>,
        bytes: &[u8],
        cap: usize,
        counters: &mut TailCounters,
    ) -> Self {
        let mut piece = Self {
            offset,
            time_unix_nano,
            bytes: Vec::new(),
            truncated: false,
        };
        piece.append(bytes, cap, counters);
        piece
    }
}

struct Group {
    piece: Piece,
    lines: usize,
    last_line_at: Instant,
}

/// One stream's recombination state.
#[derive(Default)]
pub struct StreamAssembler {
    partial: Option<Piece>,
    group: Option<Group>,
}

impl StreamAssembler {
    /// The offset of the first line still held, if any.
    pub fn pending_since(&self) -> Option<u64> {
        let partial = self.partial.as_ref().map(|p| p.offset);
        let group = self.group.as_ref().map(|g| g.piece.offset);
        partial.into_iter().chain(group).min()
    }

    /// Takes one line of the stream; completed records go to `out`.
    pub fn push(
        &mut self,
        line: LineIn<'_>,
        multiline: Option<&ValidatedMultiline>,
        cap: usize,
        now: Instant,
        counters: &mut TailCounters,
        out: &mut Vec<Piece>,
    ) {
        let mut complete = match self.partial.take() {
            Some(mut pending) => {
                pending.append(line.message, cap, counters);
                pending
            }
            None => Piece::new(
                line.offset,
                line.time_unix_nano,
                line.message,
                cap,
                counters,
            ),
        };
        complete.truncated |= line.truncated;
        if line.partial {
            self.partial = Some(complete);
            return;
        }
        let Some(multiline) = multiline else {
            out.push(complete);
            return;
        };
        if multiline.first_line.is_match(&complete.bytes) {
            out.extend(self.group.take().map(|g| g.piece));
        }
        match &mut self.group {
            Some(group) => {
                group.piece.append(b"\n", cap, counters);
                group.piece.append(&complete.bytes, cap, counters);
                group.piece.truncated |= complete.truncated;
                group.lines += 1;
                group.last_line_at = now;
            }
            None => {
                self.group = Some(Group {
                    piece: complete,
                    lines: 1,
                    last_line_at: now,
                })
            }
        }
        if self
            .group
            .as_ref()
            .is_some_and(|g| g.lines >= multiline.max_lines)
        {
            out.extend(self.group.take().map(|g| g.piece));
        }
    }

    /// Flushes a multiline record that waited longer than its timeout.
    pub fn flush_expired(
        &mut self,
        multiline: Option<&ValidatedMultiline>,
        now: Instant,
        out: &mut Vec<Piece>,
    ) {
        let expired = match (&self.group, multiline) {
            (Some(group), Some(m)) => {
                now.saturating_duration_since(group.last_line_at) >= m.flush_after
            }
            _ => false,
        };
        if expired {
            out.extend(self.group.take().map(|g| g.piece));
        }
    }

    /// Flushes everything held (the file is finished): a dangling partial line too.
    pub fn flush_all(&mut self, out: &mut Vec<Piece>) {
        out.extend(self.group.take().map(|g| g.piece));
        out.extend(self.partial.take());
    }
}

/// One line as the assembler takes it.
#[derive(Debug, Clone, Copy)]
pub struct LineIn<'a> {
    /// The line's offset in the file.
    pub offset: u64,
    /// Its timestamp.
    pub time_unix_nano: Option<u64>,
    /// Whether the runtime split it and more follows.
    pub partial: bool,
    /// Its message.
    pub message: &'a [u8],
    /// Whether the line itself was cut at the cap.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(offset: u64, partial: bool, message: &str) -> LineIn<'_> {
        LineIn {
            offset,
            time_unix_nano: Some(offset),
            partial,
            message: message.as_bytes(),
            truncated: false,
        }
    }

    fn bodies(out: &[Piece]) -> Vec<(u64, String, bool)> {
        out.iter()
            .map(|p| {
                (
                    p.offset,
                    String::from_utf8_lossy(&p.bytes).into_owned(),
                    p.truncated,
                )
            })
            .collect()
    }

    #[test]
    fn partial_lines_join_up_to_the_cap_and_the_rest_is_counted() {
        let (mut stream, mut counters, mut out, now) = (
            StreamAssembler::default(),
            TailCounters::default(),
            Vec::new(),
            Instant::now(),
        );
        stream.push(line(0, true, "abc"), None, 8, now, &mut counters, &mut out);
        stream.push(line(10, true, "def"), None, 8, now, &mut counters, &mut out);
        assert_eq!(stream.pending_since(), Some(0));
        assert!(out.is_empty());
        stream.push(
            line(20, false, "ghij"),
            None,
            8,
            now,
            &mut counters,
            &mut out,
        );
        stream.push(
            line(30, false, "next"),
            None,
            8,
            now,
            &mut counters,
            &mut out,
        );
        assert_eq!(
            bodies(&out),
            vec![(0, "abcdefgh".into(), true), (30, "next".into(), false)]
        );
        assert_eq!(counters.skipped_bytes, 2);
        assert_eq!(stream.pending_since(), None);
    }

    #[test]
    fn multiline_groups_start_at_the_first_line_pattern_and_flush_on_timeout() {
        let multiline = ValidatedMultiline {
            first_line: regex::bytes::Regex::new(r"^\d").unwrap(),
            flush_after: Duration::from_secs(1),
            max_lines: 3,
        };
        let (mut stream, mut counters, mut out, start) = (
            StreamAssembler::default(),
            TailCounters::default(),
            Vec::new(),
            Instant::now(),
        );
        for (offset, text) in [
            (0, "1 Exception"),
            (5, "  at a"),
            (9, "  at b"),
            (14, "2 next"),
            (20, "  at c"),
            (25, "  at d"),
            (30, "  at e"),
        ] {
            stream.push(
                line(offset, false, text),
                Some(&multiline),
                100,
                start,
                &mut counters,
                &mut out,
            );
        }
        assert_eq!(
            bodies(&out),
            vec![
                (0, "1 Exception\n  at a\n  at b".into(), false),
                (14, "2 next\n  at c\n  at d".into(), false)
            ]
        );
        assert_eq!(stream.pending_since(), Some(30));
        stream.flush_expired(
            Some(&multiline),
            start + Duration::from_millis(999),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        stream.flush_expired(Some(&multiline), start + Duration::from_secs(1), &mut out);
        assert_eq!(bodies(&out)[2], (30, "  at e".into(), false));
        assert_eq!(stream.pending_since(), None);
    }
}
