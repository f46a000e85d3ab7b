//! Following a journal directory written by Debian's systemd-journal-remote: rotation
//! (the writer's own, triggered by filling the field hash table), a live writer read
//! while it writes, user journals merged with the system journal, and cursors
//! persisted and resumed. In every case the entries read are exactly the entries fed:
//! none lost, none repeated.

use kaas_test_support::journal as common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Fed, assert_same, export, journal_remote, spawn_writer, varied_entries, write_journal,
};
use kaas_journal::{DirectoryCursor, Entry, JournalDirectory, StartAt, UnitFilter};

/// How long a live writer's entries may take to become readable: a functional deadline
/// (the writer is local and fast), not a performance bound.
const VISIBLE_DEADLINE: Duration = Duration::from_secs(60);

/// Varied entries that each also carry three field names never used before, so the
/// writer's field hash table (333 buckets) fills past 75% about every 80 entries and
/// it rotates the file, as journald does when a file's tables fill up.
fn rotating_entries(first: u64, count: u64) -> Vec<Fed> {
    let mut entries = varied_entries(first, count);
    for (entry, n) in entries.iter_mut().zip(first..) {
        for k in 0..3 {
            entry
                .fields
                .push((format!("ROTATE_{n}_{k}"), format!("{k}").into_bytes()));
        }
    }
    entries
}

/// Reads what is readable now, failing on any error.
fn drain(directory: &mut JournalDirectory, into: &mut Vec<Entry>) {
    while let Some(entry) = directory.next_entry() {
        into.push(entry.expect("no entry of a well-formed journal fails"));
    }
}

fn archives(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(Result::ok)
        .filter(|dirent| dirent.file_name().to_string_lossy().contains('@'))
        .count()
}

/// The writer rotates several times; reading the directory from the beginning gives
/// every entry once, in order, across the archives and the active file.
#[test]
fn directory_reads_across_the_writers_rotations() {
    let Some(binary) = journal_remote() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = rotating_entries(0, 400);
    write_journal(&binary, &dir.path().join("system.journal"), &fed, &[]);
    assert!(archives(dir.path()) >= 3, "the writer rotated");
    let mut directory =
        JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::Beginning).expect("open");
    let mut read = Vec::new();
    drain(&mut directory, &mut read);
    assert_same(&fed, &read);
}

/// A writer that keeps writing (and rotating) while the reader follows: after each
/// batch the reader polls until it has the batch, and halfway it is dropped and a new
/// one resumes from the persisted cursor text. The reader never sees an error (a torn
/// tail waits for the next poll), and the union is exactly what was fed.
#[test]
fn follows_a_live_writer_across_rotation_and_restart() {
    let Some(binary) = journal_remote() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writer = spawn_writer(&binary, &dir.path().join("system.journal"), &[], &[]);
    let mut stdin = writer.stdin.take().expect("stdin");
    let mut directory =
        JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::Beginning).expect("open");
    let mut fed = Vec::new();
    let mut read = Vec::new();
    for batch in 0..8u64 {
        let entries = rotating_entries(batch * 60, 60);
        // Fed one entry at a time, so the reader races the writer mid-batch too.
        for entry in &entries {
            stdin
                .write_all(&export(std::slice::from_ref(entry)))
                .expect("feed");
            stdin.flush().expect("flush");
        }
        fed.extend(entries);
        let deadline = Instant::now() + VISIBLE_DEADLINE;
        while read.len() < fed.len() {
            assert!(Instant::now() < deadline, "batch {batch} became readable");
            directory.poll().expect("poll");
            drain(&mut directory, &mut read);
            std::thread::sleep(Duration::from_millis(10));
        }
        if batch == 3 {
            let text = directory.position().to_string();
            drop(directory);
            let position: DirectoryCursor = text.parse().expect("persisted cursor parses");
            directory =
                JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::After(position))
                    .expect("reopen");
        }
    }
    drop(stdin);
    assert!(writer.wait().expect("writer").success());
    directory.poll().expect("poll");
    drain(&mut directory, &mut read);
    assert!(
        archives(dir.path()) >= 3,
        "the writer rotated while followed"
    );
    assert_same(&fed, &read);
}

