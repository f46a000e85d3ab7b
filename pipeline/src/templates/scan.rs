//! Walking a template's pipeline spec (kept as JSON until it is filled in): finding
//! every placeholder with the field it stands in, refusing the places no placeholder
//! may stand, and filling the spec with values in one pass.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::errors::{FieldErrors, field, index, key};
use crate::secret::SecretKeyRef;

use super::placeholder::{Placeholder, PlaceholderType};
use super::syntax::{Segment, names, parse, substitute};

/// One place a placeholder stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaceholderUse {
    /// The placeholder's name.
    pub name: String,
    /// The field, e.g. `spec.template.spec.output.otlp.endpoint`.
    pub path: String,
}

/// What a placeholder is replaced with while a spec is filled.
#[derive(Clone, Debug)]
pub(crate) enum Fill {
    /// Text, inserted as it is.
    Text(String),
    /// A reference: the `value` holding the placeholder becomes
    /// `valueFrom.secretKeyRef` with it.
    Secret(SecretKeyRef),
}

/// `base.name` for a field name, `base["name"]` for anything else (a map key that is
/// not a plain name, such as a label `app.kubernetes.io/name`).
pub(crate) fn child(base: &str, name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        field(base, name)
    } else {
        key(base, name)
    }
}

/// `path` with every `["key"]` written `.key`, so paths written either way compare.
pub(crate) fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(start) = rest.find("[\"") {
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..];
        match inner.find("\"]") {
            Some(end) => {
                out.push('.');
                out.push_str(&inner[..end]);
                rest = &inner[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `path` is `prefix` or a field, item or key below it.
pub(crate) fn is_at_or_below(path: &str, prefix: &str) -> bool {
    let (path, prefix) = (normalize(path), normalize(prefix));
    path == prefix
        || path
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// `path` without a trailing `[n]`, when it has one.
fn list_of(path: &str) -> Option<&str> {
    let open = path.strip_suffix(']')?.rfind('[')?;
    path[open + 1..path.len() - 1]
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then_some(&path[..open])
}

/// The last field name of `path`.
fn last_field(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Why no placeholder may stand at `path`, if none may.
fn forbidden_place(path: &str) -> Option<&'static str> {
    let parent = path.rsplit_once('.').map(|(parent, _)| parent);
    let in_list_named = |list: &str| {
        list_of(path).is_some_and(|base| last_field(base) == list)
            || parent
                .and_then(list_of)
                .is_some_and(|base| last_field(base) == list)
    };
    if last_field(path) == "name" && parent.is_some_and(|_| in_list_named("headers")) {
        return Some(
            "a header name cannot be a placeholder: the agent's and the provider's reserved \
             headers are refused where the template is written; make the header's value the \
             placeholder",
        );
    }
    // Relabel rules also take Prometheus' own field names.
    let label_name = matches!(last_field(path), "targetLabel" | "target_label")
        || (list_of(path).is_some()
            && ["sourceLabels", "source_labels", "labels"]
                .into_iter()
                .any(in_list_named))
        || (last_field(path) == "key" && in_list_named("matchExpressions"));
    label_name.then_some(
        "a label name cannot be a placeholder: reserved and sealed labels are refused where the \
         template is written; make a label's value the placeholder",
    )
}

/// Whether `path` (a `value` field) holds a credential or TLS material, which only a
/// secret placeholder may fill. A CA certificate is public: any placeholder may.
fn is_credential(path: &str) -> bool {
    let normalized = normalize(path);
    let parts: Vec<&str> = normalized.split('.').collect();
    parts.last() == Some(&"value")
        && !parts.ends_with(&["tls", "ca", "value"])
        && parts
            .iter()
            .any(|part| matches!(*part, "authentication" | "tls" | "hashKey"))
}

/// Finds every placeholder in `spec` (the template's pipeline spec at `base`), checking
/// its syntax and where it stands against the `declared` placeholders.
pub(crate) fn scan(
    spec: &Value,
    base: &str,
    declared: &BTreeMap<&str, &Placeholder>,
    errors: &mut FieldErrors,
) -> Vec<PlaceholderUse> {
    let mut uses = Vec::new();
    walk(spec, base, None, declared, &mut uses, errors);
    uses
}

fn walk(
    value: &Value,
    path: &str,
    object: Option<&Map<String, Value>>,
    declared: &BTreeMap<&str, &Placeholder>,
    uses: &mut Vec<PlaceholderUse>,
    errors: &mut FieldErrors,
) {
    match value {
        Value::Object(map) => {
            for (name, child_value) in map {
                let child_path = child(path, name);
                if name.contains(super::syntax::OPEN) {
                    errors.add(
                        &child_path,
                        "placeholders stand in values only, never in field names or map keys",
                    );
                }
                walk(child_value, &child_path, Some(map), declared, uses, errors);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &index(path, i), None, declared, uses, errors);
            }
        }
        Value::String(text) => check_string(text, path, object, declared, uses, errors),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn check_string(
    text: &str,
    path: &str,
    object: Option<&Map<String, Value>>,
    declared: &BTreeMap<&str, &Placeholder>,
    uses: &mut Vec<PlaceholderUse>,
    errors: &mut FieldErrors,
) {
    let segments = match parse(text) {
        Ok(segments) => segments,
        Err(reason) => {
            errors.add(path, reason);
            return;
        }
    };
    let found: Vec<&str> = names(&segments).collect();
    if found.is_empty() {
        return;
    }
    if let Some(reason) = forbidden_place(path) {
        errors.add(path, reason);
    }
    for name in found {
        uses.push(PlaceholderUse {
            name: name.to_owned(),
            path: path.to_owned(),
        });
        let Some(placeholder) = declared.get(name) else {
            errors.add(
                path,
                format!("%{{{name}}} is not declared: add it to spec.placeholders"),
            );
            continue;
        };
        let secret = placeholder.type_ == PlaceholderType::Secret;
        if secret && segments.len() != 1 {
            errors.add(
                path,
                format!(
                    "the secret placeholder %{{{name}}} must be the whole value: it becomes a \
                     reference to a Secret key, never part of a text"
                ),
            );
        } else if secret
            && (last_field(path) != "value" || object.is_some_and(|o| o.contains_key("valueFrom")))
        {
            errors.add(
                path,
                format!(
                    "the secret placeholder %{{{name}}} stands only as the value of a \
                     credential, TLS material or header, where valueFrom.secretKeyRef is accepted \
                     (and valueFrom is not set beside it)"
                ),
            );
        } else if !secret && is_credential(path) {
            errors.add(
                path,
                format!(
                    "credentials and TLS material come from Secrets only: declare %{{{name}}} \
                     with type secret"
                ),
            );
        }
    }
}

/// `spec` with every placeholder replaced by `fill(name)`, in one pass: a string made
/// of one secret placeholder, as a `value`, turns its object's `value` into
/// `valueFrom.secretKeyRef`. Only for a spec [`scan`] accepted.
pub(crate) fn fill(spec: &Value, fill: &dyn Fn(&str) -> Fill) -> Value {
    match spec {
        Value::Object(map) => {
            let mut out = Map::new();
            for (name, value) in map {
                if name == "value"
                    && let Some(Fill::Secret(reference)) = whole_placeholder(value).map(fill)
                {
                    let reference = serde_json::to_value(reference).unwrap_or(Value::Null);
                    let mut from = Map::new();
                    from.insert("secretKeyRef".to_owned(), reference);
                    out.insert("valueFrom".to_owned(), Value::Object(from));
                    continue;
                }
                out.insert(name.clone(), self::fill(value, fill));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| self::fill(v, fill)).collect()),
        Value::String(text) => match parse(text) {
            Ok(segments) => {
                let values: BTreeMap<&str, String> = names(&segments)
                    .map(|name| match fill(name) {
                        Fill::Text(text) => (name, text),
                        Fill::Secret(_) => (name, String::new()),
                    })
                    .collect();
                Value::String(substitute(&segments, |name| {
                    values.get(name).map_or("", String::as_str)
                }))
            }
            Err(_) => spec.clone(),
        },
        other => other.clone(),
    }
}

/// The name of the one placeholder `value` consists of, if it is exactly one.
fn whole_placeholder(value: &Value) -> Option<&str> {
    let text = value.as_str()?;
    match parse(text).ok()?.as_slice() {
        [Segment::Placeholder(_)] => text.strip_prefix("%{")?.strip_suffix('}'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compare_whichever_way_keys_are_written() {
        assert_eq!(
            normalize(r#"a.labels["app.kubernetes.io/name"]"#),
            "a.labels.app.kubernetes.io/name"
        );
        assert!(is_at_or_below("spec.output.otlp.tls", "spec.output.otlp"));
        assert!(is_at_or_below(
            "spec.output.otlp.headers[0]",
            "spec.output.otlp.headers"
        ));
        assert!(!is_at_or_below("spec.output.otlpx", "spec.output.otlp"));
        assert_eq!(child("spec", "matchLabels"), "spec.matchLabels");
        assert_eq!(
            child("m", "app.kubernetes.io/name"),
            r#"m["app.kubernetes.io/name"]"#
        );
    }

    #[test]
    fn places_no_placeholder_may_stand() {
        for path in [
            "spec.output.otlp.headers[0].name",
            "spec.processors.relabelConfigs[1].targetLabel",
            "spec.processors.relabelConfigs[1].sourceLabels[0]",
            "spec.output.loki.labels[2]",
            "spec.clusterSelector.matchExpressions[0].key",
        ] {
            assert!(forbidden_place(path).is_some(), "{path}");
        }
        for path in [
            "spec.output.otlp.headers[0].value",
            "spec.output.otlp.endpoint",
            "spec.processors.relabelConfigs[1].replacement",
            "spec.input.static.targets[0].labels.team",
            "spec.clusterSelector.matchExpressions[0].values[0]",
        ] {
            assert!(forbidden_place(path).is_none(), "{path}");
        }
        assert!(is_credential(
            "spec.output.otlp.authentication.basic.password.value"
        ));
        assert!(is_credential("spec.processors.hashKey.value"));
        assert!(is_credential("spec.output.otlp.tls.key.value"));
        assert!(!is_credential("spec.output.otlp.tls.ca.value"));
        assert!(!is_credential("spec.output.otlp.headers[0].value"));
    }
}
