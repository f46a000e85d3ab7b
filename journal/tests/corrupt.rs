//! Hostile and corrupt journal files: the committed fixtures in `testdata/corrupt/`,
//! each with the outcome expected entry by entry, and a torn tail journald is still
//! writing. A corrupt object is a typed error, the reader goes on with what it can still
//! read, nothing panics, loops or allocates without bound.
//!
//! The fixtures are built by `build_fixtures` below, so each byte is explained by code;
//! `fixtures_match_their_recipes` fails when a fixture and its recipe drift apart.
//! Regenerate them with `JOURNAL_FIXTURES_UPDATE=1 cargo test -p kaas-journal --test
//! corrupt`.

use kaas_test_support::journal as common;

use std::path::PathBuf;

use common::writer::{COMPACT, HEADER_SIZE, LZ4, Payload, Writer, XZ, ZSTD};
use kaas_journal::{Entry, JournalError, JournalFile, MAX_FIELD_BYTES, UnitFilter};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/corrupt")
}

/// A zstd frame: a raw block holding `prefix`, then `blocks` RLE blocks of 128 KiB of
/// `A` (4 bytes each: the classic compression bomb).
fn zstd_bomb(prefix: &[u8], blocks: usize) -> Vec<u8> {
    zstd_rle(prefix, blocks, 128 * 1024)
}

/// A zstd frame: a raw block holding `prefix`, then `blocks` RLE blocks of `size` `A`s.
fn zstd_rle(prefix: &[u8], blocks: usize, size: u32) -> Vec<u8> {
    // Magic; descriptor without content size or checksum; a 1 MiB window.
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x50];
    let raw = (prefix.len() as u32) << 3;
    frame.extend_from_slice(&raw.to_le_bytes()[..3]);
    frame.extend_from_slice(prefix);
    for index in 0..blocks {
        let header = u32::from(index + 1 == blocks) | 1 << 1 | size << 3;
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.push(b'A');
    }
    frame
}

/// systemd's LZ4 framing around one block: the literals `prefix` then a match of
/// `extension` * 255 bytes at distance 1. `declared` is the size prefix.
fn lz4_bomb(prefix: &[u8], extension: usize, declared: u64) -> Vec<u8> {
    let mut bytes = declared.to_le_bytes().to_vec();
    bytes.push(0xff); // 15+ literals, 15+ match
    bytes.push((prefix.len() - 15) as u8);
    bytes.extend_from_slice(prefix);
    bytes.extend_from_slice(&[1, 0]); // offset 1
    bytes.extend(std::iter::repeat_n(255u8, extension));
    bytes.push(0);
    bytes.push(0x10); // last sequence: one literal
    bytes.push(b'!');
    bytes
}

