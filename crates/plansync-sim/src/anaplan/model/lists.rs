//! Lists: their properties and items, indexed by code and name; adding, locating, updating and
//! deleting items (and the cells that go with a deleted item).

use std::collections::{BTreeMap, HashMap};

use super::ITEM_PREFIX_BASE;
use super::cells::{Column, Format, parse_number};
use super::tenant::ModelData;

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
    pub(super) fn new(id: u64, name: String, properties: Vec<Property>, ordinal: u64) -> List {
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

impl ModelData {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anaplan::model::tenant_for_tests as tenant;

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
