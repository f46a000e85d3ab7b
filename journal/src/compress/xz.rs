//! A bounded decoder for journald's xz payloads: one xz stream with one LZMA2 block.
//!
//! systemd writes xz payloads with `lzma_stream_buffer_encode`: a 12-byte stream header
//! (magic `FD 37 7A 58 5A 00`, flags, CRC32), one block (a block header naming the LZMA2
//! filter, then LZMA2 data), the block's check, an index and a stream footer.
//!
//! LZMA2 data is a run of chunks, each with a plain header that states its unpacked
//! size: control byte 1 or 2 is a stored chunk (u16 big-endian size minus one, then the
//! bytes); a control byte with the high bit set is an LZMA chunk (unpacked size minus
//! one in the low five bits and a u16, packed size minus one in a u16, a properties
//! byte when the control asks for a reset, then the packed bytes); 0 ends the data.
//! This module walks those headers without decoding, keeps the chunks needed to reach
//! the cap, and hands just those to `lzma-rs`, whose LZMA2 decoder holds all of its
//! output in memory. The container's checks and index are not verified (journald
//! writes no check), but a second block, which journald never writes, is refused
//! rather than silently dropped.

use std::io::Read;

const STREAM_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
const STREAM_HEADER_SIZE: usize = 12;
const FILTER_LZMA2: u64 = 0x21;

/// Decodes `input` into at most `cap` bytes.
pub(crate) fn decompress(
    input: &[u8],
    cap: usize,
    input_complete: bool,
) -> Result<super::Decoded, String> {
    if input.len() < STREAM_HEADER_SIZE || input[..6] != STREAM_MAGIC {
        return Err("not an xz stream".into());
    }
    let check_type = input[7] & 0x0f;
    if input[6] != 0 || input[7] & 0xf0 != 0 {
        return Err("unknown stream flags".into());
    }
    let block_start = STREAM_HEADER_SIZE;
    let data_start = block_start + block_header_len(&input[block_start..])?;
    let chunks = walk_chunks(input, data_start, cap)?;
    if chunks.ended && !chunks.cap_reached {
        expect_single_block(input, block_start, chunks.end, check_type)?;
    } else if !chunks.ended && !chunks.cap_reached && input_complete {
        return Err("LZMA2 data ends without an end marker".into());
    }
    let mut lzma2 = (&input[data_start..chunks.end]).chain(&[0u8][..]);
    let mut bytes = Vec::new();
    lzma_rs::lzma2_decompress(&mut lzma2, &mut bytes).map_err(|e| e.to_string())?;
    let work = bytes.len();
    let truncated = work > cap || !chunks.ended;
    bytes.truncate(cap);
    Ok(super::Decoded {
        bytes,
        truncated,
        work,
    })
}

/// The length of the block header at the start of `block`, checked to name exactly
/// one filter, LZMA2.
fn block_header_len(block: &[u8]) -> Result<usize, String> {
    let size_byte = *block.first().ok_or("no block")?;
    if size_byte == 0 {
        return Err("stream has no block".into());
    }
    let len = (usize::from(size_byte) + 1) * 4;
    let header = block
        .get(..len)
        .ok_or("block header runs past the payload")?;
    let flags = header[1];
    if flags & 0x3c != 0 || flags & 0x03 != 0 {
        return Err("block needs a filter chain other than LZMA2 alone".into());
    }
    let mut at = 2;
    // Optional compressed and uncompressed sizes, which this reader does not need.
    for present in [flags & 0x40 != 0, flags & 0x80 != 0] {
        if present {
            varint(header, &mut at)?;
        }
    }
    let filter = varint(header, &mut at)?;
    let properties = varint(header, &mut at)?;
    if filter != FILTER_LZMA2 || properties != 1 {
        return Err("block filter is not LZMA2".into());
    }
    Ok(len)
}

/// Reads an xz variable-length integer (7 bits a byte, at most 9 bytes).
fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in 0..9 {
        let byte = *bytes.get(*at).ok_or("truncated block header")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("integer too long in block header".into())
}

struct Chunks {
    /// Where the kept chunks end (the end marker's offset when `ended`).
    end: usize,
    /// The end marker was reached.
    ended: bool,
    /// The kept chunks unpack to at least the cap, so later ones were left out.
    cap_reached: bool,
}

