//! The `[pairing]` section (the CRM object, the Anaplan workspace, model, list and module,
//! flags, extra CRM fields) and `[lifecycle]`, and the walk over the whole file that joins
//! every part into a `Pairing`.

use super::*;

impl Compiler<'_, '_> {
    pub(super) fn pairing(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        name: &str,
        path: &Path,
    ) -> Option<Pairing> {
        let root = Table::root(self.p, root, ROOT_KEYS);
        // A misspelt section moves what follows it: the `[[field.when]]`s after `[[fild]]`
        // join the field before, and a `[winow.x]` leaves its window undefined. Whatever
        // else would be reported follows from the misspelling, so it is reported alone.
        if root.has_misspelt() {
            self.tests_not_run = count_tests(&root);
            return None;
        }
        let Some(pairing_value) = root.get("pairing") else {
            self.p.push(
                Problem::new(0..0, "the file has no [pairing] section")
                    .help("start the file with [pairing], naming the CRM object and the Anaplan list and module"),
            );
            return None;
        };
        let pt = Table::new(self.p, pairing_value, "[pairing]", PAIRING_KEYS)?;
        let crm_object = pt.required_str(
            self.p,
            "crm",
            "name the CRM object, e.g. crm = \"Opportunity\"",
        );
        let anaplan = self.anaplan_target(&pt);
        let flags = pt
            .str_array(self.p, "flags")
            .map(|(v, _)| v)
            .unwrap_or_default();
        let extra = pt
            .str_array(self.p, "extra_crm_fields")
            .map(|(v, _)| v)
            .unwrap_or_default();
        let lifecycle = self.lifecycle(&root);
        let calendar = self.calendar(&root);
        let windows = self.windows(&root, &calendar);

        let field_tables = root.table_array(self.p, "field", "[[field]]", &all_field_keys());
        if field_tables.is_empty() && root.get("field").is_none() {
            self.p.push(
                Problem::new(pt.span.clone(), "the pairing maps no field")
                    .help("add a [[field]] section for each synced field"),
            );
        }
        let object = crm_object
            .as_ref()
            .map_or("?", |s| s.value.as_str())
            .to_string();
        let mut fields = Vec::new();
        let mut infos = BTreeMap::new();
        for ft in &field_tables {
            if let Some((rule, info)) = self.field(ft, &object) {
                infos.insert(rule.crm.clone(), info);
                fields.push(rule);
            }
        }
        self.check_duplicates(&field_tables);

        // The names a `when` may test: mapped fields (even one that failed its own checks,
        // so its `when`s are not misreported) and the declared extra fields.
        let mut record_kinds: BTreeMap<String, FieldInfo> = infos;
        let mut untyped = BTreeSet::new();
        let mut names_unreadable = false;
        for ft in &field_tables {
            let mut quiet = Problems::default();
            let mut shadow = Compiler {
                p: &mut quiet,
                text: self.text,
                tests_not_run: 0,
                once: BTreeMap::new(),
            };
            let crm = ft.str(shadow.p, "crm");
            let kind = shadow.kind(ft);
            match (&crm, kind) {
                (None, _) => names_unreadable = true,
                (Some(crm), None) => {
                    untyped.insert(crm.value.clone());
                }
                (Some(_), Some(_)) => {}
            }
            if let (Some(crm), Some(kind)) = (crm, kind) {
                let picklist = (kind == ValueKind::Picklist)
                    .then(|| shadow.picklist(ft))
                    .flatten();
                record_kinds
                    .entry(crm.value)
                    .or_insert(FieldInfo { kind, picklist });
            }
        }
        for extra in &extra {
            if record_kinds.contains_key(&extra.value) {
                self.p.push(
                    Problem::new(
                        extra.span.clone(),
                        format!("`{}` is already a mapped field", extra.value),
                    )
                    .help("only fields that are not synced need to be listed in extra_crm_fields"),
                );
            }
            record_kinds
                .entry(extra.value.clone())
                .or_insert(FieldInfo {
                    kind: ValueKind::Text,
                    picklist: None,
                });
        }
        let mut flag_names: BTreeSet<String> = flags.iter().map(|f| f.value.clone()).collect();
        for f in &fields {
            if f.kind == ValueKind::Boolean {
                flag_names.insert(f.anaplan.name().to_string());
            }
        }
        let scope = Scope {
            windows: &windows,
            window_names: root
                .get("window")
                .and_then(|w| match w.get_ref() {
                    DeValue::Table(t) => Some(t.keys().map(|k| k.get_ref().to_string()).collect()),
                    _ => None,
                })
                .unwrap_or_default(),
            flags_unreadable: pt.attempted("flags")
                && pt
                    .get("flags")
                    .is_none_or(|v| !matches!(v.get_ref(), DeValue::Array(_))),
            untyped,
            names_unreadable,
            record_kinds: &record_kinds,
            flags: &flag_names,
        };
        for ft in &field_tables {
            match fields.iter_mut().find(|f| f.span == ft.span) {
                Some(rule) => rule.overrides = self.overrides(ft, rule, &scope),
                // The field itself is broken; still report what is wrong in its `when`s.
                None => {
                    let mut known = WHEN_ONLY_KEYS.to_vec();
                    known.extend_from_slice(POLICY_KEYS);
                    for wt in ft.table_array(self.p, "when", "[[field.when]]", &known) {
                        self.conditions(&wt, &scope);
                    }
                }
            }
        }
        // A case of a definition that did not compile would only repeat its error (its
        // field "not mapped", its value "not a number"): the root is reported alone, and
        // the cases wait until the definitions compile.
        let tests = if self.p.0.is_empty() {
            self.tests(&root, &fields, &record_kinds)
        } else {
            self.tests_not_run = count_tests(&root);
            Vec::new()
        };

        if lifecycle.crm_delete == CrmDelete::Flag
            && let Some(flag) = &lifecycle.deleted_flag
            && fields.iter().any(|f| f.anaplan.name() == flag)
        {
            self.p.push(Problem::new(
                root.get("lifecycle").map_or(0..0, |v| v.span()),
                format!("deleted_flag `{flag}` is also a synced field; use a line item of its own"),
            ));
        }

        let (crm_object, anaplan) = (crm_object?, anaplan?);
        if !self.p.0.is_empty() {
            return None;
        }
        Some(Pairing {
            name: name.to_string(),
            path: path.to_path_buf(),
            hash: hex(&Sha256::digest(self.text.as_bytes())),
            crm_object: crm_object.value,
            anaplan,
            flags: flags.into_iter().map(|f| f.value).collect(),
            extra_crm_fields: extra.into_iter().map(|f| f.value).collect(),
            lifecycle,
            calendar,
            windows,
            fields,
            tests,
        })
    }

