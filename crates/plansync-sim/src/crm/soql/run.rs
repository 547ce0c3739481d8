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

fn like(value: &str, pattern: &str) -> bool {
    fn go(v: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('%', rest)) => (0..=v.len()).any(|i| go(&v[i..], rest)),
            Some(('_', rest)) => !v.is_empty() && go(&v[1..], rest),
            Some((c, rest)) => v.first().is_some_and(|x| x == c) && go(&v[1..], rest),
        }
    }
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    go(&v, &p)
}

impl Bound {
    fn matches(&self, org: &Org, r: RecordRef, def: &ObjectDef, e: &BExpr) -> bool {
        match e {
            BExpr::And(a, b) => self.matches(org, r, def, a) && self.matches(org, r, def, b),
            BExpr::Or(a, b) => self.matches(org, r, def, a) || self.matches(org, r, def, b),
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
            .filter(|&idx| all_rows || !t.records[idx].deleted)
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
    }
}
