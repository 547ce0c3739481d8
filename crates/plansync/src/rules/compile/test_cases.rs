//! `[[test]]` cases: a field, an observation, the state around it and the decision expected,
//! each read against the field's type. An unknown name is reported once.

use super::*;

impl Compiler<'_, '_> {
    pub(super) fn tests(
        &mut self,
        root: &Table<'_, '_>,
        fields: &[FieldRule],
        kinds: &BTreeMap<String, FieldInfo>,
    ) -> Vec<TestCase> {
        let tables = root.table_array(self.p, "test", "[[test]]", TEST_KEYS);
        let mut out = Vec::new();
        for (i, tt) in tables.iter().enumerate() {
            if let Some(case) = self.test(tt, i, fields, kinds) {
                out.push(case);
            }
        }
        out
    }

    pub(super) fn test(
        &mut self,
        tt: &Table<'_, '_>,
        index: usize,
        fields: &[FieldRule],
        kinds: &BTreeMap<String, FieldInfo>,
    ) -> Option<TestCase> {
        let name = tt
            .str(self.p, "name")
            .map_or(format!("test {}", index + 1), |s| s.value);
        let field_name =
            tt.required_str(self.p, "field", "the CRM name of the field under test")?;
        let Some(field) = fields.iter().find(|f| f.crm == field_name.value) else {
            let names: Vec<&str> = fields.iter().map(|f| f.crm.as_str()).collect();
            let mut problem = Problem::new(
                field_name.span.clone(),
                format!("`{}` is not a mapped field", field_name.value),
            );
            if let Some(g) = did_you_mean(&field_name.value, &names) {
                problem = problem.help(format!("did you mean `{g}`?"));
                if let Some(f) = fields.iter().find(|f| f.crm == g) {
                    problem = problem.also(f.span.clone(), format!("`{g}` is mapped here"));
                }
            }
            self.report_once("field", &field_name.value, problem);
            return None;
        };
        let kind = field.kind;
        let at = self.instant(tt, "at", true);
        let other_at = self.instant(tt, "other_at", false);
        let from = tt
            .required_str(
                self.p,
                "from",
                "from = \"crm\" or \"anaplan\": the side reporting the value",
            )
            .and_then(|s| choice(self.p, &s, "from", SIDES));
        let value = match tt.get("value") {
            Some(v) => self.literal(v, kind),
            None => {
                tt.missing(
                    self.p,
                    "value",
                    "the value the side reports (\"\" for null)",
                );
                None
            }
        };
        let base = tt.get("base").map(|v| self.literal(v, kind));
        let other = tt.get("other").map(|v| self.literal(v, kind));
        let in_flight = match tt.table(self.p, "in_flight", &["to", "value"]) {
            Some(ft) => {
                let to = ft
                    .required_str(self.p, "to", "the side being written")
                    .and_then(|s| choice(self.p, &s, "to", SIDES));
                let v = match ft.get("value") {
                    Some(v) => self.literal(v, kind),
                    None => {
                        ft.missing(self.p, "value", "the value being written");
                        None
                    }
                };
                Some(to.zip(v))
            }
            None => None,
        };
        let last_ack = match tt.table(self.p, "last_ack", &["to", "value", "at", "replaced"]) {
            Some(at_table) => {
                let to = at_table
                    .required_str(self.p, "to", "the side our write went to")
                    .and_then(|s| choice(self.p, &s, "to", SIDES));
                let value = match at_table.get("value") {
                    Some(v) => self.literal(v, kind),
                    None => {
                        at_table.missing(self.p, "value", "the value we wrote");
                        None
                    }
                };
                let when = self.instant(&at_table, "at", true);
                let replaced = at_table.get("replaced").and_then(|v| self.literal(v, kind));
                match (to, value, when) {
                    (Some(to), Some(value), Some(at)) => Some(crate::model::AckedWrite {
                        to,
                        value,
                        at,
                        replaced,
                    }),
                    _ => None,
                }
            }
            None => None,
        };
        let held = tt.bool(self.p, "held").is_some_and(|(b, _)| b);
        let ours = tt.bool(self.p, "ours").is_some_and(|(b, _)| b);
        let mut record = BTreeMap::new();
        if let Some(rt) = tt.map(self.p, "record") {
            for (key, v) in rt.entries() {
                match kinds.get(&key.value) {
                    Some(info) => {
                        if let Some(val) = self.literal(v, info.kind) {
                            record.insert(key.value, val);
                        }
                    }
                    None => {
                        let names: Vec<&str> = kinds.keys().map(String::as_str).collect();
                        let mut problem = Problem::new(
                            key.span.clone(),
                            format!("`{}` is not a field of this pairing", key.value),
                        );
                        if let Some(g) = did_you_mean(&key.value, &names) {
                            problem = problem.help(format!("did you mean `{g}`?"));
                        }
                        self.report_once("field", &key.value, problem);
                    }
                }
            }
        }
        let mut flags = BTreeMap::new();
        if let Some(ft) = tt.map(self.p, "flags") {
            for (key, v) in ft.entries() {
                match v.get_ref() {
                    DeValue::Boolean(b) => {
                        flags.insert(key.value, *b);
                    }
                    _ => self
                        .p
                        .push(Problem::new(v.span(), "a flag is true or false")),
                }
            }
        }
        let expect = self.expectation(tt, kind);
        Some(TestCase {
            name,
            span: tt.span.clone(),
            field: field.crm.clone(),
            at: at?,
            from: from?,
            value: value?,
            base: base.flatten(),
            other: other.flatten(),
            other_at,
            in_flight: in_flight.flatten(),
            held,
            ours,
            last_ack,
            record,
            flags,
            expect: expect?,
        })
    }

