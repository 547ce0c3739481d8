//! One `[[field]]`: its CRM name and Anaplan line item or property, its type, blank and
//! picklist, and the check that no CRM field is mapped twice.

use super::*;

impl Compiler<'_, '_> {
    pub(super) fn field(
        &mut self,
        ft: &Table<'_, '_>,
        object: &str,
    ) -> Option<(FieldRule, FieldInfo)> {
        let crm = ft.required_str(self.p, "crm", "name the CRM field, e.g. crm = \"Amount\"");
        let line_item = ft.str(self.p, "anaplan");
        let property = ft.str(self.p, "anaplan_property");
        let anaplan = match (line_item, property) {
            (Some(li), None) => Some(AnaplanField::LineItem(li.value)),
            (None, Some(pr)) => Some(AnaplanField::ListProperty(pr.value)),
            (Some(_), Some(pr)) => {
                self.p.push(
                    Problem::new(pr.span, "a field maps to a line item or a list property, not both")
                        .help("keep `anaplan` (a line item of the module) or `anaplan_property` (a property of the list)"),
                );
                None
            }
            (None, None) if ft.attempted("anaplan_property") => None,
            (None, None) => {
                ft.missing(self.p, "anaplan", "name the Anaplan line item, e.g. anaplan = \"Amount\" (or anaplan_property = \"…\")");
                None
            }
        };
        let kind = self.kind(ft);
        let picklist = match kind {
            Some(ValueKind::Picklist) => self.picklist(ft),
            // An unknown type is reported already; `values` may well be right.
            None => None,
            Some(_) => {
                for key in ["values", "map"] {
                    if let Some(v) = ft.get(key) {
                        self.p.push(
                            Problem::new(
                                v.span(),
                                format!("`{key}` applies only to picklist fields"),
                            )
                            .help("set type = \"picklist\", or remove it"),
                        );
                    }
                }
                None
            }
        };
        let blank = kind.and_then(|k| self.blank(ft, k));
        let parts = self.policy_parts(ft);
        let (crm, anaplan, kind, blank) = (crm?, anaplan?, kind?, blank?);
        let info = FieldInfo {
            kind,
            picklist: picklist.clone(),
        };
        let policy = self.policy(None, &parts, &info, &ft.span)?;
        Some((
            FieldRule {
                id: format!("{object}.{}", crm.value),
                crm: crm.value,
                anaplan,
                kind,
                picklist,
                blank,
                policy,
                overrides: Vec::new(),
                span: ft.span.clone(),
            },
            info,
        ))
    }

    pub(super) fn kind(&mut self, ft: &Table<'_, '_>) -> Option<ValueKind> {
        let ty = ft.required_str(
            self.p,
            "type",
            "type = \"text\", \"number\", \"boolean\", \"date\" or \"picklist\"",
        )?;
        let options = [
            ("text", 0u8),
            ("number", 1),
            ("boolean", 2),
            ("date", 3),
            ("picklist", 4),
        ];
        let tag = choice(self.p, &ty, "type", &options)?;
        let scale = ft.uint(self.p, "scale");
        match (tag, scale) {
            (1, Some((s, span))) => {
                if s > u64::from(ValueKind::MAX_SCALE) {
                    self.p.push(Problem::new(
                        span,
                        format!("scale must be at most {}", ValueKind::MAX_SCALE),
                    ));
                    return None;
                }
                Some(ValueKind::Number { scale: s as u8 })
            }
            (1, None) => {
                if ft.get("scale").is_none() {
                    ft.missing(
                        self.p,
                        "scale",
                        "give the digits after the point: scale = 2 for currency, 0 for counts",
                    );
                }
                None
            }
            (_, Some((_, span))) => {
                self.p.push(
                    Problem::new(span, "`scale` applies only to number fields")
                        .help("remove it, or set type = \"number\""),
                );
                None
            }
            (0, None) => Some(ValueKind::Text),
            (2, None) => Some(ValueKind::Boolean),
            (3, None) => Some(ValueKind::Date),
            _ => Some(ValueKind::Picklist),
        }
    }

    /// `blank`: whether a CRM null and Anaplan's blank 0 / false are one value (see
    /// [`Blank`]). Only numbers and booleans have a blank Anaplan cannot tell from a value.
    pub(super) fn blank(&mut self, ft: &Table<'_, '_>, kind: ValueKind) -> Option<Blank> {
        let Some(s) = ft.str(self.p, "blank") else {
            return Some(Blank::default());
        };
        let empty = match kind {
            ValueKind::Number { .. } => "zero",
            ValueKind::Boolean => "false",
            _ => {
                self.p.push(
                    Problem::new(s.span, "`blank` applies only to number and boolean fields")
                        .help("an empty Anaplan cell of text, dates and picklists already reads as no value: remove it"),
                );
                return None;
            }
        };
        choice(
            self.p,
            &s,
            "blank",
            &[(empty, Blank::Empty), ("distinct", Blank::Distinct)],
        )
    }

