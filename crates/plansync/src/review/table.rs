//! Shared pieces of the human-readable output.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use comfy_table::{ColumnConstraint, ContentArrangement, Row, Table, Width, presets};

use crate::model::Value;
use crate::store::ExceptionRecord;

/// How wide the tables of rows (lists, histories) may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableWidth {
    /// The terminal's width when stdout is one (comfy-table asks it); otherwise no limit, so
    /// a pipe or a file gets the same text whatever window started it.
    #[default]
    Terminal,
    /// At most this many columns (`COLUMNS`, or a test).
    Columns(u16),
    /// No limit and no truncation: every value in full (`--wide`).
    Unlimited,
}

/// Text as it may reach a terminal: stored values come from the remote systems, and an
/// escape sequence in one could recolour, retitle or rewrite the reviewer's screen (`ESC`,
/// `CR`, backspace), or reorder what they read (bidirectional overrides). Those characters
/// are shown as visible escapes (`\u{1b}`, `\r`, `\t`); a line break stays a line break.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A table in the house style; wraps to the terminal's width when there is one. For a few
/// lines read in full (one exception's attributes); rows of many use [`LineTable`].
pub(crate) struct Grid(Table);

pub(crate) fn new_table<S: AsRef<str>>(header: impl IntoIterator<Item = S>) -> Grid {
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(Row::from(safe_cells(header)));
    Grid(table)
}

fn safe_cells<S: AsRef<str>>(cells: impl IntoIterator<Item = S>) -> Vec<String> {
    cells
        .into_iter()
        .map(|c| terminal_safe(c.as_ref()).into_owned())
        .collect()
}

impl Grid {
    /// Every cell goes through [`terminal_safe`].
    pub(crate) fn add_row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.0.add_row(safe_cells(cells));
    }
}

impl std::fmt::Display for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Lets a [`new_table`] wrap to `width` too, when that is a number of columns rather than
/// the terminal's.
pub(crate) fn wrap_to(table: &mut Grid, width: TableWidth) {
    if let TableWidth::Columns(columns) = width {
        table.0.set_width(columns);
    }
}

/// A table of one line per row, fitted to a [`TableWidth`]: a value too long for its column
/// is cut and ends in `…` (never wrapped, so rows stay scannable and countable). The widest
/// columns give way first, down to their header's width, so short ones (ids, kinds) stay
/// whole and the message takes what is left.
pub(crate) struct LineTable {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    keep_whole: Vec<bool>,
    width: TableWidth,
}

impl LineTable {
    pub(crate) fn new<S: AsRef<str>>(header: &[S], width: TableWidth) -> Self {
        LineTable {
            header: header.iter().map(|h| h.as_ref().to_string()).collect(),
            rows: Vec::new(),
            keep_whole: vec![false; header.len()],
            width,
        }
    }

    /// Keeps a column of short values (ids, ages) whole however narrow the table gets.
    pub(crate) fn keep_whole(&mut self, index: usize) {
        if let Some(keep) = self.keep_whole.get_mut(index) {
            *keep = true;
        }
    }

    /// Every cell goes through [`terminal_safe`].
    pub(crate) fn add_row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| match terminal_safe(&c) {
                    Cow::Borrowed(_) => c,
                    Cow::Owned(safe) => safe,
                })
                .collect(),
        );
    }

    /// The columns' content widths (padding and borders aside) that fit `available` columns
    /// of text, or the natural ones when no limit applies or they fit already.
    fn content_widths(&self, limit: Option<usize>) -> Vec<usize> {
        let columns = self.header.len();
        let mut natural: Vec<usize> = self.header.iter().map(|h| text_width(h)).collect();
        for row in &self.rows {
            for (width, cell) in natural.iter_mut().zip(row) {
                *width = (*width).max(text_width(cell));
            }
        }
        // Each column has a space either side and a rule after it; plus the left border.
        let Some(available) = limit.map(|l| l.saturating_sub(3 * columns + 1)) else {
            return natural;
        };
        // Whole headers and short columns if they fit, else whole headers, else anything.
        let headers: Vec<usize> = (0..columns)
            .map(|i| text_width(&self.header[i]).min(natural[i]))
            .collect();
        let whole: Vec<usize> = (0..columns)
            .map(|i| match self.keep_whole[i] {
                true => natural[i],
                false => headers[i],
            })
            .collect();
        fit(&natural, &whole, available)
            .or_else(|| fit(&natural, &headers, available))
            .or_else(|| fit(&natural, &vec![1; columns], available))
            .unwrap_or_else(|| vec![1; columns])
    }
}

