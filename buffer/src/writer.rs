//! Where the buffer appends records: a segment file opened for appending. Behind a
//! trait so that the corruption tests can put a file system double in its place (one
//! that fails a write half way through a record, as a full disk does).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// A segment file open for appending.
pub(super) trait SegmentWriter: Write + Send + fmt::Debug {
    /// Cuts the file to `len` bytes (a failed append is taken back this way).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Flushes the file's data to stable storage.
    fn sync_data(&self) -> io::Result<()>;
}

impl SegmentWriter for File {
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

type Open = dyn Fn(&Path) -> io::Result<Box<dyn SegmentWriter>> + Send + Sync;

/// Opens segment files for appending (creating them). The real file system unless a
/// test replaced it.
#[derive(Clone)]
pub(super) struct SegmentOpener(Arc<Open>);

impl SegmentOpener {
    /// An opener that calls `open`.
    #[cfg(test)]
    pub(super) fn new(
        open: impl Fn(&Path) -> io::Result<Box<dyn SegmentWriter>> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(open))
    }

    /// Opens `path` for appending.
    pub(super) fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentWriter>> {
        (self.0)(path)
    }
}

impl Default for SegmentOpener {
    fn default() -> Self {
        Self(Arc::new(|path: &Path| {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            Ok(Box::new(file) as Box<dyn SegmentWriter>)
        }))
    }
}

impl fmt::Debug for SegmentOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SegmentOpener")
    }
}
