//! The series cache of one target's scrape loop.
//!
//! Like Prometheus' scrape cache, each loop remembers every series its target exposed,
//! by the series text as written (`name{labels}`). The first time a series is seen,
//! its labels are merged with the target's, relabeled, filtered, checked against the
//! label limits, given the external labels and encoded for remote-write, once; every
//! later scrape costs one hash lookup and appends the value to an encoded request.
//! Each entry records the last scrape that contained it, which is all the staleness
//! tracking needs, and entries gone for two scrapes are evicted. A changed
//! configuration restarts the loop with an empty cache.
//!
//! The cache is most of the agent's memory, so an entry is small:
//! - the text is not kept. The entry holds two independent 64-bit hashes of it (keyed
//!   with random seeds per cache), and the index, a hash table of 4-byte entry numbers,
//!   finds it by the first and compares both. Texts whose first hashes collide simply
//!   share a probe sequence; two texts are only confused if both hashes collide, about
//!   2^-64 per pair of a target's series with seeds an exposition cannot know;
//! - the labels are stored as a template over a per-target dictionary of label fields
//!   ([`SharedLabels`]: the target's own and the external labels, then the first
//!   distinct labels its series bring, up to 255), each encoded once per target, so a
//!   label found there costs two bytes in a series' template; the templates of a
//!   target's series lie back to back in one buffer (compacted when evicted series make
//!   up half of it), so an entry is 32 bytes plus its template, with no allocation of
//!   its own.

use std::collections::HashMap;
use std::hash::BuildHasher;

use kaas_pipeline::processors::ValidatedProcessors;
use kaas_proto::remote_write::v1::{self, MetricMetadata};

use super::config::ScrapeConfig;
use super::exposition::{self, MetricType};
use super::series_labels::{check_label_limits, merge_target_labels, with_external};
use super::target::Target;
use crate::labels::{Labels, METRIC_NAME};
use crate::processing::process_sample;
use crate::record::shared_labels::{self, SharedLabels};
use crate::record::wire::{self, RequestWriter};

/// One series a target exposed (see the module documentation).
pub(super) struct CachedSeries {
    /// The first hash of the series text, by which the index finds the entry.
    pub(super) key: u64,
    /// The second hash of the series text, compared on every lookup.
    pub(super) fingerprint: u64,
    /// Hash of the final labels, to drop series that relabeling made identical;
    /// [`LIMIT_ERROR`] when `template` is `None` because of a label limit.
    pub(super) labels_hash: u64,
    /// The final labels, at `template_start` in [`SeriesCache::templates`]:
    /// `encode_template` output after the varint length of the labels it expands to.
    /// `template_len` is 0 when the pipeline drops the series or it breaks a limit.
    pub(super) template_start: u32,
    /// See `template_start`.
    pub(super) template_len: u32,
    /// The last generation whose (successful) scrape contained it.
    pub(super) last_success: u32,
    /// The generation of the scrape reading it now; a second read is a duplicate.
    /// [`VACANT`] for a slot whose series was evicted.
    pub(super) pending: u32,
}

/// `pending` of an evicted entry's slot (kept for reuse, see [`SeriesCache::free`]).
pub(super) const VACANT: u32 = u32::MAX;

impl CachedSeries {
    /// Whether the series is written (neither dropped by the pipeline nor over a limit).
    pub(super) fn has_template(&self) -> bool {
        self.template_len > 0
    }

    /// The template's bytes in `templates`.
    pub(super) fn template<'a>(&self, templates: &'a [u8]) -> &'a [u8] {
        let start = self.template_start as usize;
        &templates[start..start + self.template_len as usize]
    }
}

/// `labels_hash` of a series without labels because it breaks a label limit (its
/// reason is in [`SeriesCache::limit_errors`]).
pub(super) const LIMIT_ERROR: u64 = 1;

