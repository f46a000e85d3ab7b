//! Matching what a scan found with the tracked files (new, renamed, rotated away,
//! truncated, inode reused), opening and closing descriptors within the bound, and the
//! read phase of a poll.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::Tailer;
use super::file::{FileMark, TrackedFile};
use crate::checkpoint::{Checkpoint, FileCheckpoint};
use crate::discover::{DiscoveredFile, FileId};
use crate::fingerprint::Fingerprint;
use crate::record::{FileSource, LogRecord};
use crate::tail::READ_CHUNK;

enum Opened {
    Yes,
    NoRoom,
    Gone,
}

impl Tailer {
    /// The first scan: files in the checkpoint resume where it says (if their fingerprint
    /// still matches), others start at the end (`skip_existing`) or the beginning.
    pub(super) fn start(&mut self, restored: Checkpoint, skip_existing: bool) {
        let mut restored: HashMap<FileId, FileCheckpoint> =
            restored.files.into_iter().map(|f| (f.id, f)).collect();
        for found in self.discovery.scan().files {
            if self.files.len() >= self.config.limits.max_files {
                break;
            }
            let Some((handle, size)) = open_verified(&found.open_path, found.id) else {
                continue;
            };
            let Ok(fingerprint) = Fingerprint::read(&handle) else {
                continue;
            };
            let source = Arc::new(FileSource {
                path: found.path.clone(),
                source: found.source.clone(),
            });
            let entry = restored.remove(&found.id);
            let resumed = entry.and_then(|e| resume_point(&e, &handle, size));
            let mut tracked = match resumed {
                Some((fingerprint, mark)) => {
                    resumed_file(found.id, source, found.open_path, fingerprint, mark)
                }
                None if skip_existing => TrackedFile::new(
                    found.id,
                    source,
                    found.open_path,
                    fingerprint,
                    end_of_last_line(&handle, size),
                ),
                None => TrackedFile::new(found.id, source, found.open_path, fingerprint, 0),
            };
            tracked.size = size;
            self.files.insert(found.id, tracked);
        }
        // Files renamed while the agent was down: found by inode in their old directory.
        for entry in restored.into_values() {
            let Some(path) = find_in_directory(&entry.path, entry.id) else {
                continue;
            };
            let Some((handle, size)) = open_verified(&path, entry.id) else {
                continue;
            };
            let Some((fingerprint, mark)) = resume_point(&entry, &handle, size) else {
                continue;
            };
            let source = Arc::new(FileSource {
                path: entry.path.clone(),
                source: self.discovery.classify(&entry.path),
            });
            let mut tracked = resumed_file(entry.id, source, path, fingerprint, mark);
            tracked.detached = true;
            tracked.size = size;
            self.files.insert(entry.id, tracked);
        }
    }

    /// Applies one scan: new files are tracked from the beginning, moved ones follow
    /// their new path, missing ones are detached (read to their end, then forgotten).
    pub(super) fn reconcile(&mut self, found: Vec<DiscoveredFile>) {
        let mut seen = HashSet::with_capacity(found.len());
        for file in found {
            seen.insert(file.id);
            let Some(tracked) = self.files.get_mut(&file.id) else {
                if self.files.len() >= self.config.limits.max_files {
                    self.discovery_status.over_file_limit += 1;
                    continue;
                }
                let source = Arc::new(FileSource {
                    path: file.path.clone(),
                    source: file.source.clone(),
                });
                let mut tracked =
                    TrackedFile::new(file.id, source, file.open_path, Fingerprint::of(b""), 0);
                tracked.generation = self.next_generation;
                self.next_generation += 1;
                tracked.size = file.size;
                self.files.insert(file.id, tracked);
                self.dirty = true;
                continue;
            };
            if tracked.finished {
                // The inode came back: a new file reusing it (the fingerprint decides).
                tracked.finished = false;
                tracked.examined_to = 0;
            }
            tracked.detached = false;
            tracked.idle_since = None;
            tracked.size = file.size;
            if tracked.source.path != file.path {
                tracked.source = Arc::new(FileSource {
                    path: file.path,
                    source: file.source,
                });
                tracked.open_path = file.open_path;
            }
        }
        for (id, tracked) in &mut self.files {
            if !seen.contains(id) && !tracked.detached {
                tracked.detached = true;
                self.reading.counters.rotations += 1;
            }
        }
    }

