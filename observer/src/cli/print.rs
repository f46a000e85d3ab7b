//! Printing API results: aligned tables for people, JSON and YAML for programs, and
//! errors with every field path.

use std::io::{self, Write};

use serde::Serialize;

use super::client::ClientError;
use super::{CommandError, Format};

/// Prints `rows` under `headers`, each column as wide as its widest cell, two spaces
/// apart (the `kubectl get` layout).
pub fn table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &mut headers.iter().copied())?;
    for row in rows {
        line(out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// Prints `value` as JSON or YAML; `false` for table format (the caller prints a table).
pub fn structured<T: Serialize + ?Sized>(
    out: &mut dyn Write,
    format: Format,
    value: &T,
) -> Result<bool, CommandError> {
    match format {
        Format::Table => Ok(false),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, value)?;
            writeln!(out)?;
            Ok(true)
        }
        Format::Yaml => {
            out.write_all(serde_yaml::to_string(value)?.as_bytes())?;
            Ok(true)
        }
    }
}

/// How long ago `ms` (Unix milliseconds) was, the way `kubectl` prints ages: `45s`,
/// `12m`, `5h`, `3d`.
pub fn age(ms: i64, now_ms: i64) -> String {
    let seconds = (now_ms - ms).max(0) / 1000;
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 120 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `k=v,k2=v2`, or `<none>`.
pub fn labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        "<none>".to_owned()
    } else {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Prints a failed request: the reason, then each invalid field on its own line.
pub fn client_error(error: &ClientError, err: &mut dyn Write) -> io::Result<()> {
    writeln!(err, "error: {error}")?;
    if let ClientError::Api { fields, .. } = error {
        field_problems(fields, err)?;
    }
    Ok(())
}

/// `  path: message` per field.
pub fn field_problems(
    fields: &[crate::api::model::FieldProblem],
    out: &mut dyn Write,
) -> io::Result<()> {
    for field in fields {
        if field.path.is_empty() {
            writeln!(out, "  {}", field.message)?;
        } else {
            writeln!(out, "  {}: {}", field.path, field.message)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["NAME", "STATE"],
            &[
                vec!["a-long-name".into(), "active".into()],
                vec!["b".into(), "silent".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME         STATE\na-long-name  active\nb            silent\n"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(0, 30_000), "30s");
        assert_eq!(age(0, 600_000), "10m");
        assert_eq!(age(0, 5 * 3_600_000), "5h");
        assert_eq!(age(0, 3 * 86_400_000), "3d");
    }
}
