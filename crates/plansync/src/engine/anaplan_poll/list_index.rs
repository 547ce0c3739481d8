//! The pairing's list as the poller needs it, and no more: per item with a code, its name (the
//! view's row label, which joins rows to codes), its code when it differs from the name, and
//! the values of the pairing's list-property fields. A list of a million items is folded in
//! item by item as a read request's pages are parsed, so the poll holds a few tens of bytes
//! per item instead of the parsed `ListItem`s (ids, parents, every property, a map per item:
//! about 770 bytes).
//!
//! Layout: one byte arena holding each kept item's record (name, then the code unless it is
//! the name, then per kept property a little-endian `u32` length, `u32::MAX` for absent, and
//! the value), and one 12-byte entry per item, sorted by name so a row label is found by
//! binary search. A code-order permutation exists only when some code differs from its name
//! (otherwise name order is code order).

use crate::anaplan::ListItem;
use crate::rules::Pairing;
use crate::rules::ruleset::AnaplanField;

use super::{AnaplanPollError, AnaplanPollProblem, codeless};

/// A property value the item does not have (a CSV record shorter than its header).
const ABSENT: u32 = u32::MAX;

/// Items folded in before the arena is sized for the expected count from their average.
const SAMPLE: usize = 1024;

/// The most items space is reserved for up front: the expected count comes from Anaplan, and
/// a wrong one must not make the poll allocate gigabytes it never fills.
const MAX_RESERVED: usize = 4_000_000;

/// One kept item: its record is `arena[start..]`, the name first.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u32,
    name_len: u32,
    /// 0 when the code is the name (a kept item always has a non-empty code).
    code_len: u32,
}

/// The list read for one poll; see the module docs.
#[derive(Debug, Default)]
pub struct ListIndex {
    /// The list properties the pairing maps, in record order.
    properties: Vec<String>,
    arena: Vec<u8>,
    /// Sorted by name once built.
    entries: Vec<Entry>,
    /// Entry positions in code order, when some code differs from its name.
    by_code: Option<Vec<u32>>,
    /// Items read, those without a code included.
    items: usize,
    /// One per item without a code (not kept).
    problems: Vec<AnaplanPollProblem>,
}

/// One kept item, borrowed from the index.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub name: &'a str,
    pub code: &'a str,
    index: &'a ListIndex,
    /// The record's property part.
    properties: &'a [u8],
}

impl<'a> Item<'a> {
    /// The value of a list property the pairing maps; `None` if the item has none (or the
    /// pairing does not map `name`, so the index did not keep it).
    pub fn property(&self, name: &str) -> Option<&'a str> {
        let wanted = self.index.properties.iter().position(|p| p == name)?;
        let mut rest = self.properties;
        for k in 0.. {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
            rest = &rest[4..];
            let value = if len == ABSENT {
                None
            } else {
                let len = len as usize;
                let value = rest.get(..len)?;
                rest = &rest[len..];
                Some(value)
            };
            if k == wanted {
                return value.map(text);
            }
        }
        None
    }
}