    pub(super) fn picklist(&mut self, ft: &Table<'_, '_>) -> Option<Picklist> {
        let Some((values, span)) = ft.str_array(self.p, "values") else {
            if ft.get("values").is_none() {
                ft.missing(
                    self.p,
                    "values",
                    "list the CRM picklist values: values = [\"Prospecting\", \"Closed Won\"]",
                );
            }
            return None;
        };
        let mut pick = Picklist::default();
        for v in &values {
            if !pick.values.insert(v.value.clone()) {
                self.p.push(Problem::new(
                    v.span.clone(),
                    format!("`{}` is listed twice", v.value),
                ));
            }
        }
        if pick.values.is_empty() {
            self.p
                .push(Problem::new(span, "a picklist needs at least one value"));
            return None;
        }
        let mut unlisted = false;
        if let Some(map) = ft.map(self.p, "map") {
            let mut seen_targets: BTreeMap<String, Range<usize>> = BTreeMap::new();
            for (key, value) in map.entries() {
                let Some(DeValue::String(target)) = Some(value.get_ref()) else {
                    self.p.push(Problem::new(
                        value.span(),
                        "a value map entry must be a string: \"CRM value\" = \"Anaplan item\"",
                    ));
                    continue;
                };
                let target = target.to_string();
                if !pick.values.contains(&key.value) {
                    let names: Vec<&str> = pick.values.iter().map(String::as_str).collect();
                    let mut problem = Problem::new(
                        key.span.clone(),
                        format!("`{}` is not one of the picklist's values", key.value),
                    );
                    if let Some(guess) = did_you_mean(&key.value, &names) {
                        problem = problem.help(format!("did you mean `{guess}`?"));
                        if let Some(listed) = values.iter().find(|v| v.value == guess) {
                            problem = problem.also(listed.span.clone(), "listed here");
                        }
                    }
                    self.p.push(problem);
                    // Which spelling is the typo is for the author to say: the picklist is
                    // not used, so `when`s naming the value do not repeat this error.
                    unlisted = true;
                    continue;
                }
                if let Some(first) = seen_targets.get(&target) {
                    self.p.push(
                        Problem::new(value.span(), format!("two CRM values map to `{target}`"))
                            .also(first.clone(), "first mapped here")
                            .help("each Anaplan item may stand for one CRM value, or values read back from Anaplan would be ambiguous"),
                    );
                    continue;
                }
                seen_targets.insert(target.clone(), value.span());
                pick.to_anaplan.insert(key.value.clone(), target.clone());
                pick.from_anaplan.insert(target, key.value);
            }
            // A CRM value kept as-is must not collide with another value's Anaplan name.
            for v in &pick.values {
                if !pick.to_anaplan.contains_key(v)
                    && let Some(source) = pick.from_anaplan.get(v)
                {
                    self.p.push(
                        Problem::new(
                            map.span.clone(),
                            format!(
                                "`{source}` maps to `{v}`, which is also an unmapped CRM value"
                            ),
                        )
                        .help(format!("map `{v}` to a name of its own")),
                    );
                }
            }
        }
        (!unlisted).then_some(pick)
    }

    /// A CRM field or an Anaplan line item (or list property) mapped by two `[[field]]`s.
    /// Checked on the raw tables, so a field that failed other checks is still counted.
    pub(super) fn check_duplicates(&mut self, tables: &[Table<'_, '_>]) {
        let mut first: BTreeMap<(&str, String), Range<usize>> = BTreeMap::new();
        for t in tables {
            for key in ["crm", "anaplan", "anaplan_property"] {
                let Some(value) = t.get(key) else { continue };
                let DeValue::String(name) = value.get_ref() else {
                    continue;
                };
                let (namespace, what) = match key {
                    "crm" => ("crm", "CRM field"),
                    // One namespace: fields are also found by their Anaplan name.
                    "anaplan" => ("anaplan", "Anaplan line item"),
                    _ => ("anaplan", "Anaplan list property"),
                };
                match first.get(&(namespace, name.to_string())) {
                    Some(earlier) => self.p.push(
                        Problem::new(value.span(), format!("{what} `{name}` is mapped twice"))
                            .also(earlier.clone(), "first mapped here")
                            .help("a field has one rule; use [[field.when]] for conditions"),
                    ),
                    None => {
                        first.insert((namespace, name.to_string()), value.span());
                    }
                }
            }
        }
    }
}
