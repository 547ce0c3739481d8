//! Cells: line item formats, the values a cell shows, and the typed columns that hold a line
//! item's cells; reading, checking and writing one cell.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;

use super::modules::LineItem;
use super::tenant::ModelData;

/// A cell or line item format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Number,
    Text,
    Boolean,
    Date,
    /// List-formatted: values are items of this list (index in the model's lists).
    List(usize),
}

impl Format {
    pub fn data_type(self) -> &'static str {
        match self {
            Format::Number => "NUMBER",
            Format::Text => "TEXT",
            Format::Boolean => "BOOLEAN",
            Format::Date => "DATE",
            Format::List(_) => "ENTITY",
        }
    }
}

/// A cell value as the introspection API returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum CellValue {
    Number(f64),
    Text(String),
    Boolean(bool),
    Date(NaiveDate),
    /// The name of the item of a list-formatted line item.
    Item(String),
}

impl std::fmt::Display for CellValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CellValue::Number(n) => write!(f, "{n}"),
            CellValue::Text(t) | CellValue::Item(t) => f.write_str(t),
            CellValue::Boolean(b) => write!(f, "{b}"),
            CellValue::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
        }
    }
}

/// A value arriving in a request, before it is checked against the line item's format.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Str(&'a str),
    Num(f64),
    Bool(bool),
}

/// The cells of one line item, keyed by item index.
#[derive(Debug)]
pub enum Column {
    Number(HashMap<u32, f64>),
    Text(HashMap<u32, Box<str>>),
    Boolean(HashMap<u32, bool>),
    Date(HashMap<u32, NaiveDate>),
    Item(HashMap<u32, u32>),
}

impl Column {
    pub(super) fn for_format(f: Format) -> Column {
        match f {
            Format::Number => Column::Number(HashMap::new()),
            Format::Text => Column::Text(HashMap::new()),
            Format::Boolean => Column::Boolean(HashMap::new()),
            Format::Date => Column::Date(HashMap::new()),
            Format::List(_) => Column::Item(HashMap::new()),
        }
    }

    pub(super) fn remove(&mut self, item: u32) {
        match self {
            Column::Number(m) => drop(m.remove(&item)),
            Column::Text(m) => drop(m.remove(&item)),
            Column::Boolean(m) => drop(m.remove(&item)),
            Column::Date(m) => drop(m.remove(&item)),
            Column::Item(m) => drop(m.remove(&item)),
        }
    }
}

pub fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

pub fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

impl ModelData {
    /// The value a cell shows: calculated line items are evaluated, unset numbers show 0 and
    /// unset booleans false (as in Anaplan), other unset cells are blank (`None`).
    pub fn cell(&self, li: usize, item: u32) -> Option<CellValue> {
        let l = self.line_items.get(li)?;
        if let Some(f) = &l.formula {
            return Some(CellValue::Number(f.eval(&|r| self.number(r, item))));
        }
        match &l.column {
            Column::Number(m) => Some(CellValue::Number(m.get(&item).copied().unwrap_or(0.0))),
            Column::Text(m) => m.get(&item).map(|t| CellValue::Text(t.to_string())),
            Column::Boolean(m) => Some(CellValue::Boolean(m.get(&item).copied().unwrap_or(false))),
            Column::Date(m) => m.get(&item).map(|d| CellValue::Date(*d)),
            Column::Item(m) => {
                let Format::List(fl) = l.format else {
                    return None;
                };
                let target = m.get(&item)?;
                self.lists
                    .get(fl)?
                    .get(*target)
                    .map(|it| CellValue::Item(it.name.to_string()))
            }
        }
    }

    /// Whether a cell holds a stored value (calculated cells never do).
    pub fn has_stored(&self, li: usize, item: u32) -> bool {
        match self.line_items.get(li).map(|l| &l.column) {
            Some(Column::Number(m)) => m.contains_key(&item),
            Some(Column::Text(m)) => m.contains_key(&item),
            Some(Column::Boolean(m)) => m.contains_key(&item),
            Some(Column::Date(m)) => m.contains_key(&item),
            Some(Column::Item(m)) => m.contains_key(&item),
            None => false,
        }
    }

    fn number(&self, li: usize, item: u32) -> f64 {
        match self.line_items.get(li) {
            Some(l) if l.formula.is_some() => match self.cell(li, item) {
                Some(CellValue::Number(n)) => n,
                _ => 0.0,
            },
            Some(LineItem {
                column: Column::Number(m),
                ..
            }) => m.get(&item).copied().unwrap_or(0.0),
            _ => 0.0,
        }
    }