/// Resuming from a persisted cursor at any point (first entry, inside a file, exactly
/// at a rotation boundary, the last entry) reads the rest exactly once.
#[test]
fn resuming_from_a_cursor_reads_the_rest_exactly_once() {
    let Some(binary) = journal_remote() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = rotating_entries(0, 300);
    write_journal(&binary, &dir.path().join("system.journal"), &fed, &[]);
    let mut all = Vec::new();
    let mut directory =
        JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::Beginning).expect("open");
    drain(&mut directory, &mut all);
    assert_same(&fed, &all);
    // Entries where a new file starts: the seqnum of each archive's first entry.
    let boundaries: Vec<usize> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter_map(|dirent| {
            let name = dirent.file_name().to_string_lossy().into_owned();
            let head = name.split('@').nth(1)?.split('-').nth(1)?.to_string();
            usize::from_str_radix(&head, 16).ok()
        })
        .filter(|seqnum| *seqnum > 1)
        .collect();
    assert!(!boundaries.is_empty(), "rotated");
    let mut cuts = vec![1, 57, all.len() - 1, all.len()];
    for boundary in boundaries {
        cuts.extend([boundary - 2, boundary - 1, boundary]);
    }
    for cut in cuts {
        let mut first =
            JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::Beginning).expect("open");
        let mut head = Vec::new();
        while head.len() < cut {
            head.push(first.next_entry().expect("entry").expect("readable"));
        }
        let text = first.position().to_string();
        let mut second = JournalDirectory::open(
            dir.path(),
            UnitFilter::All,
            StartAt::After(text.parse().expect("parses")),
        )
        .expect("resume");
        drain(&mut second, &mut head);
        assert_same(&fed, &head);
    }
}

/// A `user-1000.journal` (its own writer, so its own seqnum space) is read beside the
/// system journal, merged by time, with a cursor per chain.
#[test]
fn user_journal_is_merged_with_the_system_journal() {
    let Some(binary) = journal_remote() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let all = varied_entries(0, 200);
    let (system, user): (Vec<Fed>, Vec<Fed>) = all
        .iter()
        .cloned()
        .partition(|entry| entry.monotonic % 3 != 0);
    write_journal(&binary, &dir.path().join("system.journal"), &system, &[]);
    write_journal(&binary, &dir.path().join("user-1000.journal"), &user, &[]);
    let mut directory =
        JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::Beginning).expect("open");
    let mut read = Vec::new();
    drain(&mut directory, &mut read);
    assert_eq!(read.len(), all.len());
    for (read, fed) in read.iter().zip(&all) {
        assert_eq!(read.monotonic_usec(), fed.monotonic, "merged in time order");
        assert_eq!(read.message(), Some(fed.fields[0].1.as_slice()));
    }
    let position = directory.position();
    assert!(position.chain("system").is_some() && position.chain("user-1000").is_some());
}

/// Starting at the end reads only what is written after opening: the writer is run
/// again on the same file, which it reopens and appends to.
#[test]
fn start_at_end_reads_only_new_entries() {
    let Some(binary) = journal_remote() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("system.journal");
    write_journal(&binary, &path, &varied_entries(0, 50), &[]);
    let mut directory =
        JournalDirectory::open(dir.path(), UnitFilter::All, StartAt::End).expect("open");
    let mut read = Vec::new();
    drain(&mut directory, &mut read);
    assert!(read.is_empty(), "nothing new yet");
    let new = varied_entries(50, 30);
    write_journal(&binary, &path, &new, &[]);
    directory.poll().expect("poll");
    drain(&mut directory, &mut read);
    assert_same(&new, &read);
    assert_eq!(read[0].seqnum(), 51, "the writer appended to the same file");
}
