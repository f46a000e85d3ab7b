//! One tracked file: its descriptor, read position and per-stream recombination, and the
//! bounded line reader that turns its bytes into records. Lines are never carried over
//! between reads: an unterminated last line is read again when it has grown, so memory
//! per file is only what its streams hold (each at most the record cap).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{ValidatedMultiline, ValidatedTailConfig};
use crate::discover::{FileId, Source};
use crate::fingerprint::Fingerprint;
use crate::multiline::{LineIn, Piece, StreamAssembler};
use crate::record::{FileSource, LogRecord, Stream, TailCounters};
use crate::{cri, docker};

/// Bytes read per `pread` before a line needs more: large enough that a typical poll
/// takes a few calls per file, small enough to share one buffer across all files.
pub const READ_CHUNK: usize = 64 * 1024;

/// Bytes allowed for a container line's framing (CRI prefix, Docker JSON keys and
/// escapes) on top of the record cap before the line itself is cut.
pub const FRAMING_ALLOWANCE: usize = 4096;

/// How a container file's lines are framed, detected from its first parseable line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Not known yet (a container file whose lines so far parsed as neither).
    Undetected,
    /// CRI lines.
    Cri,
    /// Docker json-file lines.
    Docker,
    /// A plain file.
    Plain,
}

/// A position that may be committed: reading resumes at `offset`, and a line of stream
/// `s` before `resume[s]` is skipped (it was delivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileMark {
    /// Where reading resumes.
    pub offset: u64,
    /// Per-stream resume offsets, at or beyond `offset`.
    pub resume: [u64; 3],
}

/// What reading needs from the tailer.
pub struct ReadContext<'a> {
    /// The record cap.
    pub max_record_bytes: usize,
    /// The multiline setting.
    pub multiline: Option<&'a ValidatedMultiline>,
    /// The poll's time.
    pub now: Instant,
    /// The shared read buffer.
    pub buffer: &'a mut Vec<u8>,
    /// Counters.
    pub counters: &'a mut TailCounters,
    /// Records made.
    pub records: &'a mut Vec<LogRecord>,
    /// The pieces a line or a flush finished, empty between them (one buffer for
    /// every line, not one per line).
    pub pieces: &'a mut Vec<Piece>,
}

/// The tailer's state shared by all files' reads: one read buffer and the counters.
#[derive(Default)]
pub struct Reading {
    /// The read buffer, at most the line cap plus one byte.
    pub buffer: Vec<u8>,
    /// Counters.
    pub counters: TailCounters,
    /// The pieces buffer of [`ReadContext::pieces`].
    pub pieces: Vec<Piece>,
}

impl Reading {
    /// The context for reading at `now` into `records`.
    pub fn context<'a>(
        &'a mut self,
        config: &'a ValidatedTailConfig,
        now: Instant,
        records: &'a mut Vec<LogRecord>,
    ) -> ReadContext<'a> {
        ReadContext {
            max_record_bytes: config.limits.max_record_bytes,
            multiline: config.multiline.as_ref(),
            now,
            buffer: &mut self.buffer,
            counters: &mut self.counters,
            records,
            pieces: &mut self.pieces,
        }
    }
}

/// A file the tailer follows.
pub struct TrackedFile {
    /// Changes whenever the file's content is replaced (truncation, reused inode), so
    /// acknowledgements for the old content are ignored.
    pub generation: u64,
    /// Device and inode.
    pub id: FileId,
    /// Path and pod, shared by its records.
    pub source: Arc<FileSource>,
    /// The path to open.
    pub open_path: PathBuf,
    /// The fingerprint of its first bytes.
    pub fingerprint: Fingerprint,
    /// Its descriptor, while open.
    pub file: Option<File>,
    /// The next byte to read: the start of the next line, or inside a line being skipped.
    pub read_offset: u64,
    /// The start of a line longer than the cap whose rest is being skipped.
    pub skipping_since: Option<u64>,
    /// The size up to which bytes were examined.
    pub examined_to: u64,
    /// The last size seen.
    pub size: u64,
    /// Line framing.
    pub format: Format,
    /// Lines of each stream before these offsets were delivered before a restart.
    pub skip_before: [u64; 3],
    /// Per-stream recombination.
    pub streams: [StreamAssembler; 3],
    /// Renamed away or deleted: read to its end, then forgotten.
    pub detached: bool,
    /// Read to its end and flushed; kept only until its marks are acknowledged.
    pub finished: bool,
    /// When a detached file was first seen idle at its end.
    pub idle_since: Option<Instant>,
    /// The acknowledged position.
    pub committed: FileMark,
    /// The poll in which it was last read (least recently read go first).
    pub last_read: u64,
}

