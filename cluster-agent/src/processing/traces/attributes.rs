//! Span attribute rules, in order: `set` and `delete` as for log records (the shared
//! [`AttributeAction`]s: every entry of the key is replaced or removed), and `hash`,
//! which replaces every entry's value with the lower-case hex of HMAC-SHA256 over it,
//! keyed by the pipeline's hash key (from a Secret, at least
//! [`MIN_HASH_KEY_BYTES`] bytes; `ring`, the workspace's crypto provider, computes it).
//!
//! What is hashed: a string's UTF-8 bytes, a number's or boolean's text as JSON
//! writes it (so `42` and `"42"` hash alike, as a user id should however it was
//! typed), bytes as they are, and an array or a map as its protobuf encoding (so a
//! structured value is never passed on readable). An entry without a value is left
//! as it is: there is nothing to hide.
//!
//! **Without a usable key** (the Secret missing or too short, which
//! [`check_hash_key`] reports so the pipeline's status can say so), `hash` deletes the
//! attribute instead: a value the tenant asked to hide never leaves in clear.
//!
//! Each rule is one pass over the span's attributes, and the model allows at most 64
//! rules; hashing is linear in the value's size.

use std::borrow::Cow;
use std::fmt;

use kaas_pipeline::traces::processors::{
    MIN_HASH_KEY_BYTES, SpanAttributeAction, SpanAttributeRule,
};
use kaas_proto::otlp::{AnyValue, KeyValue, any_value::Value};
use prost::Message;
use ring::hmac;

use crate::processing::logs::attributes::{self, AttributeAction, scalar_text, string_value};

/// Why a pipeline's hash key cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HashKeyError {
    /// A rule hashes and no key was given.
    #[error("attributes are hashed and the hash key is missing")]
    Missing,
    /// The key is shorter than HMAC-SHA256 needs to be safe.
    #[error(
        "the hash key has {bytes} bytes, fewer than the {min} required; hashed attributes \
         are deleted until it is replaced",
        min = MIN_HASH_KEY_BYTES
    )]
    TooShort {
        /// The key's length.
        bytes: usize,
    },
}

/// Checks a pipeline's hash key: `Ok` when no rule hashes or the key is long enough.
pub fn check_hash_key(rules: &[SpanAttributeRule], key: Option<&[u8]>) -> Result<(), HashKeyError> {
    if !rules
        .iter()
        .any(|rule| rule.action == Some(SpanAttributeAction::Hash))
    {
        return Ok(());
    }
    match key {
        None => Err(HashKeyError::Missing),
        Some(key) if key.len() < MIN_HASH_KEY_BYTES => {
            Err(HashKeyError::TooShort { bytes: key.len() })
        }
        Some(_) => Ok(()),
    }
}

/// HMAC-SHA256 under a pipeline's key.
pub struct AttributeHasher(hmac::Key);

impl AttributeHasher {
    /// A hasher with `key` (any length; [`check_hash_key`] enforces the minimum).
    pub fn new(key: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// The lower-case hex of HMAC-SHA256 over `data`.
    pub fn hex(&self, data: &[u8]) -> String {
        hex::encode(hmac::sign(&self.0, data).as_ref())
    }
}

impl fmt::Debug for AttributeHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AttributeHasher(***)")
    }
}

/// One compiled rule.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// `set` or `delete`.
    Change(AttributeAction),
    /// `hash` of this key.
    Hash(String),
}

/// A pipeline's attribute rules with their hash key.
#[derive(Debug, Default)]
pub struct SpanAttributeRules {
    steps: Vec<Step>,
    hasher: Option<AttributeHasher>,
}

impl SpanAttributeRules {
    /// The validated `rules` with the hash key's bytes; a key that
    /// [`check_hash_key`] refuses is not used (`hash` then deletes).
    pub fn new(rules: &[SpanAttributeRule], key: Option<&[u8]>) -> Self {
        let steps = rules.iter().filter_map(step).collect();
        let hasher = key
            .filter(|key| key.len() >= MIN_HASH_KEY_BYTES)
            .map(AttributeHasher::new);
        Self { steps, hasher }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies the rules in order to `attributes`.
    pub fn apply(&self, attributes: &mut Vec<KeyValue>) {
        for step in &self.steps {
            match step {
                Step::Change(action) => attributes::apply(std::slice::from_ref(action), attributes),
                Step::Hash(key) => match &self.hasher {
                    Some(hasher) => {
                        for entry in attributes.iter_mut().filter(|kv| kv.key == *key) {
                            hash_entry(hasher, entry);
                        }
                    }
                    None => attributes.retain(|kv| kv.key != *key),
                },
            }
        }
    }
}

/// A validated rule as a step; `None` only for a rule that never passed validation.
fn step(rule: &SpanAttributeRule) -> Option<Step> {
    let key = rule.key.clone();
    Some(match rule.action? {
        SpanAttributeAction::Set => Step::Change(AttributeAction::Set {
            key,
            value: rule.value.clone()?,
        }),
        SpanAttributeAction::Delete => Step::Change(AttributeAction::Delete { key }),
        SpanAttributeAction::Hash => Step::Hash(key),
    })
}

/// Replaces the entry's value with its hash; an entry without a value stays.
fn hash_entry(hasher: &AttributeHasher, entry: &mut KeyValue) {
    let Some(value) = entry.value.as_ref() else {
        return;
    };
    let Some(input) = hash_input(value) else {
        return;
    };
    let hashed = hasher.hex(&input);
    entry.value = Some(string_value(hashed));
}

/// The bytes a value is hashed as (see the module documentation).
fn hash_input(value: &AnyValue) -> Option<Cow<'_, [u8]>> {
    Some(match value.value.as_ref()? {
        Value::BytesValue(bytes) => Cow::Borrowed(bytes.as_slice()),
        Value::ArrayValue(_) | Value::KvlistValue(_) => Cow::Owned(value.encode_to_vec()),
        Value::StringValue(_)
        | Value::IntValue(_)
        | Value::DoubleValue(_)
        | Value::BoolValue(_) => match scalar_text(value)? {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        },
    })
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::{ArrayValue, KeyValueList};

