//! Decompression of data-object payloads, never past a caller's output cap.
//!
//! journald compresses a field when it is longer than its threshold (512 bytes by
//! default) and the result is smaller. The three codecs are stored as systemd's
//! `compress.c` writes them:
//!
//! - **zstd**: one zstd frame (journald's default since systemd 246). Decoded with
//!   `ruzstd`, streaming, with the frame's window limited to [`MAX_ZSTD_WINDOW_BYTES`].
//! - **lz4**: the uncompressed size as a little-endian u64, then one raw LZ4 block.
//!   Decoded by [`lz4`], which stops at the cap.
//! - **xz**: one xz stream holding one LZMA2 block. Decoded by [`xz`], which
//!   hands `lzma-rs` only the chunks needed to reach the cap.
//!
//! A payload that decodes to more than the cap keeps its first `cap` bytes and is
//! reported truncated, so a compression bomb costs at most the cap in memory and the
//! work to produce it.

use std::io::Read;

use crate::error::Corruption;
use crate::format::{OBJECT_COMPRESSED_LZ4, OBJECT_COMPRESSED_XZ, OBJECT_COMPRESSED_ZSTD};

mod lz4;
mod xz;

/// Largest zstd window a frame may declare. journald compresses at zstd's default level,
/// whose window is at most 2 MiB (window log 21). The decoder decodes and holds one
/// window before it hands out the first byte, so this bounds both the memory and the
/// work one hostile frame can cost, whatever the cap.
const MAX_ZSTD_WINDOW_BYTES: u64 = 2 * 1024 * 1024;
/// The zstd frame magic number, little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A decoded payload: at most the cap, and whether more was there.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) bytes: Vec<u8>,
    pub(crate) truncated: bool,
    /// Bytes the decoder produced to get there (at least `bytes`; a zstd frame also
    /// costs its window), charged to the entry's decompression budget.
    pub(crate) work: usize,
}

/// Decompresses `input` (compressed with the codec in object `flags`) into at most
/// `cap` bytes. `input_complete` is false when the caller read only a prefix of a
/// longer payload; then running out of input is a truncation, not corruption.
pub(crate) fn decompress(
    flags: u8,
    input: &[u8],
    cap: usize,
    input_complete: bool,
) -> Result<Decoded, Corruption> {
    match flags {
        OBJECT_COMPRESSED_ZSTD => zstd(input, cap, input_complete),
        OBJECT_COMPRESSED_LZ4 => {
            lz4::decompress(input, cap, input_complete).map_err(|reason| Corruption::Decompress {
                codec: "lz4",
                reason: reason.to_string(),
            })
        }
        OBJECT_COMPRESSED_XZ => {
            xz::decompress(input, cap, input_complete).map_err(|reason| Corruption::Decompress {
                codec: "xz",
                reason,
            })
        }
        other => Err(Corruption::BadCompressionFlags { flags: other }),
    }
}

fn zstd(input: &[u8], cap: usize, input_complete: bool) -> Result<Decoded, Corruption> {
    let error = |reason: String| Corruption::Decompress {
        codec: "zstd",
        reason,
    };
    let window = zstd_window(input).ok_or_else(|| error("not a zstd frame".into()))?;
    if window > MAX_ZSTD_WINDOW_BYTES {
        return Err(error(format!(
            "frame window of {window} bytes exceeds the limit of {MAX_ZSTD_WINDOW_BYTES}"
        )));
    }
    let decoder =
        ruzstd::decoding::StreamingDecoder::new_with_max_window_size(input, MAX_ZSTD_WINDOW_BYTES)
            .map_err(|e| error(e.to_string()))?;
    // One byte past the cap tells a payload that fills the cap from one that exceeds it.
    let mut bytes = Vec::new();
    match decoder.take(cap as u64 + 1).read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(_) if !input_complete && !bytes.is_empty() => {
            let work = bytes.len() + window as usize;
            return Ok(Decoded {
                bytes,
                truncated: true,
                work,
            });
        }
        Err(e) => return Err(error(e.to_string())),
    }
    let work = bytes.len() + window as usize;
    let truncated = bytes.len() > cap;
    bytes.truncate(cap);
    Ok(Decoded {
        bytes,
        truncated,
        work,
    })
}

/// The window a zstd frame declares (its content size for single-segment frames), from
/// the frame header; `None` when `frame` does not start with a zstd frame header.
fn zstd_window(frame: &[u8]) -> Option<u64> {
    if frame.get(..4)? != ZSTD_MAGIC {
        return None;
    }
    let descriptor = *frame.get(4)?;
    if descriptor & 0x20 == 0 {
        // Window descriptor: exponent (log2 minus 10) and eighths of the base.
        let window = *frame.get(5)?;
        let base = 1u64 << (10 + u32::from(window >> 3));
        return Some(base + base / 8 * u64::from(window & 7));
    }
    // Single segment: the window is the content size, after the dictionary id.
    let dictionary_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let size_len = [1, 2, 4, 8][usize::from(descriptor >> 6)];
    let at = 5 + dictionary_len;
    let mut size = [0u8; 8];
    size[..size_len].copy_from_slice(frame.get(at..at + size_len)?);
    let size = u64::from_le_bytes(size);
    Some(if size_len == 2 { size + 256 } else { size })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zstd frame of `blocks` RLE blocks of 128 KiB each: 4 bytes per block decode to
    /// 128 KiB, the classic bomb shape.
    pub(crate) fn zstd_rle_bomb(blocks: usize) -> Vec<u8> {
        // Magic, then a frame header descriptor with no content size, no checksum,
        // not single-segment, and a window descriptor for a 1 MiB window.
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x50];
        for index in 0..blocks {
            let last = u32::from(index + 1 == blocks);
            // Block header: last flag, type 1 (RLE), size 128 KiB.
            let header = last | (1 << 1) | ((128 * 1024) << 3);
            frame.extend_from_slice(&header.to_le_bytes()[..3]);
            frame.push(b'A');
        }
        frame
    }

    #[test]
    fn zstd_bomb_stops_at_the_cap() {
        let bomb = zstd_rle_bomb(8192); // 1 GiB from 32 KiB
        let decoded = decompress(OBJECT_COMPRESSED_ZSTD, &bomb, 1000, true).expect("decodes");
        assert_eq!(decoded.bytes, vec![b'A'; 1000]);
        assert!(decoded.truncated);
        let small = zstd_rle_bomb(1);
        let decoded = decompress(OBJECT_COMPRESSED_ZSTD, &small, 1 << 20, true).expect("fits");
        assert_eq!(decoded.bytes.len(), 128 * 1024);
        assert!(!decoded.truncated);
    }

    #[test]
    fn zstd_frames_declaring_huge_windows_are_refused() {
        // Window descriptor exponent 30: a 1 TiB window.
        let mut frame = zstd_rle_bomb(1);
        frame[5] = 30 << 3;
        let error = decompress(OBJECT_COMPRESSED_ZSTD, &frame, 1000, true).expect_err("window");
        assert!(matches!(
            error,
            Corruption::Decompress { codec: "zstd", .. }
        ));
    }

    #[test]
    fn unknown_or_combined_flags_are_corruption() {
        assert_eq!(
            decompress(3, b"x", 10, true).err(),
            Some(Corruption::BadCompressionFlags { flags: 3 })
        );
    }
}
