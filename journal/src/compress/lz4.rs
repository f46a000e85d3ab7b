//! A bounded decoder for journald's LZ4 payloads: a u64 size, then one LZ4 block.
//!
//! The LZ4 block format is a run of sequences. Each starts with a token byte: its high
//! nibble is the literal length, its low nibble the match length minus 4; a nibble of 15
//! continues in following bytes (each added, until one is below 255). Then come the
//! literals, a little-endian u16 offset back into the output, and the match, copied
//! byte by byte (it may overlap itself). The last sequence has literals only.
//!
//! The format is small enough that owning the decoder is cheaper than a dependency,
//! and owning it lets the decoder stop at the caller's cap and keep what it has, which
//! block decoders that want the whole output buffer up front cannot do.

/// Decodes `input` (size prefix and block) into at most `cap` bytes. When the declared
/// size fits the cap, the block must decode to exactly that size, as journald checks.
pub(crate) fn decompress(
    input: &[u8],
    cap: usize,
    input_complete: bool,
) -> Result<super::Decoded, &'static str> {
    if input.len() <= 8 {
        return Err("shorter than its size prefix");
    }
    let (prefix, block) = input.split_at(8);
    let mut declared = [0u8; 8];
    declared.copy_from_slice(prefix);
    let declared = u64::from_le_bytes(declared);
    let limit = usize::try_from(declared).map_or(cap, |declared| declared.min(cap));
    let mut out = Vec::with_capacity(limit.min(64 * 1024));
    let complete = match decode_block(block, limit, &mut out) {
        Ok(complete) => complete,
        Err("input ends inside a sequence") if !input_complete && !out.is_empty() => false,
        Err(reason) => return Err(reason),
    };
    if complete && (out.len() as u64) != declared {
        return Err("decoded size differs from the declared size");
    }
    Ok(super::Decoded {
        truncated: !complete,
        work: out.len(),
        bytes: out,
    })
}

/// Decodes one block into `out`, stopping at `limit` bytes. Returns true when the block
/// ended, false when the limit stopped it first.
fn decode_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<bool, &'static str> {
    let mut at = 0usize;
    loop {
        let token = *block.get(at).ok_or("input ends inside a sequence")?;
        at += 1;
        let literals = read_length(block, &mut at, usize::from(token >> 4))?;
        let literal_end = at
            .checked_add(literals)
            .filter(|end| *end <= block.len())
            .ok_or("input ends inside a sequence")?;
        let room = limit - out.len();
        if literals > room {
            out.extend_from_slice(&block[at..at + room]);
            return Ok(false);
        }
        out.extend_from_slice(&block[at..literal_end]);
        at = literal_end;
        if at == block.len() {
            return Ok(true);
        }
        let offset_bytes = block
            .get(at..at + 2)
            .ok_or("input ends inside a sequence")?;
        let offset = usize::from(u16::from_le_bytes([offset_bytes[0], offset_bytes[1]]));
        at += 2;
        if offset == 0 || offset > out.len() {
            return Err("match offset points before the output");
        }
        let length = read_length(block, &mut at, usize::from(token & 0x0f))?.saturating_add(4);
        let room = limit - out.len();
        let copy = length.min(room);
        let start = out.len() - offset;
        for index in 0..copy {
            let byte = out[start + index];
            out.push(byte);
        }
        if length > room {
            return Ok(false);
        }
    }
}

/// Reads a length whose nibble is `nibble`, continuing in extra bytes when it is 15.
fn read_length(block: &[u8], at: &mut usize, nibble: usize) -> Result<usize, &'static str> {
    let mut length = nibble;
    if nibble == 15 {
        loop {
            let byte = *block.get(*at).ok_or("input ends inside a sequence")?;
            *at += 1;
            length = length.saturating_add(usize::from(byte));
            if byte != 255 {
                break;
            }
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_size(size: u64, block: &[u8]) -> Vec<u8> {
        let mut input = size.to_le_bytes().to_vec();
        input.extend_from_slice(block);
        input
    }

    #[test]
    fn decodes_literals_and_overlapping_matches() {
        // "abc" then a match of 9 at offset 3, then the literal "!".
        let block = [0x35, b'a', b'b', b'c', 3, 0, 0x10, b'!'];
        let decoded = decompress(&with_size(13, &block), 100, true).expect("decodes");
        assert_eq!(decoded.bytes, b"abcabcabcabc!");
        assert!(!decoded.truncated);
    }

    #[test]
    fn stops_at_the_cap_on_a_bomb() {
        // One literal, then a match of 15 + 255 * 4000 + 4 bytes: about 1 MB from 4 KB.
        let mut block = vec![0x1f, b'z', 1, 0];
        block.extend(std::iter::repeat_n(255u8, 4000));
        block.push(0);
        block.push(0x10);
        block.push(b'!');
        let decoded = decompress(&with_size(u64::MAX, &block), 1000, true).expect("decodes");
        assert_eq!(decoded.bytes, vec![b'z'; 1000]);
        assert!(decoded.truncated);
    }

    #[test]
    fn corrupt_blocks_are_errors() {
        let cases: [(&[u8], u64, &str); 4] = [
            (&[0x10, b'a', 9, 0], 5, "offset points before"),
            (&[0x50, b'a'], 5, "ends inside"),
            (&[0x10, b'a', 0, 0], 5, "offset points before"),
            (&[0x20, b'a', b'b'], 5, "differs from the declared"),
        ];
        for (block, size, expected) in cases {
            let error = decompress(&with_size(size, block), 100, true).err();
            assert!(
                error.is_some_and(|error| error.contains(expected)),
                "{block:?}: {error:?}"
            );
        }
        assert!(decompress(&[1, 2, 3], 100, true).is_err());
    }
}
