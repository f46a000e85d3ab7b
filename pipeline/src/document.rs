//! Reading pipelines from text: YAML or JSON, several documents per file (`---`), a
//! JSON array, or a Kubernetes `List`. Every document is parsed and validated on its own,
//! so one bad document does not hide problems in the others.

use serde_yaml::Value;

use crate::errors::{FieldError, ValidationErrors};
use crate::pipeline::{API_GROUP_VERSION, KIND, MetricPipeline, ValidatedPipeline, validate};
use crate::policy::ValidationContext;

/// The top-level fields of a `MetricPipeline` object.
pub(crate) const ENVELOPE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// The outcome for one resource found in a file.
#[derive(Debug)]
pub struct Document {
    /// Where in the file: `document 2`, or `document 1, item 3` inside a list.
    pub location: String,
    /// `metadata.name`, when the document has one.
    pub name: Option<String>,
    /// The validated pipeline, or every problem found.
    pub outcome: Result<ValidatedPipeline, ValidationErrors>,
}

/// Parses and validates every pipeline in `text` in `context`. Empty documents are
/// skipped. A YAML syntax error ends the file there (the parser cannot resynchronise)
/// and is reported as one more failed document.
pub fn parse_pipelines(text: &str, context: &ValidationContext) -> Vec<Document> {
    let mut documents = Vec::new();
    for (i, deserializer) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let location = format!("document {}", i + 1);
        let value = match crate::yaml::bounded_value(
            deserializer,
            crate::yaml::MAX_EXPANDED_DOCUMENT_BYTES,
        ) {
            Ok(value) => value,
            Err(error) => {
                documents.push(Document {
                    location,
                    name: None,
                    outcome: Err(ValidationErrors::single(
                        "",
                        format!("not valid YAML or JSON: {error}"),
                    )),
                });
                break;
            }
        };
        match value {
            Value::Null => {}
            Value::Sequence(items) => {
                documents.extend(items.into_iter().enumerate().map(|(j, item)| {
                    parse_value(format!("{location}, item {}", j + 1), item, context)
                }))
            }
            Value::Mapping(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = map
                    .get("items")
                    .and_then(Value::as_sequence)
                    .cloned()
                    .unwrap_or_default();
                documents.extend(items.into_iter().enumerate().map(|(j, item)| {
                    parse_value(format!("{location}, item {}", j + 1), item, context)
                }));
            }
            value => documents.push(parse_value(location, value, context)),
        }
    }
    documents
}

/// Parses and validates one `MetricPipeline` given as a YAML or JSON value, in
/// `context`.
pub fn parse_value(location: String, value: Value, context: &ValidationContext) -> Document {
    let mut errors = Vec::new();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    match &value {
        Value::Mapping(map) => {
            check_envelope_field(map, "apiVersion", API_GROUP_VERSION, &mut errors);
            check_envelope_field(map, "kind", KIND, &mut errors);
            for key in map.keys() {
                let key = key.as_str().unwrap_or("<non-string key>");
                if !ENVELOPE_FIELDS.contains(&key) {
                    errors.push(FieldError {
                        path: key.to_owned(),
                        reason: format!(
                            "unknown field; a MetricPipeline has {}",
                            ENVELOPE_FIELDS.join(", ")
                        ),
                    });
                }
            }
        }
        _ => {
            errors.push(FieldError {
                path: String::new(),
                reason: "expected a MetricPipeline object".into(),
            });
            return Document {
                location,
                name,
                outcome: Err(ValidationErrors(errors)),
            };
        }
    }
    let outcome = match serde_path_to_error::deserialize::<_, MetricPipeline>(value) {
        Err(error) => {
            errors.push(shape_error(&error));
            Err(ValidationErrors(errors))
        }
        Ok(pipeline) => match validate(&pipeline, context) {
            Ok(valid) if errors.is_empty() => Ok(valid),
            Ok(_) => Err(ValidationErrors(errors)),
            Err(invalid) => {
                errors.extend(invalid.0);
                Err(ValidationErrors(errors))
            }
        },
    };
    Document {
        location,
        name,
        outcome,
    }
}

fn check_envelope_field(
    map: &serde_yaml::Mapping,
    name: &str,
    expected: &str,
    errors: &mut Vec<FieldError>,
) {
    let reason = match map.get(name) {
        None => format!("required; set it to {expected}"),
        Some(Value::String(found)) if found == expected => return,
        Some(Value::String(found)) => format!("{found:?} is not {expected}"),
        Some(_) => format!("must be the string {expected}"),
    };
    errors.push(FieldError {
        path: name.to_owned(),
        reason,
    });
}

/// Turns a serde error into a field error at the path where it happened (for an
/// unknown field, the path ends with that field).
fn shape_error(error: &serde_path_to_error::Error<serde_yaml::Error>) -> FieldError {
    let path = error.path().to_string();
    FieldError {
        path: if path == "." { String::new() } else { path },
        reason: error.inner().to_string(),
    }
}
