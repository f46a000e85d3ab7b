//! Decompressing pushed bodies without trusting them: a snappy body's declared length
//! is read from its header and refused over the limit before anything is allocated
//! (a 64 KiB body can declare gigabytes); a gzip body is decompressed in chunks into a
//! buffer that never grows past the limit.

use std::io::Read;

use crate::DecodeError;

/// The shortest gzip stream: a 10-byte header, an empty deflate block and the 8-byte
/// trailer.
const GZIP_MIN_BYTES: usize = 20;

/// Bytes decompressed from a gzip stream per read.
const GZIP_CHUNK_BYTES: usize = 16 * 1024;

/// Decompresses a raw (block) snappy body, as remote-write sends it, of at most
/// `limit` bytes decompressed.
pub fn snappy(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let declared = declared_length(body).ok_or_else(|| {
        DecodeError::Malformed("the body is not snappy-compressed: no length header".into())
    })?;
    if declared > limit as u64 {
        return Err(DecodeError::DecompressedTooLarge {
            limit,
            size: Some(declared),
        });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Malformed(format!("the body is not snappy-compressed: {e}")))
}

/// The decompressed length a snappy block declares: a varint of at most 10 bytes at
/// its start (read here rather than by `snap`, which refuses lengths over 4 GiB as
/// malformed rather than too large).
fn declared_length(body: &[u8]) -> Option<u64> {
    let mut length = 0u64;
    for (i, &byte) in body.iter().enumerate().take(10) {
        length |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some(length);
        }
    }
    None
}

/// Decompresses a gzip body of at most `limit` bytes decompressed. A body whose size
/// trailer (ISIZE, the decompressed size of its last member modulo 2^32) is over the
/// limit is refused without decompressing; one that lies is stopped at the limit.
pub fn gzip(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    if let Some(trailer) = body.last_chunk::<4>() {
        let declared = u64::from(u32::from_le_bytes(*trailer));
        if body.len() >= GZIP_MIN_BYTES && declared > limit as u64 {
            return Err(DecodeError::DecompressedTooLarge {
                limit,
                size: Some(declared),
            });
        }
    }
    let mut decoder = flate2::read::GzDecoder::new(body);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; GZIP_CHUNK_BYTES];
    loop {
        let read = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DecodeError::Malformed(format!(
                    "the body is not gzip-compressed: {e}"
                )));
            }
        };
        if read > limit - out.len() {
            return Err(DecodeError::DecompressedTooLarge { limit, size: None });
        }
        if out.capacity() - out.len() < read {
            // Double as a Vec does, but never past the limit.
            let grow = out.len().max(read).min(limit - out.len());
            out.reserve_exact(grow);
        }
        out.extend_from_slice(&chunk[..read]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A snappy body that declares `declared` bytes and holds a few.
    pub(crate) fn snappy_bomb(declared: u64) -> Vec<u8> {
        let mut body = Vec::new();
        let mut rest = declared;
        loop {
            let byte = (rest & 0x7f) as u8;
            rest >>= 7;
            if rest == 0 {
                body.push(byte);
                break;
            }
            body.push(byte | 0x80);
        }
        body.extend_from_slice(&[0x00, b'x']);
        body
    }

    /// Issue 13, finding 4: a snappy body that declares more than the limit is refused
    /// from its header, whatever follows; 552c13e decompressed it into a buffer of
    /// the declared size.
    #[test]
    fn a_snappy_bomb_is_refused_from_its_header() {
        for declared in [1 << 30, 4 << 30, 1 << 62] {
            let bomb = snappy_bomb(declared);
            assert_eq!(
                snappy(&bomb, 1 << 20),
                Err(DecodeError::DecompressedTooLarge {
                    limit: 1 << 20,
                    size: Some(declared)
                })
            );
        }
        let fine = snap::raw::Encoder::new().compress_vec(b"hello").unwrap();
        assert_eq!(snappy(&fine, 5).unwrap(), b"hello");
        assert!(matches!(snappy(b"\xff", 5), Err(DecodeError::Malformed(_))));
    }

    /// Issue 13, finding 4: a gzip body is decompressed only up to the limit.
    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 8 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
        assert_eq!(
            gzip(&bomb, 1 << 20),
            Err(DecodeError::DecompressedTooLarge {
                limit: 1 << 20,
                size: Some(8 << 20)
            }),
            "refused from its size trailer"
        );
        let mut lying = bomb.clone();
        let end = lying.len();
        lying[end - 4..].copy_from_slice(&16u32.to_le_bytes());
        assert_eq!(
            gzip(&lying, 1 << 20),
            Err(DecodeError::DecompressedTooLarge {
                limit: 1 << 20,
                size: None
            }),
            "a trailer that lies is stopped at the limit"
        );
        let out = gzip(&bomb, 8 << 20).unwrap();
        assert_eq!(out.len(), 8 << 20);
        assert!(out.capacity() <= 8 << 20, "never grown past the limit");
        assert!(matches!(gzip(b"plain", 10), Err(DecodeError::Malformed(_))));
    }
}
