//! Running a bound query: the filter over a table's records, then order, offset and limit.

use std::cmp::Ordering;

use super::bind::{BExpr, Bound};
use crate::crm::org::{Org, RecordRef};
use crate::crm::schema::ObjectDef;
use crate::crm::values::Val;

fn text_cmp(a: &str, b: &str) -> Ordering {
    a.to_lowercase().cmp(&b.to_lowercase())
}

fn cmp_vals(a: &Val, b: &Val) -> Option<Ordering> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Date(x), Val::Date(y)) => Some(x.cmp(y)),
        (Val::DateTime(x), Val::DateTime(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::Str(x), Val::Str(y)) => Some(text_cmp(x, y)),
        _ => None,
    }
}

/// `LIKE`, case-insensitive: `%` is any run of characters, `_` any one character.
///
/// The classic two-pointer wildcard match: on a mismatch it goes back only to the last `%`
/// seen, one character further each time, never to an earlier one, so it takes at most
/// `value.len() × pattern.len()` steps. (A recursive matcher that tries every split at every
/// `%` is exponential in the number of `%`s: eight of them against a long value pin a core.)
/// Going back to the last `%` only is enough: whatever an earlier `%` could absorb, the
/// later one can absorb too, since the text between them has already matched.
fn like(value: &str, pattern: &str) -> bool {
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let (mut i, mut j) = (0, 0);
    // The pattern index just after the last `%`, and the value index it was tried at.
    let mut retry: Option<(usize, usize)> = None;
    while i < v.len() {
        match p.get(j) {
            Some('%') => {
                j += 1;
                retry = Some((j, i));
            }
            Some(&c) if c == '_' || c == v[i] => {
                i += 1;
                j += 1;
            }
            _ => match retry {
                // The last `%` takes one more character; match the rest from there.
                Some((after, at)) => {
                    retry = Some((after, at + 1));
                    i = at + 1;
                    j = after;
                }
                None => return false,
            },
        }
    }
    p[j..].iter().all(|&c| c == '%')
}

impl Bound {
    /// Whether the query skips rows (`OFFSET`), which Bulk API 2.0 does not support.
    pub fn has_offset(&self) -> bool {
        self.offset > 0
    }

    fn matches(&self, org: &Org, r: RecordRef, def: &ObjectDef, e: &BExpr) -> bool {
        match e {
            BExpr::And(terms) => terms.iter().all(|t| self.matches(org, r, def, t)),
            BExpr::Or(terms) => terms.iter().any(|t| self.matches(org, r, def, t)),
            BExpr::Not(a) => !self.matches(org, r, def, a),
            BExpr::Cmp { field, op, value } => {
                let v = org.get(r, &def.fields[*field]);
                if value.is_null() || v.is_null() {
                    let both = value.is_null() && v.is_null();
                    return match *op {
                        "=" => both,
                        "!=" => !both,
                        _ => false,
                    };
                }
                if *op == "LIKE" {
                    return match (&v, value) {
                        (Val::Str(a), Val::Str(p)) => like(a, p),
                        _ => false,
                    };
                }
                let Some(ord) = cmp_vals(&v, value) else {
                    return false;
                };
                match *op {
                    "=" => ord == Ordering::Equal,
                    "!=" => ord != Ordering::Equal,
                    "<" => ord == Ordering::Less,
                    "<=" => ord != Ordering::Greater,
                    ">" => ord == Ordering::Greater,
                    ">=" => ord != Ordering::Less,
                    _ => false,
                }
            }
            BExpr::In {
                field,
                negated,
                values,
            } => {
                let v = org.get(r, &def.fields[*field]);
                let found = values.iter().any(|x| {
                    if x.is_null() || v.is_null() {
                        x.is_null() && v.is_null()
                    } else {
                        cmp_vals(&v, x) == Some(Ordering::Equal)
                    }
                });
                found != *negated
            }
        }
    }

    /// The matching records in result order. `all_rows` includes deleted ones (queryAll).
    pub fn run(&self, org: &Org, all_rows: bool) -> Vec<RecordRef> {
        let Some(t) = org.tables.get(self.table) else {
            return Vec::new();
        };
        let def = &t.def;
        let mut rows: Vec<RecordRef> = (0..t.records.len())
            .filter(|&idx| {
                let rec = &t.records[idx];
                !rec.purged && (all_rows || !rec.deleted)
            })
            .map(|idx| RecordRef {
                table: self.table,
                idx,
            })
            .filter(|&r| {
                self.filter
                    .as_ref()
                    .is_none_or(|e| self.matches(org, r, def, e))
            })
            .collect();
        if !self.order.is_empty() {
            let keys: Vec<Vec<Val>> = rows
                .iter()
                .map(|&r| {
                    self.order
                        .iter()
                        .map(|(f, _, _)| org.get(r, &def.fields[*f]))
                        .collect()
                })
                .collect();
            let mut idx: Vec<usize> = (0..rows.len()).collect();
            idx.sort_by(|&a, &b| {
                for (k, (_, desc, nulls_last)) in self.order.iter().enumerate() {
                    let (x, y) = (&keys[a][k], &keys[b][k]);
                    let ord = match (x.is_null(), y.is_null()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => {
                            if *nulls_last {
                                Ordering::Greater
                            } else {
                                Ordering::Less
                            }
                        }
                        (false, true) => {
                            if *nulls_last {
                                Ordering::Less
                            } else {
                                Ordering::Greater
                            }
                        }
                        (false, false) => {
                            let o = cmp_vals(x, y).unwrap_or(Ordering::Equal);
                            if *desc { o.reverse() } else { o }
                        }
                    };
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
                a.cmp(&b)
            });
            rows = idx.into_iter().map(|i| rows[i]).collect();
        }
        let rows: Vec<RecordRef> = rows.into_iter().skip(self.offset).collect();
        match self.limit {
            Some(n) => rows.into_iter().take(n).collect(),
            None => rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("Acme Corp", "acme%"));
        assert!(like("abc", "a_c"));
        assert!(!like("abc", "a_"));
        assert!(like("abc", "%"));
        assert!(like("", "%%"));
        assert!(!like("", "_"));
        assert!(like("aXbYc", "a%b%c"));
        assert!(!like("aXbYd", "a%b%c"));
        assert!(like("mississippi", "%iss%ppi"));
        assert!(like("ABCabc", "%c"));
        assert!(!like("abcab", "%c"));
        assert!(like("a%b", "a%b"));
        assert!(like("abab", "%ab"));
        assert!(like("aaa", "a%a%a"));
        assert!(!like("aa", "a%a%a"));
    }

    #[test]
    fn like_is_not_exponential() {
        let value = "a".repeat(10_000);
        let pattern = format!("{}b", "%a".repeat(8));
        let started = std::time::Instant::now();
        assert!(!like(&value, &pattern));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
