//! `[[field.when]]` overrides: their conditions (window, record values, Anaplan flags), each
//! checked against what the file defines, and the check that no `when` is hidden by an
//! earlier one.

use super::*;

/// Whether `later` matching implies `earlier` matches (so `later` is unreachable).
fn implies(later: &[Condition], earlier: &[Condition]) -> bool {
    earlier.iter().all(|e| {
        later.iter().any(|l| match (l, e) {
            (
                Condition::Record {
                    field: lf,
                    values: lv,
                },
                Condition::Record {
                    field: ef,
                    values: ev,
                },
            ) => lf == ef && lv.is_subset(ev),
            _ => l == e,
        })
    })
}

impl Compiler<'_, '_> {
    pub(super) fn overrides(
        &mut self,
        ft: &Table<'_, '_>,
        field: &FieldRule,
        scope: &Scope<'_>,
    ) -> Vec<Override> {
        let mut known = WHEN_ONLY_KEYS.to_vec();
        known.extend_from_slice(POLICY_KEYS);
        let whens = ft.table_array(self.p, "when", "[[field.when]]", &known);
        let mut out: Vec<(Override, Range<usize>)> = Vec::new();
        let info = FieldInfo {
            kind: field.kind,
            picklist: field.picklist.clone(),
        };
        let mut ids: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for (i, wt) in whens.iter().enumerate() {
            let id = match wt.str(self.p, "id") {
                Some(s) => {
                    if let Some(first) = ids.get(&s.value) {
                        self.p.push(
                            Problem::new(s.span.clone(), format!("two `when`s of {} are named `{}`", field.id, s.value))
                                .also(first.clone(), "first named here")
                                .help("the id names the rule in every decision it makes: give each its own"),
                        );
                    }
                    ids.insert(s.value.clone(), s.span.clone());
                    format!("{}.when.{}", field.id, s.value)
                }
                None => format!("{}.when[{i}]", field.id),
            };
            let conditions = self.conditions(wt, scope);
            let parts = self.policy_parts(wt);
            if parts.is_empty() && !parts.any_written {
                self.p.push(
                    Problem::new(wt.span.clone(), "this `when` changes nothing")
                        .help("give it owner, on_violation, on_conflict, tie, min, max, allowed or max_change_pct"),
                );
            }
            let Some(conditions) = conditions else {
                continue;
            };
            let Some(policy) = self.policy(Some(&field.policy), &parts, &info, &wt.span) else {
                continue;
            };
            if let Some((earlier, span)) = out
                .iter()
                .find(|(e, _)| implies(&conditions, &e.conditions))
            {
                self.p.push(
                    Problem::new(
                        wt.span.clone(),
                        format!(
                            "this `when` can never match: `{}` above matches whenever it would",
                            earlier.id
                        ),
                    )
                    .also(span.clone(), "this one matches first")
                    .help("the first matching `when` wins: put the narrower one first"),
                );
                continue;
            }
            out.push((
                Override {
                    id,
                    conditions,
                    policy,
                },
                wt.span.clone(),
            ));
        }
        out.into_iter().map(|(o, _)| o).collect()
    }

    pub(super) fn conditions(
        &mut self,
        wt: &Table<'_, '_>,
        scope: &Scope<'_>,
    ) -> Option<Vec<Condition>> {
        let mut out = Vec::new();
        let mut ok = true;
        if let Some(w) = wt.str(self.p, "window") {
            if scope.windows.iter().any(|x| x.name == w.value) {
                out.push(Condition::Window(w.value));
            } else if scope.window_names.contains(&w.value) {
                ok = false;
            } else {
                let names: Vec<&str> = scope.windows.iter().map(|x| x.name.as_str()).collect();
                let help = match did_you_mean(&w.value, &names) {
                    Some(g) => format!("did you mean `{g}`?"),
                    None => format!(
                        "define it: [window.{}] with last_business_days and of",
                        w.value
                    ),
                };
                let problem = Problem::new(w.span, format!("window `{}` is not defined", w.value))
                    .label("no [window] of this name")
                    .help(help);
                self.report_once("window", &w.value, problem);
                ok = false;
            }
        }
        if let Some(f) = wt.str(self.p, "anaplan_flag") {
            if scope.flags.contains(&f.value) {
                out.push(Condition::AnaplanFlag(f.value));
            } else if scope.flags_unreadable {
                // `flags` is misspelt or malformed, reported already.
                ok = false;
            } else {
                let problem =
                    Problem::new(f.span, format!("`{}` is not a known Anaplan flag", f.value))
                        .help("list the boolean line item in [pairing] flags = [...], or map it as a boolean field");
                self.report_once("flag", &f.value, problem);
                ok = false;
            }
        }
        if let Some(rt) = wt.map(self.p, "record") {
            for (key, value) in rt.entries() {
                let Some(info) = scope.record_kinds.get(&key.value) else {
                    ok = false;
                    // A field whose name or type could not be read (reported already) may
                    // be the one named here.
                    if scope.untyped.contains(&key.value) || scope.names_unreadable {
                        continue;
                    }
                    let names: Vec<&str> = scope.record_kinds.keys().map(String::as_str).collect();
                    let help = match did_you_mean(&key.value, &names) {
                        Some(g) => format!("did you mean `{g}`?"),
                        None => "a `when` may test mapped fields, and fields listed in [pairing] extra_crm_fields".into(),
                    };
                    let problem = Problem::new(
                        key.span,
                        format!("`{}` is not a field of this pairing", key.value),
                    )
                    .help(help);
                    self.report_once("field", &key.value, problem);
                    continue;
                };
                let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
                    DeValue::Array(a) => a.iter().collect(),
                    _ => vec![value],
                };
                if items.is_empty() {
                    self.p
                        .push(Problem::new(value.span(), "an empty set never matches"));
                    ok = false;
                    continue;
                }
                let mut values = BTreeSet::new();
                for item in items {
                    match self.literal(item, info.kind) {
                        Some(v) => {
                            if let (Some(pick), Value::Text(t)) = (&info.picklist, &v)
                                && !pick.values.contains(t)
                            {
                                self.p.push(
                                    Problem::new(item.span(), format!("`{t}` is not a value of the picklist {}, so this never matches", key.value))
                                        .help("write CRM picklist values as listed in the field's `values`"),
                                );
                                ok = false;
                            }
                            values.insert(v);
                        }
                        None => ok = false,
                    }
                }
                out.push(Condition::Record {
                    field: key.value,
                    values,
                });
            }
        }
        let tried = ["window", "record", "anaplan_flag"]
            .iter()
            .any(|k| wt.attempted(k));
        if out.is_empty() && tried {
            // Its condition is misspelt or malformed (reported already): read as "always",
            // it would hide the `when`s after it.
            return None;
        }
        if out.is_empty() && ok {
            self.p.push(
                Problem::new(wt.span.clone(), "this `when` has no condition, so it always matches")
                    .help("give it window, record or anaplan_flag; or move its settings onto the field itself"),
            );
            return None;
        }
        ok.then_some(out)
    }
}
