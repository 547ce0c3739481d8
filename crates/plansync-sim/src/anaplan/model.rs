//! The simulated tenant's data: workspaces, models, lists and their items, modules, line items
//! and cells, files and bulk definitions, built from a [`Seed`].
//!
//! Sized for a million list items: an item is a slot in a `Vec` (its index never changes and
//! gives its ID), codes and names are indexed in hash maps, and each line item keeps its cells
//! in a typed map keyed by item index (`HashMap<u32, f64>` for a number line item), not JSON.
//! A deleted item leaves an empty slot so the IDs of the others stay put.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::NaiveDate;
use tokio::sync::Notify;

use super::formula::{self, Expr};
use super::seed::{Seed, SeedValue};
use super::tasks::TaskBook;

pub const LIST_PREFIX: u64 = 101_000_000_000;
pub const MODULE_PREFIX: u64 = 102_000_000_000;
pub const IMPORT_PREFIX: u64 = 112_000_000_000;
pub const FILE_PREFIX: u64 = 113_000_000_000;
pub const EXPORT_PREFIX: u64 = 116_000_000_000;
pub const PROCESS_PREFIX: u64 = 118_000_000_000;
/// Line items (Anaplan's own line item IDs are in the 2xx range too).
pub const LINE_ITEM_PREFIX: u64 = 206_000_000_000;
/// List items of the n-th list: `(ITEM_PREFIX_BASE + n) * 10^9 + index`.
const ITEM_PREFIX_BASE: u64 = 300;
/// Private files created by a POST on an unknown file ID start here.
const PRIVATE_FILE_START: u64 = FILE_PREFIX + 500_000;

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
    fn for_format(f: Format) -> Column {
        match f {
            Format::Number => Column::Number(HashMap::new()),
            Format::Text => Column::Text(HashMap::new()),
            Format::Boolean => Column::Boolean(HashMap::new()),
            Format::Date => Column::Date(HashMap::new()),
            Format::List(_) => Column::Item(HashMap::new()),
        }
    }

    fn remove(&mut self, item: u32) {
        match self {
            Column::Number(m) => drop(m.remove(&item)),
            Column::Text(m) => drop(m.remove(&item)),
            Column::Boolean(m) => drop(m.remove(&item)),
            Column::Date(m) => drop(m.remove(&item)),
            Column::Item(m) => drop(m.remove(&item)),
        }
    }
}

pub struct LineItem {
    pub id: u64,
    pub name: String,
    pub module: usize,
    pub format: Format,
    pub formula: Option<Expr>,
    pub formula_text: Option<String>,
    pub column: Column,
}

pub struct Module {
    pub id: u64,
    pub name: String,
    /// The list that dimensions every line item of the module.
    pub list: usize,
    pub line_items: Vec<usize>,
}