    use super::*;
    use crate::processing::logs::attributes::string_attribute;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn rule(action: SpanAttributeAction, key: &str, value: Option<&str>) -> SpanAttributeRule {
        SpanAttributeRule {
            action: Some(action),
            key: key.to_owned(),
            value: value.map(str::to_owned),
        }
    }

    fn value(value: Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(value) })
    }

    /// RFC 4231's HMAC-SHA256 test cases 1, 2 and 6 (the last with a key longer than
    /// the block size).
    #[test]
    fn the_hash_is_rfc_4231_hmac_sha256_in_lower_case_hex() {
        let cases: [(&[u8], &[u8], &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, data, expected) in cases {
            assert_eq!(AttributeHasher::new(key).hex(data), expected);
        }
    }

    #[test]
    fn rules_set_delete_and_hash_in_order() {
        let rules = SpanAttributeRules::new(
            &[
                rule(SpanAttributeAction::Hash, "enduser.id", None),
                rule(
                    SpanAttributeAction::Delete,
                    "http.request.header.cookie",
                    None,
                ),
                rule(
                    SpanAttributeAction::Set,
                    "deployment.environment",
                    Some("prod"),
                ),
            ],
            Some(KEY),
        );
        let mut attributes = vec![
            string_attribute("enduser.id", "alice"),
            string_attribute("http.request.header.cookie", "secret"),
            string_attribute("deployment.environment", "dev"),
            string_attribute("enduser.id", "alice"),
            string_attribute("url.path", "/cart"),
        ];
        rules.apply(&mut attributes);
        let alice = AttributeHasher::new(KEY).hex(b"alice");
        assert_eq!(alice.len(), 64);
        assert!(
            alice
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert_eq!(
            attributes,
            vec![
                string_attribute("enduser.id", &alice),
                string_attribute("enduser.id", &alice),
                string_attribute("url.path", "/cart"),
                string_attribute("deployment.environment", "prod"),
            ]
        );
    }

    #[test]
    fn every_kind_of_value_is_hashed_and_none_passes_in_clear() {
        let rules =
            SpanAttributeRules::new(&[rule(SpanAttributeAction::Hash, "k", None)], Some(KEY));
        let hasher = AttributeHasher::new(KEY);
        let array = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![string_value("a".into())],
            })),
        };
        let map = AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: vec![string_attribute("user", "alice")],
            })),
        };
        let cases = [
            (value(Value::StringValue("42".into())), hasher.hex(b"42")),
            (value(Value::IntValue(42)), hasher.hex(b"42")),
            (value(Value::BoolValue(true)), hasher.hex(b"true")),
            (value(Value::DoubleValue(1.5)), hasher.hex(b"1.5")),
            (value(Value::BytesValue(vec![0, 1])), hasher.hex(&[0, 1])),
            (Some(array.clone()), hasher.hex(&array.encode_to_vec())),
            (Some(map.clone()), hasher.hex(&map.encode_to_vec())),
        ];
        for (before, hashed) in cases {
            let mut attributes = vec![KeyValue {
                key: "k".into(),
                value: before.clone(),
            }];
            rules.apply(&mut attributes);
            assert_eq!(
                attributes,
                vec![string_attribute("k", &hashed)],
                "{before:?}"
            );
        }
        let mut empty = vec![KeyValue {
            key: "k".into(),
            value: None,
        }];
        rules.apply(&mut empty);
        assert_eq!(empty[0].value, None);
    }

    #[test]
    fn without_a_usable_key_hashed_attributes_are_deleted() {
        let hash = [rule(SpanAttributeAction::Hash, "enduser.id", None)];
        let short = &KEY[..MIN_HASH_KEY_BYTES - 1];
        assert_eq!(check_hash_key(&hash, Some(KEY)), Ok(()));
        assert_eq!(check_hash_key(&hash, None), Err(HashKeyError::Missing));
        assert_eq!(
            check_hash_key(&hash, Some(short)),
            Err(HashKeyError::TooShort { bytes: 31 })
        );
        assert_eq!(check_hash_key(&[], None), Ok(()), "no rule hashes");
        for key in [None, Some(short)] {
            let rules = SpanAttributeRules::new(&hash, key);
            let mut attributes = vec![
                string_attribute("enduser.id", "alice"),
                string_attribute("url.path", "/"),
            ];
            rules.apply(&mut attributes);
            assert_eq!(attributes, vec![string_attribute("url.path", "/")]);
        }
        assert!(!format!("{:?}", AttributeHasher::new(KEY)).contains("0123"));
    }
}