impl TrackedFile {
    /// A file to read from `offset`.
    pub fn new(
        id: FileId,
        source: Arc<FileSource>,
        open_path: PathBuf,
        fingerprint: Fingerprint,
        offset: u64,
    ) -> Self {
        let format = match source.source {
            Source::Pod(_) => Format::Undetected,
            Source::Plain => Format::Plain,
        };
        Self {
            generation: 0,
            id,
            source,
            open_path,
            fingerprint,
            file: None,
            read_offset: offset,
            skipping_since: None,
            examined_to: offset,
            size: offset,
            format,
            skip_before: [offset; 3],
            streams: Default::default(),
            detached: false,
            finished: false,
            idle_since: None,
            committed: FileMark {
                offset,
                resume: [offset; 3],
            },
            last_read: 0,
        }
    }

    /// Starts over at offset 0: the content was replaced. What the streams held of the
    /// old content is flushed first (it was read, so it is delivered).
    pub fn restart(
        &mut self,
        fingerprint: Fingerprint,
        generation: u64,
        context: &mut ReadContext<'_>,
    ) {
        self.flush_streams(context);
        self.generation = generation;
        self.fingerprint = fingerprint;
        self.read_offset = 0;
        self.skipping_since = None;
        self.examined_to = 0;
        self.skip_before = [0; 3];
        self.committed = FileMark::default();
        if let Source::Pod(_) = self.source.source {
            self.format = Format::Undetected;
        }
    }

    /// Whether the last size seen holds bytes not examined yet, or lies below the read
    /// position (truncated): a read would find something. Never for a finished file.
    pub fn has_new_bytes(&self) -> bool {
        !self.finished && (self.size != self.examined_to || self.size < self.read_offset)
    }

    /// The position that may be committed once what was handed out so far is durable.
    pub fn mark(&self) -> FileMark {
        let mut offset = self.skipping_since.unwrap_or(self.read_offset);
        let mut resume = [0; 3];
        for stream in Stream::ALL {
            let pending = self.streams[stream.index()].pending_since();
            if let Some(pending) = pending {
                offset = offset.min(pending);
            }
            resume[stream.index()] = pending
                .unwrap_or(self.read_offset)
                .max(self.skip_before[stream.index()]);
        }
        FileMark {
            offset,
            resume: resume.map(|r| r.max(offset)),
        }
    }

    /// Reads complete lines up to about `budget` bytes; returns the bytes consumed.
    pub fn read_lines(
        &mut self,
        budget: usize,
        context: &mut ReadContext<'_>,
    ) -> std::io::Result<usize> {
        let line_cap = context.max_record_bytes + FRAMING_ALLOWANCE;
        let mut consumed_total = 0;
        // Reads stop near the budget: a batch exceeds it by at most one line.
        let chunk_for = |consumed: usize| READ_CHUNK.min(budget.saturating_sub(consumed)).max(1);
        let mut read_len = chunk_for(0);
        while consumed_total < budget {
            let Some(file) = &self.file else { break };
            context.buffer.resize(read_len, 0);
            let read = file.read_at(context.buffer, self.read_offset)?;
            self.examined_to = self.examined_to.max(self.read_offset + read as u64);
            if read == 0 {
                break;
            }
            let chunk = std::mem::take(context.buffer);
            let consumed = self.split_lines(&chunk[..read], line_cap, context);
            *context.buffer = chunk;
            self.read_offset += consumed as u64;
            context.counters.bytes_read += consumed as u64;
            consumed_total += consumed;
            if consumed == 0 {
                if read < read_len || read_len > line_cap {
                    break;
                }
                read_len = (read_len * 2).min(line_cap + 1);
            } else {
                read_len = chunk_for(consumed_total);
            }
        }
        Ok(consumed_total)
    }

    /// Splits `bytes` (starting at `read_offset`) into lines; returns the bytes consumed
    /// (an unterminated tail shorter than the cap is left for the next read).
    fn split_lines(
        &mut self,
        bytes: &[u8],
        line_cap: usize,
        context: &mut ReadContext<'_>,
    ) -> usize {
        let mut position = 0;
        if self.skipping_since.is_some() {
            match line_end(bytes) {
                Some(end) => {
                    context.counters.skipped_bytes += end as u64;
                    self.skipping_since = None;
                    position = end + 1;
                }
                None => {
                    context.counters.skipped_bytes += bytes.len() as u64;
                    return bytes.len();
                }
            }
        }
        while position < bytes.len() {
            let offset = self.read_offset + position as u64;
            let rest = &bytes[position..];
            match line_end(rest) {
                Some(end) => {
                    let line = &rest[..end];
                    let kept = line.len().min(line_cap);
                    context.counters.skipped_bytes += (line.len() - kept) as u64;
                    self.take_line(offset, &line[..kept], kept < line.len(), context);
                    position += end + 1;
                }
                None if rest.len() >= line_cap => {
                    context.counters.skipped_bytes += (rest.len() - line_cap) as u64;
                    self.take_line(offset, &rest[..line_cap], true, context);
                    self.skipping_since = Some(offset);
                    position = bytes.len();
                }
                None => break,
            }
        }
        position
    }