    /// The text of a cell in a view, an export or a CSV: blank as "".
    pub fn cell_text(&self, li: usize, item: u32) -> String {
        self.cell(li, item)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    /// Writes a cell after checking the value against the line item's format. An empty string
    /// clears the cell. Errors say why the value does not fit.
    pub fn set_cell(&mut self, li: usize, item: u32, value: Input) -> Result<(), String> {
        let Some(l) = self.line_items.get(li) else {
            return Err("unknown line item".to_string());
        };
        let format = l.format;
        let list_target = match (format, value) {
            (Format::List(fl), Input::Str(s)) if !s.is_empty() => {
                let list = self
                    .lists
                    .get(fl)
                    .ok_or_else(|| "unknown format list".to_string())?;
                Some(
                    list.by_name(s)
                        .or_else(|| list.by_code(s))
                        .ok_or_else(|| format!("{s:?} is not an item of the list {}", list.name))?,
                )
            }
            _ => None,
        };
        let Some(l) = self.line_items.get_mut(li) else {
            return Err("unknown line item".to_string());
        };
        let bad = |what: &str| match value {
            Input::Str(s) => format!("{s:?} is not a valid {what}"),
            Input::Num(n) => format!("{n} is not a valid {what}"),
            Input::Bool(b) => format!("{b} is not a valid {what}"),
        };
        match (&mut l.column, value) {
            (Column::Number(m), Input::Num(n)) if n.is_finite() => drop(m.insert(item, n)),
            (Column::Number(m), Input::Str("")) => drop(m.remove(&item)),
            (Column::Number(m), Input::Str(s)) => {
                let n = parse_number(s).ok_or_else(|| bad("number"))?;
                m.insert(item, n);
            }
            (Column::Number(_), _) => return Err(bad("number")),
            (Column::Text(m), Input::Str("")) => drop(m.remove(&item)),
            (Column::Text(m), Input::Str(s)) => drop(m.insert(item, s.into())),
            (Column::Text(m), Input::Num(n)) => drop(m.insert(item, n.to_string().into())),
            (Column::Text(m), Input::Bool(b)) => drop(m.insert(item, b.to_string().into())),
            (Column::Boolean(m), Input::Bool(b)) => drop(m.insert(item, b)),
            // Blank clears a cell whatever its format (an import row leaves the columns it does
            // not set blank); a cleared boolean reads as false.
            (Column::Boolean(m), Input::Str("")) => drop(m.remove(&item)),
            (Column::Boolean(m), Input::Str(s)) => {
                let b = parse_bool(s.trim()).ok_or_else(|| bad("boolean"))?;
                m.insert(item, b);
            }
            (Column::Boolean(_), _) => return Err(bad("boolean")),
            (Column::Date(m), Input::Str("")) => drop(m.remove(&item)),
            (Column::Date(m), Input::Str(s)) => {
                let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                    .map_err(|_| bad("date (YYYY-MM-DD)"))?;
                m.insert(item, d);
            }
            (Column::Date(_), _) => return Err(bad("date (YYYY-MM-DD)")),
            (Column::Item(m), Input::Str("")) => drop(m.remove(&item)),
            (Column::Item(m), Input::Str(_)) => match list_target {
                Some(t) => drop(m.insert(item, t)),
                None => return Err(bad("list item")),
            },
            (Column::Item(_), _) => return Err(bad("list item")),
        }
        Ok(())
    }

    /// All cells of a module as `code-or-name → line item → value`, for introspection.
    pub fn module_cells(&self, module: usize) -> BTreeMap<String, BTreeMap<String, CellValue>> {
        let mut out = BTreeMap::new();
        let Some(m) = self.modules.get(module) else {
            return out;
        };
        let Some(list) = self.lists.get(m.list) else {
            return out;
        };
        for (i, item) in list.iter() {
            let mut row = BTreeMap::new();
            for &li in &m.line_items {
                let stored = self.line_items[li].formula.is_some() || self.has_stored(li, i);
                if stored && let Some(v) = self.cell(li, i) {
                    row.insert(self.line_items[li].name.clone(), v);
                }
            }
            if !row.is_empty() {
                let key = item.code.as_deref().unwrap_or(&item.name).to_string();
                out.insert(key, row);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anaplan::model::tenant_for_tests as tenant;

    #[test]
    fn cells_are_checked_against_the_format() {
        let t = tenant();
        let mut md = t.models[0].data.lock().unwrap();
        let module = md.find_module("OPP01 Opportunity Data").unwrap();
        let amount = md.line_item_in(module, None, Some("Amount")).unwrap();
        let stage = md.line_item_in(module, None, Some("Stage")).unwrap();
        let date = md.line_item_in(module, None, Some("Close Date")).unwrap();
        assert!(md.set_cell(amount, 0, Input::Str("abc")).is_err());
        assert!(md.set_cell(amount, 0, Input::Bool(true)).is_err());
        md.set_cell(amount, 0, Input::Str(" 12.5 ")).unwrap();
        assert_eq!(md.cell(amount, 0), Some(CellValue::Number(12.5)));
        assert!(md.set_cell(stage, 0, Input::Str("Closed Won")).is_err());
        md.set_cell(stage, 0, Input::Str("WON")).unwrap();
        assert_eq!(md.cell_text(stage, 0), "Won");
        assert!(md.set_cell(date, 0, Input::Str("2026-13-01")).is_err());
        md.set_cell(date, 0, Input::Str("")).unwrap();
        assert_eq!(md.cell_text(date, 0), "");
    }

    #[test]
    fn a_blank_clears_a_boolean_like_every_other_format() {
        let t = tenant();
        let mut md = t.models[0].data.lock().unwrap();
        let module = md.find_module("OPP01 Opportunity Data").unwrap();
        let approved = md.line_item_in(module, None, Some("Approved")).unwrap();
        md.set_cell(approved, 0, Input::Bool(true)).unwrap();
        md.set_cell(approved, 0, Input::Str("")).unwrap();
        assert!(!md.has_stored(approved, 0));
        assert_eq!(md.cell(approved, 0), Some(CellValue::Boolean(false)));
        assert!(md.set_cell(approved, 0, Input::Str("yes")).is_err());
    }
}