/// A view: the module's default view (same ID as the module) or a saved view.
pub struct View {
    pub id: u64,
    pub name: String,
    pub module: usize,
    pub line_items: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropFormat {
    Text,
    Number,
    Boolean,
}

pub struct Property {
    pub name: String,
    pub format: PropFormat,
}

pub struct Item {
    pub name: Box<str>,
    pub code: Option<Box<str>>,
    /// Property values, in the order of the list's properties.
    pub props: Vec<Option<Box<str>>>,
}

pub struct List {
    pub id: u64,
    pub name: String,
    pub properties: Vec<Property>,
    slots: Vec<Option<Item>>,
    live: usize,
    by_code: HashMap<Box<str>, u32>,
    by_name: HashMap<Box<str>, u32>,
    item_base: u64,
}

/// Why a list item was refused: `failureType` and `failureMessageDetails`.
pub type ItemFailure = (&'static str, String);

/// An item as a request gives it (add, update, import row).
#[derive(Default)]
pub struct ItemInput<'a> {
    pub id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub code: Option<&'a str>,
    pub properties: Vec<(&'a str, String)>,
}

impl List {
    fn new(id: u64, name: String, properties: Vec<Property>, ordinal: u64) -> List {
        List {
            id,
            name,
            properties,
            slots: Vec::new(),
            live: 0,
            by_code: HashMap::new(),
            by_name: HashMap::new(),
            item_base: (ITEM_PREFIX_BASE + ordinal) * 1_000_000_000,
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn next_index(&self) -> usize {
        self.slots.len()
    }

    pub fn item_id(&self, index: u32) -> u64 {
        self.item_base + u64::from(index)
    }

    pub fn get(&self, index: u32) -> Option<&Item> {
        self.slots.get(index as usize).and_then(Option::as_ref)
    }

    pub fn by_id(&self, id: &str) -> Option<u32> {
        let id: u64 = id.trim().parse().ok()?;
        let index = u32::try_from(id.checked_sub(self.item_base)?).ok()?;
        self.get(index).map(|_| index)
    }

    pub fn by_code(&self, code: &str) -> Option<u32> {
        self.by_code.get(code).copied()
    }

    pub fn by_name(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Live items in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Item)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|it| (i as u32, it)))
    }

    pub fn property(&self, name: &str) -> Option<usize> {
        self.properties.iter().position(|p| p.name == name)
    }

    fn check_property(&self, name: &str, value: &str) -> Result<(usize, Box<str>), ItemFailure> {
        let p = self.property(name).ok_or_else(|| {
            (
                "INCORRECT_FORMAT",
                format!("unknown property -- column name:{name}"),
            )
        })?;
        let ok = match self.properties[p].format {
            PropFormat::Text => true,
            PropFormat::Number => value.trim().is_empty() || parse_number(value).is_some(),
            PropFormat::Boolean => {
                value.is_empty()
                    || value.eq_ignore_ascii_case("true")
                    || value.eq_ignore_ascii_case("false")
            }
        };
        if !ok {
            let kind = match self.properties[p].format {
                PropFormat::Number => "number",
                _ => "boolean",
            };
            return Err((
                "INCORRECT_FORMAT",
                format!("incorrect format -- column name:{name}, value:wrong value for {kind}"),
            ));
        }
        Ok((p, value.into()))
    }

    /// Adds an item; the name is required and name and code must be new.
    pub fn add(&mut self, input: &ItemInput) -> Result<u32, ItemFailure> {
        let name = input
            .name
            .filter(|n| !n.trim().is_empty())
            .ok_or(("INCOMPLETE_DATA", "missing name".to_string()))?;
        if self.by_name.contains_key(name) {
            return Err(("DUPLICATE", format!("duplicate name -- name:{name}")));
        }
        let code = input.code.filter(|c| !c.is_empty());
        if let Some(c) = code
            && self.by_code.contains_key(c)
        {
            return Err(("DUPLICATE", format!("duplicate code -- code:{c}")));
        }
        let mut props: Vec<Option<Box<str>>> = Vec::new();
        for (k, v) in &input.properties {
            let (p, v) = self.check_property(k, v)?;
            if props.is_empty() {
                props.resize(self.properties.len(), None);
            }
            props[p] = Some(v);
        }
        let index = u32::try_from(self.slots.len())
            .map_err(|_| ("INCOMPLETE_DATA", "list is full".to_string()))?;
        self.by_name.insert(name.into(), index);
        if let Some(c) = code {
            self.by_code.insert(c.into(), index);
        }
        self.slots.push(Some(Item {
            name: name.into(),
            code: code.map(Into::into),
            props,
        }));
        self.live += 1;
        Ok(index)
    }

    /// Finds the item an update names: by `id`, else `code`, else `name` (refused when the
    /// item has a code, as Anaplan does).
    pub fn locate(&self, input: &ItemInput) -> Result<u32, ItemFailure> {
        let missing = || ("INCOMPLETE_DATA", "item not found".to_string());
        if let Some(id) = input.id {
            return self.by_id(id).ok_or_else(missing);
        }
        if let Some(code) = input.code.filter(|c| !c.is_empty())
            && let Some(i) = self.by_code(code)
        {
            return Ok(i);
        }
        if let Some(name) = input.name {
            let i = self.by_name(name).ok_or_else(missing)?;
            let has_code = self.get(i).is_some_and(|it| it.code.is_some());
            if has_code && input.code.is_none() {
                return Err((
                    "INCOMPLETE_DATA",
                    "the item has a code: give the code to identify it".to_string(),
                ));
            }
            return Ok(i);
        }
        Err(missing())
    }

    /// Updates an item in place: a new name and code when given, and the given properties.
    pub fn update(&mut self, index: u32, input: &ItemInput) -> Result<(), ItemFailure> {
        let mut new_props = Vec::with_capacity(input.properties.len());
        for (k, v) in &input.properties {
            new_props.push(self.check_property(k, v)?);
        }
        let nprops = self.properties.len();
        let item = self
            .slots
            .get(index as usize)
            .and_then(Option::as_ref)
            .ok_or(("INCOMPLETE_DATA", "item not found".to_string()))?;
        let new_name = input
            .name
            .filter(|n| !n.is_empty() && **n != *item.name)
            .map(str::to_string);
        if let Some(n) = &new_name
            && self.by_name.contains_key(n.as_str())
        {
            return Err((
                "INCOMPLETE_DATA",
                format!("the name is already used -- name:{n}"),
            ));
        }
        let new_code = match input.code {
            Some("") if item.code.is_some() => {
                return Err(("INCOMPLETE_DATA", "a code cannot be removed".to_string()));
            }
            Some(c) if !c.is_empty() && item.code.as_deref() != Some(c) => {
                if input.id.is_none() && item.code.is_some() {
                    // Identified by code: the code is the key, not a new value.
                    None
                } else if self.by_code.contains_key(c) {
                    return Err(("DUPLICATE", format!("duplicate code -- code:{c}")));
                } else {
                    Some(c.to_string())
                }
            }
            _ => None,
        };
        let old_name = item.name.clone();
        let old_code = item.code.clone();
        let Some(Some(item)) = self.slots.get_mut(index as usize) else {
            return Err(("INCOMPLETE_DATA", "item not found".to_string()));
        };
        if let Some(n) = new_name {
            self.by_name.remove(&old_name);
            self.by_name.insert(n.as_str().into(), index);
            item.name = n.into();
        }
        if let Some(c) = new_code {
            if let Some(oc) = &old_code {
                self.by_code.remove(oc);
            }
            self.by_code.insert(c.as_str().into(), index);
            item.code = Some(c.into());
        }
        for (p, v) in new_props {
            if item.props.is_empty() {
                item.props.resize(nprops, None);
            }
            item.props[p] = Some(v);
        }
        Ok(())
    }

    pub fn remove(&mut self, index: u32) -> bool {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return false;
        };
        let Some(item) = slot.take() else {
            return false;
        };
        self.by_name.remove(&item.name);
        if let Some(c) = &item.code {
            self.by_code.remove(c);
        }
        self.live -= 1;
        true
    }