    /// Updates the sizes of the files with a descriptor open from the descriptor (a
    /// poll without discovery); a file whose descriptor fails is left to the next read
    /// or discovery.
    pub(super) fn refresh_open_sizes(&mut self) {
        for id in &self.open {
            let Some(file) = self.files.get_mut(id) else {
                continue;
            };
            if let Some(Ok(meta)) = file.file.as_ref().map(File::metadata) {
                file.size = meta.len();
            }
        }
    }

    /// Reads files with new bytes (rotated ones first, then least recently read) within
    /// the batch budget, flushes expired multiline records, finishes idle rotated files.
    pub(super) fn read_files(
        &mut self,
        now: Instant,
        records: &mut Vec<LogRecord>,
        touched: &mut Vec<FileId>,
    ) {
        let mut order: Vec<(bool, u64, FileId)> = self
            .files
            .values()
            .filter(|f| !f.finished && (f.detached || f.has_new_bytes()))
            .map(|f| (!f.detached, f.last_read, f.id))
            .collect();
        order.sort_unstable();
        let mut budget = self.config.limits.max_batch_bytes;
        let mut touched_set = HashSet::new();
        for (_, _, id) in order {
            if budget == 0 {
                break;
            }
            match self.ensure_open(id) {
                Opened::Yes => {}
                Opened::NoRoom => continue,
                Opened::Gone => {
                    self.finish(id, now, records, false);
                    touched_set.insert(id);
                    continue;
                }
            }
            touched_set.insert(id);
            match self.read_one(id, budget, now, records) {
                Ok(consumed) => budget = budget.saturating_sub(consumed),
                Err(_) => {
                    self.reading.counters.read_errors += 1;
                    self.close(id);
                }
            }
        }
        for (id, file) in &mut self.files {
            if file.streams.iter().any(|s| s.pending_since().is_some()) {
                let before = records.len();
                let mut context = self.reading.context(&self.config, now, records);
                file.flush_expired(&mut context);
                if records.len() > before {
                    touched_set.insert(*id);
                }
            }
        }
        touched.extend(touched_set);
    }

    /// Reads one open file: checks for truncation or a replaced content first.
    fn read_one(
        &mut self,
        id: FileId,
        budget: usize,
        now: Instant,
        records: &mut Vec<LogRecord>,
    ) -> std::io::Result<usize> {
        let generation = self.next_generation;
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(0);
        };
        let Some(handle) = &file.file else {
            return Ok(0);
        };
        let size = handle.metadata()?.len();
        let still = file.fingerprint.matches(handle)?;
        let mut context = self.reading.context(&self.config, now, records);
        match still {
            Some(fingerprint) if size >= file.read_offset => file.fingerprint = fingerprint,
            _ => {
                let fingerprint = Fingerprint::read(handle)?;
                file.restart(fingerprint, generation, &mut context);
                context.counters.truncations += 1;
                self.next_generation += 1;
                self.dirty = true;
            }
        }
        file.size = size;
        file.last_read = self.polls;
        let consumed = file.read_lines(budget, &mut context)?;
        let at_end = file.read_offset >= size || file.examined_to >= size;
        if !file.detached || consumed > 0 || !at_end {
            file.idle_since = None;
            return Ok(consumed);
        }
        let idle_since = *file.idle_since.get_or_insert(now);
        if now.saturating_duration_since(idle_since) >= self.config.limits.rotate_wait {
            self.finish(id, now, records, true);
        }
        Ok(consumed)
    }

    /// A rotated or deleted file is done: its unterminated last line and what its streams
    /// hold become records, and its descriptor is closed. `readable` is false when the
    /// file vanished unread.
    fn finish(&mut self, id: FileId, now: Instant, records: &mut Vec<LogRecord>, readable: bool) {
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        let mut context = self.reading.context(&self.config, now, records);
        if readable {
            if file.take_unterminated_tail(&mut context).is_err() {
                context.counters.read_errors += 1;
            }
        } else if file.size > file.read_offset {
            context.counters.lost_files += 1;
        }
        file.flush_streams(&mut context);
        file.finished = true;
        self.dirty = true;
        self.close(id);
    }

    /// Makes sure `id` has a descriptor, closing the least recently used non-rotated one
    /// when the bound is reached.
    fn ensure_open(&mut self, id: FileId) -> Opened {
        let Some(file) = self.files.get(&id) else {
            return Opened::Gone;
        };
        if file.file.is_some() {
            if let Some(position) = self.open.iter().position(|open| *open == id) {
                self.open.remove(position);
            }
            self.open.push(id);
            return Opened::Yes;
        }
        if self.open.len() >= self.config.limits.max_open_files {
            // A file read to its end loses nothing if it is deleted while closed, so the
            // least recently read of those goes first; rotated files are never closed.
            let files = &self.files;
            let closable = |caught_up: bool| {
                self.open.iter().position(|open| {
                    files
                        .get(open)
                        .is_some_and(|f| !f.detached && (!caught_up || f.examined_to >= f.size))
                })
            };
            let Some(position) = closable(true).or_else(|| closable(false)) else {
                return Opened::NoRoom;
            };
            let victim = self.open.remove(position);
            if let Some(victim) = self.files.get_mut(&victim) {
                victim.file = None;
            }
            self.reading.counters.evictions += 1;
        }
        let Some(file) = self.files.get_mut(&id) else {
            return Opened::Gone;
        };
        let path = if file.detached {
            find_in_directory(&file.open_path, id)
        } else {
            Some(file.open_path.clone())
        };
        match path.and_then(|path| open_verified(&path, id).map(|opened| (path, opened))) {
            Some((path, (handle, _))) => {
                file.open_path = path;
                file.file = Some(handle);
                self.open.push(id);
                Opened::Yes
            }
            None if file.detached => Opened::Gone,
            // Not at its path any more: renamed or deleted since the last discovery
            // (polls without discovery read closed files by their old path). Detached
            // as that discovery would have, it is read on under its new name or
            // finished.
            None => match find_in_directory(&file.open_path, id) {
                Some(moved) if moved != file.open_path => {
                    file.detached = true;
                    self.reading.counters.rotations += 1;
                    match open_verified(&moved, id) {
                        Some((handle, _)) => {
                            file.open_path = moved;
                            file.file = Some(handle);
                            self.open.push(id);
                            Opened::Yes
                        }
                        None => Opened::Gone,
                    }
                }
                None => {
                    file.detached = true;
                    self.reading.counters.rotations += 1;
                    Opened::Gone
                }
                // Still there and unreadable now: the next discovery sorts it out.
                Some(_) => {
                    self.reading.counters.read_errors += 1;
                    Opened::NoRoom
                }
            },
        }
    }

    fn close(&mut self, id: FileId) {
        if let Some(file) = self.files.get_mut(&id) {
            file.file = None;
        }
        self.open.retain(|open| *open != id);
    }
}

