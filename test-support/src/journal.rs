//! Journal files for tests: journal export input, the real `systemd-journal-remote`
//! writer, `journalctl`'s export as an independent reading, field-by-field comparison,
//! and a minimal writer ([`writer`]) for the layouts and damage the real one does not
//! write. Used by the journal reader's tests and by the agent's journal input tests.

pub mod writer;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use kaas_journal::{Entry, Id128, JournalFile, UnitFilter};

/// Where Debian installs `systemd-journal-remote` (the binary is not on PATH).
const JOURNAL_REMOTE_PATHS: [&str; 2] = [
    "/lib/systemd/systemd-journal-remote",
    "/usr/lib/systemd/systemd-journal-remote",
];

/// The boot id every generated entry carries.
pub const BOOT_ID: &str = "0123456789abcdef0123456789abcdef";

/// One entry as fed to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fed {
    pub realtime: u64,
    pub monotonic: u64,
    pub fields: Vec<(String, Vec<u8>)>,
}

/// The writer, or `None` with a message saying why the test is skipped.
pub fn journal_remote() -> Option<PathBuf> {
    let found = JOURNAL_REMOTE_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file());
    if found.is_none() {
        eprintln!(
            "SKIPPED: systemd-journal-remote is not installed and this test needs it to \
             write real journal files (apt-get install systemd-journal-remote; \
             scripts/test.sh installs it)"
        );
    }
    found
}

