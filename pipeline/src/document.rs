//! Reading pipelines from text: YAML or JSON, several documents per file (`---`), a
//! JSON array, or a Kubernetes `List`. Every document is parsed and validated on its own,
//! so one bad document does not hide problems in the others. [`parse_documents`] reads
//! every kind (`MetricPipeline`, `LogPipeline`, `TracePipeline`), each by its `kind`;
//! [`parse_pipelines`] only metric pipelines.

use serde_yaml::Value;

use crate::errors::{FieldError, ValidationErrors};
use crate::logs::{LOG_KIND, ValidatedLogPipeline, validate_log_pipeline};
use crate::pipeline::{API_GROUP_VERSION, KIND, ValidatedPipeline, validate};
use crate::policy::ValidationContext;
use crate::traces::{TRACE_KIND, ValidatedTracePipeline, validate_trace_pipeline};

/// The top-level fields of a pipeline object of any kind.
pub(crate) const ENVELOPE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// The outcome for one resource found in a file: by default a `MetricPipeline`
/// ([`parse_pipelines`]), or a pipeline of any kind ([`parse_documents`]).
#[derive(Debug)]
pub struct Document<T = ValidatedPipeline> {
    /// Where in the file: `document 2`, or `document 1, item 3` inside a list.
    pub location: String,
    /// `metadata.name`, when the document has one.
    pub name: Option<String>,
    /// The validated pipeline, or every problem found.
    pub outcome: Result<T, ValidationErrors>,
}

/// A validated pipeline of any kind.
#[derive(Clone, Debug)]
pub enum ValidatedResource {
    /// A `MetricPipeline` (boxed, like the other: each is large).
    Metric(Box<ValidatedPipeline>),
    /// A `LogPipeline`.
    Log(Box<ValidatedLogPipeline>),
    /// A `TracePipeline`.
    Trace(Box<ValidatedTracePipeline>),
}

impl ValidatedResource {
    /// `kind` as written in documents.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Metric(_) => KIND,
            Self::Log(_) => LOG_KIND,
            Self::Trace(_) => TRACE_KIND,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        match self {
            Self::Metric(pipeline) => pipeline.name(),
            Self::Log(pipeline) => pipeline.name(),
            Self::Trace(pipeline) => pipeline.name(),
        }
    }
}

/// The kinds [`parse_documents`] reads.
pub const PIPELINE_KINDS: &[&str] = &[KIND, LOG_KIND, TRACE_KIND];

/// Parses and validates every `MetricPipeline` in `text` in `context`; a document of
/// another kind is refused. Empty documents are skipped. A YAML syntax error ends the
/// file there (the parser cannot resynchronise) and is reported as one more failed
/// document.
pub fn parse_pipelines(text: &str, context: &ValidationContext) -> Vec<Document> {
    parse_text(text, context, parse_value)
}

/// Parses and validates every pipeline of any kind ([`PIPELINE_KINDS`]) in `text`, each
/// by its `kind`, as [`parse_pipelines`] does for metric pipelines.
pub fn parse_documents(
    text: &str,
    context: &ValidationContext,
) -> Vec<Document<ValidatedResource>> {
    parse_text(text, context, parse_any_value)
}

pub(crate) fn parse_text<T>(
    text: &str,
    context: &ValidationContext,
    parse: fn(String, Value, &ValidationContext) -> Document<T>,
) -> Vec<Document<T>> {
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
            Value::Sequence(items) => documents.extend(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(j, item)| parse(format!("{location}, item {}", j + 1), item, context)),
            ),
            Value::Mapping(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = map
                    .get("items")
                    .and_then(Value::as_sequence)
                    .cloned()
                    .unwrap_or_default();
                documents.extend(
                    items.into_iter().enumerate().map(|(j, item)| {
                        parse(format!("{location}, item {}", j + 1), item, context)
                    }),
                );
            }
            value => documents.push(parse(location, value, context)),
        }
    }
    documents
}