/// The series cache (see the module documentation).
#[derive(Default)]
pub(super) struct SeriesCache {
    /// Entry numbers, hashed by their entries' `key`: 4 bytes a slot, where a map from
    /// key to entry number took 16.
    index: hashbrown::HashTable<u32>,
    /// Seeds the first hash.
    pub(super) key_hasher: foldhash::fast::RandomState,
    /// Seeds the fingerprint.
    pub(super) fingerprint_hasher: foldhash::fast::RandomState,
    /// Entries by slot; evicted ones are [`VACANT`] until reused.
    pub(super) entries: Vec<CachedSeries>,
    /// Vacant slots.
    free: Vec<u32>,
    /// Every entry's template, back to back: one allocation per target instead of one
    /// per series (whose allocator header and rounding cost about 20 bytes each).
    pub(super) templates: Vec<u8>,
    /// Bytes of `templates` that belong to evicted entries; reclaimed by compaction.
    garbage: usize,
    /// Why series break a label limit, by entry.
    pub(super) limit_errors: HashMap<u32, Box<str>>,
    /// Entries read by the current scrape.
    pub(super) current: usize,
    pub(super) families: HashMap<String, MetricType>,
    /// `families` encoded as metadata frames; rebuilt when a family appears.
    metadata: Vec<Vec<u8>>,
    pub(super) families_changed: bool,
}

impl SeriesCache {
    /// The entry of a series text by its two hashes.
    pub(super) fn find(&self, key: u64, fingerprint: u64) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(key, |&index| {
                let entry = &entries[index as usize];
                entry.key == key && entry.fingerprint == fingerprint
            })
            .copied()
    }

    pub(super) fn insert(&mut self, entry: CachedSeries) -> u32 {
        let key = entry.key;
        let index = match self.free.pop() {
            Some(index) => {
                self.entries[index as usize] = entry;
                index
            }
            None => {
                self.entries.push(entry);
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let entries = &self.entries;
        self.index
            .insert_unique(key, index, |&i| entries[i as usize].key);
        index
    }

    /// Removes entries no successful scrape has contained for two generations, and
    /// gives back memory the first scrapes' growth left unused.
    pub(super) fn evict(&mut self, generation: u32) {
        let slack = self.entries.len() / 8 + 64;
        if self.entries.capacity() > self.entries.len() + slack {
            self.entries.shrink_to(self.entries.len() + slack / 2);
        }
        let template_slack = self.templates.len() / 8 + 1024;
        if self.templates.capacity() > self.templates.len() + template_slack {
            self.templates
                .shrink_to(self.templates.len() + template_slack / 2);
        }
        if self.entries.len() >= 2 * self.current + 64 {
            let (entries, free, limit_errors, garbage) = (
                &mut self.entries,
                &mut self.free,
                &mut self.limit_errors,
                &mut self.garbage,
            );
            let mut retain = |index: &mut u32| {
                let entry = &mut entries[*index as usize];
                let stale = entry.last_success + 1 < generation && entry.pending < generation;
                if stale {
                    *garbage += entry.template_len as usize;
                    entry.template_len = 0;
                    entry.pending = VACANT;
                    entry.last_success = 0;
                    limit_errors.remove(index);
                    free.push(*index);
                }
                !stale
            };
            self.index.retain(|index| retain(index));
        }
        if self.garbage > self.templates.len() / 2 {
            self.compact_templates();
        }
    }

    /// Copies the live entries' templates into a new arena without the evicted ones.
    fn compact_templates(&mut self) {
        let mut templates = Vec::with_capacity(self.templates.len() - self.garbage);
        for entry in self.entries.iter_mut().filter(|e| e.has_template()) {
            let start = templates.len();
            templates.extend_from_slice(entry.template(&self.templates));
            entry.template_start = u32::try_from(start).unwrap_or(u32::MAX);
        }
        self.templates = templates;
        self.garbage = 0;
    }

    pub(super) fn metadata_frames(&mut self) -> &[Vec<u8>] {
        use prost::Message;
        if self.families_changed {
            self.metadata = self
                .families
                .iter()
                .map(|(family, kind)| {
                    MetricMetadata {
                        r#type: metric_type(*kind) as i32,
                        metric_family_name: family.clone(),
                        help: String::new(),
                        unit: String::new(),
                    }
                    .encode_to_vec()
                })
                .collect();
            self.families_changed = false;
        }
        &self.metadata
    }
}

/// Appends a cached series' sample.
pub(super) fn write_sample(
    writer: &mut RequestWriter,
    template: &[u8],
    shared: &SharedLabels,
    timestamp: i64,
    value: f64,
) {
    let mut pos = 0;
    let Some(labels_len) = wire::get_varint(template, &mut pos) else {
        return;
    };
    writer.sample_from_template(
        &template[pos..],
        labels_len as usize,
        shared,
        timestamp,
        value,
    );
}

/// What building a cache entry needs besides the sample.
pub(super) struct NewEntry<'a> {
    pub(super) target: &'a Target,
    pub(super) config: &'a ScrapeConfig,
    pub(super) processors: &'a ValidatedProcessors,
    pub(super) external: &'a Labels,
    pub(super) shared: &'a mut SharedLabels,
    pub(super) hasher: &'a foldhash::fast::FixedState,
}

