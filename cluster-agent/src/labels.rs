//! Label sets as Prometheus models them: a list of name/value pairs sorted by name,
//! names unique, no empty values. [`LabelsBuilder`] changes a set the way Prometheus'
//! `labels.Builder` does, which relabeling depends on for identical results.

use std::fmt;

/// The label holding a series' metric name.
pub const METRIC_NAME: &str = "__name__";
/// The label holding a target's `host:port`.
pub const ADDRESS: &str = "__address__";
/// Labels starting with this are internal to the agent and removed before sending.
pub const RESERVED_PREFIX: &str = "__";

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
        let mut labels: Vec<Label> = Vec::new();
        for (name, value) in pairs {
            let (name, value) = (name.into(), value.into());
            labels.retain(|l| l.name != name);
            if !value.is_empty() {
                labels.push(Label { name, value });
            }
        }
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        Self(labels)
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
    add: Vec<Label>,
    del: Vec<String>,
}

impl<'a> LabelsBuilder<'a> {
    /// Starts from `base`.
    pub fn new(base: &'a Labels) -> Self {
        Self {
            base,
            add: Vec::new(),
            del: Vec::new(),
        }
    }

    /// The current value of `name`, `""` when unset.
    pub fn get(&self, name: &str) -> &str {
        // `del` may still hold a name that was set again afterwards, so `add` goes first.
        if let Some(label) = self.add.iter().find(|l| l.name == name) {
            return &label.value;
        }
        if self.del.iter().any(|n| n == name) {
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
        match self.add.iter_mut().find(|l| l.name == name) {
            Some(label) => value.clone_into(&mut label.value),
            None => self.add.push(Label {
                name: name.to_owned(),
                value: value.to_owned(),
            }),
        }
    }

    /// Deletes `name`.
    pub fn del(&mut self, name: &str) {
        self.add.retain(|l| l.name != name);
        self.del.push(name.to_owned());
    }

    /// The current labels: untouched base labels in name order, then added labels in
    /// insertion order.
    pub fn snapshot(&self) -> Vec<Label> {
        self.base
            .iter()
            .filter(|l| !self.del.contains(&l.name) && !self.add.iter().any(|a| a.name == l.name))
            .cloned()
            .chain(self.add.iter().cloned())
            .collect()
    }

    /// The resulting set.
    pub fn labels(self) -> Labels {
        if self.add.is_empty() && self.del.is_empty() {
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
}
