//! Reading a journal directory as one stream that continues across rotation.
//!
//! journald keeps one *chain* of files per journal: the active `system.journal` and its
//! archives `system@<seqnum id>-<head seqnum>-<head time>.journal` (or
//! `system@….journal~` for files it found unclean), and likewise `user-<uid>.journal`
//! and its archives. When a file is rotated, journald renames it to an archive name,
//! marks it archived, and starts a new active file that continues the same sequence
//! numbers (one seqnum id for the whole instance).
//!
//! The reader keeps one open file per chain and a cursor per chain (a
//! [`DirectoryCursor`]): the last entry it consumed there. A chain's files are ordered
//! by their first entry: by head seqnum within one seqnum id, groups of other seqnum
//! ids by their earliest wall-clock time. Files are recognised by their header's file
//! id, not by name, so a rename under the reader changes nothing: the open descriptor
//! reads on. A file is finished once it is archived, or once a later file of its chain
//! has entries; the reader then reads the header once more (journald linked the last
//! entry before it wrote to the next file), drains it, and opens the next file after
//! the chain's cursor. Entries of different chains are merged in journald's order.
//!
//! Resuming from a cursor skips, per chain, everything up to its entry; since each
//! chain has its own cursor, an entry that journald wrote to one file a moment before
//! an entry of another chain that was seen first is still read, and a restart neither
//! loses nor repeats entries.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::cursor::Cursor;
use crate::entry::{Entry, UnitFilter};
use crate::error::JournalError;
use crate::file::JournalFile;
use crate::format::{FileState, Header, SHORT_HEADER};
use crate::id128::Id128;

/// Journal files read from one directory. journald keeps 100 by default
/// (`SystemMaxFiles=`); beyond this the directory is not a journal directory the reader
/// should open every file of.
const MAX_DIRECTORY_FILES: usize = 1024;
/// Longest chain name (a file name is at most 255 bytes).
const MAX_CHAIN_NAME: usize = 255;
/// Longest persisted directory cursor: a line per chain of at most the name and a
/// cursor, for as many chains as a directory can have files.
const MAX_DIRECTORY_CURSOR_BYTES: usize = MAX_DIRECTORY_FILES * 512;

/// Where a [`JournalDirectory`] starts reading.
#[derive(Debug, Clone)]
pub enum StartAt {
    /// Every entry in the directory.
    Beginning,
    /// Only entries written after opening (chains that appear later are read whole).
    End,
    /// After a persisted position.
    After(DirectoryCursor),
}

/// Per-chain positions of a [`JournalDirectory`], to persist and resume from.
///
/// Text form: one line per chain, `<chain> <journald cursor>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryCursor {
    chains: BTreeMap<String, Cursor>,
}

impl DirectoryCursor {
    /// The position in one chain (`system`, `user-1000`, ...).
    pub fn chain(&self, name: &str) -> Option<&Cursor> {
        self.chains.get(name)
    }
}

impl fmt::Display for DirectoryCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, cursor) in &self.chains {
            writeln!(f, "{name} {cursor}")?;
        }
        Ok(())
    }
}

impl FromStr for DirectoryCursor {
    type Err = JournalError;

    fn from_str(text: &str) -> Result<DirectoryCursor, JournalError> {
        let bad = |reason| JournalError::BadCursor { reason };
        if text.len() > MAX_DIRECTORY_CURSOR_BYTES {
            return Err(bad("directory cursor longer than a directory can need"));
        }
        let mut chains = BTreeMap::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let (name, cursor) = line
                .split_once(' ')
                .ok_or(bad("a line is not '<chain> <cursor>'"))?;
            if !valid_chain_name(name) {
                return Err(bad("invalid chain name"));
            }
            if chains.insert(name.to_string(), cursor.parse()?).is_some() {
                return Err(bad("a chain appears twice"));
            }
        }
        Ok(DirectoryCursor { chains })
    }
}

fn valid_chain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHAIN_NAME
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '@')
}