/// An xz stream of one block of stored (uncompressed) LZMA2 chunks, no check.
fn xz_stored(data: &[u8]) -> Vec<u8> {
    let mut stream = vec![0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0, 0, 0, 0, 0];
    stream.extend_from_slice(&[2, 0, 0x21, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    for (index, chunk) in data.chunks(1000).enumerate() {
        stream.push(if index == 0 { 1 } else { 2 });
        stream.extend_from_slice(&(chunk.len() as u16 - 1).to_be_bytes());
        stream.extend_from_slice(chunk);
    }
    stream.push(0);
    while !(stream.len() - 12).is_multiple_of(4) {
        stream.push(0);
    }
    stream.push(0); // the index follows: one block only
    stream
}

/// A well-formed file of six entries using every payload kind, in compact or regular
/// layout: the corpus's starting point, and a check that fixtures can be read at all.
fn valid(compact: bool) -> Vec<u8> {
    let flags = ZSTD | LZ4 | XZ | if compact { COMPACT } else { 0 };
    let mut writer = Writer::new(flags);
    writer.early_array(2);
    let unit = writer.data(&Payload::plain(b"_SYSTEMD_UNIT=kubelet.service"));
    let other = writer.data(&Payload::plain(b"_SYSTEMD_UNIT=cron.service"));
    let lz4_prefix = b"LZ4_FIELD=abcdefghij";
    let lz4_size = lz4_prefix.len() as u64 + 19 + 255 * 3 + 1;
    for n in 1..=6u64 {
        let message = writer.data(&Payload::plain(format!("MESSAGE=m{n}").as_bytes()));
        let compressed = writer.data(&match n % 3 {
            0 => Payload {
                flags: 4,
                bytes: zstd_rle(b"ZSTD_FIELD=", 2, 700),
            },
            1 => Payload {
                flags: 2,
                bytes: lz4_bomb(lz4_prefix, 3, lz4_size),
            },
            _ => Payload {
                flags: 1,
                bytes: xz_stored(&[b"XZ_FIELD=".as_slice(), &[b'x'; 2500]].concat()),
            },
        });
        let unit = if n % 2 == 0 { unit } else { other };
        writer.entry(n, n, &[message, unit, compressed]);
    }
    writer.finish(3);
    writer.bytes
}

/// The compression bombs: zstd and LZ4 fields far over the cap, and an entry whose
/// distinct bombs exceed its decompression budget.
fn bomb_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let mut fixtures = Vec::new();
    // zstd bomb: 16 MiB of 'A' from 600 bytes, once as a field and once referenced by
    // an entry 1000 times.
    let mut writer = Writer::new(COMPACT | ZSTD);
    let bomb = writer.data(&Payload {
        flags: 4,
        bytes: zstd_bomb(b"MESSAGE=", 128),
    });
    writer.entry(1, 1, &[bomb]);
    writer.entry(2, 2, &[bomb; 1000]);
    writer.finish(4);
    fixtures.push(("zstd-bomb.journal", writer.bytes));

    // LZ4 bomb: 2 MiB of '=' from 8 KiB, with a size prefix that claims 2^63.
    let mut writer = Writer::new(LZ4);
    let bomb = writer.data(&Payload {
        flags: 2,
        bytes: lz4_bomb(b"MESSAGE=exploding=", 8_300, 1 << 63),
    });
    writer.entry(1, 1, &[bomb]);
    writer.finish(4);
    fixtures.push(("lz4-bomb.journal", writer.bytes));

    // Twenty distinct zstd bombs (2 MiB each), referenced round-robin by one entry 100
    // times: more than the cache holds, so the entry's decompression budget ends it.
    let mut writer = Writer::new(COMPACT | ZSTD);
    let bombs: Vec<u64> = (0..20u8)
        .map(|n| {
            writer.data(&Payload {
                flags: 4,
                bytes: zstd_bomb(&[b"BOMB_", &[b'A' + n][..], b"="].concat(), 16),
            })
        })
        .collect();
    let items: Vec<u64> = bombs.iter().copied().cycle().take(100).collect();
    writer.entry(1, 1, &items);
    writer.plain_entry(2, &[b"MESSAGE=after"]);
    writer.finish(4);
    fixtures.push(("decode-budget.journal", writer.bytes));

    fixtures
}

/// Every fixture's name and bytes.
fn build_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let mut fixtures = vec![
        ("valid-compact.journal", valid(true)),
        ("valid-regular.journal", valid(false)),
    ];

    // Cut in the middle of the fourth entry: the header and the early entry array
    // promise more than the file holds.
    let mut writer = Writer::new(COMPACT);
    writer.early_array(8);
    for n in 1..=4u64 {
        writer.plain_entry(n, &[format!("MESSAGE=m{n}").as_bytes()]);
    }
    writer.finish(8);
    let cut = writer.entries[3] as usize + 20;
    writer.bytes.truncate(cut);
    fixtures.push(("truncated.journal", writer.bytes));

    // Entry-array slots and data items pointing where they must not.
    let mut writer = Writer::new(COMPACT);
    let mut offsets = Vec::new();
    for n in 1..=7u64 {
        offsets.push(writer.plain_entry(n, &[format!("MESSAGE=m{n}").as_bytes()]));
    }
    // Entry 4's data item points into the header.
    let item = offsets[3] as usize + 64;
    writer.bytes[item..item + 4].copy_from_slice(&16u32.to_le_bytes());
    writer.entries[1] = offsets[1] + 3; // misaligned
    writer.entries[2] = 0xffff_fff0; // beyond the end of the file
    // m7's data object, just before its entry (16 + 56 + 10 bytes, padded to 88).
    writer.entries[5] = offsets[6] - 88;
    writer.finish(8);
    fixtures.push(("bad-offsets.journal", writer.bytes));

    // The second entry array links back to the first: a cycle.
    let mut writer = Writer::new(0);
    for n in 1..=5u64 {
        writer.plain_entry(n, &[format!("MESSAGE=m{n}").as_bytes()]);
    }
    let arrays = writer.finish(2);
    writer.put_u64(arrays[1] as usize + 16, arrays[0]);
    fixtures.push(("array-cycle.journal", writer.bytes));

    fixtures.extend(bomb_fixtures());

    // A zstd payload that is not zstd, between two good entries.
    let mut writer = Writer::new(COMPACT | ZSTD);
    writer.plain_entry(1, &[b"MESSAGE=before"]);
    let garbage = writer.data(&Payload {
        flags: 4,
        bytes: b"definitely not a zstd frame".to_vec(),
    });
    writer.entry(2, 2, &[garbage]);
    writer.plain_entry(3, &[b"MESSAGE=after"]);
    writer.finish(4);
    fixtures.push(("bad-zstd.journal", writer.bytes));

    // An entry with 1025 items (journald writes at most 1024), then a good one.
    let mut writer = Writer::new(COMPACT);
    let data = writer.data(&Payload::plain(b"MESSAGE=many"));
    writer.entry(1, 1, &[data; 1025]);
    writer.plain_entry(2, &[b"MESSAGE=after"]);
    writer.finish(4);
    fixtures.push(("too-many-items.journal", writer.bytes));

    // An incompatible feature from the future.
    let mut writer = Writer::new(COMPACT | 1 << 5);
    writer.plain_entry(1, &[b"MESSAGE=unreadable"]);
    writer.finish(4);
    fixtures.push(("unknown-feature.journal", writer.bytes));

    // Not a journal at all, and a header cut short.
    fixtures.push((
        "not-a-journal.journal",
        b"MESSAGE=this is a text file\n".repeat(20),
    ));
    let mut writer = Writer::new(0);
    writer.finish(4);
    writer.bytes.truncate(HEADER_SIZE / 2);
    fixtures.push(("short-header.journal", writer.bytes));
    fixtures
}