    pub(super) fn instant(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        required: bool,
    ) -> Option<DateTime<Utc>> {
        let Some(value) = t.get(key) else {
            if required {
                t.missing(
                    self.p,
                    key,
                    "a date-time with an offset, e.g. at = 2026-12-28T15:00:00Z",
                );
            }
            return None;
        };
        let text = match scalar(value) {
            Some(Scalar::Date(s) | Scalar::Str(s)) => s,
            _ => String::new(),
        };
        match DateTime::parse_from_rfc3339(&text) {
            Ok(d) => Some(d.with_timezone(&Utc)),
            Err(_) => {
                self.p.push(
                    Problem::new(
                        value.span(),
                        format!("`{key}` must be a date-time with an offset"),
                    )
                    .help("e.g. 2026-12-28T15:00:00Z or 2026-12-28T09:00:00-06:00"),
                );
                None
            }
        }
    }

    pub(super) fn expectation(
        &mut self,
        tt: &Table<'_, '_>,
        kind: ValueKind,
    ) -> Option<Expectation> {
        let Some(et) = tt.table(self.p, "expect", EXPECT_KEYS) else {
            if tt.get("expect").is_none() {
                tt.missing(
                    self.p,
                    "expect",
                    "expect = { action = \"write\", to = \"anaplan\" }",
                );
            }
            return None;
        };
        let action = et.required_str(
            self.p,
            "action",
            "one of the decision actions, e.g. \"write\" or \"hold\"",
        )?;
        if !Action::NAMES.contains(&action.value.as_str()) {
            let mut problem = Problem::new(
                action.span.clone(),
                format!("`{}` is not an action", action.value),
            )
            .label(format!("expected one of: {}", Action::NAMES.join(", ")));
            if let Some(g) = did_you_mean(&action.value, &Action::NAMES) {
                problem = problem.help(format!("did you mean `{g}`?"));
            }
            self.p.push(problem);
            return None;
        }
        let to = et
            .str(self.p, "to")
            .and_then(|s| choice(self.p, &s, "to", SIDES));
        let value = et.get("value").and_then(|v| self.literal(v, kind));
        let exception = match et.str(self.p, "exception") {
            Some(s) if s.value == "none" => Some(None),
            Some(s) => match s.value.parse::<ExceptionKind>() {
                Ok(k) => Some(Some(k)),
                Err(e) => {
                    self.p
                        .push(Problem::new(s.span, e).help("or \"none\" to expect no exception"));
                    return None;
                }
            },
            None => None,
        };
        let rule = et.str(self.p, "rule").map(|s| s.value);
        Some(Expectation {
            action: action.value,
            to,
            value,
            exception,
            rule,
        })
    }
}