    /// Only an empty list may have its index reset.
    pub fn reset_index(&mut self) -> bool {
        if self.live > 0 {
            return false;
        }
        self.slots.clear();
        true
    }

    pub fn prop_value<'a>(&self, item: &'a Item, p: usize) -> &'a str {
        item.props.get(p).and_then(|v| v.as_deref()).unwrap_or("")
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

pub struct FileData {
    pub id: u64,
    pub name: String,
    /// The chunk count the client set (-1 while unknown), or the final count after `complete`.
    pub chunk_count: i64,
    pub chunks: BTreeMap<u32, Vec<u8>>,
}

impl FileData {
    pub fn new(id: u64, name: String) -> FileData {
        FileData {
            id,
            name,
            chunk_count: 0,
            chunks: BTreeMap::new(),
        }
    }

    pub fn content(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.chunks.values().map(Vec::len).sum());
        for c in self.chunks.values() {
            out.extend_from_slice(c);
        }
        out
    }

    /// Stores `content` as chunks of at most `chunk_size` bytes (export output, dumps).
    pub fn set_content(&mut self, content: &[u8], chunk_size: usize) {
        self.chunks.clear();
        for (i, c) in content.chunks(chunk_size.max(1)).enumerate() {
            self.chunks.insert(i as u32, c.to_vec());
        }
        self.chunk_count = self.chunks.len() as i64;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportTarget {
    List(usize),
    Module(usize),
}

pub struct ImportDef {
    pub id: u64,
    pub name: String,
    pub target: ImportTarget,
    pub file: u64,
}

pub struct ExportDef {
    pub id: u64,
    pub name: String,
    pub module: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionRef {
    Import(usize),
    Export(usize),
}

pub struct ProcessDef {
    pub id: u64,
    pub name: String,
    pub actions: Vec<ActionRef>,
}

/// Everything inside one model.
pub struct ModelData {
    pub lists: Vec<List>,
    pub modules: Vec<Module>,
    pub line_items: Vec<LineItem>,
    pub views: Vec<View>,
    pub files: BTreeMap<u64, FileData>,
    pub next_private_file: u64,
    pub imports: Vec<ImportDef>,
    pub exports: Vec<ExportDef>,
    pub processes: Vec<ProcessDef>,
    pub tasks: TaskBook,
    pub open: bool,
    /// Bumped on every change, for `lastSavedSerialNumber`.
    pub serial: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// A model and the lock over its data.
pub struct ModelSlot {
    pub id: String,
    pub name: String,
    pub workspace: usize,
    /// Guards all of the model's data. Handlers take it for one request's worth of work and
    /// never await while holding it (it is a std mutex: short, CPU-only critical sections).
    pub data: Mutex<ModelData>,
    /// Wakes the model's task runner when a task is queued.
    pub wake: Notify,
}

pub struct Workspace {
    pub id: String,
    pub name: String,
    pub size_allowance: u64,
}

pub struct Tenant {
    pub customer_guid: String,
    pub workspaces: Vec<Workspace>,
    pub models: Vec<ModelSlot>,
}

impl Tenant {
    pub fn model(&self, id: &str) -> Option<&ModelSlot> {
        self.models.iter().find(|m| m.id == id)
    }

    pub fn workspace(&self, id: &str) -> Option<(usize, &Workspace)> {
        self.workspaces.iter().enumerate().find(|(_, w)| w.id == id)
    }
}

fn is_hex(s: &str, upper: bool) -> bool {
    s.len() == 32
        && s.bytes().all(|b| {
            b.is_ascii_digit()
                || if upper {
                    (b'A'..=b'F').contains(&b)
                } else {
                    (b'a'..=b'f').contains(&b)
                }
        })
}

fn invalid(msg: String) -> super::seed::SeedError {
    super::seed::SeedError::Invalid(msg)
}

impl ModelData {
    pub fn list_by_name(&self, name: &str) -> Option<usize> {
        self.lists.iter().position(|l| l.name == name)
    }

    /// A list by numeric ID or by name.
    pub fn find_list(&self, key: &str) -> Option<usize> {
        self.lists
            .iter()
            .position(|l| l.id.to_string() == key)
            .or_else(|| self.list_by_name(key))
    }

    pub fn find_module(&self, key: &str) -> Option<usize> {
        self.modules
            .iter()
            .position(|m| m.id.to_string() == key || m.name == key)
    }

    pub fn find_view(&self, key: &str) -> Option<usize> {
        self.views
            .iter()
            .position(|v| v.id.to_string() == key || v.name == key)
    }

    pub fn line_item_in(
        &self,
        module: usize,
        key_id: Option<&str>,
        key_name: Option<&str>,
    ) -> Option<usize> {
        let m = self.modules.get(module)?;
        m.line_items.iter().copied().find(|&li| {
            let l = &self.line_items[li];
            key_id.is_some_and(|id| l.id.to_string() == id.trim())
                || key_name.is_some_and(|n| l.name == n)
        })
    }

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

    /// Removes items from a list and every cell that belongs to them or points at them.
    pub fn delete_items(&mut self, list: usize, items: &[u32]) {
        let Some(l) = self.lists.get_mut(list) else {
            return;
        };
        for &i in items {
            l.remove(i);
        }
        let gone: std::collections::HashSet<u32> = items.iter().copied().collect();
        for li in &mut self.line_items {
            let dimensioned = self.modules.get(li.module).is_some_and(|m| m.list == list);
            if dimensioned {
                for &i in items {
                    li.column.remove(i);
                }
            }
            if li.format == Format::List(list)
                && let Column::Item(m) = &mut li.column
            {
                m.retain(|_, v| !gone.contains(v));
            }
        }
    }

    pub fn touch(&mut self) {
        self.serial += 1;
        self.last_modified = chrono::Utc::now();
    }

    /// Whether a task holds the model lock (transactional writes get 409).
    pub fn busy(&self) -> bool {
        self.tasks.running().is_some()
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

/// A list item as the introspection API returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListItemView {
    pub id: String,
    pub name: String,
    pub code: Option<String>,
    pub properties: BTreeMap<String, String>,
}

impl List {
    pub fn snapshot(&self) -> Vec<ListItemView> {
        self.iter()
            .map(|(i, it)| ListItemView {
                id: self.item_id(i).to_string(),
                name: it.name.to_string(),
                code: it.code.as_deref().map(str::to_string),
                properties: self
                    .properties
                    .iter()
                    .enumerate()
                    .filter_map(|(p, def)| {
                        it.props
                            .get(p)
                            .and_then(|v| v.as_deref())
                            .map(|v| (def.name.clone(), v.to_string()))
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Builds the tenant a seed describes, checking every cross reference.
pub fn build(seed: &Seed) -> Result<Tenant, super::seed::SeedError> {
    let customer_guid = seed
        .customer_guid
        .clone()
        .unwrap_or_else(|| "5f0c2a9e7d3b4c61a8e2f4b6c8d0e1f2".to_string());
    if !is_hex(&customer_guid, false) {
        return Err(invalid(
            "customer_guid must be 32 lowercase hex digits".into(),
        ));
    }
    let mut workspaces = Vec::new();
    for w in &seed.workspace {
        if !is_hex(&w.id, false) {
            return Err(invalid(format!(
                "workspace id {:?} must be 32 lowercase hex digits",
                w.id
            )));
        }
        workspaces.push(Workspace {
            id: w.id.clone(),
            name: w.name.clone(),
            size_allowance: w.size_allowance,
        });
    }
    let mut models: Vec<(String, String, usize, ModelData)> = Vec::new();
    for m in &seed.model {
        if !is_hex(&m.id, true) {
            return Err(invalid(format!(
                "model id {:?} must be 32 UPPERCASE hex digits",
                m.id
            )));
        }
        let ws = workspaces
            .iter()
            .position(|w| w.id == m.workspace)
            .ok_or_else(|| {
                invalid(format!(
                    "model {:?}: no workspace {:?}",
                    m.name, m.workspace
                ))
            })?;
        models.push((m.id.clone(), m.name.clone(), ws, empty_model()));
    }
    let pick = |model: &Option<String>, what: &str| -> Result<usize, super::seed::SeedError> {
        match model {
            None if !seed.model.is_empty() => Ok(0),
            None => Err(invalid(format!("{what}: the seed has no model"))),
            Some(id) => seed
                .model
                .iter()
                .position(|m| &m.id == id)
                .ok_or_else(|| invalid(format!("{what}: no model {id:?}"))),
        }
    };

    for l in &seed.list {
        let mi = pick(&l.model, &format!("list {:?}", l.name))?;
        let md = &mut models[mi].3;
        if md.list_by_name(&l.name).is_some() {
            return Err(invalid(format!("list {:?} is defined twice", l.name)));
        }
        let ordinal = md.lists.len() as u64;
        let mut props = Vec::new();
        for p in &l.properties {
            let format = match p.format.as_str() {
                "text" => PropFormat::Text,
                "number" => PropFormat::Number,
                "boolean" => PropFormat::Boolean,
                other => {
                    return Err(invalid(format!(
                        "list {:?}: property {:?} has unknown format {other:?}",
                        l.name, p.name
                    )));
                }
            };
            props.push(Property {
                name: p.name.clone(),
                format,
            });
        }
        let mut list = List::new(LIST_PREFIX + ordinal, l.name.clone(), props, ordinal);
        for it in &l.items {
            let input = ItemInput {
                id: None,
                name: Some(&it.name),
                code: it.code.as_deref(),
                properties: it
                    .properties
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect(),
            };
            list.add(&input).map_err(|(_, why)| {
                invalid(format!("list {:?}: item {:?}: {why}", l.name, it.name))
            })?;
        }
        md.lists.push(list);
    }

    for m in &seed.module {
        let mi = pick(&m.model, &format!("module {:?}", m.name))?;
        let md = &mut models[mi].3;
        if md.find_module(&m.name).is_some() {
            return Err(invalid(format!("module {:?} is defined twice", m.name)));
        }
        let list = md
            .list_by_name(&m.applies_to)
            .ok_or_else(|| invalid(format!("module {:?}: no list {:?}", m.name, m.applies_to)))?;
        let module_index = md.modules.len();
        let first_li = md.line_items.len();
        let mut lis = Vec::new();
        for li in &m.line_items {
            let format =
                match (li.format.as_str(), &li.list) {
                    ("number", _) => Format::Number,
                    ("text", _) => Format::Text,
                    ("boolean", _) => Format::Boolean,
                    ("date", _) => Format::Date,
                    ("list", Some(ln)) => Format::List(md.list_by_name(ln).ok_or_else(|| {
                        invalid(format!("line item {:?}: no list {ln:?}", li.name))
                    })?),
                    ("list", None) => {
                        return Err(invalid(format!(
                            "line item {:?}: format list needs `list`",
                            li.name
                        )));
                    }
                    (other, _) => {
                        return Err(invalid(format!(
                            "line item {:?}: unknown format {other:?}",
                            li.name
                        )));
                    }
                };
            if m.line_items.iter().filter(|o| o.name == li.name).count() > 1 {
                return Err(invalid(format!(
                    "module {:?}: line item {:?} twice",
                    m.name, li.name
                )));
            }
            let idx = md.line_items.len();
            md.line_items.push(LineItem {
                id: LINE_ITEM_PREFIX + idx as u64,
                name: li.name.clone(),
                module: module_index,
                format,
                formula: None,
                formula_text: li.formula.clone(),
                column: Column::for_format(format),
            });
            lis.push(idx);
        }
        // Formulas are resolved once every line item of the module exists.
        for (k, li) in m.line_items.iter().enumerate() {
            let Some(text) = &li.formula else { continue };
            let names: Vec<(String, usize, Format)> = lis
                .iter()
                .map(|&i| (md.line_items[i].name.clone(), i, md.line_items[i].format))
                .collect();
            let resolve = |n: &str| {
                names
                    .iter()
                    .find(|(name, _, f)| name == n && *f == Format::Number)
                    .map(|(_, i, _)| *i)
            };
            let expr = formula::parse(text, &resolve)
                .map_err(|e| invalid(format!("line item {:?}: {e}", li.name)))?;
            if md.line_items[first_li + k].format != Format::Number {
                return Err(invalid(format!(
                    "line item {:?}: a formula needs format number",
                    li.name
                )));
            }
            md.line_items[first_li + k].formula = Some(expr);
        }
        md.modules.push(Module {
            id: MODULE_PREFIX + module_index as u64,
            name: m.name.clone(),
            list,
            line_items: lis.clone(),
        });
        for (code, row) in &m.rows {
            let item = md.lists[list]
                .by_code(code)
                .or_else(|| md.lists[list].by_name(code))
                .ok_or_else(|| invalid(format!("module {:?}: no item {code:?}", m.name)))?;
            for (li_name, v) in row {
                let li = md
                    .line_item_in(module_index, None, Some(li_name))
                    .ok_or_else(|| {
                        invalid(format!("module {:?}: no line item {li_name:?}", m.name))
                    })?;
                if md.line_items[li].formula.is_some() {
                    return Err(invalid(format!("line item {li_name:?} is calculated")));
                }
                let text;
                let input = match v {
                    SeedValue::Bool(b) => Input::Bool(*b),
                    SeedValue::Int(n) => Input::Num(*n as f64),
                    SeedValue::Float(f) => Input::Num(*f),
                    SeedValue::Text(t) => {
                        text = t.clone();
                        Input::Str(&text)
                    }
                };
                md.set_cell(li, item, input)
                    .map_err(|e| invalid(format!("module {:?}, {code}, {li_name}: {e}", m.name)))?;
            }
        }
    }
    // Default views share their module's ID; saved views come after all modules.
    for (_, _, _, md) in &mut models {
        for (k, module) in md.modules.iter().enumerate() {
            md.views.push(View {
                id: module.id,
                name: module.name.clone(),
                module: k,
                line_items: module.line_items.clone(),
            });
        }
    }
    for m in &seed.module {
        let mi = pick(&m.model, "view")?;
        let md = &mut models[mi].3;
        let module = md.find_module(&m.name).unwrap_or(0);
        for v in &m.views {
            let mut lis = Vec::new();
            for n in &v.line_items {
                lis.push(
                    md.line_item_in(module, None, Some(n))
                        .ok_or_else(|| invalid(format!("view {:?}: no line item {n:?}", v.name)))?,
                );
            }
            let id = MODULE_PREFIX + md.views.len() as u64;
            md.views.push(View {
                id,
                name: v.name.clone(),
                module,
                line_items: lis,
            });
        }
    }

    for imp in &seed.import {
        let mi = pick(&imp.model, &format!("import {:?}", imp.name))?;
        let md = &mut models[mi].3;
        let target = match imp.import_type.as_str() {
            "HIERARCHY_DATA" => {
                ImportTarget::List(md.list_by_name(&imp.target).ok_or_else(|| {
                    invalid(format!("import {:?}: no list {:?}", imp.name, imp.target))
                })?)
            }
            "MODULE_DATA" => {
                ImportTarget::Module(md.find_module(&imp.target).ok_or_else(|| {
                    invalid(format!("import {:?}: no module {:?}", imp.name, imp.target))
                })?)
            }
            other => {
                return Err(invalid(format!(
                    "import {:?}: unsupported type {other:?}",
                    imp.name
                )));
            }
        };
        let file = match md.files.values().find(|f| f.name == imp.file) {
            Some(f) => f.id,
            None => {
                let id = FILE_PREFIX + md.files.len() as u64;
                md.files.insert(id, FileData::new(id, imp.file.clone()));
                id
            }
        };
        let id = IMPORT_PREFIX + md.imports.len() as u64;
        md.imports.push(ImportDef {
            id,
            name: imp.name.clone(),
            target,
            file,
        });
    }
    for ex in &seed.export {
        let mi = pick(&ex.model, &format!("export {:?}", ex.name))?;
        let md = &mut models[mi].3;
        let module = md
            .find_module(&ex.module)
            .ok_or_else(|| invalid(format!("export {:?}: no module {:?}", ex.name, ex.module)))?;
        let id = EXPORT_PREFIX + md.exports.len() as u64;
        md.exports.push(ExportDef {
            id,
            name: ex.name.clone(),
            module,
        });
        md.files.insert(id, FileData::new(id, ex.name.clone()));
    }
    for p in &seed.process {
        let mi = pick(&p.model, &format!("process {:?}", p.name))?;
        let md = &mut models[mi].3;
        let mut actions = Vec::new();
        for a in &p.actions {
            let r = if let Some(i) = md.imports.iter().position(|x| &x.name == a) {
                ActionRef::Import(i)
            } else if let Some(e) = md.exports.iter().position(|x| &x.name == a) {
                ActionRef::Export(e)
            } else {
                return Err(invalid(format!(
                    "process {:?}: no import or export {a:?}",
                    p.name
                )));
            };
            actions.push(r);
        }
        let id = PROCESS_PREFIX + md.processes.len() as u64;
        md.processes.push(ProcessDef {
            id,
            name: p.name.clone(),
            actions,
        });
    }

    Ok(Tenant {
        customer_guid,
        workspaces,
        models: models
            .into_iter()
            .map(|(id, name, workspace, data)| ModelSlot {
                id,
                name,
                workspace,
                data: Mutex::new(data),
                wake: Notify::new(),
            })
            .collect(),
    })
}

fn empty_model() -> ModelData {
    ModelData {
        lists: Vec::new(),
        modules: Vec::new(),
        line_items: Vec::new(),
        views: Vec::new(),
        files: BTreeMap::new(),
        next_private_file: PRIVATE_FILE_START,
        imports: Vec::new(),
        exports: Vec::new(),
        processes: Vec::new(),
        tasks: TaskBook::default(),
        open: true,
        serial: 1,
        last_modified: chrono::Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        build(&Seed::default_seed()).unwrap()
    }

    #[test]
    fn default_seed_builds_with_ids_and_cells() {
        let t = tenant();
        let md = t.models[0].data.lock().unwrap();
        let opp = md.list_by_name("Opportunities").unwrap();
        assert_eq!(md.lists[opp].id, LIST_PREFIX + opp as u64);
        let module = md.find_module("OPP01 Opportunity Data").unwrap();
        let cells = md.module_cells(module);
        let row = &cells["0065g0000000002AAA"];
        assert_eq!(row["Amount"], CellValue::Number(480000.0));
        assert_eq!(row["Stage"], CellValue::Item("Negotiation".into()));
        assert_eq!(row["Weighted Amount"], CellValue::Number(336000.0));
        assert_eq!(row.get("Approved"), None, "a cell never set holds nothing");
        assert_eq!(
            cells["0065g0000000004AAA"]["Approved"],
            CellValue::Boolean(true)
        );
        assert_eq!(md.imports.len(), 6);
        assert!(md.files.contains_key(&md.imports[0].file));
        assert_eq!(md.views.len(), 3);
    }

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

    #[test]
    fn list_add_update_delete() {
        let t = tenant();
        let mut md = t.models[0].data.lock().unwrap();
        let l = md.list_by_name("Opportunities").unwrap();
        let list = &mut md.lists[l];
        let before = list.len();
        let dup = ItemInput {
            name: Some("OPP-0001"),
            code: Some("new"),
            ..Default::default()
        };
        assert_eq!(list.add(&dup).unwrap_err().0, "DUPLICATE");
        let i = list
            .add(&ItemInput {
                name: Some("N"),
                code: Some("C"),
                properties: vec![("Opportunity Name", "x".into())],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(list.len(), before + 1);
        let by_name_only = ItemInput {
            name: Some("N"),
            ..Default::default()
        };
        assert_eq!(list.locate(&by_name_only).unwrap_err().0, "INCOMPLETE_DATA");
        let rename = ItemInput {
            name: Some("N2"),
            code: Some("C"),
            ..Default::default()
        };
        let at = list.locate(&rename).unwrap();
        list.update(at, &rename).unwrap();
        assert_eq!(&*list.get(i).unwrap().name, "N2");
        let id = list.item_id(i).to_string();
        assert_eq!(list.by_id(&id), Some(i));
        md.delete_items(l, &[i]);
        assert_eq!(md.lists[l].by_id(&id), None);
        assert_eq!(md.lists[l].by_code("C"), None);
    }
}
