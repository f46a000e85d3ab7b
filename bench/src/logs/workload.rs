//! The files log-bench reads: `files` container log files in the kubelet's layout
//! (`<root>/<namespace>_<pod>_<uid>/<container>/0.log`, CRI format), written before any
//! agent starts, so every agent reads the same bytes from the page cache.
//!
//! Every line carries a unique id `id=<file>-<line>` in its body, which the sink
//! finds in whatever document an agent makes of the line; the generator records each
//! line's length, so "delivered bytes" are the bytes of the distinct lines that
//! arrived, the same measure for every agent whatever its document looks like.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The shortest line written. Lines are uniform in `[MIN, 2 * mean - MIN]`, so their
/// mean is the workload's mean.
const MIN_LINE_BYTES: usize = 96;

/// Filler the bodies are cut from: printable ASCII, like the text most services log.
const FILLER: &str = "the quick brown fox jumps over the lazy dog while the request \
    handler returns status ok after reading the cache and writing the audit record \
    for the tenant session and the payment service answers in time for the user; ";

/// What log-bench writes.
#[derive(Clone, Debug)]
pub struct LogWorkload {
    /// Number of files.
    pub files: usize,
    /// Total bytes over all files (lines are written until the total is reached).
    pub total_bytes: u64,
    /// Mean line length in bytes, CRI prefix and newline included.
    pub mean_line_bytes: usize,
    /// Share of lines whose body is a JSON object, in percent.
    pub json_percent: u32,
}

/// What was written: each line's length, by file.
#[derive(Debug)]
pub struct WrittenFiles {
    /// The root directory (the stand-in for `/var/log/pods`).
    pub root: PathBuf,
    /// Per file, the length of each line in bytes, newline included.
    pub line_bytes: Vec<Vec<u32>>,
}

impl WrittenFiles {
    /// Lines written over all files.
    pub fn lines(&self) -> u64 {
        self.line_bytes.iter().map(|f| f.len() as u64).sum()
    }

    /// Bytes written over all files.
    pub fn bytes(&self) -> u64 {
        self.line_bytes
            .iter()
            .flatten()
            .map(|&b| u64::from(b))
            .sum()
    }
}

/// The body of line `line` of file `file`: the id first, then filler to `len` bytes;
/// one in `100 / json_percent` a JSON object with the id in `msg`.
fn body(file: usize, line: usize, len: usize, json: bool, out: &mut String) {
    out.clear();
    if json {
        let _ = write!(
            out,
            "{{\"level\":\"info\",\"user\":\"u{line}\",\"msg\":\"id={file}-{line} "
        );
        let room = len.saturating_sub(out.len() + 2);
        push_filler(out, room, line);
        out.push_str("\"}");
    } else {
        let _ = write!(out, "id={file}-{line} ");
        let room = len.saturating_sub(out.len());
        push_filler(out, room, line);
    }
}

fn push_filler(out: &mut String, mut room: usize, seed: usize) {
    let mut start = seed % FILLER.len();
    while room > 0 {
        let take = room.min(FILLER.len() - start);
        out.push_str(&FILLER[start..start + take]);
        room -= take;
        start = 0;
    }
}

/// Writes the workload's files under `root`.
pub fn write(workload: &LogWorkload, root: &Path) -> std::io::Result<WrittenFiles> {
    let mut rng = fastrand::Rng::with_seed(0x6c6f_6762);
    let max_line = 2 * workload.mean_line_bytes - MIN_LINE_BYTES;
    let per_file = workload.total_bytes / workload.files.max(1) as u64;
    let mut line_bytes = Vec::with_capacity(workload.files);
    let mut text = String::new();
    let mut line = String::new();
    for file in 0..workload.files {
        let dir = root
            .join(format!(
                "bench-{}_app-{file}_{:08x}-0000-4000-8000-{file:012}",
                file % 20,
                file
            ))
            .join("app");
        std::fs::create_dir_all(&dir)?;
        let mut out =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("0.log"))?);
        let mut lengths = Vec::new();
        let mut written = 0u64;
        let mut n = 0usize;
        while written < per_file {
            let target = rng.usize(MIN_LINE_BYTES..=max_line);
            let json = rng.u32(0..100) < workload.json_percent;
            line.clear();
            let _ = write!(
                line,
                "2026-12-07T10:{:02}:{:02}.{:09}Z stdout F ",
                (n / 60) % 60,
                n % 60,
                n
            );
            body(
                file,
                n,
                target.saturating_sub(line.len() + 1),
                json,
                &mut text,
            );
            line.push_str(&text);
            line.push('\n');
            out.write_all(line.as_bytes())?;
            lengths.push(line.len() as u32);
            written += line.len() as u64;
            n += 1;
        }
        out.flush()?;
        line_bytes.push(lengths);
    }
    Ok(WrittenFiles {
        root: root.to_path_buf(),
        line_bytes,
    })
}

/// Parses the id the generator put in a line, from wherever it appears in `document`:
/// the first `id=<file>-<line>`.
pub fn find_id(document: &[u8]) -> Option<(usize, usize)> {
    let at = memchr::memmem::find(document, b"id=")?;
    let rest = &document[at + 3..];
    let (file, rest) = digits(rest)?;
    let rest = rest.strip_prefix(b"-")?;
    let (line, _) = digits(rest)?;
    Some((file, line))
}

fn digits(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let end = bytes
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len());
    if end == 0 || end > 12 {
        return None;
    }
    let value = std::str::from_utf8(&bytes[..end]).ok()?.parse().ok()?;
    Some((value, &bytes[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_mean_length_and_a_findable_id() {
        let dir = tempfile::tempdir().unwrap();
        let workload = LogWorkload {
            files: 3,
            total_bytes: 300_000,
            mean_line_bytes: 256,
            json_percent: 10,
        };
        let written = write(&workload, dir.path()).unwrap();
        let mean = written.bytes() as f64 / written.lines() as f64;
        assert!((236.0..276.0).contains(&mean), "mean line length {mean}");
        let mut json = 0;
        for (file, lengths) in written.line_bytes.iter().enumerate() {
            let path = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().contains(&format!("_app-{file}_")))
                .unwrap()
                .join("app/0.log");
            let text = std::fs::read_to_string(path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), lengths.len());
            for (n, line) in lines.iter().enumerate() {
                assert_eq!(line.len() + 1, lengths[n] as usize);
                assert_eq!(find_id(line.as_bytes()), Some((file, n)), "{line}");
                let body = line.splitn(4, ' ').nth(3).unwrap();
                if body.starts_with('{') {
                    serde_json::from_str::<serde_json::Value>(body).unwrap();
                    json += 1;
                }
            }
        }
        let share = f64::from(json) / written.lines() as f64;
        assert!((0.05..0.15).contains(&share), "JSON share {share}");
    }

    #[test]
    fn ids_are_found_inside_escaped_json_and_refused_when_malformed() {
        assert_eq!(
            find_id(br#"{"message":"{\"msg\":\"id=12-345 x\"}"}"#),
            Some((12, 345))
        );
        assert_eq!(find_id(b"id=12345"), None);
        assert_eq!(find_id(b"id=-3"), None);
        assert_eq!(find_id(b"no id"), None);
    }
}