/// What the listing knows of one file, from its header.
#[derive(Debug, Clone)]
struct FileInfo {
    path: PathBuf,
    file_id: Id128,
    seqnum_id: Id128,
    n_entries: u64,
    head_seqnum: u64,
    tail_seqnum: u64,
    tail_realtime: u64,
    /// Named as an archive (`@` in the name): journald no longer writes it.
    archive_name: bool,
    /// Order in the chain: (earliest wall-clock time of its seqnum-id group, seqnum id,
    /// head seqnum); empty files last.
    order: (u64, Id128, u64),
}

impl FileInfo {
    fn from_header(path: PathBuf, header: &Header, archive_name: bool) -> FileInfo {
        FileInfo {
            path,
            file_id: header.file_id,
            seqnum_id: header.seqnum_id,
            n_entries: header.n_entries,
            head_seqnum: header.head_entry_seqnum,
            tail_seqnum: header.tail_entry_seqnum,
            tail_realtime: header.tail_entry_realtime,
            archive_name,
            order: (header.head_entry_realtime, header.seqnum_id, 0),
        }
    }

    /// Whether the file may hold entries after `cursor` (a cheap header check; the
    /// file's own skip is exact).
    fn may_hold_after(&self, cursor: Option<&Cursor>) -> bool {
        let Some(cursor) = cursor else {
            return true;
        };
        if self.n_entries == 0 {
            return !self.archive_name;
        }
        if self.seqnum_id == cursor.seqnum_id {
            self.tail_seqnum > cursor.seqnum
        } else {
            self.tail_realtime >= cursor.realtime
        }
    }
}

/// One journal's files and the reader's place in them.
#[derive(Default)]
struct Chain {
    cursor: Option<Cursor>,
    /// The listing, in chain order.
    files: Vec<FileInfo>,
    current: Option<(JournalFile, FileInfo)>,
    /// Files read to their end (by file id), never opened again.
    done: HashSet<Id128>,
}

impl Chain {
    /// Position of the next entry passing `filter`, opening later files as earlier
    /// ones finish.
    fn peek(&mut self, filter: &UnitFilter) -> Result<Option<Cursor>, JournalError> {
        // Each turn either returns or finishes one file: bounded by the listing.
        for _ in 0..=self.files.len() {
            let Some((file, info)) = self.current.as_mut() else {
                if !self.open_next()? {
                    return Ok(None);
                }
                continue;
            };
            let peeked = file.peek(filter);
            let consumed = file.last_cursor();
            let (may_grow, file_id) = (file.may_grow(), info.file_id);
            self.advance(consumed);
            match peeked {
                Some(Ok(cursor)) => return Ok(Some(cursor)),
                Some(Err(error)) => return Err(error),
                None if may_grow => return Ok(None),
                None => {
                    self.done.insert(file_id);
                    self.current = None;
                }
            }
        }
        Ok(None)
    }

    /// Moves the chain's cursor to `consumed` if that is further: entries skipped while
    /// a file seeks to the cursor must not move it back.
    fn advance(&mut self, consumed: Option<Cursor>) {
        if let Some(consumed) = consumed
            && self.cursor.is_none_or(|cursor| consumed.is_after(&cursor))
        {
            self.cursor = Some(consumed);
        }
    }

    /// Opens the first unfinished file that may hold entries after the cursor.
    fn open_next(&mut self) -> Result<bool, JournalError> {
        let Some(info) = self
            .files
            .iter()
            .find(|info| {
                !self.done.contains(&info.file_id) && info.may_hold_after(self.cursor.as_ref())
            })
            .cloned()
        else {
            return Ok(false);
        };
        let mut file = match JournalFile::open(&info.path) {
            Ok(file) if file.header().file_id == info.file_id => file,
            // Replaced or gone since the listing: the next poll sees what is there now.
            Ok(_) | Err(JournalError::Io { .. }) => return Ok(false),
            Err(error) => {
                self.done.insert(info.file_id);
                return Err(error);
            }
        };
        if let Some(cursor) = &self.cursor {
            file.seek_after(cursor);
        }
        self.current = Some((file, info));
        Ok(true)
    }
}

/// A journal directory read as one stream; see the module notes.
pub struct JournalDirectory {
    path: PathBuf,
    filter: UnitFilter,
    chains: BTreeMap<String, Chain>,
    /// Errors found while listing (unreadable files), handed out by `next_entry`.
    errors: VecDeque<JournalError>,
    /// Files whose open error was already reported.
    reported: HashSet<PathBuf>,
}

