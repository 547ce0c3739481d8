//! The pairing's list as the sink knows it: the ids its names resolve to ([`Target`]), the
//! code → item id cache and the reads that fill it (whole, or through a read request when
//! the list is large), and the calls that create and delete items.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::Utc;

use crate::anaplan::limits::LOOKUP_CODES_PER_CALL;
use crate::anaplan::{AnaplanClient, AnaplanError, ListItem, ListItemWrite};
use crate::engine::anaplan_target::{self, ReadLimits, ResolvedTarget};
use crate::rules::Pairing;

use super::AnaplanSink;
use super::answers::Run;
use super::import::ImportState;
use super::plan::{Op, RecordPlan};

/// The ids one pairing's names resolve to, and what the sink knows of its list.
pub(super) struct Target {
    /// The list and module ids, and the names they were resolved from: a reloaded rule file
    /// naming other objects re-resolves.
    pub(super) resolved: ResolvedTarget,
    /// Line item name (trimmed) → ids with that name (more than one: ambiguous).
    pub(super) line_items: HashMap<String, Vec<String>>,
    /// Item code → item id; `None` until read, and again after a write whose effect on the
    /// list is unknown.
    pub(super) items: Option<HashMap<String, String>>,
    /// How many items the list had at its last read, those without a code included (the
    /// cache leaves them out): what decides whether the next read is paged.
    pub(super) list_size: Option<usize>,
    /// Whether the last read of the list went through a read request (it was large, or
    /// Anaplan refused it whole).
    list_paged: bool,
    /// The bulk import, once looked up.
    pub(super) import: Option<ImportState>,
}

impl Target {
    pub(super) fn line_item(&self, name: &str) -> Result<String, String> {
        match self.line_items.get(name.trim()).map(Vec::as_slice) {
            Some([one]) => Ok(one.clone()),
            Some(many) if many.len() > 1 => Err(format!(
                "{} line items are named `{name}` in module `{}`; the rule file must name one",
                many.len(),
                self.resolved.names.module
            )),
            _ => {
                // A rule file may name a line item by id.
                if self.line_items.values().flatten().any(|id| id == name) {
                    return Ok(name.to_string());
                }
                Err(format!(
                    "no line item `{name}` in module `{}` of model {}",
                    self.resolved.names.module, self.resolved.names.model
                ))
            }
        }
    }

    fn set_items(&mut self, read: ListRead) {
        self.items = Some(read.ids);
        self.list_size = Some(read.size);
        self.list_paged = read.paged;
    }

    /// Items found by a lookup, into the cache (which must be filled).
    fn add_items(&mut self, found: Vec<ListItem>) {
        let Some(items) = self.items.as_mut() else {
            return;
        };
        for item in found {
            if let Some(code) = item.code.filter(|c| !c.is_empty())
                && items.insert(code, item.id).is_none()
            {
                self.list_size = self.list_size.map(|n| n + 1);
            }
        }
    }
}

/// One read of the list: its items' ids by code, how many items it had, and whether it
/// was read through a read request.
struct ListRead {
    ids: HashMap<String, String>,
    size: usize,
    paged: bool,
}

impl AnaplanSink {
    /// Resolves (once) the pairing's list, module and line item ids.
    pub(super) async fn resolve(
        &mut self,
        pairing: &Pairing,
        run: &mut Run,
    ) -> Result<(), AnaplanError> {
        if self
            .targets
            .get(&pairing.name)
            .is_some_and(|t| t.resolved.is_for(&pairing.anaplan))
        {
            return Ok(());
        }
        run.count("metadata", anaplan_target::RESOLVE_CALLS as u64);
        let resolved = anaplan_target::resolve(&self.client, &pairing.anaplan)
            .await
            .map_err(|e| e.source)?;
        run.count("metadata", 1);
        let all = self
            .client
            .list_line_items(resolved.model(), Some(&resolved.module_id))
            .await?;
        let mut line_items: HashMap<String, Vec<String>> = HashMap::new();
        for li in all {
            line_items
                .entry(li.name.trim().to_string())
                .or_default()
                .push(li.id);
        }
        tracing::debug!(target: "plansync::engine", event = "sink_resolved", pairing = %pairing.name, list_id = %resolved.list_id, module_id = %resolved.module_id, line_items = line_items.len(), "resolved the pairing's names (3 calls)");
        self.targets.insert(
            pairing.name.clone(),
            Target {
                resolved,
                line_items,
                items: None,
                list_size: None,
                list_paged: false,
                import: None,
            },
        );
        Ok(())
    }