    pub(super) fn anaplan_target(&mut self, pt: &Table<'_, '_>) -> Option<AnaplanTarget> {
        let Some(at) = pt.table(self.p, "anaplan", ANAPLAN_KEYS) else {
            if pt.get("anaplan").is_none() {
                pt.missing(
                    self.p,
                    "anaplan",
                    "add anaplan = { workspace = \"…\", model = \"…\", list = \"…\", module = \"…\" }",
                );
            }
            return None;
        };
        let mut get = |key: &str, help: &str| at.required_str(self.p, key, help);
        let workspace = get(
            "workspace",
            "the workspace id: 32 hex digits, from the Anaplan URL",
        );
        let model = get("model", "the model id: 32 hex digits, from the Anaplan URL");
        let list = get("list", "the list whose item codes are the CRM record ids");
        let module = get(
            "module",
            "the module whose line items hold the synced fields",
        );
        for id in [&workspace, &model].into_iter().flatten() {
            if !is_hex32(&id.value) {
                self.p.push(
                    Problem::new(
                        id.span.clone(),
                        format!("`{}` is not an Anaplan id", id.value),
                    )
                    .label("expected 32 hexadecimal digits")
                    .help("copy the id from the Anaplan URL or from GET /workspaces"),
                );
            }
        }
        for named in [&list, &module].into_iter().flatten() {
            if named.value.trim().is_empty() {
                self.p
                    .push(Problem::new(named.span.clone(), "the name is empty"));
            }
        }
        Some(AnaplanTarget {
            workspace: workspace?.value,
            model: model?.value,
            list: list?.value,
            module: module?.value,
        })
    }

    pub(super) fn lifecycle(&mut self, root: &Table<'_, '_>) -> Lifecycle {
        let mut lc = Lifecycle::default();
        let Some(t) = root.table(self.p, "lifecycle", LIFECYCLE_KEYS) else {
            return lc;
        };
        let mut crm_delete_read = !t.attempted("crm_delete");
        if let Some(s) = t.str(self.p, "crm_delete") {
            let options = [
                ("delete_item", CrmDelete::DeleteItem),
                ("flag", CrmDelete::Flag),
                ("ignore", CrmDelete::Ignore),
            ];
            let chosen = choice(self.p, &s, "crm_delete", &options);
            crm_delete_read = chosen.is_some();
            lc.crm_delete = chosen.unwrap_or(lc.crm_delete);
        }
        if let Some(s) = t.str(self.p, "crm_undelete") {
            let options = [
                ("restore", CrmUndelete::Restore),
                ("ignore", CrmUndelete::Ignore),
            ];
            lc.crm_undelete =
                choice(self.p, &s, "crm_undelete", &options).unwrap_or(lc.crm_undelete);
        }
        if let Some(s) = t.str(self.p, "anaplan_delete") {
            let options = [
                ("exception", AnaplanDelete::Exception),
                ("recreate", AnaplanDelete::Recreate),
                ("delete_record", AnaplanDelete::DeleteRecord),
            ];
            lc.anaplan_delete =
                choice(self.p, &s, "anaplan_delete", &options).unwrap_or(lc.anaplan_delete);
        }
        if let Some(s) = t.str(self.p, "new_item") {
            let options = [
                ("hold", NewItem::Hold),
                ("seed_from_crm", NewItem::SeedFromCrm),
            ];
            lc.new_item = choice(self.p, &s, "new_item", &options).unwrap_or(lc.new_item);
        }
        let flag = t.str(self.p, "deleted_flag");
        match (&flag, lc.crm_delete) {
            // What crm_delete says is not known: its error is the one to fix.
            _ if !crm_delete_read => {}
            (None, CrmDelete::Flag) => t.missing(
                self.p,
                "deleted_flag",
                "crm_delete = \"flag\" needs the boolean line item to set: deleted_flag = \"CRM Deleted\"",
            ),
            (Some(f), CrmDelete::DeleteItem | CrmDelete::Ignore) => self.p.push(
                Problem::new(f.span.clone(), "deleted_flag is set but crm_delete is not \"flag\"")
                    .help("set crm_delete = \"flag\", or remove deleted_flag"),
            ),
            _ => {}
        }
        lc.deleted_flag = flag.map(|f| f.value);
        lc
    }
}