/// The widths, each at most its natural one and at least its floor, where all above a common
/// cap are cut to it: the largest cap whose total fits `available`, its leftover given to the
/// cut columns from the right (the message is last). `None` when even the floors do not fit.
fn fit(natural: &[usize], floors: &[usize], available: usize) -> Option<Vec<usize>> {
    let with_cap = |cap: usize| -> Vec<usize> {
        natural
            .iter()
            .zip(floors)
            .map(|(&n, &floor)| n.min(cap.max(floor)))
            .collect()
    };
    let total = |widths: &[usize]| widths.iter().sum::<usize>();
    let widest = natural.iter().copied().max().unwrap_or(0);
    if total(natural) <= available {
        return Some(natural.to_vec());
    }
    let cap = (0..=widest)
        .rev()
        .find(|&cap| total(&with_cap(cap)) <= available)?;
    let mut widths = with_cap(cap);
    let mut spare = available - total(&widths);
    for i in (0..widths.len()).rev() {
        if spare == 0 {
            break;
        }
        if widths[i] < natural[i] {
            widths[i] += 1;
            spare -= 1;
        }
    }
    Some(widths)
}

/// What a cell takes on one line: its first line, and the `…` that says more was cut.
fn text_width(text: &str) -> usize {
    let mut lines = text.lines();
    let first = lines.next().map_or(0, |l| l.chars().count());
    first + usize::from(lines.next().is_some())
}

impl std::fmt::Display for LineTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = match self.width {
            TableWidth::Unlimited => None,
            TableWidth::Columns(columns) => Some(usize::from(columns)),
            // comfy-table asks the terminal stdout is, if it is one.
            TableWidth::Terminal => Table::new().width().map(usize::from),
        };
        let mut table = Table::new();
        table
            .load_style(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled);
        let one_line = self.width != TableWidth::Unlimited;
        let mut header = Row::from(self.header.iter().map(String::as_str));
        if one_line {
            header.max_height(1);
        }
        table.set_header(header);
        for cells in &self.rows {
            let mut row = Row::from(cells.iter().map(String::as_str));
            if one_line {
                row.max_height(1);
            }
            table.add_row(row);
        }
        if one_line {
            let widths = self.content_widths(limit);
            for (column, width) in table.column_iter_mut().zip(widths) {
                // An absolute width counts the padding, one space either side.
                let width = u16::try_from(width + 2).unwrap_or(u16::MAX);
                column.set_constraint(ColumnConstraint::Absolute(Width::Fixed(width)));
            }
        }
        table.fmt(f)
    }
}

/// A timestamp for people: to the second, still unambiguous (UTC).
pub(crate) fn short_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// How long ago, in its largest whole unit (`45s`, `12m`, `5h`, `3d`): what a reviewer sorts
/// by in their head. A time after `now` (another machine's clock) counts as `0s`.
pub(crate) fn age(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// A value for people: `(null)` for no value.
pub(crate) fn value(v: &Value) -> String {
    v.to_string()
}

/// `Opportunity.Amount`, or just `Opportunity` when the exception is about no field.
pub(crate) fn object_field(e: &ExceptionRecord) -> String {
    match e.field_name() {
        Some(field) => format!("{}.{field}", e.object),
        None => e.object.clone(),
    }
}

/// How it was resolved, with the chosen value: `take_crm → 700.00`; `None` while unresolved.
pub(crate) fn resolution(e: &ExceptionRecord) -> Option<String> {
    e.resolution.map(|how| {
        let chosen = e
            .resolution_value
            .as_ref()
            .map(|v| format!(" → {}", value(v)))
            .unwrap_or_default();
        format!("{how}{chosen}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn ages_use_their_largest_whole_unit() {
        let now = DateTime::UNIX_EPOCH + Duration::days(400);
        for (ago, text) in [
            (Duration::seconds(-30), "0s"),
            (Duration::seconds(59), "59s"),
            (Duration::seconds(60), "1m"),
            (Duration::minutes(119), "1h"),
            (Duration::hours(25), "1d"),
            (Duration::days(120), "120d"),
        ] {
            assert_eq!(age(now, now - ago), text, "{ago}");
        }
    }

    #[test]
    fn the_widest_columns_give_way_first_down_to_their_floor() {
        // Fits already: unchanged.
        assert_eq!(fit(&[2, 10, 40], &[2, 4, 7], 60), Some(vec![2, 10, 40]));
        // The message is cut; the short ones stay.
        assert_eq!(fit(&[2, 10, 40], &[2, 4, 7], 30), Some(vec![2, 10, 18]));
        // Two long ones share what is left, the last one taking the odd column.
        assert_eq!(fit(&[2, 30, 40], &[2, 4, 7], 31), Some(vec![2, 14, 15]));
        // Not even the floors fit.
        assert_eq!(fit(&[2, 30, 40], &[2, 4, 7], 12), None);
    }
}
