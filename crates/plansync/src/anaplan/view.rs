//! Cells read from a view (or a module's default view), from either of the two formats the API
//! offers: JSON with `format=v1`, or CSV. Both become one `ViewData` grid of text cells, which
//! the poller compares against what it last synced.

use std::collections::HashMap;

use serde::Deserialize;

use super::error::AnaplanError;
use super::wire::parse_json;
use crate::secret::excerpt;

/// A grid of cells: one `ViewRow` per row, each cell at the position of its column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewData {
    /// The items selected on the page dimensions.
    pub pages: Vec<String>,
    /// Per column, its item on each column dimension.
    pub columns: Vec<Vec<String>>,
    pub rows: Vec<ViewRow>,
}

impl ViewData {
    /// Each column's index by its innermost label: the line item, when line items are on
    /// columns (with more column dimensions the line item is the innermost).
    pub fn column_index(&self) -> HashMap<&str, usize> {
        self.columns
            .iter()
            .enumerate()
            .filter_map(|(i, labels)| labels.last().map(|l| (l.as_str(), i)))
            .collect()
    }

    /// Each row's cells by its innermost label: the list item's name, for a module
    /// dimensioned by one list.
    pub fn row_index(&self) -> HashMap<&str, &[String]> {
        self.rows
            .iter()
            .filter_map(|r| {
                r.coordinates
                    .last()
                    .map(|n| (n.as_str(), r.cells.as_slice()))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewRow {
    /// The row's item on each row dimension.
    pub coordinates: Vec<String>,
    /// Cell values as text; blank is `""`.
    pub cells: Vec<String>,
}

/// The shape of a CSV grid, which the CSV itself does not announce: the caller knows it from
/// the view (how many dimensions are on pages, columns and rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvLayout {
    /// The first line holds the page selections (views with something on pages).
    pub page_line: bool,
    /// One header line per column dimension.
    pub column_header_lines: usize,
    /// Leading columns naming the row's item on each row dimension.
    pub row_dimensions: usize,
}

impl Default for CsvLayout {
    /// A module view with a list on rows and line items on columns, nothing on pages.
    fn default() -> Self {
        CsvLayout {
            page_line: false,
            column_header_lines: 1,
            row_dimensions: 1,
        }
    }
}

/// The `format=v1` JSON body.
pub fn parse_view_json(
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<ViewData, AnaplanError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        #[serde(default, deserialize_with = "nested_text")]
        pages: Vec<String>,
        #[serde(default)]
        column_coordinates: Vec<Coordinates>,
        #[serde(default)]
        rows: Vec<WireRow>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WireRow {
        #[serde(default, deserialize_with = "nested_text")]
        row_coordinates: Vec<String>,
        #[serde(default, deserialize_with = "super::wire::text_vec")]
        cells: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Coordinates(#[serde(deserialize_with = "nested_text")] Vec<String>);

    let wire: Wire = parse_json("view data", status, content_type, body)?;
    Ok(ViewData {
        pages: wire.pages,
        columns: wire.column_coordinates.into_iter().map(|c| c.0).collect(),
        rows: wire
            .rows
            .into_iter()
            .map(|r| ViewRow {
                coordinates: r.row_coordinates,
                cells: r.cells,
            })
            .collect(),
    })
}

/// The CSV body, read with the caller's layout.
pub fn parse_view_csv(
    status: u16,
    content_type: &str,
    body: &[u8],
    layout: CsvLayout,
) -> Result<ViewData, AnaplanError> {
    let fail = |detail: String| AnaplanError::Decode {
        what: "view data (CSV)",
        status,
        content_type: content_type.to_string(),
        detail,
        body: excerpt(body),
    };
    let ct = content_type.to_ascii_lowercase();
    if !(ct.is_empty() || ct.contains("csv") || ct.contains("text/plain")) {
        return Err(fail("expected a CSV body".to_string()));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut data = ViewData::default();
    let mut header_lines: Vec<Vec<String>> = Vec::new();
    let mut page_line_pending = layout.page_line;
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| fail(format!("line {}: {e}", line + 1)))?;
        let fields: Vec<String> = record.iter().map(str::to_string).collect();
        if page_line_pending {
            page_line_pending = false;
            data.pages = fields.into_iter().filter(|f| !f.is_empty()).collect();
            continue;
        }
        if header_lines.len() < layout.column_header_lines {
            header_lines.push(fields);
            continue;
        }
        let split = layout.row_dimensions.min(fields.len());
        let mut fields = fields;
        let cells = fields.split_off(split);
        data.rows.push(ViewRow {
            coordinates: fields,
            cells,
        });
    }
    if header_lines.len() < layout.column_header_lines {
        return Err(fail(format!(
            "expected {} column header lines, found {}",
            layout.column_header_lines,
            header_lines.len()
        )));
    }
    let width = header_lines.iter().map(Vec::len).max().unwrap_or(0);
    for column in layout.row_dimensions..width {
        data.columns.push(
            header_lines
                .iter()
                .map(|h| h.get(column).cloned().unwrap_or_default())
                .collect(),
        );
    }
    Ok(data)
}

/// A list of labels that may come flat (`["Durham"]`) or nested (`[["Jan 13"]]`, as the
/// documentation describes coordinates).
fn nested_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    fn flatten(v: serde_json::Value, out: &mut Vec<String>) -> Result<(), String> {
        match v {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Number(n) => out.push(n.to_string()),
            serde_json::Value::Bool(b) => out.push(b.to_string()),
            serde_json::Value::Null => out.push(String::new()),
            serde_json::Value::Array(items) => {
                for item in items {
                    flatten(item, out)?;
                }
            }
            serde_json::Value::Object(_) => return Err(format!("expected a label, found {v}")),
        }
        Ok(())
    }
    let v = serde_json::Value::deserialize(d)?;
    let mut out = Vec::new();
    match v {
        serde_json::Value::Array(items) => {
            for item in items {
                flatten(item, &mut out).map_err(serde::de::Error::custom)?;
            }
        }
        serde_json::Value::Null => {}
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected a list, found {other}"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_view_as_documented() {
        let body = br#"{"pages":["Actual"],"columnCoordinates":[["Jan 13"],["Feb 13"],["Mar 13"]],
            "rows":[{"rowCoordinates":["Durham"],"cells":["64.6","57.94","108.36"]},
                    {"rowCoordinates":[["Leeds"]],"cells":["","1",""]}]}"#;
        let v = parse_view_json(200, "application/json", body).unwrap();
        assert_eq!(v.pages, ["Actual"]);
        assert_eq!(v.columns[2], ["Mar 13"]);
        assert_eq!(v.rows[0].coordinates, ["Durham"]);
        assert_eq!(v.rows[0].cells, ["64.6", "57.94", "108.36"]);
        assert_eq!(v.rows[1].coordinates, ["Leeds"]);
        assert_eq!(v.rows[1].cells[0], "");
    }

    #[test]
    fn json_view_bad_shapes() {
        assert!(parse_view_json(200, "application/json", br#"{"rows":[{"cells":[{}]}]}"#).is_err());
        assert!(parse_view_json(200, "application/json", br#"{"rows":"#).is_err());
        assert!(parse_view_json(200, "text/html", b"<html>").is_err());
    }

    #[test]
    fn csv_view_with_pages_and_two_header_lines() {
        let body = b"Actual\n,Jan 21,Jan 21\n,Amount,Stage\nOpp A,\"1,000.5\",Closed Won\nOpp B,,\"say \"\"hi\"\"\"\n";
        let layout = CsvLayout {
            page_line: true,
            column_header_lines: 2,
            row_dimensions: 1,
        };
        let v = parse_view_csv(200, "text/csv", body, layout).unwrap();
        assert_eq!(v.pages, ["Actual"]);
        assert_eq!(v.columns, [["Jan 21", "Amount"], ["Jan 21", "Stage"]]);
        assert_eq!(v.rows[0].coordinates, ["Opp A"]);
        assert_eq!(v.rows[0].cells, ["1,000.5", "Closed Won"]);
        assert_eq!(v.rows[1].cells, ["", "say \"hi\""]);
    }

    #[test]
    fn csv_view_default_layout_and_errors() {
        let v = parse_view_csv(
            200,
            "text/csv;charset=UTF-8",
            b",Amount\nOpp A,5\n",
            CsvLayout::default(),
        )
        .unwrap();
        assert_eq!(v.columns, [["Amount"]]);
        assert_eq!(v.rows[0].cells, ["5"]);
        assert!(parse_view_csv(200, "application/json", b"{}", CsvLayout::default()).is_err());
        assert!(parse_view_csv(200, "text/csv", b"", CsvLayout::default()).is_err());
    }
}