/// Parses and validates one `MetricPipeline` given as a YAML or JSON value, in
/// `context`.
pub fn parse_value(location: String, value: Value, context: &ValidationContext) -> Document {
    parse_kind(location, value, context, &[KIND], validate)
}

/// Parses and validates one `LogPipeline` given as a YAML or JSON value, in `context`;
/// a document of another kind is refused.
pub fn parse_log_value(
    location: String,
    value: Value,
    context: &ValidationContext,
) -> Document<ValidatedLogPipeline> {
    parse_kind(location, value, context, &[LOG_KIND], validate_log_pipeline)
}

/// Parses and validates one `TracePipeline` given as a YAML or JSON value, in
/// `context`; a document of another kind is refused.
pub fn parse_trace_value(
    location: String,
    value: Value,
    context: &ValidationContext,
) -> Document<ValidatedTracePipeline> {
    parse_kind(
        location,
        value,
        context,
        &[TRACE_KIND],
        validate_trace_pipeline,
    )
}

/// Parses and validates one pipeline of any kind given as a YAML or JSON value, by its
/// `kind` (a document without a known kind is read as a `MetricPipeline`, so its other
/// problems are reported too).
pub fn parse_any_value(
    location: String,
    value: Value,
    context: &ValidationContext,
) -> Document<ValidatedResource> {
    match value.get("kind").and_then(Value::as_str) {
        Some(LOG_KIND) => parse_kind(
            location,
            value,
            context,
            PIPELINE_KINDS,
            validate_log_pipeline,
        )
        .map(|p| ValidatedResource::Log(Box::new(p))),
        Some(TRACE_KIND) => parse_kind(
            location,
            value,
            context,
            PIPELINE_KINDS,
            validate_trace_pipeline,
        )
        .map(|p| ValidatedResource::Trace(Box::new(p))),
        _ => parse_kind(location, value, context, PIPELINE_KINDS, validate)
            .map(|p| ValidatedResource::Metric(Box::new(p))),
    }
}

impl<T> Document<T> {
    /// The same document with its validated pipeline turned into another type.
    fn map<U>(self, into: impl FnOnce(T) -> U) -> Document<U> {
        Document {
            location: self.location,
            name: self.name,
            outcome: self.outcome.map(into),
        }
    }
}

/// Parses a resource of type `R`, accepting the `kinds` listed, and validates it.
pub(crate) fn parse_kind<R: serde::de::DeserializeOwned, T>(
    location: String,
    value: Value,
    context: &ValidationContext,
    kinds: &[&str],
    validate: fn(&R, &ValidationContext) -> Result<T, ValidationErrors>,
) -> Document<T> {
    let mut errors = Vec::new();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let kinds_text = kinds.join(" or ");
    let Value::Mapping(map) = &value else {
        errors.push(FieldError {
            path: String::new(),
            reason: format!("expected a {kinds_text} object"),
        });
        return Document {
            location,
            name,
            outcome: Err(ValidationErrors(errors)),
        };
    };
    check_envelope_field(map, "apiVersion", &[API_GROUP_VERSION], &mut errors);
    check_envelope_field(map, "kind", kinds, &mut errors);
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .filter(|kind| kinds.contains(kind))
        .unwrap_or(KIND);
    for key in map.keys() {
        let key = key.as_str().unwrap_or("<non-string key>");
        if !ENVELOPE_FIELDS.contains(&key) {
            errors.push(FieldError {
                path: key.to_owned(),
                reason: format!("unknown field; a {kind} has {}", ENVELOPE_FIELDS.join(", ")),
            });
        }
    }
    let outcome = match serde_path_to_error::deserialize::<_, R>(value) {
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
    accepted: &[&str],
    errors: &mut Vec<FieldError>,
) {
    let expected = accepted.join(" or ");
    let reason = match map.get(name) {
        None => format!("required; set it to {expected}"),
        Some(Value::String(found)) if accepted.contains(&found.as_str()) => return,
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
