//! Attribute lists (`Vec<KeyValue>`, where a key may repeat on the wire): looking up,
//! taking out and reading values as text for the other steps, and the pipeline's
//! configured attribute actions ([`AttributeAction`]: set, rename, delete), applied in
//! order to each record's attributes.

use std::borrow::Cow;

use kaas_proto::otlp::{AnyValue, KeyValue, any_value::Value};

/// One configured change to a record's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeAction {
    /// Sets `key` to the string `value`, replacing every existing entry of `key`.
    Set {
        /// The attribute.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Moves the value of `from` to `to` (replacing `to`'s); nothing when `from` is
    /// missing.
    Rename {
        /// The attribute renamed.
        from: String,
        /// Its new name.
        to: String,
    },
    /// Removes every entry of `key`.
    Delete {
        /// The attribute.
        key: String,
    },
}

/// Applies `actions` in order to `attributes`. Each action is one pass over the list.
pub fn apply(actions: &[AttributeAction], attributes: &mut Vec<KeyValue>) {
    for action in actions {
        match action {
            AttributeAction::Set { key, value } => {
                attributes.retain(|kv| kv.key != *key);
                attributes.push(string_attribute(key, value));
            }
            AttributeAction::Rename { from, to } => {
                if from == to {
                    continue;
                }
                if let Some(value) = take(attributes, from) {
                    attributes.retain(|kv| kv.key != *to);
                    attributes.push(KeyValue {
                        key: to.clone(),
                        value: Some(value),
                    });
                }
            }
            AttributeAction::Delete { key } => attributes.retain(|kv| kv.key != *key),
        }
    }
}

/// An attribute with a string value.
pub fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(string_value(value.to_owned())),
    }
}

/// A string value.
pub fn string_value(value: String) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(value)),
    }
}

/// The value of the first entry of `key`.
pub fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_ref().unwrap_or(&EMPTY))
}

/// Removes the first entry of `key` and returns its value (an empty value when the
/// entry had none).
pub fn take(attributes: &mut Vec<KeyValue>, key: &str) -> Option<AnyValue> {
    let index = attributes.iter().position(|kv| kv.key == key)?;
    Some(attributes.remove(index).value.unwrap_or_default())
}

/// A record with just `attributes`, for the steps' tests.
#[cfg(test)]
pub fn record_with(attributes: Vec<KeyValue>) -> kaas_proto::otlp::LogRecord {
    kaas_proto::otlp::LogRecord {
        attributes,
        ..Default::default()
    }
}

/// An empty value, for entries without one.
static EMPTY: AnyValue = AnyValue { value: None };

/// A scalar value as text (strings as they are, numbers and booleans as written in
/// JSON); `None` for arrays, maps, bytes and empty values.
pub fn scalar_text(value: &AnyValue) -> Option<Cow<'_, str>> {
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(Cow::Borrowed(s)),
        Value::IntValue(n) => Some(Cow::Owned(n.to_string())),
        Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        Value::BoolValue(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::ArrayValue(_) | Value::KvlistValue(_) | Value::BytesValue(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs.iter().map(|(k, v)| string_attribute(k, v)).collect()
    }

    fn set(key: &str, value: &str) -> AttributeAction {
        AttributeAction::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    fn rename(from: &str, to: &str) -> AttributeAction {
        AttributeAction::Rename {
            from: from.into(),
            to: to.into(),
        }
    }

    fn delete(key: &str) -> AttributeAction {
        AttributeAction::Delete { key: key.into() }
    }

    #[test]
    fn actions_apply_in_order() {
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Vec<AttributeAction>,
            &'a [(&'a str, &'a str)],
        );
        let cases: Vec<Case> = vec![
            (
                &[("a", "1")],
                vec![set("b", "2")],
                &[("a", "1"), ("b", "2")],
            ),
            (
                &[("a", "1"), ("a", "x")],
                vec![set("a", "2")],
                &[("a", "2")],
            ),
            (
                &[("a", "1"), ("b", "2")],
                vec![rename("a", "c")],
                &[("b", "2"), ("c", "1")],
            ),
            (
                &[("a", "1"), ("b", "2")],
                vec![rename("a", "b")],
                &[("b", "1")],
            ),
            (&[("b", "2")], vec![rename("a", "b")], &[("b", "2")]),
            (&[("a", "1")], vec![rename("a", "a")], &[("a", "1")]),
            (
                &[("a", "1"), ("b", "2"), ("a", "3")],
                vec![delete("a")],
                &[("b", "2")],
            ),
            (&[("a", "1")], vec![delete("missing")], &[("a", "1")]),
            (
                &[("a", "1")],
                vec![rename("a", "b"), set("a", "new"), delete("b")],
                &[("a", "new")],
            ),
        ];
        for (before, actions, after) in cases {
            let mut attributes = attrs(before);
            apply(&actions, &mut attributes);
            assert_eq!(attributes, attrs(after), "{before:?} {actions:?}");
        }
    }

    #[test]
    fn scalars_read_as_text_and_structures_do_not() {
        let value = |v| AnyValue { value: Some(v) };
        assert_eq!(
            scalar_text(&value(Value::IntValue(-3))).as_deref(),
            Some("-3")
        );
        assert_eq!(
            scalar_text(&value(Value::DoubleValue(1.5))).as_deref(),
            Some("1.5")
        );
        assert_eq!(
            scalar_text(&value(Value::BoolValue(true))).as_deref(),
            Some("true")
        );
        assert_eq!(
            scalar_text(&value(Value::StringValue("s".into()))).as_deref(),
            Some("s")
        );
        assert_eq!(scalar_text(&value(Value::BytesValue(vec![1]))), None);
        assert_eq!(scalar_text(&AnyValue { value: None }), None);
    }

    #[test]
    fn take_removes_only_the_first_entry() {
        let mut attributes = attrs(&[("a", "1"), ("a", "2")]);
        assert_eq!(take(&mut attributes, "a"), Some(string_value("1".into())));
        assert_eq!(attributes, attrs(&[("a", "2")]));
        assert_eq!(take(&mut attributes, "b"), None);
        assert_eq!(find(&attributes, "a"), Some(&string_value("2".into())));
    }
}