/// Builds the cache entry of a series seen for the first time, its template appended
/// to `templates`, and the label limit it breaks, if any.
pub(super) fn new_entry(
    sample: &exposition::Sample<'_>,
    labels: &[(&str, std::borrow::Cow<'_, str>)],
    (key, fingerprint): (u64, u64),
    templates: &mut Vec<u8>,
    with: NewEntry<'_>,
) -> (CachedSeries, Option<String>) {
    let exposed = Labels::from_pairs(
        std::iter::once((METRIC_NAME, sample.name.to_owned()))
            .chain(labels.iter().map(|(n, v)| (*n, v.to_string()))),
    );
    let merged = merge_target_labels(&exposed, with.target, with.config.honor_labels);
    let mut entry = CachedSeries {
        key,
        fingerprint,
        labels_hash: 0,
        template_start: 0,
        template_len: 0,
        last_success: 0,
        pending: 0,
    };
    let Some(labels) = process_sample(&merged, with.processors) else {
        return (entry, None);
    };
    if let Err(reason) = check_label_limits(&labels, with.config) {
        entry.labels_hash = LIMIT_ERROR;
        return (entry, Some(reason));
    }
    let labels = with_external(labels, with.external);
    entry.labels_hash = with.hasher.hash_one(wire::encode_labels(&labels));
    let (template, expanded_len) = shared_labels::encode_template(&labels, with.shared);
    let start = templates.len();
    wire::put_varint(templates, expanded_len as u64);
    templates.extend_from_slice(&template);
    entry.template_start = u32::try_from(start).unwrap_or(u32::MAX);
    entry.template_len = u32::try_from(templates.len() - start).unwrap_or(0);
    (entry, None)
}

/// The family a sample belongs to: its name without the type's suffix.
pub(super) fn family_name(name: &str, kind: MetricType) -> &str {
    let suffixes: &[&str] = match kind {
        MetricType::Counter => &["_total", "_created"],
        MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
        MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
        MetricType::Summary => &["_sum", "_count", "_created"],
        MetricType::Info => &["_info"],
        _ => &[],
    };
    suffixes
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

fn metric_type(kind: MetricType) -> v1::MetricType {
    match kind {
        MetricType::Counter => v1::MetricType::Counter,
        MetricType::Gauge => v1::MetricType::Gauge,
        MetricType::Histogram => v1::MetricType::Histogram,
        MetricType::GaugeHistogram => v1::MetricType::Gaugehistogram,
        MetricType::Summary => v1::MetricType::Summary,
        MetricType::Info => v1::MetricType::Info,
        MetricType::StateSet => v1::MetricType::Stateset,
        MetricType::Unknown => v1::MetricType::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_whose_first_hashes_collide_are_told_apart() {
        let entry = |key, fingerprint| CachedSeries {
            key,
            fingerprint,
            labels_hash: 0,
            template_start: 0,
            template_len: 0,
            last_success: 0,
            pending: 0,
        };
        let mut cache = SeriesCache::default();
        let a = cache.insert(entry(5, 1));
        let b = cache.insert(entry(5, 2));
        assert_ne!(a, b);
        assert_eq!(cache.find(5, 1), Some(a));
        assert_eq!(cache.find(5, 2), Some(b), "same first hash, told apart");
        assert_eq!(
            cache.find(5, 3),
            None,
            "same first hash, another fingerprint"
        );
        assert_eq!(cache.find(6, 1), None);
        // Both are evicted once stale, and their slots reused.
        cache.current = 0;
        for _ in 0..64 {
            cache.entries.push(CachedSeries {
                pending: VACANT,
                ..entry(0, 0)
            });
        }
        cache.evict(10);
        assert_eq!(cache.find(5, 1), None);
        assert_eq!(cache.find(5, 2), None);
        assert!(cache.index.is_empty());
        let c = cache.insert(entry(7, 7));
        assert!(c == a || c == b, "a freed slot is reused");
        assert_eq!(cache.find(7, 7), Some(c));
    }
}