/// A tracked file resuming at a checkpointed position.
fn resumed_file(
    id: FileId,
    source: Arc<FileSource>,
    path: PathBuf,
    fingerprint: Fingerprint,
    mark: FileMark,
) -> TrackedFile {
    let mut tracked = TrackedFile::new(id, source, path, fingerprint, mark.offset);
    tracked.skip_before = mark.resume;
    tracked.committed = mark;
    tracked
}

/// Where a checkpointed file resumes, if it is still the same content and not truncated
/// below the position.
fn resume_point(
    entry: &FileCheckpoint,
    handle: &File,
    size: u64,
) -> Option<(Fingerprint, FileMark)> {
    let fingerprint = entry.fingerprint.matches(handle).ok()??;
    (size >= entry.offset).then_some((
        fingerprint,
        FileMark {
            offset: entry.offset,
            resume: entry.resume,
        },
    ))
}

/// Opens `path` and checks that it is still the file with `id` (a path swapped for a
/// symlink or another file after the scan is not read).
fn open_verified(path: &Path, id: FileId) -> Option<(File, u64)> {
    let handle = File::open(path).ok()?;
    let meta = handle.metadata().ok()?;
    (meta.is_file() && FileId::of(&meta) == id).then_some((handle, meta.len()))
}

/// A file with `id` in the directory of `old_path` (where a rotated file was renamed).
fn find_in_directory(old_path: &Path, id: FileId) -> Option<PathBuf> {
    let directory = old_path.parent()?;
    std::fs::read_dir(directory)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let meta = entry.metadata().ok()?;
            (meta.is_file() && meta.dev() == id.dev && meta.ino() == id.ino).then(|| entry.path())
        })
}

/// Where "start at the end" begins: after the last complete line in the file's final
/// chunk, so that a line being written is read whole.
fn end_of_last_line(handle: &File, size: u64) -> u64 {
    let start = size.saturating_sub(READ_CHUNK as u64);
    let mut tail = vec![0; (size - start) as usize];
    match handle.read_at(&mut tail, start) {
        Ok(read) => tail[..read]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(size, |i| start + i as u64 + 1),
        Err(_) => size,
    }
}
