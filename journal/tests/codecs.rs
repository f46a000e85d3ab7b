//! LZ4 and xz payloads, which systemd 252's writers no longer produce (they write zstd),
//! compressed by the real liblz4, liblzma and libzstd command-line tools and framed as
//! systemd stores them, in compact and regular files built by the test writer.

use kaas_test_support::journal as common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Noise;
use common::writer::{COMPACT, LZ4, Payload, Writer, XZ, ZSTD};
use kaas_journal::{JournalFile, MAX_FIELD_BYTES, UnitFilter};

/// Runs a compressor with `input` on stdin and returns its stdout.
fn run(tool: &[&str], input: &[u8], package: &str) -> Vec<u8> {
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; apt-get install {package}", tool[0]));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("compressor runs");
    feeder.join().expect("feeder").expect("feed");
    assert!(output.status.success(), "{tool:?} failed");
    output.stdout
}

/// systemd's LZ4 framing: the size as u64, then one raw block. `lz4 -l` writes the
/// legacy frame (magic, then each block after its u32 size), whose first block is
/// exactly that raw block for inputs up to its 8 MiB block size.
fn lz4(field: &[u8]) -> Payload {
    let legacy = run(&["lz4", "-l", "-c", "-q"], field, "lz4");
    assert_eq!(legacy[..4], [0x02, 0x21, 0x4c, 0x18], "legacy magic");
    let block_len = u32::from_le_bytes(legacy[4..8].try_into().expect("4")) as usize;
    let mut bytes = (field.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&legacy[8..8 + block_len]);
    Payload { flags: 2, bytes }
}

/// An xz stream with no check and one block, as `lzma_stream_buffer_encode` writes it.
fn xz(field: &[u8]) -> Payload {
    Payload {
        flags: 1,
        bytes: run(
            &[
                "xz",
                "--format=xz",
                "--check=none",
                "--threads=1",
                "-c",
                "-q",
            ],
            field,
            "xz-utils",
        ),
    }
}

/// A zstd frame (from a pipe, so without the content size journald records: the
/// reader must not need it).
fn zstd(field: &[u8]) -> Payload {
    Payload {
        flags: 4,
        bytes: run(&["zstd", "-c", "-q"], field, "zstd"),
    }
}

/// Fields of every shape: short, over the 512-byte threshold, compressible and random,
/// 300 KiB, and one of 2 MiB that the reader must cut at 1 MiB.
fn fields() -> Vec<Vec<u8>> {
    let mut noise = Noise(42);
    let mut fields = vec![
        b"MESSAGE=short".to_vec(),
        [b"MESSAGE=".as_slice(), &b"kubelet: sync pod; ".repeat(40)].concat(),
        [b"BLOB=".as_slice(), &noise.bytes(5_000)].concat(),
        [b"DUMP=".as_slice(), &b"0123456789abcdef".repeat(300 * 64)].concat(),
        [b"RANDOM_DUMP=".as_slice(), &noise.bytes(300 * 1024)].concat(),
    ];
    let mut huge = b"HUGE=".to_vec();
    huge.extend((0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8));
    fields.push(huge);
    fields
}

fn check_codec(compress: fn(&[u8]) -> Payload, header_flag: u32) {
    for compact in [true, false] {
        let mut writer = Writer::new(header_flag | if compact { COMPACT } else { 0 });
        let fields = fields();
        for (index, field) in fields.iter().enumerate() {
            let unit = writer.data(&Payload::plain(b"_SYSTEMD_UNIT=kubelet.service"));
            let data = writer.data(&compress(field));
            writer.entry(1_000 + index as u64, 7, &[unit, data]);
        }
        writer.finish(4);
        let mut file = JournalFile::from_source(writer.bytes).expect("open");
        let filter = UnitFilter::units(["kubelet.service"]);
        let read: Vec<_> = file
            .entries(&filter)
            .collect::<Result<_, _>>()
            .expect("every entry reads");
        assert_eq!(read.len(), fields.len(), "compact {compact}");
        for (entry, field) in read.iter().zip(&fields) {
            let stored = &entry.fields[1];
            let (name, value) = field.split_at(field.iter().position(|b| *b == b'=').expect("="));
            let value = &value[1..];
            assert_eq!(stored.name.as_bytes(), name);
            if value.len() > MAX_FIELD_BYTES {
                assert!(stored.truncated && stored.value == value[..MAX_FIELD_BYTES]);
            } else {
                assert!(
                    !stored.truncated && stored.value == value,
                    "{} bytes",
                    value.len()
                );
            }
        }
    }
}

#[test]
fn lz4_payloads_from_liblz4_read_back() {
    check_codec(lz4, LZ4);
}

#[test]
fn xz_payloads_from_liblzma_read_back() {
    check_codec(xz, XZ);
}

#[test]
fn zstd_payloads_without_content_size_read_back() {
    check_codec(zstd, ZSTD);
}

/// A payload compressed with a codec the header does not announce is refused as
/// corrupt (the format requires the header flag), and the next entry still reads.
#[test]
fn codec_missing_from_the_header_is_corruption() {
    let mut writer = Writer::new(ZSTD);
    let bad = writer.data(&lz4(&b"MESSAGE=x".repeat(100)));
    writer.entry(1, 1, &[bad]);
    writer.plain_entry(2, &[b"MESSAGE=after"]);
    writer.finish(8);
    let mut file = JournalFile::from_source(writer.bytes).expect("open");
    let results: Vec<_> = file.entries(&UnitFilter::All).collect();
    assert_eq!(results.len(), 2);
    let error = results[0].as_ref().expect_err("lz4 without the lz4 flag");
    assert!(
        error.to_string().contains("invalid compression flags 0x2"),
        "{error}"
    );
    assert_eq!(
        results[1].as_ref().expect("next entry").message(),
        Some(b"after".as_slice())
    );
}

/// An xz bomb from liblzma itself (64 MiB of zeros in about 10 KiB): the reader hands
/// the decoder only the chunks that reach the cap and keeps exactly 1 MiB.
#[test]
fn xz_bomb_is_cut_at_the_cap() {
    let mut field = b"MESSAGE=".to_vec();
    field.resize(64 * 1024 * 1024, 0);
    let payload = xz(&field);
    assert!(
        payload.bytes.len() < 64 * 1024,
        "a bomb: {} bytes",
        payload.bytes.len()
    );
    let mut writer = Writer::new(XZ);
    let bomb = writer.data(&payload);
    writer.entry(1, 1, &[bomb]);
    writer.finish(4);
    let mut file = JournalFile::from_source(writer.bytes).expect("open");
    let entry = file
        .next_entry(&UnitFilter::All)
        .expect("an entry")
        .expect("reads");
    assert_eq!(entry.fields[0].value.len(), MAX_FIELD_BYTES);
    assert!(entry.fields[0].truncated);
    assert!(entry.fields[0].value.iter().all(|byte| *byte == 0));
}