/// The arena only ever receives whole `&str`s, so its slices at record boundaries are text.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl ListIndex {
    /// An index of the list of `pairing`, to be filled with [`ListIndexBuilder::add`].
    /// `expected` is the list's item count if known (space is reserved for it).
    pub fn builder(pairing: &Pairing, expected: usize) -> ListIndexBuilder<'_> {
        let expected = expected.min(MAX_RESERVED);
        let mut properties: Vec<String> = Vec::new();
        for field in &pairing.fields {
            if let AnaplanField::ListProperty(name) = &field.anaplan
                && !properties.contains(name)
            {
                properties.push(name.clone());
            }
        }
        ListIndexBuilder {
            pairing,
            expected,
            index: ListIndex {
                properties,
                entries: Vec::with_capacity(expected),
                ..ListIndex::default()
            },
        }
    }

    /// The index of items already read whole (a small list).
    pub fn from_items(
        pairing: &Pairing,
        items: &[ListItem],
    ) -> Result<ListIndex, AnaplanPollError> {
        let mut b = ListIndex::builder(pairing, items.len());
        for item in items {
            b.add(item)?;
        }
        Ok(b.finish())
    }

    /// Items read, those without a code included.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Items kept (those with a code).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The problems of the items without a code, in the order they were read.
    pub fn problems(&self) -> &[AnaplanPollProblem] {
        &self.problems
    }

    /// The kept item at `at` (a position from [`ListIndex::find_name`] or
    /// [`ListIndex::code_order`]).
    pub fn get(&self, at: usize) -> Option<Item<'_>> {
        let e = self.entries.get(at)?;
        let name_end = e.start as usize + e.name_len as usize;
        let code_end = name_end + e.code_len as usize;
        let name = text(self.arena.get(e.start as usize..name_end)?);
        let code = if e.code_len == 0 {
            name
        } else {
            text(self.arena.get(name_end..code_end)?)
        };
        Some(Item {
            name,
            code,
            index: self,
            // Records are laid in read order, so the next one is not known from the sorted
            // entries; the walk stops after the kept properties, so the rest is a safe bound.
            properties: self.arena.get(code_end..).unwrap_or_default(),
        })
    }

    fn name_bytes(&self, e: &Entry) -> &[u8] {
        let start = e.start as usize;
        self.arena
            .get(start..start + e.name_len as usize)
            .unwrap_or_default()
    }

    fn code_bytes(&self, e: &Entry) -> &[u8] {
        if e.code_len == 0 {
            return self.name_bytes(e);
        }
        let start = e.start as usize + e.name_len as usize;
        self.arena
            .get(start..start + e.code_len as usize)
            .unwrap_or_default()
    }

    /// The position of the item named `name` (a view row's label).
    pub fn find_name(&self, name: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|e| self.name_bytes(e).cmp(name.as_bytes()))
            .ok()
    }

    /// The position of the item coded `code`.
    pub fn find_code(&self, code: &str) -> Option<usize> {
        match &self.by_code {
            None => self
                .find_name(code)
                .filter(|&at| self.entries[at].code_len == 0),
            Some(order) => order
                .binary_search_by(|&at| {
                    self.code_bytes(&self.entries[at as usize])
                        .cmp(code.as_bytes())
                })
                .ok()
                .map(|k| order[k] as usize),
        }
    }

    /// Positions of the kept items in code order.
    pub fn code_order(&self) -> impl Iterator<Item = usize> + '_ {
        let (plain, permuted) = match &self.by_code {
            None => (Some(0..self.entries.len()), None),
            Some(order) => (None, Some(order.iter().map(|&at| at as usize))),
        };
        plain
            .into_iter()
            .flatten()
            .chain(permuted.into_iter().flatten())
    }

    /// Heap bytes the index holds (its capacity, not only what is used).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.by_code.as_ref().map_or(0, |o| o.capacity() * 4)
            + self
                .properties
                .iter()
                .map(|p| p.capacity() + std::mem::size_of::<String>())
                .sum::<usize>()
            + self.problems.capacity() * std::mem::size_of::<AnaplanPollProblem>()
    }
}

/// Fills a [`ListIndex`] item by item (or page by page).
pub struct ListIndexBuilder<'p> {
    pairing: &'p Pairing,
    expected: usize,
    index: ListIndex,
}