impl JournalDirectory {
    /// Opens a journal directory (e.g. `/var/log/journal/<machine id>`) and lists it.
    pub fn open(
        path: &Path,
        filter: UnitFilter,
        start: StartAt,
    ) -> Result<JournalDirectory, JournalError> {
        let mut directory = JournalDirectory {
            path: path.to_path_buf(),
            filter,
            chains: BTreeMap::new(),
            errors: VecDeque::new(),
            reported: HashSet::new(),
        };
        if let StartAt::After(cursor) = &start {
            for (name, cursor) in &cursor.chains {
                directory.chains.entry(name.clone()).or_default().cursor = Some(*cursor);
            }
        }
        directory.poll()?;
        if let StartAt::End = start {
            for chain in directory.chains.values_mut() {
                chain.cursor = chain
                    .files
                    .iter()
                    .rev()
                    .find(|info| info.n_entries > 0)
                    .map(|info| Cursor {
                        seqnum_id: info.seqnum_id,
                        seqnum: info.tail_seqnum,
                        realtime: info.tail_realtime,
                        ..Cursor::default()
                    });
            }
        }
        Ok(directory)
    }

    /// Lists the directory again and re-reads the open files' headers, to see new
    /// entries, new files and rotations. Call it when `next_entry` returns `None`,
    /// after a pause.
    pub fn poll(&mut self) -> Result<(), JournalError> {
        let mut listing = self.list()?;
        for name in listing.keys() {
            self.chains.entry(name.clone()).or_default();
        }
        for (name, chain) in &mut self.chains {
            chain.files = listing.remove(name).unwrap_or_default();
            chain
                .done
                .retain(|id| chain.files.iter().any(|info| info.file_id == *id));
        }
        for chain in self.chains.values_mut() {
            let Some((file, info)) = chain.current.as_mut() else {
                continue;
            };
            if let Some(listed) = chain
                .files
                .iter()
                .find(|other| other.file_id == info.file_id)
            {
                *info = listed.clone();
            }
            // A later file with entries means this one is finished; it is refreshed
            // after that was seen, so its last entries are visible now.
            if chain.files.iter().any(|other| {
                other.file_id != info.file_id && other.n_entries > 0 && other.order > info.order
            }) {
                file.mark_superseded();
            }
            if let Err(error) = file.refresh() {
                chain.current = None;
                self.errors.push_back(error);
            }
        }
        Ok(())
    }

    /// The next entry of the directory in journald's order, an error for something
    /// unreadable (reading goes on past it), or `None` when nothing more is readable
    /// now: call [`JournalDirectory::poll`] later.
    pub fn next_entry(&mut self) -> Option<Result<Entry, JournalError>> {
        if let Some(error) = self.errors.pop_front() {
            return Some(Err(error));
        }
        let mut next: Option<(&String, Cursor)> = None;
        for (name, chain) in &mut self.chains {
            match chain.peek(&self.filter) {
                Ok(Some(cursor)) => {
                    if next.is_none_or(|(_, best)| best.is_after(&cursor)) {
                        next = Some((name, cursor));
                    }
                }
                Ok(None) => {}
                Err(error) => return Some(Err(error)),
            }
        }
        let name = next?.0.clone();
        let chain = self.chains.get_mut(&name)?;
        let (file, _) = chain.current.as_mut()?;
        let entry = file.next_entry(&self.filter);
        let consumed = file.last_cursor();
        chain.advance(consumed);
        entry
    }

    /// Where the reader is: persist this once every entry returned so far is safely
    /// handled, and resume with [`StartAt::After`].
    pub fn position(&self) -> DirectoryCursor {
        DirectoryCursor {
            chains: self
                .chains
                .iter()
                .filter_map(|(name, chain)| Some((name.clone(), chain.cursor?)))
                .collect(),
        }
    }