/// Journal export format for `entries` (binary-safe framing for values with newlines
/// or non-text bytes).
pub fn export(entries: &[Fed]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        writeln!(out, "__REALTIME_TIMESTAMP={}", entry.realtime).expect("vec");
        writeln!(out, "__MONOTONIC_TIMESTAMP={}", entry.monotonic).expect("vec");
        writeln!(out, "_BOOT_ID={BOOT_ID}").expect("vec");
        for (name, value) in &entry.fields {
            if value.contains(&b'\n') || std::str::from_utf8(value).is_err() {
                out.extend_from_slice(name.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                out.extend_from_slice(value);
                out.push(b'\n');
            } else {
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                out.extend_from_slice(value);
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }
    out
}

/// Writes `entries` to `output` with systemd-journal-remote, with extra environment.
pub fn write_journal(binary: &Path, output: &Path, entries: &[Fed], env: &[(&str, &str)]) {
    let mut child = spawn_writer(binary, output, env, &[]);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&export(entries)).expect("feed the writer");
    drop(stdin);
    let result = child.wait_with_output().expect("writer runs");
    assert!(
        result.status.success(),
        "systemd-journal-remote failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Starts systemd-journal-remote reading export format from its stdin.
pub fn spawn_writer(binary: &Path, output: &Path, env: &[(&str, &str)], args: &[&str]) -> Child {
    Command::new(binary)
        .arg(format!("--output={}", output.display()))
        .args(args)
        .arg("-")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start systemd-journal-remote")
}

/// Every entry of one file, panicking on any error.
pub fn read_file(path: &Path, filter: &UnitFilter) -> Vec<Entry> {
    let mut file = JournalFile::open(path).expect("open");
    file.entries(filter)
        .collect::<Result<Vec<_>, _>>()
        .expect("every entry reads")
}

/// The fields of a read entry as the writer was fed them: `_BOOT_ID` (which the
/// writer also keeps as a field) removed, sorted, so that order (journald sorts items by
/// offset) does not matter.
pub fn sorted_fields(entry: &Entry) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<_> = entry
        .fields
        .iter()
        .filter(|field| field.name != "_BOOT_ID")
        .map(|field| (field.name.clone(), field.value.clone()))
        .collect();
    fields.sort();
    fields
}

/// Asserts that `read` is exactly `fed`: same count and, entry by entry, the same
/// timestamps, boot id and fields (every byte), with seqnums increasing by one.
pub fn assert_same(fed: &[Fed], read: &[Entry]) {
    assert_eq!(read.len(), fed.len(), "entry count");
    let boot = Id128::parse(BOOT_ID).expect("boot id");
    for (index, (fed, read)) in fed.iter().zip(read).enumerate() {
        assert_eq!(read.realtime_usec(), fed.realtime, "entry {index} realtime");
        assert_eq!(
            read.monotonic_usec(),
            fed.monotonic,
            "entry {index} monotonic"
        );
        assert_eq!(read.boot_id(), boot, "entry {index} boot id");
        let mut expected = fed.fields.clone();
        expected.sort();
        assert!(
            sorted_fields(read) == expected,
            "entry {index} fields differ:\nread {:?}\nfed  {:?}",
            summary(&sorted_fields(read)),
            summary(&expected)
        );
        assert!(read.fields.iter().all(|field| !field.truncated));
        if index > 0 {
            assert!(read.seqnum() > 0);
        }
    }
    for pair in read.windows(2) {
        assert_eq!(
            pair[1].seqnum(),
            pair[0].seqnum() + 1,
            "seqnums are consecutive"
        );
    }
}

fn summary(fields: &[(String, Vec<u8>)]) -> Vec<String> {
    fields
        .iter()
        .map(|(name, value)| format!("{name}({} bytes)", value.len()))
        .collect()
}

/// A deterministic pseudo-random byte source (xorshift), so runs are repeatable.
pub struct Noise(pub u64);

impl Noise {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Units the generated entries come from.
pub const UNITS: [&str; 5] = [
    "kubelet.service",
    "containerd.service",
    "ssh.service",
    "cron.service",
    "getty@tty1.service",
];

/// `count` varied entries starting at number `first`: several units, priorities, a
/// binary field with newlines and NULs, repeated field names, and every 7th entry a
/// message over the 512-byte compression threshold (compressible text, so the writer
/// stores it compressed); every 50th a 300 KiB field.
pub fn varied_entries(first: u64, count: u64) -> Vec<Fed> {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15 ^ first.wrapping_add(1));
    (first..first + count)
        .map(|n| {
            let unit = UNITS[(n % UNITS.len() as u64) as usize];
            let mut message = format!("entry {n} from {unit}: kubelet sync loop ok");
            if n % 7 == 0 {
                message.push_str(
                    &" pod sandbox changed, it will be killed and re-created;".repeat(40),
                );
            }
            let mut fields = vec![
                ("MESSAGE".to_string(), message.into_bytes()),
                ("_SYSTEMD_UNIT".to_string(), unit.as_bytes().to_vec()),
                ("PRIORITY".to_string(), format!("{}", n % 8).into_bytes()),
                ("_HOSTNAME".to_string(), b"node-a".to_vec()),
                (
                    "SYSLOG_IDENTIFIER".to_string(),
                    unit.trim_end_matches(".service").as_bytes().to_vec(),
                ),
                ("BINARY_BLOB".to_string(), {
                    let mut blob = noise.bytes(24);
                    blob.extend_from_slice(b"\n\0line two\n");
                    blob
                }),
                ("CODE_LINE".to_string(), format!("{}", n).into_bytes()),
                ("CODE_LINE".to_string(), format!("{}", n + 1).into_bytes()),
            ];
            if n % 50 == 0 {
                fields.push(("BIG_DUMP".to_string(), noise.bytes(300 * 1024)));
            }
            Fed {
                realtime: 1_700_000_000_000_000 + n * 1_000,
                monotonic: 5_000_000 + n * 1_000,
                fields,
            }
        })
        .collect()
}

/// Counts the data objects of a journal file by compression flag (0 = none, 1 = xz,
/// 2 = lz4, 4 = zstd), walking objects by their sizes: an independent look at the
/// file to prove that compressed objects were there to read.
pub fn data_objects_by_compression(path: &Path) -> BTreeMap<u8, usize> {
    let bytes = std::fs::read(path).expect("read journal");
    let le64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let header_size = le64(88) as usize;
    let tail = le64(136) as usize;
    let mut counts = BTreeMap::new();
    let mut at = header_size;
    while at <= tail {
        let (kind, flags, size) = (bytes[at], bytes[at + 1], le64(at + 8) as usize);
        if kind == 1 {
            *counts.entry(flags).or_insert(0) += 1;
        }
        at += (size + 7) & !7;
    }
    counts
}

/// `journalctl --file=PATH -o export`, parsed: per entry, its fields (including
/// `__CURSOR`, `__REALTIME_TIMESTAMP` and friends) in output order.
pub fn journalctl_export(path: &Path) -> Vec<Vec<(String, Vec<u8>)>> {
    let output = Command::new("journalctl")
        .arg(format!("--file={}", path.display()))
        .args(["-o", "export", "--no-pager"])
        .output()
        .expect("journalctl runs (systemd-journal-remote's package depends on systemd)");
    assert!(
        output.status.success(),
        "journalctl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = output.stdout;
    let mut entries = Vec::new();
    let mut fields = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let line_end = at
            + bytes[at..]
                .iter()
                .position(|b| *b == b'\n')
                .expect("line end");
        let line = &bytes[at..line_end];
        if line.is_empty() {
            entries.push(std::mem::take(&mut fields));
            at = line_end + 1;
            continue;
        }
        if let Some(equals) = line.iter().position(|b| *b == b'=') {
            let name = String::from_utf8(line[..equals].to_vec()).expect("name");
            fields.push((name, line[equals + 1..].to_vec()));
            at = line_end + 1;
        } else {
            let name = String::from_utf8(line.to_vec()).expect("name");
            let len_at = line_end + 1;
            let len = u64::from_le_bytes(bytes[len_at..len_at + 8].try_into().expect("8")) as usize;
            fields.push((name, bytes[len_at + 8..len_at + 8 + len].to_vec()));
            at = len_at + 8 + len + 1;
        }
    }
    if !fields.is_empty() {
        entries.push(fields);
    }
    entries
}