fn walk_chunks(input: &[u8], start: usize, cap: usize) -> Result<Chunks, String> {
    let mut at = start;
    let mut unpacked = 0usize;
    loop {
        if unpacked >= cap {
            return Ok(Chunks {
                end: at,
                ended: false,
                cap_reached: true,
            });
        }
        let Some(&control) = input.get(at) else {
            return Ok(Chunks {
                end: at,
                ended: false,
                cap_reached: false,
            });
        };
        if control == 0 {
            return Ok(Chunks {
                end: at,
                ended: true,
                cap_reached: false,
            });
        }
        let u16_at = |offset: usize| {
            input
                .get(at + offset..at + offset + 2)
                .map(|pair| usize::from(u16::from_be_bytes([pair[0], pair[1]])))
        };
        let (size, chunk_unpacked) = match control {
            1 | 2 => match u16_at(1) {
                Some(stored) => (3 + stored + 1, stored + 1),
                None => (usize::MAX, 0),
            },
            0x80..=0xff => match (u16_at(1), u16_at(3)) {
                (Some(low), Some(packed)) => {
                    let properties = usize::from((control >> 5) & 3 >= 2);
                    let chunk_unpacked = (usize::from(control & 0x1f) << 16 | low) + 1;
                    (5 + properties + packed + 1, chunk_unpacked)
                }
                _ => (usize::MAX, 0),
            },
            _ => return Err(format!("invalid LZMA2 control byte {control:#x}")),
        };
        if at.saturating_add(size) > input.len() {
            return Ok(Chunks {
                end: at,
                ended: false,
                cap_reached: false,
            });
        }
        at += size;
        unpacked += chunk_unpacked;
    }
}

/// After the block's data: padding to four bytes, the check, then the index (which
/// starts with a zero byte where another block would start with its header size).
fn expect_single_block(
    input: &[u8],
    block_start: usize,
    marker: usize,
    check_type: u8,
) -> Result<(), String> {
    let check_len = match check_type {
        0 => 0,
        1..=3 => 4,
        4..=6 => 8,
        7..=9 => 16,
        10..=12 => 32,
        _ => 64,
    };
    let block_len = marker + 1 - block_start;
    let padded = block_len.div_ceil(4) * 4;
    match input.get(block_start + padded + check_len) {
        Some(0) => Ok(()),
        Some(_) => Err("xz stream has more than one block".into()),
        // The index is missing; what the block holds is still whole.
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An xz stream with one block of stored LZMA2 chunks, as a tiny hand-made fixture.
    fn stored_xz(chunks: &[&[u8]], second_block: bool) -> Vec<u8> {
        let mut stream = STREAM_MAGIC.to_vec();
        stream.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // flags: no check; CRC unchecked
        // Block header: size byte 2 -> 12 bytes; flags 0; filter 0x21, 1 property byte
        // (dictionary size code), padding, CRC (unchecked).
        stream.extend_from_slice(&[2, 0, 0x21, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let data_start = stream.len();
        for (index, chunk) in chunks.iter().enumerate() {
            let size = u16::try_from(chunk.len() - 1).expect("small chunk");
            stream.push(if index == 0 { 1 } else { 2 });
            stream.extend_from_slice(&size.to_be_bytes());
            stream.extend_from_slice(chunk);
        }
        stream.push(0);
        while !(stream.len() - data_start + 12).is_multiple_of(4) {
            stream.push(0);
        }
        stream.push(if second_block { 2 } else { 0 });
        stream
    }

    #[test]
    fn decodes_stored_chunks_and_stops_at_the_cap() {
        let stream = stored_xz(&[b"hello ", b"world"], false);
        let decoded = decompress(&stream, 100, true).expect("decodes");
        assert_eq!(decoded.bytes, b"hello world");
        assert!(!decoded.truncated);
        let decoded = decompress(&stream, 3, true).expect("decodes a prefix");
        assert_eq!(decoded.bytes, b"hel");
        assert!(decoded.truncated);
    }

    #[test]
    fn refuses_what_journald_never_writes() {
        let two_blocks = stored_xz(&[b"x"], true);
        let Err(error) = decompress(&two_blocks, 100, true) else {
            panic!("a second block is refused");
        };
        assert!(error.contains("more than one block"), "{error}");
        let mut bad_filter = stored_xz(&[b"x"], false);
        bad_filter[14] = 0x03; // the delta filter
        assert!(decompress(&bad_filter, 100, true).is_err());
        let mut bad_control = stored_xz(&[b"x"], false);
        bad_control[24] = 0x05;
        assert!(decompress(&bad_control, 100, true).is_err());
        assert!(decompress(b"not xz at all", 100, true).is_err());
        let mut no_end = stored_xz(&[b"xyz"], false);
        no_end.truncate(30);
        assert!(decompress(&no_end, 100, true).is_err());
    }
}
