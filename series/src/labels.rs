//! Label sets as Prometheus models them: a list of name/value pairs sorted by name,
//! names unique, no empty values. [`LabelsBuilder`] changes a set the way Prometheus'
//! `labels.Builder` does, which relabeling depends on for identical results.
//!
//! Every operation is linear or `n log n` in the number of labels, whatever a pusher or
//! a target sends: building a set sorts once and keeps the last of each name (no
//! search per label), and the builder finds set and deleted names through an index
//! once there are more than a handful of them.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// The label holding a series' metric name.
pub const METRIC_NAME: &str = "__name__";
/// The label holding a target's `host:port`.
pub const ADDRESS: &str = "__address__";
/// Labels starting with this are internal to the agent and removed before sending.
pub const RESERVED_PREFIX: &str = "__";

/// How many names the builder searches one by one before it builds an index: below
/// this a scan is faster than hashing, and every rule set the agent runs stays below.
const BUILDER_INDEX_FROM: usize = 16;

/// One label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// The name.
    pub name: String,
    /// The value; never empty inside a [`Labels`].
    pub value: String,
}

/// A label set: sorted by name, names unique, values non-empty.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Builds a set from pairs; later pairs win over earlier ones with the same name,
    /// and empty values are left out (an empty label is a missing label).
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let labels = pairs
            .into_iter()
            .map(|(name, value)| Label {
                name: name.into(),
                value: value.into(),
            })
            .collect();
        Self(normalize(labels, &mut |a, b| a.cmp(b)))
    }

    /// The value of `name`, or `""` when it is not set (as in Prometheus).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .map(|i| self.0[i].value.as_str())
            .unwrap_or("")
    }

    /// The labels in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sorts `labels` by name (stable, so equal names keep their order), keeps the last of
/// each name and drops empty values: `n log n` comparisons through `compare` (a stable
/// merge sort, linear on input that is already sorted) plus one pass.
fn normalize(
    mut labels: Vec<Label>,
    compare: &mut impl FnMut(&str, &str) -> Ordering,
) -> Vec<Label> {
    labels.sort_by(|a, b| compare(&a.name, &b.name));
    let mut unique: Vec<Label> = Vec::with_capacity(labels.len());
    for label in labels {
        match unique.last_mut() {
            Some(last) if compare(&last.name, &label.name) == Ordering::Equal => *last = label,
            _ => unique.push(label),
        }
    }
    unique.retain(|l| !l.value.is_empty());
    unique
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

/// Changes a label set without copying it until the end, with Prometheus'
/// `labels.Builder` semantics: `set` with an empty value deletes; [`Self::snapshot`]
/// lists the untouched base labels in name order, then the added ones in the order they
/// were added, which decides who wins when `labelmap` maps two labels to one name.
#[derive(Debug)]
pub struct LabelsBuilder<'a> {
    base: &'a Labels,
    /// Labels set, in the order they were (last) added; `None` where one was deleted
    /// afterwards.
    add: Vec<Option<Label>>,
    /// Where each live name of `add` is, once `add` has grown past
    /// [`BUILDER_INDEX_FROM`] entries.
    add_index: Option<HashMap<String, usize>>,
    /// Names deleted (a name set again afterwards is found in `add` first).
    del: Vec<String>,
    /// `del` as a set, once it has grown past [`BUILDER_INDEX_FROM`] names.
    del_index: Option<HashSet<String>>,
}

impl<'a> LabelsBuilder<'a> {
    /// Starts from `base`.
    pub fn new(base: &'a Labels) -> Self {
        Self {
            base,
            add: Vec::new(),
            add_index: None,
            del: Vec::new(),
            del_index: None,
        }
    }

    /// Where `name` is in `add`, if it is set.
    fn added(&self, name: &str) -> Option<usize> {
        match &self.add_index {
            Some(index) => index.get(name).copied(),
            None => self
                .add
                .iter()
                .position(|l| l.as_ref().is_some_and(|l| l.name == name)),
        }
    }

    /// Whether `name` was deleted (and perhaps set again since).
    fn deleted(&self, name: &str) -> bool {
        match &self.del_index {
            Some(index) => index.contains(name),
            None => self.del.iter().any(|n| n == name),
        }
    }

    /// The current value of `name`, `""` when unset.
    pub fn get(&self, name: &str) -> &str {
        // `del` may still hold a name that was set again afterwards, so `add` goes first.
        if let Some(label) = self.added(name).and_then(|i| self.add[i].as_ref()) {
            return &label.value;
        }
        if self.deleted(name) {
            return "";
        }
        self.base.get(name)
    }