impl ListIndexBuilder<'_> {
    /// Folds one item in. An item without a code is a problem, not kept.
    pub fn add(&mut self, item: &ListItem) -> Result<(), AnaplanPollError> {
        let ix = &mut self.index;
        ix.items += 1;
        let Some(code) = item.code.as_deref().filter(|c| !c.is_empty()) else {
            ix.problems.push(codeless(self.pairing, &item.name));
            return Ok(());
        };
        let too_large = || AnaplanPollError::ListTooLarge {
            list: self.pairing.anaplan.list.clone(),
        };
        let start = u32::try_from(ix.arena.len()).map_err(|_| too_large())?;
        if ix.entries.len() >= SAMPLE {
            // Past the sized estimate, grow by an eighth, not by doubling.
            let need = item.name.len()
                + code.len()
                + ix.properties.len() * 4
                + item.properties.values().map(String::len).sum::<usize>();
            if ix.arena.capacity() - ix.arena.len() < need {
                ix.arena.reserve_exact(need.max(ix.arena.len() / 8));
            }
        }
        let name_len = u32::try_from(item.name.len()).map_err(|_| too_large())?;
        ix.arena.extend_from_slice(item.name.as_bytes());
        let code_len = if code == item.name {
            0
        } else {
            ix.arena.extend_from_slice(code.as_bytes());
            u32::try_from(code.len()).map_err(|_| too_large())?
        };
        for name in &ix.properties {
            match item.properties.get(name) {
                Some(value) => {
                    let len = u32::try_from(value.len())
                        .ok()
                        .filter(|&l| l != ABSENT)
                        .ok_or_else(too_large)?;
                    ix.arena.extend_from_slice(&len.to_le_bytes());
                    ix.arena.extend_from_slice(value.as_bytes());
                }
                None => ix.arena.extend_from_slice(&ABSENT.to_le_bytes()),
            }
        }
        // Offsets are u32: past 4 GiB of records the index refuses rather than wraps.
        u32::try_from(ix.arena.len()).map_err(|_| too_large())?;
        ix.entries.push(Entry {
            start,
            name_len,
            code_len,
        });
        self.reserve();
        Ok(())
    }

    /// Folds a page in and drops it.
    pub fn add_page(&mut self, page: Vec<ListItem>) -> Result<(), AnaplanPollError> {
        for item in &page {
            self.add(item)?;
        }
        Ok(())
    }

    /// Sizes the arena once from the first items, rather than doubling up to twice the need.
    fn reserve(&mut self) {
        let ix = &mut self.index;
        let kept = ix.entries.len();
        if kept == SAMPLE && self.expected > kept {
            let per_item = ix.arena.len().div_ceil(kept);
            let more = per_item.saturating_mul(self.expected - kept);
            ix.arena.reserve_exact(more + more / 16);
        }
    }

    /// Sorts the entries by name (and by code, if some code differs) and trims spare space.
    pub fn finish(self) -> ListIndex {
        let mut ix = self.index;
        let arena = &ix.arena;
        let name = |e: &Entry| {
            let start = e.start as usize;
            arena
                .get(start..start + e.name_len as usize)
                .unwrap_or_default()
        };
        ix.entries.sort_unstable_by(|a, b| name(a).cmp(name(b)));
        ix.entries.shrink_to_fit();
        ix.arena.shrink_to_fit();
        if ix.entries.iter().any(|e| e.code_len != 0) {
            let mut order: Vec<u32> = (0..ix.entries.len() as u32).collect();
            order.sort_unstable_by(|&a, &b| {
                ix.code_bytes(&ix.entries[a as usize])
                    .cmp(ix.code_bytes(&ix.entries[b as usize]))
            });
            ix.by_code = Some(order);
        }
        ix
    }
}

/// Which kept items a paged view has shown so far: one bit per item.
#[derive(Debug, Clone, Default)]
pub struct Met {
    bits: Vec<u64>,
    len: usize,
}

impl Met {
    pub fn new(items: usize) -> Met {
        Met {
            bits: vec![0; items.div_ceil(64)],
            len: items,
        }
    }

