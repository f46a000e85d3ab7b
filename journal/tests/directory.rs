//! Journal directories in the states journald leaves them that systemd-journal-remote
//! does not produce: a file abandoned online by a crash and renamed `.journal~`, an
//! unreadable file beside good ones, too many files, and the order of archives.

use kaas_test_support::journal as common;

use std::path::Path;

use common::writer::{COMPACT, Writer};
use kaas_journal::{Entry, JournalDirectory, JournalError, StartAt, UnitFilter};

/// A file of entries `first..=last` (realtime = seqnum * 1000) in one seqnum space,
/// laid out as journald appends: the entry array first, so a file with more entries
/// is the same bytes with more appended (and the header's counters moved on).
fn file(id: u8, state: u8, first: u64, last: u64, incompatible: u32) -> Vec<u8> {
    let mut writer = Writer::new(COMPACT | incompatible);
    writer.file_id = [id; 16];
    writer.state = state;
    writer.seqnum = first - 1;
    writer.early_array(16);
    for n in first..=last {
        writer.plain_entry(n * 1000, &[format!("MESSAGE=m{n}").as_bytes()]);
    }
    writer.finish(4);
    writer.bytes
}

fn read_all(directory: &mut JournalDirectory) -> (Vec<u64>, Vec<String>) {
    let mut seqnums = Vec::new();
    let mut errors = Vec::new();
    while let Some(result) = directory.next_entry() {
        match result {
            Ok(entry) => seqnums.push(Entry::seqnum(&entry)),
            Err(error) => errors.push(error.to_string()),
        }
    }
    (seqnums, errors)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write");
}

/// journald crashed: its file stayed online (never archived). On restart it renames it
/// `system@….journal~` and writes a new `system.journal` continuing the numbers. The
/// reader finishes the old file through its open descriptor and moves on, because a
/// later file of the chain has entries.
#[test]
fn file_left_online_by_a_crash_is_finished_by_its_successor() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "system.journal", &file(1, 1, 1, 3, 0));
    let mut directory =
        JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::Beginning).expect("open");
    assert_eq!(read_all(&mut directory), (vec![1, 2, 3], vec![]));
    // The crashed writer had appended two more entries before it died.
    write(dir.path(), "system.journal", &file(1, 1, 1, 5, 0));
    std::fs::rename(
        dir.path().join("system.journal"),
        dir.path()
            .join("system@0101-0000000000000001-0000000000000000.journal~"),
    )
    .expect("rename");
    write(dir.path(), "system.journal", &file(2, 1, 6, 8, 0));
    directory.poll().expect("poll");
    assert_eq!(read_all(&mut directory), (vec![4, 5, 6, 7, 8], vec![]));
}

/// Archives are read in seqnum order whatever their names and listing order, each once.
#[test]
fn archives_are_read_in_order_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "system@b.journal", &file(3, 2, 11, 20, 0));
    write(dir.path(), "system@a.journal", &file(4, 2, 1, 10, 0));
    write(dir.path(), "system@c.journal", &file(5, 2, 21, 25, 0));
    write(dir.path(), "system.journal", &file(6, 0, 26, 27, 0));
    let mut directory =
        JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::Beginning).expect("open");
    let (seqnums, errors) = read_all(&mut directory);
    assert_eq!(seqnums, (1..=27).collect::<Vec<_>>());
    assert!(errors.is_empty(), "{errors:?}");
    directory.poll().expect("poll");
    assert_eq!(read_all(&mut directory), (vec![], vec![]), "nothing twice");
}

/// A file with an unknown incompatible feature is reported once, by name of the
/// feature, and the rest of the directory is read.
#[test]
fn unreadable_file_is_reported_once_and_the_rest_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "system.journal", &file(7, 0, 1, 3, 0));
    write(dir.path(), "user-1000.journal", &file(8, 0, 1, 2, 1 << 6));
    write(dir.path(), "notes.txt", b"not a journal file name: ignored");
    let mut directory =
        JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::Beginning).expect("open");
    let (seqnums, errors) = read_all(&mut directory);
    assert_eq!(seqnums, [1, 2, 3]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("incompatible features 0x40"),
        "{errors:?}"
    );
    directory.poll().expect("poll");
    assert_eq!(read_all(&mut directory), (vec![], vec![]), "reported once");
}

/// A directory with more journal files than the reader opens is refused, not read in
/// part.
#[test]
fn too_many_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for n in 0..1025 {
        write(dir.path(), &format!("system@{n}.journal"), b"");
    }
    let error = JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::Beginning)
        .err()
        .expect("refused");
    assert!(matches!(
        error,
        JournalError::TooManyFiles { limit: 1024, .. }
    ));
}

/// A malformed persisted cursor is refused with its reason before anything is read.
#[test]
fn malformed_persisted_cursor_is_refused() {
    for (text, reason) in [
        ("system s=zz", "s is not 32 hex digits"),
        ("sys/tem s=1", "invalid chain name"),
    ] {
        let error = text
            .parse::<kaas_journal::DirectoryCursor>()
            .expect_err(text);
        assert!(error.to_string().contains(reason), "{error}");
    }
}
