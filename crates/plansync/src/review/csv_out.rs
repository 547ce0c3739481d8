//! Every CSV plansync writes for people goes through here: a spreadsheet that opens a cell
//! starting with `=`, `+`, `-`, `@`, a tab or a carriage return runs it as a formula, and a
//! stored value comes from the remote systems (OWASP's CSV injection rule). Such a cell is
//! written with a leading `'`, which spreadsheets show as text; a plain number (`-12.5`) is
//! left as it is, so figures stay figures.

use std::io::Write;

use serde::Serialize;

pub(crate) struct CsvOut<W: Write> {
    out: csv::Writer<W>,
    /// Whether the header line is out (serde writes it with the first row).
    headed: bool,
}

impl<W: Write> CsvOut<W> {
    pub(crate) fn new(out: W) -> Self {
        CsvOut {
            out: csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out),
            headed: false,
        }
    }

    /// The header line, when no row will bring it.
    pub(crate) fn header<S: AsRef<str>>(&mut self, names: &[S]) -> csv::Result<()> {
        self.headed = true;
        self.out
            .write_record(names.iter().map(|n| n.as_ref().as_bytes()))
    }

    /// One row, its field names as the header before the first. csv's own serde layer
    /// renders the row (quoting, nested options); each of its fields is then neutralised.
    pub(crate) fn serialize<T: Serialize>(&mut self, row: T) -> csv::Result<()> {
        let mut scratch = csv::WriterBuilder::new()
            .has_headers(!self.headed)
            .from_writer(Vec::new());
        scratch.serialize(row)?;
        let bytes = scratch
            .into_inner()
            .map_err(|e| csv::Error::from(std::io::Error::other(e.to_string())))?;
        let mut records = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes.as_slice());
        let mut record = csv::ByteRecord::new();
        let mut first = true;
        while records.read_byte_record(&mut record)? {
            if first && !self.headed {
                self.out.write_byte_record(&record)?;
                self.headed = true;
            } else {
                self.out.write_record(record.iter().map(neutralised))?;
            }
            first = false;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A cell a spreadsheet will not run: `'` before one that starts like a formula, unless it
/// is a plain number.
pub(crate) fn neutralised(cell: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let risky = matches!(
        cell.first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    );
    if !risky || is_plain_number(cell) {
        return std::borrow::Cow::Borrowed(cell);
    }
    let mut safe = Vec::with_capacity(cell.len() + 1);
    safe.push(b'\'');
    safe.extend_from_slice(cell);
    std::borrow::Cow::Owned(safe)
}

fn is_plain_number(cell: &[u8]) -> bool {
    cell.iter()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && std::str::from_utf8(cell).is_ok_and(|t| t.parse::<f64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row<'a> {
        id: i64,
        value: Option<&'a str>,
        note: &'a str,
    }

    fn written(rows: &[Row<'_>]) -> String {
        let mut out = Vec::new();
        let mut csv = CsvOut::new(&mut out);
        for r in rows {
            csv.serialize(r).unwrap();
        }
        csv.flush().unwrap();
        drop(csv);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formula_cells_are_text_and_numbers_stay_numbers() {
        let text = written(&[
            Row {
                id: -3,
                value: Some("=HYPERLINK(\"http://x\",\"y\")"),
                note: "-12.5",
            },
            Row {
                id: 2,
                value: None,
                note: "@SUM(A1)",
            },
            Row {
                id: 3,
                value: Some("\tcmd"),
                note: "+1-1",
            },
            Row {
                id: 4,
                value: Some("plain, with comma"),
                note: "-",
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "id,value,note");
        assert_eq!(
            lines[1],
            "-3,\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",-12.5"
        );
        assert_eq!(lines[2], "2,,'@SUM(A1)");
        assert_eq!(lines[3], "3,'\tcmd,'+1-1");
        assert_eq!(lines[4], "4,\"plain, with comma\",'-");
        assert_eq!(lines.len(), 5);
    }
}