    /// Marks `at` met; `false` if it already was.
    pub fn meet(&mut self, at: usize) -> bool {
        if at >= self.len {
            return false;
        }
        let Some(word) = self.bits.get_mut(at / 64) else {
            return false;
        };
        let bit = 1u64 << (at % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }

    pub fn is_met(&self, at: usize) -> bool {
        at < self.len
            && self
                .bits
                .get(at / 64)
                .is_some_and(|w| w & (1u64 << (at % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn opportunity() -> Pairing {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("rules/opportunity.toml");
        crate::rules::load_file(&path).expect("the example rule file compiles")
    }

    fn item(code: Option<&str>, name: &str, props: &[(&str, &str)]) -> ListItem {
        ListItem {
            id: format!("id-{name}"),
            name: name.into(),
            code: code.map(str::to_string),
            parent: Some("All".into()),
            parent_id: None,
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn finds_by_name_and_by_code_with_codes_that_differ() {
        let pairing = opportunity();
        let items = [
            item(Some("C3"), "zeta", &[("Opportunity Name", "Zed, Inc")]),
            item(Some("A1"), "alpha", &[("Opportunity Name", "")]),
            item(None, "loose", &[]),
            item(Some("B2"), "B2", &[("Other", "not kept")]),
            item(Some(""), "blank code", &[]),
        ];
        let ix = ListIndex::from_items(&pairing, &items).unwrap();
        assert_eq!((ix.items(), ix.len()), (5, 3));
        let zeta = ix.get(ix.find_name("zeta").unwrap()).unwrap();
        assert_eq!((zeta.name, zeta.code), ("zeta", "C3"));
        assert_eq!(zeta.property("Opportunity Name"), Some("Zed, Inc"));
        let alpha = ix.get(ix.find_code("A1").unwrap()).unwrap();
        assert_eq!(alpha.name, "alpha");
        assert_eq!(
            alpha.property("Opportunity Name"),
            Some(""),
            "empty, not absent"
        );
        let b2 = ix.get(ix.find_code("B2").unwrap()).unwrap();
        assert_eq!((b2.name, b2.code), ("B2", "B2"));
        assert_eq!(b2.property("Opportunity Name"), None, "absent");
        assert_eq!(
            b2.property("Other"),
            None,
            "not a mapped property: not kept"
        );
        assert_eq!(ix.find_name("C3"), None, "a code is not a name");
        assert_eq!(ix.find_code("zeta"), None, "a name is not a code");
        assert_eq!(ix.find_name("loose"), None);
        let codes: Vec<&str> = ix.code_order().map(|at| ix.get(at).unwrap().code).collect();
        assert_eq!(codes, ["A1", "B2", "C3"]);
        // The items without a code are problems, in read order.
        let raws: Vec<&str> = ix.problems().iter().map(|p| p.raw.as_str()).collect();
        assert_eq!(raws, ["loose", "blank code"]);
        assert!(
            ix.problems()
                .iter()
                .all(|p| p.code.is_empty() && p.field.is_none())
        );
    }

    #[test]
    fn name_order_is_code_order_when_codes_are_names() {
        let pairing = opportunity();
        let mut b = ListIndex::builder(&pairing, 6);
        b.add_page(vec![
            item(Some("c"), "c", &[("Opportunity Name", "C")]),
            item(Some("a"), "a", &[("Opportunity Name", "A")]),
        ])
        .unwrap();
        b.add_page(vec![item(Some("b"), "b", &[("Opportunity Name", "B")])])
            .unwrap();
        let ix = b.finish();
        assert!(ix.by_code.is_none());
        let got: Vec<(&str, Option<&str>)> = ix
            .code_order()
            .map(|at| {
                let i = ix.get(at).unwrap();
                (i.code, i.property("Opportunity Name"))
            })
            .collect();
        assert_eq!(got, [("a", Some("A")), ("b", Some("B")), ("c", Some("C"))]);
        assert_eq!(ix.find_code("b"), ix.find_name("b"));
        assert_eq!(ix.find_code("d"), None);
    }

    #[test]
    fn met_marks_each_item_once() {
        let mut met = Met::new(130);
        assert!(!met.is_met(129));
        assert!(met.meet(129));
        assert!(!met.meet(129), "already met");
        assert!(met.is_met(129) && !met.is_met(128) && !met.is_met(0));
        assert!(met.meet(0) && met.meet(64));
        assert!(!met.meet(130), "out of range is never met");
        assert!(!met.is_met(130));
    }

    /// The size the poller's memory target rests on: a code-named item without mapped
    /// properties costs its name plus 12 bytes.
    #[test]
    fn bytes_per_item_when_the_code_is_the_name() {
        let mut pairing = opportunity();
        pairing
            .fields
            .retain(|f| matches!(f.anaplan, AnaplanField::LineItem(_)));
        let n = 20_000;
        let mut b = ListIndex::builder(&pairing, n);
        for page in 0..(n / 1000) {
            let items = (0..1000)
                .map(|k| {
                    let code = format!("006{:012}AAA", page * 1000 + k);
                    item(Some(&code), &code, &[("Opportunity Name", "not kept")])
                })
                .collect();
            b.add_page(items).unwrap();
        }
        let ix = b.finish();
        let per_item = ix.heap_bytes() as f64 / n as f64;
        assert!(per_item <= 18.0 + 12.0 + 1.0, "{per_item} bytes per item");
        let at = ix.find_name("006000000012345AAA").unwrap();
        assert_eq!(ix.get(at).unwrap().code, "006000000012345AAA");
    }
}