    /// Reads the headers of the directory's journal files, grouped into ordered
    /// chains.
    fn list(&mut self) -> Result<BTreeMap<String, Vec<FileInfo>>, JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut names = Vec::new();
        for dirent in fs::read_dir(&self.path).map_err(io)? {
            let dirent = dirent.map_err(io)?;
            let name = dirent.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((chain, archive)) = chain_of(name) {
                if names.len() == MAX_DIRECTORY_FILES {
                    return Err(JournalError::TooManyFiles {
                        path: self.path.display().to_string(),
                        limit: MAX_DIRECTORY_FILES,
                    });
                }
                names.push((chain.to_string(), archive, dirent.path()));
            }
        }
        self.reported
            .retain(|path| names.iter().any(|(_, _, listed)| listed == path));
        let mut chains: BTreeMap<String, Vec<FileInfo>> = BTreeMap::new();
        for (chain, archive, path) in names {
            match JournalFile::open(&path) {
                Ok(file) => chains.entry(chain).or_default().push(FileInfo::from_header(
                    path,
                    file.header(),
                    archive || file.header().state == FileState::Archived,
                )),
                // Deleted since listed, or an active file journald has created but
                // not yet written its header to.
                Err(JournalError::Io { .. }) => {}
                Err(JournalError::BadHeader { reason }) if !archive && reason == SHORT_HEADER => {}
                Err(error) => {
                    if self.reported.insert(path) {
                        self.errors.push_back(error);
                    }
                }
            }
        }
        for files in chains.values_mut() {
            order_chain(files);
        }
        Ok(chains)
    }
}

/// The chain a journal file belongs to and whether its name is an archive's, or `None`
/// for a file that is not a journal file.
fn chain_of(name: &str) -> Option<(&str, bool)> {
    let stem = name
        .strip_suffix(".journal")
        .or_else(|| name.strip_suffix(".journal~"))?;
    let (chain, archive) = match stem.split_once('@') {
        Some((chain, _)) => (chain, true),
        None => (stem, name.ends_with('~')),
    };
    valid_chain_name(chain).then_some((chain, archive))
}

/// Sorts a chain's files: groups of one seqnum id by their earliest wall-clock time,
/// by head seqnum within a group, files without entries last. A total order, so the
/// sort cannot be confused by clocks that went backwards.
fn order_chain(files: &mut [FileInfo]) {
    let mut earliest: BTreeMap<Id128, u64> = BTreeMap::new();
    for info in files.iter().filter(|info| info.n_entries > 0) {
        let time = earliest.entry(info.seqnum_id).or_insert(u64::MAX);
        *time = (*time).min(info.order.0);
    }
    for info in files.iter_mut() {
        info.order = match earliest.get(&info.seqnum_id) {
            Some(time) if info.n_entries > 0 => (*time, info.seqnum_id, info.head_seqnum),
            _ => (u64::MAX, info.seqnum_id, u64::MAX),
        };
    }
    files.sort_by_key(|info| info.order);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_map_to_chains() {
        assert_eq!(chain_of("system.journal"), Some(("system", false)));
        assert_eq!(
            chain_of("system@0123-0000000000000001-0005f00000000000.journal"),
            Some(("system", true))
        );
        assert_eq!(chain_of("user-1000.journal"), Some(("user-1000", false)));
        assert_eq!(
            chain_of("user-1000@abc-def.journal~"),
            Some(("user-1000", true))
        );
        assert_eq!(chain_of("system.journal~"), Some(("system", true)));
        assert_eq!(chain_of("notes.txt"), None);
        assert_eq!(chain_of("@x.journal"), None);
    }

    #[test]
    fn directory_cursor_round_trips_and_refuses_bad_text() {
        let cursor = Cursor {
            seqnum: 7,
            ..Cursor::default()
        };
        let position = DirectoryCursor {
            chains: [
                ("system".to_string(), cursor),
                ("user-1000".to_string(), cursor),
            ]
            .into_iter()
            .collect(),
        };
        let text = position.to_string();
        assert_eq!(text.parse::<DirectoryCursor>().expect("parses"), position);
        let line = text.lines().next().expect("a line").to_string();
        let cases = [
            (format!("{line}\n{line}"), "appears twice"),
            (line.replace("system ", "sys/tem "), "invalid chain name"),
            ("system".to_string(), "not '<chain> <cursor>'"),
            (line.replace(";i=7", ""), "missing one of"),
            ("x".repeat(MAX_DIRECTORY_CURSOR_BYTES + 1), "longer than"),
        ];
        for (text, expected) in cases {
            let error = text.parse::<DirectoryCursor>().expect_err(expected);
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