    /// Reads the list's items into the cache when it is not filled.
    pub(super) async fn load_items(
        &mut self,
        pairing: &Pairing,
        run: &mut Run,
    ) -> Result<(), AnaplanError> {
        let Some(target) = self.targets.get_mut(&pairing.name) else {
            return Ok(());
        };
        if target.items.is_some() {
            return Ok(());
        }
        let items = read_items(&self.client, target, None, run).await?;
        target.set_items(items);
        Ok(())
    }

    /// Adds the items of records that need one and have none; rejects every request of a
    /// record whose item could not be created.
    pub(super) async fn create_items(
        &mut self,
        pairing: &Pairing,
        records: &mut BTreeMap<&str, RecordPlan<'_>>,
        run: &mut Run,
    ) {
        let Some(target) = self.targets.get_mut(&pairing.name) else {
            return;
        };
        let known = target.items.as_ref();
        let missing: Vec<&str> = records
            .iter()
            .filter(|(code, plan)| {
                plan.needs_item() && !known.is_some_and(|items| items.contains_key(**code))
            })
            .map(|(code, _)| *code)
            .collect();
        if missing.is_empty() {
            return;
        }
        let writes: Vec<ListItemWrite> = missing
            .iter()
            .map(|code| ListItemWrite {
                code: code.to_string(),
                name: Some(code.to_string()),
                properties: records
                    .get(code)
                    .map(|plan| {
                        plan.ops
                            .iter()
                            .filter_map(|(_, op)| match op {
                                Op::Property { name, value } => Some((name.clone(), value.clone())),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                ..ListItemWrite::default()
            })
            .collect();
        let ops_of = |records: &BTreeMap<&str, RecordPlan>, code: &str| -> Vec<usize> {
            records
                .get(code)
                .map(|p| p.ops.iter().map(|(i, _)| *i).collect())
                .unwrap_or_default()
        };
        let at = Utc::now();
        let added = self
            .client
            .add_list_items(
                &target.resolved.names.model,
                &target.resolved.list_id,
                &writes,
            )
            .await;
        let outcome = match added {
            Ok(o) => o,
            Err(e) => {
                // Some items may have been added: read the list again next time.
                target.items = None;
                let which: Vec<usize> = missing.iter().flat_map(|c| ops_of(records, c)).collect();
                run.failed_call(which, "adding list items", &e);
                for code in &missing {
                    records.remove(code);
                }
                return;
            }
        };
        run.count("list_items", outcome.calls as u64);
        tracing::debug!(target: "plansync::engine", event = "sink_items_added",
            pairing = %pairing.name,
            items = writes.len(),
            added = outcome.added,
            failures = outcome.failures.len(),
            calls = outcome.calls,
            "added list items"
        );
        let failures: HashMap<usize, String> = outcome
            .failures
            .iter()
            .map(|f| (f.index, format!("{}: {}", f.failure_type, f.details)))
            .collect();
        // Read the list again: for the new items' ids, and because a refused add of an item
        // that turns out to exist (added by someone else since the cache was filled) is fine.
        let expected = target.list_size.map(|n| n + writes.len());
        let large = target.list_paged || ReadLimits::default().list_paged(expected);
        let reread = if large && target.items.is_some() {
            // A large list is not read again whole for a few new items: their codes are
            // looked up, which tells the same about them.
            let codes: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
            run.count(
                "list_items",
                codes.len().div_ceil(LOOKUP_CODES_PER_CALL) as u64,
            );
            self.client
                .lookup_list_items(
                    &target.resolved.names.model,
                    &target.resolved.list_id,
                    &codes,
                )
                .await
                .map(|found| target.add_items(found))
        } else {
            read_items(&self.client, target, expected, run)
                .await
                .map(|items| target.set_items(items))
        };
        let fresh = match reread {
            Ok(()) => true,
            Err(e) => {
                target.items = None;
                tracing::warn!(target: "plansync::engine", event = "sink_list_reread_failed", error = %e, pairing = %pairing.name,
                    "could not read the list after adding items");
                false
            }
        };
        for (n, code) in missing.iter().enumerate() {
            let exists = target
                .items
                .as_ref()
                .is_some_and(|items| items.contains_key(*code));
            let refused = failures.get(&n);
            let ops = ops_of(records, code);
            match (exists, refused, fresh) {
                // Created, or already there: the properties went with the add only when it
                // was not refused.
                (true, None, _) | (false, None, false) => {
                    if let Some(plan) = records.get_mut(code) {
                        for (i, op) in &plan.ops {
                            if matches!(op, Op::Property { .. } | Op::Ensure) {
                                run.ack(*i, at);
                            }
                        }
                        plan.ops
                            .retain(|(_, op)| !matches!(op, Op::Property { .. }));
                    }
                }
                (true, Some(_), _) => {
                    // It exists after all; its properties still need an update.
                }
                (false, Some(why), true) => {
                    for i in ops {
                        run.reject(i, format!("list item could not be created: {why}"));
                    }
                    records.remove(code);
                }
                (false, Some(why), false) => {
                    for i in ops {
                        run.retry(
                            i,
                            &format!(
                                "list item was refused ({why}) and the list could not be read to check whether it exists"
                            ),
                        );
                    }
                    records.remove(code);
                }
                (false, None, true) => {
                    for i in ops {
                        run.reject(
                            i,
                            "list item could not be created: Anaplan accepted the add but the item is not in the list",
                        );
                    }
                    records.remove(code);
                }
            }
        }
    }

    /// Deletes the items of `$delete_item` requests; an item already gone counts as deleted.
    pub(super) async fn delete_items(
        &mut self,
        pairing: &Pairing,
        records: &BTreeMap<&str, RecordPlan<'_>>,
        run: &mut Run,
    ) {
        let mut codes = Vec::new();
        let mut carried = Vec::new();
        for (code, plan) in records {
            for (i, op) in &plan.ops {
                if matches!(op, Op::Delete) && run.pending(*i) {
                    codes.push(code.to_string());
                    carried.push(*i);
                }
            }
        }
        if codes.is_empty() {
            return;
        }
        if let Some(message) = run.down.clone() {
            for i in carried {
                run.not_reached(i, &message);
            }
            return;
        }
        let Some(target) = self.targets.get_mut(&pairing.name) else {
            return;
        };
        let at = Utc::now();
        let outcome = match self
            .client
            .delete_list_items(
                &target.resolved.names.model,
                &target.resolved.list_id,
                &codes,
            )
            .await
        {
            Ok(o) => o,
            Err(e) => {
                target.items = None;
                run.failed_call(carried, "deleting list items", &e);
                return;
            }
        };
        run.count("list_items", outcome.calls as u64);
        tracing::debug!(target: "plansync::engine", event = "sink_items_deleted",
            pairing = %pairing.name,
            items = codes.len(),
            deleted = outcome.deleted,
            failures = outcome.failures.len(),
            calls = outcome.calls,
            "deleted list items"
        );
        if let Some(items) = target.items.as_mut() {
            for code in &codes {
                items.remove(code);
            }
        }
        if outcome.failures.is_empty() {
            for i in carried {
                run.ack(i, at);
            }
            return;
        }
        // A refused delete of an item that is not there is done; tell the two apart by
        // reading the list rather than by the wording of the failure.
        let present = match read_items(&self.client, target, target.list_size, run).await {
            Ok(items) => {
                let present: HashSet<String> = codes
                    .iter()
                    .filter(|c| items.ids.contains_key(*c))
                    .cloned()
                    .collect();
                target.set_items(items);
                Some(present)
            }
            Err(e) => {
                target.items = None;
                tracing::warn!(target: "plansync::engine", event = "sink_list_reread_failed", error = %e, "could not read the list after a refused delete");
                None
            }
        };
        let failures: HashMap<usize, String> = outcome
            .failures
            .iter()
            .map(|f| (f.index, format!("{}: {}", f.failure_type, f.details)))
            .collect();
        for (n, i) in carried.into_iter().enumerate() {
            let code = codes.get(n).map(String::as_str).unwrap_or("");
            match (failures.get(&n), &present) {
                (None, _) => run.ack(i, at),
                (Some(_), Some(p)) if !p.contains(code) => run.ack(i, at),
                (Some(why), Some(_)) => run.reject(i, format!("list item not deleted: {why}")),
                (Some(why), None) => run.retry(
                    i,
                    &format!(
                        "list item delete refused ({why}) and the list could not be read to check it"
                    ),
                ),
            }
        }
    }
}

/// One read of the list's items: code → id (items without a code are not plansync's),
/// whole or through a read request as [`anaplan_target::read_list`] decides. The size
/// decides from `expected` (what the cache held, plus the items just added), or else from
/// the list's item count, one call.
async fn read_items(
    client: &AnaplanClient,
    target: &Target,
    expected: Option<usize>,
    run: &mut Run,
) -> Result<ListRead, AnaplanError> {
    let count = match expected {
        Some(n) => Some(n),
        None => {
            run.count("list_items", 1);
            anaplan_target::item_count(client, &target.resolved).await?
        }
    };
    let mut read = ListRead {
        ids: HashMap::new(),
        size: 0,
        paged: false,
    };
    let limits = ReadLimits::default();
    let done = anaplan_target::read_list(
        client,
        &target.resolved,
        limits.list_paged(count),
        &mut |item: ListItem| {
            read.size += 1;
            if let Some(code) = item.code.filter(|c| !c.is_empty()) {
                read.ids.insert(code, item.id);
            }
        },
    )
    .await?;
    run.count("list_items", done.calls as u64);
    read.paged = done.paged;
    Ok(read)
}
