//! Reading real journal files: written by Debian's systemd-journal-remote (systemd 252)
//! from export-format input the test generates, read back with the crate, and compared
//! field by field with what was fed, and with `journalctl`'s own reading.

use kaas_test_support::journal as common;

use common::{
    BOOT_ID, Fed, UNITS, assert_same, data_objects_by_compression, journal_remote,
    journalctl_export, read_file, sorted_fields, varied_entries, write_journal,
};
use kaas_journal::{JournalFile, UnitFilter};

/// Writes `entries` with journal-remote under `env` and checks every entry read back
/// against the input; returns the file's path and the zstd-compressed data objects.
fn round_trip(env: &[(&str, &str)], compact: bool) -> Option<usize> {
    let binary = journal_remote()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("system.journal");
    let fed = varied_entries(0, 700);
    write_journal(&binary, &path, &fed, env);
    let file = JournalFile::open(&path).expect("open");
    assert_eq!(file.header().is_compact(), compact, "layout");
    let read = read_file(&path, &UnitFilter::All);
    assert_same(&fed, &read);
    Some(
        data_objects_by_compression(&path)
            .get(&4)
            .copied()
            .unwrap_or(0),
    )
}

/// systemd 252's default: compact layout, keyed hashes, zstd-compressed data objects.
/// Every field of every entry (text, binary with newlines and NULs, repeated names,
/// 300 KiB values, messages over the compression threshold) reads back as fed.
#[test]
fn compact_zstd_file_reads_back_every_field() {
    let Some(compressed) = round_trip(&[], true) else {
        return;
    };
    assert!(compressed >= 100, "zstd objects were written: {compressed}");
}

/// The regular (non-compact) layout with unkeyed (Jenkins) hashes, as older systemd
/// versions and `SYSTEMD_JOURNAL_COMPACT=0` write it.
#[test]
fn regular_layout_with_unkeyed_hashes_reads_back_every_field() {
    let env = [
        ("SYSTEMD_JOURNAL_COMPACT", "0"),
        ("SYSTEMD_JOURNAL_KEYED_HASH", "0"),
    ];
    let Some(compressed) = round_trip(&env, false) else {
        return;
    };
    assert!(compressed >= 100, "zstd objects were written: {compressed}");
}

/// On a zstd file and on one written with `--compress=no` (plain payloads only), the
/// crate agrees with journalctl's own reading on every entry: cursor (so cursors can
/// be handed to `journalctl --after-cursor`), timestamps, boot id and every field.
#[test]
fn agrees_with_journalctl_on_every_field_and_cursor() {
    let Some(binary) = journal_remote() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, args) in [
        ("zstd.journal", &[][..]),
        ("plain.journal", &["--compress=no"][..]),
    ] {
        let path = dir.path().join(name);
        let fed = varied_entries(1_000, 300);
        let mut child = common::spawn_writer(&binary, &path, &[], args);
        let mut stdin = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut stdin, &common::export(&fed)).expect("feed");
        drop(stdin);
        assert!(child.wait().expect("writer").success());
        let read = read_file(&path, &UnitFilter::All);
        assert_same(&fed, &read);
        let theirs = journalctl_export(&path);
        assert_eq!(theirs.len(), read.len(), "{name}: entry count");
        for (ours, theirs) in read.iter().zip(&theirs) {
            let value = |key: &str| {
                theirs
                    .iter()
                    .find(|(name, _)| name == key)
                    .map(|(_, value)| value.clone())
                    .expect(key)
            };
            assert_eq!(
                ours.cursor.to_string().into_bytes(),
                value("__CURSOR"),
                "{name}"
            );
            assert_eq!(
                ours.realtime_usec().to_string().into_bytes(),
                value("__REALTIME_TIMESTAMP")
            );
            assert_eq!(
                ours.monotonic_usec().to_string().into_bytes(),
                value("__MONOTONIC_TIMESTAMP")
            );
            assert_eq!(value("_BOOT_ID"), BOOT_ID.as_bytes());
            let mut their_fields: Vec<_> = theirs
                .iter()
                .filter(|(name, _)| !name.starts_with("__") && name != "_BOOT_ID")
                .cloned()
                .collect();
            their_fields.sort();
            assert_eq!(sorted_fields(ours), their_fields, "{name}: fields");
        }
        if name == "plain.journal" {
            let counts = data_objects_by_compression(&path);
            assert_eq!(
                counts.keys().copied().collect::<Vec<_>>(),
                vec![0],
                "{name}"
            );
        }
    }
}

/// The unit allow-list keeps exactly the entries of the listed units, in order, and
/// the accessors give the well-known fields.
#[test]
fn unit_filter_keeps_exactly_the_allowed_units() {
    let Some(binary) = journal_remote() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("system.journal");
    let fed = varied_entries(0, 400);
    write_journal(&binary, &path, &fed, &[]);
    let filter = UnitFilter::units(["kubelet.service", "getty@tty1.service"]);
    let read = read_file(&path, &filter);
    let expected: Vec<Fed> = fed
        .iter()
        .filter(|entry| {
            let unit = &entry.fields[1].1;
            unit == b"kubelet.service" || unit == b"getty@tty1.service"
        })
        .cloned()
        .collect();
    assert_eq!(read.len(), 2 * 400 / UNITS.len());
    assert_eq!(read.len(), expected.len());
    for (read, fed) in read.iter().zip(&expected) {
        assert_eq!(read.realtime_usec(), fed.realtime);
        assert_eq!(read.message(), Some(fed.fields[0].1.as_slice()));
        assert_eq!(
            read.unit().map(str::as_bytes),
            Some(fed.fields[1].1.as_slice())
        );
        assert_eq!(
            read.priority(),
            Some(fed.fields[2].1[0] - b'0'),
            "PRIORITY parsed"
        );
        assert_eq!(read.hostname(), Some("node-a"));
    }
    let none = read_file(&path, &UnitFilter::units(["absent.service"]));
    assert!(none.is_empty());
}

/// A field longer than the 1 MiB cap (2 MiB, stored zstd-compressed) keeps its first
/// MiB and is marked truncated; the entry's other fields are whole.
#[test]
fn field_over_the_cap_is_truncated_not_lost() {
    let Some(binary) = journal_remote() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("system.journal");
    let huge: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| b"abcdefghij"[(i % 10) as usize])
        .collect();
    let fed = vec![Fed {
        realtime: 1_700_000_000_000_000,
        monotonic: 1,
        fields: vec![
            ("MESSAGE".into(), huge.clone()),
            ("_SYSTEMD_UNIT".into(), b"kubelet.service".to_vec()),
        ],
    }];
    write_journal(&binary, &path, &fed, &[]);
    let read = read_file(&path, &UnitFilter::All);
    assert_eq!(read.len(), 1);
    let message = read[0]
        .fields
        .iter()
        .find(|field| field.name == "MESSAGE")
        .expect("message");
    assert!(message.truncated);
    assert_eq!(message.value.len(), kaas_journal::MAX_FIELD_BYTES);
    assert!(
        message.value == huge[..kaas_journal::MAX_FIELD_BYTES],
        "the first MiB, byte for byte"
    );
    assert_eq!(read[0].unit(), Some("kubelet.service"));
}