/// One line per result, to compare with the expected outcomes.
fn describe(result: &Result<Entry, JournalError>) -> String {
    match result {
        Ok(entry) => {
            let message = entry.message().unwrap_or_default();
            let shown = String::from_utf8_lossy(&message[..message.len().min(12)]).into_owned();
            let truncated = entry.fields.iter().any(|field| field.truncated);
            format!("ok {shown}{}", if truncated { " (truncated)" } else { "" })
        }
        Err(error) => format!("error: {error}"),
    }
}

/// Opens a fixture and reads it to the end: each result described, or the open error.
fn outcomes(name: &str) -> Vec<String> {
    let mut file = match JournalFile::open(&fixture_dir().join(name)) {
        Ok(file) => file,
        Err(error) => return vec![format!("open: {error}")],
    };
    let results: Vec<String> = file
        .entries(&UnitFilter::All)
        .map(|r| describe(&r))
        .collect();
    // Read to the end: asking again yields nothing more and does not loop.
    assert!(file.next_entry(&UnitFilter::All).is_none(), "{name}: ended");
    results
}

#[test]
fn fixtures_match_their_recipes() {
    let update = std::env::var_os("JOURNAL_FIXTURES_UPDATE").is_some();
    for (name, bytes) in build_fixtures() {
        let path = fixture_dir().join(name);
        if update {
            std::fs::create_dir_all(fixture_dir()).expect("fixture dir");
            std::fs::write(&path, &bytes).expect("write fixture");
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(committed == bytes, "{name} differs from its recipe");
    }
}

/// Each fixture, entry by entry: what reads, and the typed error for what does not.
#[test]
fn corrupt_fixtures_give_their_expected_errors() {
    let six = ["ok m1", "ok m2", "ok m3", "ok m4", "ok m5", "ok m6"];
    let expected: &[(&str, &[&str])] = &[
        ("valid-compact.journal", &six),
        ("valid-regular.journal", &six),
        (
            "truncated.journal",
            &[
                "ok m1",
                "ok m2",
                "ok m3",
                "corrupt journal object at offset 0x380: object size 68 invalid",
            ],
        ),
        (
            "bad-offsets.journal",
            &[
                "ok m1",
                "offset 0x20b: offset not 8-byte aligned",
                "offset 0xfffffff0: offset out of range",
                "offset 0x10: offset out of range",
                "ok m5",
                "offset 0x4d0: expected an entry, found object type 1",
                "ok m7",
            ],
        ),
        (
            "array-cycle.journal",
            &[
                "ok m1",
                "ok m2",
                "ok m3",
                "ok m4",
                "offset 0x458: entry array chain does not move forward (cycle)",
                "ok m5",
            ],
        ),
        (
            "zstd-bomb.journal",
            &["ok AAAAAAAAAAAA (truncated)", "ok AAAAAAAAAAAA (truncated)"],
        ),
        ("lz4-bomb.journal", &["ok exploding=== (truncated)"]),
        (
            "decode-budget.journal",
            &[
                "entry needs more than 33554432 bytes of decompression",
                "ok after",
            ],
        ),
        (
            "bad-zstd.journal",
            &[
                "ok before",
                "offset 0x1b0: zstd payload does not decompress",
                "ok after",
            ],
        ),
        (
            "too-many-items.journal",
            &[
                "offset 0x168: entry has 1025 items, more than the limit of 1024",
                "ok after",
            ],
        ),
        (
            "unknown-feature.journal",
            &["open: journal file uses incompatible features 0x20 this reader does not support"],
        ),
        (
            "not-a-journal.journal",
            &["open: not a journal file (bad signature)"],
        ),
        (
            "short-header.journal",
            &["open: bad journal header: file shorter than a header"],
        ),
    ];
    assert_eq!(
        expected.len(),
        build_fixtures().len(),
        "every fixture has expectations"
    );
    for (name, want) in expected {
        let got = outcomes(name);
        assert_eq!(got.len(), want.len(), "{name}: {got:#?}");
        for (got, want) in got.iter().zip(want.iter()) {
            assert!(got.contains(want), "{name}: got {got:?}, want {want:?}");
        }
    }
}

/// The well-formed fixtures decode every payload kind to the exact bytes, and the unit
/// filter picks the kubelet entries.
#[test]
fn valid_fixtures_decode_every_payload_kind() {
    for name in ["valid-compact.journal", "valid-regular.journal"] {
        let mut file = JournalFile::open(&fixture_dir().join(name)).expect("open");
        let entries: Vec<Entry> = file
            .entries(&UnitFilter::All)
            .collect::<Result<_, _>>()
            .expect("reads");
        for (entry, n) in entries.iter().zip(1u64..) {
            let field = &entry.fields[2];
            let (name, value) = match n % 3 {
                0 => ("ZSTD_FIELD", vec![b'A'; 1400]),
                1 => (
                    "LZ4_FIELD",
                    [b"abcdefghij".as_slice(), &[b'j'; 19 + 255 * 3], b"!"].concat(),
                ),
                _ => ("XZ_FIELD", vec![b'x'; 2500]),
            };
            assert_eq!(
                (field.name.as_str(), &field.value),
                (name, &value),
                "{name} entry {n}"
            );
        }
        let mut file = JournalFile::open(&fixture_dir().join(name)).expect("open");
        let kubelet: Vec<u64> = file
            .entries(&UnitFilter::units(["kubelet.service"]))
            .map(|entry| entry.expect("reads").seqnum())
            .collect();
        assert_eq!(kubelet, [2, 4, 6], "{name}");
    }
}

/// The bombs cost at most the caps: the single field keeps exactly 1 MiB; the entry
/// that references the bomb 1000 times keeps four fields whole (its 4 MiB budget) and
/// cuts the other 996 to 4 KiB each.
#[test]
fn compression_bombs_are_cut_at_the_caps() {
    let mut file = JournalFile::open(&fixture_dir().join("zstd-bomb.journal")).expect("open");
    let single = file
        .next_entry(&UnitFilter::All)
        .expect("entry")
        .expect("reads");
    assert_eq!(single.fields.len(), 1);
    assert_eq!(single.fields[0].value.len(), MAX_FIELD_BYTES);
    assert!(single.fields[0].value.iter().all(|byte| *byte == b'A'));
    let many = file
        .next_entry(&UnitFilter::All)
        .expect("entry")
        .expect("reads");
    assert_eq!(many.fields.len(), 1000);
    let lengths: Vec<usize> = many.fields.iter().map(|field| field.value.len()).collect();
    assert_eq!(lengths[..4], [MAX_FIELD_BYTES; 4]);
    assert!(lengths[4..].iter().all(|len| *len == 4096));
    assert!(many.fields.iter().all(|field| field.truncated));

    let mut file = JournalFile::open(&fixture_dir().join("lz4-bomb.journal")).expect("open");
    let entry = file
        .next_entry(&UnitFilter::All)
        .expect("entry")
        .expect("reads");
    assert_eq!(entry.fields[0].name, "MESSAGE");
    assert_eq!(entry.fields[0].value.len(), MAX_FIELD_BYTES);
    assert!(entry.fields[0].truncated);
}

/// An online file whose last linked slot is still empty (journald has counted the
/// entry, its store is not visible yet): the reader stops before it without an error,
/// keeps waiting while nothing moves on, and reads it once it is written. A slot that
/// stays garbage is reported once journald has linked entries after it.
#[test]
fn torn_tail_of_an_online_file_waits_then_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("system.journal");
    let mut writer = Writer::new(COMPACT);
    writer.state = 1; // online
    writer.early_array(16);
    for n in 1..=3u64 {
        writer.plain_entry(n, &[format!("MESSAGE=m{n}").as_bytes()]);
    }
    writer.finish(16);
    let complete = writer.bytes.clone();
    let array = writer.bytes[176..184].to_vec();
    let array = u64::from_le_bytes(array.try_into().expect("8")) as usize;
    let third_slot = array + 24 + 2 * 4;
    let mut torn = complete.clone();
    torn[third_slot..third_slot + 4].copy_from_slice(&[0; 4]);
    std::fs::write(&path, &torn).expect("write");

    let mut file = JournalFile::open(&path).expect("open");
    let messages = |file: &mut JournalFile| -> Vec<String> {
        file.entries(&UnitFilter::All)
            .map(|r| describe(&r))
            .collect()
    };
    assert_eq!(
        messages(&mut file),
        ["ok m1", "ok m2"],
        "stops before the torn slot"
    );
    file.refresh().expect("refresh");
    assert!(
        messages(&mut file).is_empty(),
        "nothing moved on: still waiting, no error"
    );
    std::fs::write(&path, &complete).expect("the writer finishes");
    file.refresh().expect("refresh");
    assert_eq!(messages(&mut file), ["ok m3"]);

    // Garbage in slot 2 that stays garbage while journald links entry 3 after it.
    let mut garbage = complete.clone();
    let second_slot = array + 24 + 4;
    garbage[second_slot..second_slot + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let mut only_two = garbage.clone();
    only_two[152..160].copy_from_slice(&2u64.to_le_bytes()); // n_entries
    std::fs::write(&path, &only_two).expect("write");
    let mut file = JournalFile::open(&path).expect("open");
    assert_eq!(messages(&mut file), ["ok m1"], "waits: may be a torn tail");
    std::fs::write(&path, &garbage).expect("journald links entry 3");
    file.refresh().expect("refresh");
    let after = messages(&mut file);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after[0].contains("offset out of range"), "{after:?}");
    assert_eq!(after[1], "ok m3");
}