    /// Reads an unterminated last line as a line (the file is finished).
    pub fn take_unterminated_tail(&mut self, context: &mut ReadContext<'_>) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if self.skipping_since.is_some() {
            self.skipping_since = None;
            return Ok(());
        }
        let line_cap = context.max_record_bytes + FRAMING_ALLOWANCE;
        context.buffer.resize(line_cap, 0);
        let read = file.read_at(context.buffer, self.read_offset)?;
        if read > 0 {
            let chunk = std::mem::take(context.buffer);
            self.take_line(self.read_offset, &chunk[..read], false, context);
            *context.buffer = chunk;
            self.read_offset += read as u64;
            context.counters.bytes_read += read as u64;
        }
        Ok(())
    }

    /// Parses one line and hands it to its stream.
    fn take_line(&mut self, offset: u64, line: &[u8], cut: bool, context: &mut ReadContext<'_>) {
        let parsed = self.parse(line, context.counters);
        let stream = parsed.as_ref().map_or(Stream::Plain, |p| p.stream);
        if offset < self.skip_before[stream.index()] {
            return;
        }
        let line_in = match &parsed {
            Some(p) => LineIn {
                offset,
                time_unix_nano: p.time_unix_nano,
                partial: p.partial,
                message: &p.message,
                truncated: cut,
            },
            None => LineIn {
                offset,
                time_unix_nano: None,
                partial: false,
                message: line,
                truncated: cut,
            },
        };
        self.streams[stream.index()].push(
            line_in,
            context.multiline,
            context.max_record_bytes,
            context.now,
            context.counters,
            context.pieces,
        );
        self.emit(stream, context);
    }

    fn parse<'l>(
        &mut self,
        line: &'l [u8],
        counters: &mut TailCounters,
    ) -> Option<cri::ParsedLine<'l>> {
        let parsed = match self.format {
            Format::Plain => return None,
            Format::Cri => cri::parse(line),
            Format::Docker => docker::parse(line),
            Format::Undetected => {
                if let Some(parsed) = cri::parse(line) {
                    self.format = Format::Cri;
                    Some(parsed)
                } else if let Some(parsed) = docker::parse(line) {
                    self.format = Format::Docker;
                    Some(parsed)
                } else {
                    None
                }
            }
        };
        if parsed.is_none() {
            counters.unparsed_lines += 1;
        }
        parsed
    }

    /// Turns the finished pieces of `context` into records.
    pub fn emit(&self, stream: Stream, context: &mut ReadContext<'_>) {
        for piece in context.pieces.drain(..) {
            let body = to_text(piece.bytes, piece.truncated, context.counters);
            context.counters.records += 1;
            context.counters.truncated_records += u64::from(piece.truncated);
            context.records.push(LogRecord {
                file: Arc::clone(&self.source),
                stream,
                time_unix_nano: piece.time_unix_nano,
                body,
                truncated: piece.truncated,
                offset: piece.offset,
            });
        }
    }

    /// Flushes multiline records that waited too long.
    pub fn flush_expired(&mut self, context: &mut ReadContext<'_>) {
        for stream in Stream::ALL {
            self.streams[stream.index()].flush_expired(
                context.multiline,
                context.now,
                context.pieces,
            );
            self.emit(stream, context);
        }
    }

    /// Flushes everything the streams hold.
    pub fn flush_streams(&mut self, context: &mut ReadContext<'_>) {
        for stream in Stream::ALL {
            self.streams[stream.index()].flush_all(context.pieces);
            self.emit(stream, context);
        }
    }
}

fn line_end(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

/// The record's text: invalid UTF-8 replaced (and counted); a sequence cut by the cap at
/// the end of a truncated record is dropped rather than replaced.
fn to_text(mut bytes: Vec<u8>, truncated: bool, counters: &mut TailCounters) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let utf8 = error.utf8_error();
            bytes = error.into_bytes();
            if truncated && utf8.error_len().is_none() {
                bytes.truncate(utf8.valid_up_to());
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    return text.to_owned();
                }
            }
            counters.invalid_utf8_records += 1;
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_replaced_and_counted_but_a_cut_character_is_dropped() {
        let mut counters = TailCounters::default();
        assert_eq!(
            to_text(b"ok \xff\xfe".to_vec(), false, &mut counters),
            "ok \u{fffd}\u{fffd}"
        );
        assert_eq!(counters.invalid_utf8_records, 1);
        assert_eq!(
            to_text("caf\u{e9}".as_bytes()[..4].to_vec(), true, &mut counters),
            "caf"
        );
        assert_eq!(counters.invalid_utf8_records, 1);
        assert_eq!(
            to_text("caf\u{e9}".as_bytes()[..4].to_vec(), false, &mut counters),
            "caf\u{fffd}"
        );
        assert_eq!(counters.invalid_utf8_records, 2);
    }
}
