//! Failure dumps of import tasks: CSV with the rows Anaplan could not import, each with a
//! `_Status_` column, the data columns as uploaded, `_Line_` (the row's line in the uploaded
//! file) and one or more `_Error_N_` columns. Each row becomes a `DumpRowError` the engine can
//! tie back to the record it came from.

use super::error::AnaplanError;
use crate::secret::excerpt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRowError {
    /// The line of the uploaded file the row came from (`_Line_`), when the dump says.
    pub line: Option<u64>,
    /// `_Status_` (`E` for error, `W` for warning, …).
    pub status: String,
    /// Every non-empty `_Error_N_` in order.
    pub errors: Vec<String>,
    /// The data columns as (header, value).
    pub values: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Status,
    Line,
    Error,
    Data,
}

fn column(header: &str) -> Column {
    let h = header.trim();
    if h.eq_ignore_ascii_case("_Status_") {
        Column::Status
    } else if h.eq_ignore_ascii_case("_Line_") {
        Column::Line
    } else if is_error_header(h.as_bytes()) {
        Column::Error
    } else {
        Column::Data
    }
}

/// `_Error_<digits>_`, compared as bytes so no slice can fall inside a character.
fn is_error_header(h: &[u8]) -> bool {
    match (h.get(..7), h.split_last()) {
        (Some(prefix), Some((b'_', rest))) if h.len() > 8 => {
            prefix.eq_ignore_ascii_case(b"_Error_")
                && rest
                    .get(7..)
                    .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
        }
        _ => false,
    }
}

/// Parses a whole dump (the chunks concatenated). An empty body is an empty dump.
pub fn parse_dump(body: &[u8]) -> Result<Vec<DumpRowError>, AnaplanError> {
    let shape = |detail: String| AnaplanError::DumpShape {
        detail,
        body: excerpt(body),
    };
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body);
    let headers: Vec<String> = reader
        .byte_headers()
        .map_err(|e| shape(format!("header line: {e}")))?
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    let kinds: Vec<Column> = headers.iter().map(|h| column(h)).collect();
    if !kinds.contains(&Column::Error) {
        return Err(shape(format!(
            "no _Error_1_ column in the header ({} columns)",
            headers.len()
        )));
    }
    let mut rows = Vec::new();
    for (n, record) in reader.byte_records().enumerate() {
        let record = record.map_err(|e| shape(format!("row {}: {e}", n + 1)))?;
        let mut row = DumpRowError {
            line: None,
            status: String::new(),
            errors: Vec::new(),
            values: Vec::new(),
        };
        for (i, raw) in record.iter().enumerate() {
            let value = String::from_utf8_lossy(raw).into_owned();
            match kinds.get(i).copied().unwrap_or(Column::Data) {
                Column::Status => row.status = value,
                Column::Line => {
                    row.line = Some(value.trim().parse().map_err(|_| {
                        shape(format!(
                            "row {}: _Line_ {value:?} is not a line number",
                            n + 1
                        ))
                    })?)
                }
                Column::Error if value.is_empty() => {}
                Column::Error => row.errors.push(value),
                Column::Data => {
                    let header = headers.get(i).cloned().unwrap_or_default();
                    row.values.push((header, value));
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_with_status_line_and_errors() {
        let dump = "\u{feff}_Status_,Code,Amount,_Line_,_Error_1_,_Error_2_\n\
                    E,006A,abc,2,\"Invalid number: abc\",\n\
                    E,006B,,3,Item not found,\"second, with comma\"\n";
        let rows = parse_dump(dump.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, Some(2));
        assert_eq!(rows[0].status, "E");
        assert_eq!(rows[0].errors, ["Invalid number: abc"]);
        assert_eq!(
            rows[0].values,
            [
                ("Code".into(), "006A".into()),
                ("Amount".into(), "abc".into())
            ]
        );
        assert_eq!(rows[1].errors, ["Item not found", "second, with comma"]);
    }

    #[test]
    fn empty_dump_and_header_only() {
        assert!(parse_dump(b"").unwrap().is_empty());
        assert!(parse_dump(b"\n").unwrap().is_empty());
        assert!(
            parse_dump(b"_Status_,Code,_Line_,_Error_1_\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unexpected_shapes_are_typed_errors() {
        let err = parse_dump(b"<html><body>Not Found</body></html>").unwrap_err();
        assert!(matches!(err, AnaplanError::DumpShape { .. }));
        assert!(err.to_string().contains("Not Found"), "{err}");
        let err = parse_dump(b"_Status_,_Line_,_Error_1_\nE,two,bad\n").unwrap_err();
        assert!(err.to_string().contains("two"), "{err}");
        // Ragged rows are read as far as they go.
        let rows = parse_dump(b"_Status_,Code,_Line_,_Error_1_\nE,X\n").unwrap();
        assert_eq!(rows[0].values, [("Code".into(), "X".into())]);
        assert_eq!(rows[0].line, None);
    }
}