    /// Sets `name` to `value`; an empty value deletes the label.
    pub fn set(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            self.del(name);
            return;
        }
        if let Some(label) = self.added(name).and_then(|i| self.add[i].as_mut()) {
            value.clone_into(&mut label.value);
            return;
        }
        self.add.push(Some(Label {
            name: name.to_owned(),
            value: value.to_owned(),
        }));
        let position = self.add.len() - 1;
        match &mut self.add_index {
            Some(index) => {
                index.insert(name.to_owned(), position);
            }
            None if self.add.len() > BUILDER_INDEX_FROM => {
                let index = self
                    .add
                    .iter()
                    .enumerate()
                    .filter_map(|(i, l)| l.as_ref().map(|l| (l.name.clone(), i)))
                    .collect();
                self.add_index = Some(index);
            }
            None => {}
        }
    }

    /// Deletes `name`.
    pub fn del(&mut self, name: &str) {
        if let Some(position) = self.added(name) {
            self.add[position] = None;
            if let Some(index) = &mut self.add_index {
                index.remove(name);
            }
        }
        match &mut self.del_index {
            Some(index) => {
                index.insert(name.to_owned());
            }
            None => {
                self.del.push(name.to_owned());
                if self.del.len() > BUILDER_INDEX_FROM {
                    self.del_index = Some(std::mem::take(&mut self.del).into_iter().collect());
                }
            }
        }
    }

    /// The current labels: untouched base labels in name order, then added labels in
    /// insertion order.
    pub fn snapshot(&self) -> Vec<Label> {
        self.base
            .iter()
            .filter(|l| !self.deleted(&l.name) && self.added(&l.name).is_none())
            .cloned()
            .chain(self.add.iter().flatten().cloned())
            .collect()
    }

    /// The resulting set.
    pub fn labels(self) -> Labels {
        if self.add.is_empty() && self.del.is_empty() && self.del_index.is_none() {
            return self.base.clone();
        }
        let mut labels = self.snapshot();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        Labels(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_sorted_and_drop_empty_values() {
        let labels = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", ""), ("a", "3")]);
        assert_eq!(format!("{labels:?}"), r#"{a="3", b="2"}"#);
        assert_eq!(labels.get("a"), "3");
        assert_eq!(labels.get("c"), "");
        let emptied = Labels::from_pairs([("a", "1"), ("b", "2"), ("a", "")]);
        assert_eq!(
            format!("{emptied:?}"),
            r#"{b="2"}"#,
            "a later empty value deletes"
        );
    }

    #[test]
    fn builder_follows_prometheus() {
        let base = Labels::from_pairs([("a", "1"), ("b", "2")]);
        let mut builder = LabelsBuilder::new(&base);
        builder.set("c", "3");
        builder.set("a", "");
        assert_eq!(builder.get("a"), "");
        builder.set("a", "again");
        assert_eq!(builder.get("a"), "again", "set after del is visible");
        builder.del("b");
        let snapshot: Vec<_> = builder.snapshot().into_iter().map(|l| l.name).collect();
        assert_eq!(snapshot, ["c", "a"], "added labels come in insertion order");
        assert_eq!(format!("{:?}", builder.labels()), r#"{a="again", c="3"}"#);
    }

    /// The builder gives the same answers once its indexes are built (past
    /// [`BUILDER_INDEX_FROM`] names) as before.
    #[test]
    fn builder_with_indexes_behaves_as_without() {
        let base = Labels::from_pairs((0..40).map(|i| (format!("b{i:02}"), "base")));
        let mut builder = LabelsBuilder::new(&base);
        for i in 0..40 {
            builder.set(&format!("n{i:02}"), "new");
        }
        for i in (0..40).step_by(2) {
            builder.del(&format!("b{i:02}"));
            builder.del(&format!("n{i:02}"));
        }
        builder.set("n00", "again");
        builder.set("b00", "again");
        assert_eq!(builder.get("n00"), "again");
        assert_eq!(builder.get("n02"), "");
        assert_eq!(builder.get("n03"), "new");
        assert_eq!(builder.get("b02"), "");
        assert_eq!(builder.get("b03"), "base");
        let snapshot: Vec<String> = builder.snapshot().into_iter().map(|l| l.name).collect();
        assert_eq!(snapshot.len(), 20 + 20 + 2);
        assert_eq!(snapshot[0], "b01", "untouched base labels first");
        assert_eq!(
            &snapshot[snapshot.len() - 2..],
            ["n00", "b00"],
            "labels set again come last, in the order they were set"
        );
        assert_eq!(builder.labels().len(), 42);
    }

    /// Issue 13, finding 4 (and the scrape part of finding 10): label handling is
    /// linear. 40,000 labels, as a hostile pusher or target sends them (every name
    /// twice, in reverse order), cost at most `2 n log2 n` name comparisons; the
    /// quadratic dedupe of 552c13e (one search of the kept labels per label) took
    /// about `n^2 / 2`, 800 million.
    #[test]
    fn forty_thousand_labels_cost_n_log_n_comparisons() {
        let n = 40_000usize;
        let labels: Vec<Label> = (0..n)
            .rev()
            .map(|i| Label {
                name: format!("label_{}", i / 2),
                value: format!("{i}"),
            })
            .collect();
        let mut comparisons = 0u64;
        let normalized = normalize(labels, &mut |a, b| {
            comparisons += 1;
            a.cmp(b)
        });
        assert_eq!(normalized.len(), n / 2, "each name kept once");
        assert_eq!(
            normalized[0].value, "0",
            "the later of two equal names wins"
        );
        let bound = 2 * n as u64 * u64::from(n.ilog2() + 1);
        assert!(
            comparisons <= bound,
            "{comparisons} comparisons for {n} labels (bound {bound})"
        );
    }
}
