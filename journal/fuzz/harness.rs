//! The body of the `parse_file` fuzz target, shared with the stable test that replays
//! the committed corpus: open bytes as a journal file, read every entry with and
//! without a unit filter, resume after a cursor, and parse the input as cursor text.
//! Reading must end (every step consumes a slot or an object) and never panic.

use kaas_journal::{Cursor, DirectoryCursor, JournalFile, UnitFilter};

/// Entries (or errors) one input can yield: each consumes at least 4 bytes of the
/// input (a compact entry-array slot), so more means the reader is going round.
fn max_results(data: &[u8]) -> usize {
    data.len() / 4 + 16
}

pub fn exercise(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<Cursor>();
        let _ = text.parse::<DirectoryCursor>();
    }
    let filters = [UnitFilter::All, UnitFilter::units(["kubelet.service"])];
    let mut middle = None;
    for filter in &filters {
        let Ok(mut file) = JournalFile::from_source(data) else {
            return;
        };
        let mut results = 0usize;
        while let Some(result) = file.next_entry(filter) {
            results += 1;
            assert!(results <= max_results(data), "the reader does not end");
            if let Ok(entry) = result
                && results == 2
            {
                middle = Some(entry.cursor);
            }
        }
        // Nothing changed: a refresh finds nothing new and nothing loops.
        if file.refresh().is_ok() {
            let again = file.entries(filter).take(max_results(data) + 1).count();
            assert!(again <= max_results(data));
        }
    }
    if let (Some(cursor), Ok(mut file)) = (middle, JournalFile::from_source(data)) {
        file.seek_after(&cursor);
        let after = file
            .entries(&UnitFilter::All)
            .take(max_results(data) + 1)
            .count();
        assert!(after <= max_results(data));
    }
}
