//! Positioned reads from a journal file into bounded buffers, with a small page cache.
//!
//! journald writes through a memory map; this reader uses positioned reads instead
//! (`pread`, no `unsafe`), which see the same page cache. Every read is checked against
//! the size taken at the last refresh, so a hostile offset can never make the reader
//! allocate or read more than the caller's bound. Pages are dropped at each refresh:
//! the writer fills in links and entry-array slots after the fact, so a cached page may
//! be stale, and a stale read only ever looks like "not written yet".

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Something a journal can be read from at an offset: a file, or bytes in memory
/// (tests, fuzzing).
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// The current size in bytes.
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for &[u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let available = &self[start..];
        let count = available.len().min(buf.len());
        buf[..count].copy_from_slice(&available[..count]);
        Ok(count)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// Bytes per cached page: an entry and the data objects journald appended just before
/// it usually fall in one page, so reading an entry costs one `pread`.
const PAGE_SIZE: usize = 64 * 1024;
/// Pages kept per open file (512 KiB): the page being read plus the pages holding
/// fields every entry shares (hostname, unit, boot id), which sit early in the file.
const CACHED_PAGES: usize = 8;

struct Page {
    index: u64,
    data: Vec<u8>,
    last_use: u64,
}

/// A [`ReadAt`] with a size limit and a least-recently-used page cache.
pub(crate) struct CachedSource<S> {
    source: S,
    limit: u64,
    pages: Vec<Page>,
    clock: u64,
}

impl<S: ReadAt> CachedSource<S> {
    pub(crate) fn new(source: S) -> Self {
        CachedSource {
            source,
            limit: 0,
            pages: Vec::with_capacity(CACHED_PAGES),
            clock: 0,
        }
    }

    /// Takes the source's current size and drops every cached page.
    pub(crate) fn refresh(&mut self) -> io::Result<u64> {
        self.pages.clear();
        self.limit = self.source.size()?;
        Ok(self.limit)
    }

    /// Limits reads to the first `limit` bytes (the header's arena end).
    pub(crate) fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Fills `out` from `offset`. Fails with `UnexpectedEof` when the range passes the
    /// limit, without reading.
    pub(crate) fn read_exact(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|end| *end <= self.limit)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if out.len() > PAGE_SIZE {
            return self.read_direct(offset, out);
        }
        let mut done = 0usize;
        let mut position = offset;
        while position < end {
            let index = position / PAGE_SIZE as u64;
            let within = (position % PAGE_SIZE as u64) as usize;
            let page = self.page(index)?;
            if within >= page.len() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let count = (page.len() - within).min(out.len() - done);
            out[done..done + count].copy_from_slice(&page[within..within + count]);
            done += count;
            position += count as u64;
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` into a new buffer; the caller bounds `len`.
    pub(crate) fn read_vec(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        self.read_exact(offset, &mut out)?;
        Ok(out)
    }

    fn read_direct(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < out.len() {
            let count = self
                .source
                .read_at(&mut out[done..], offset + done as u64)?;
            if count == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += count;
        }
        Ok(())
    }

    fn page(&mut self, index: u64) -> io::Result<&[u8]> {
        self.clock += 1;
        let clock = self.clock;
        let slot = match self.pages.iter().position(|page| page.index == index) {
            Some(slot) => slot,
            None => {
                let start = index * PAGE_SIZE as u64;
                let len = (self.limit - start).min(PAGE_SIZE as u64) as usize;
                let mut data = vec![0u8; len];
                self.read_direct(start, &mut data)?;
                let page = Page {
                    index,
                    data,
                    last_use: clock,
                };
                if self.pages.len() < CACHED_PAGES {
                    self.pages.push(page);
                    self.pages.len() - 1
                } else {
                    let oldest = self
                        .pages
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, page)| page.last_use)
                        .map_or(0, |(slot, _)| slot);
                    self.pages[oldest] = page;
                    oldest
                }
            }
        };
        let page = &mut self.pages[slot];
        page.last_use = clock;
        Ok(&page.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_across_pages_and_refuses_past_the_limit() {
        let bytes: Vec<u8> = (0..(3 * PAGE_SIZE + 17)).map(|i| (i % 251) as u8).collect();
        let mut source = CachedSource::new(bytes.clone());
        source.refresh().expect("size");
        let mut out = vec![0u8; 100];
        let start = PAGE_SIZE as u64 - 50;
        source
            .read_exact(start, &mut out)
            .expect("straddles two pages");
        assert_eq!(out, bytes[start as usize..start as usize + 100]);
        for page in 0..(CACHED_PAGES as u64 + 3) {
            let _ = source.read_exact(page * 8, &mut out[..8]);
        }
        assert!(source.pages.len() <= CACHED_PAGES);
        let end = bytes.len() as u64;
        assert!(source.read_exact(end - 10, &mut out[..11]).is_err());
        assert!(source.read_exact(u64::MAX - 2, &mut out[..8]).is_err());
        let big = source
            .read_vec(1, 2 * PAGE_SIZE)
            .expect("large reads bypass the cache");
        assert_eq!(big, bytes[1..1 + 2 * PAGE_SIZE]);
        source.set_limit(10);
        assert!(source.read_exact(8, &mut out[..4]).is_err());
    }
}
