//! The Anaplan sink: turns a batch of [`WriteRequest`]s into as few Anaplan calls as the
//! batch allows, and answers one [`WriteOutcome`] per request.
//!
//! This file holds the sink, its settings and the pipeline; each step lives in its own file.
//! [`AnaplanSink::write`] groups the batch by pairing (rule file), in the order the pairings
//! first appear, and runs `write_pairing` for each, which does, in this order:
//! 0. **Plan** (`plan.rs`): each request is classified into an op against the pairing's
//!    rule; a request no rule allows is rejected without a call. When an earlier pairing
//!    found the tenant unreachable, every op is answered `Unreachable` here and nothing is
//!    sent.
//! 1. **Names to ids** (`items.rs`), once per pairing and kept: the list, the module and its
//!    line items (three calls; the tenant's budget is about 600 calls a minute). A name the
//!    model lacks rejects the pairing's requests; a failed call retries them. Then each cell
//!    op whose line item the module lacks (or names ambiguously) is rejected.
//! 2. **Item cache** (`items.rs`): list items are keyed by code = CRM id. The first write of
//!    a pairing reads the list once (code → item id); later batches use the cache. A large
//!    list is read with a read request, page by page (`read_items`).
//! 3. **Items first** (`items.rs`): every record whose item is not known is added in one
//!    call (name = code, properties from the batch's `ListProperty` writes) before any of its
//!    cells is written, then the list is read again for the new item ids (and to tell
//!    "refused" from "was already there": a duplicate-code refusal for an item that exists is
//!    a success); a large list is not read again: the new codes are looked up. A record
//!    whose item could not be created has every request answered and no cell written.
//!    `$ensure_item` requests of items that exist are then acked: nothing to send.
//! 4. **Checked writes** (`checked.rs`): requests with an `expect`ed current value are
//!    compared with a fresh read of the list and the module; those whose value changed are
//!    answered `Stale` and not written.
//! 5. **Properties** (`properties.rs`): `ListProperty` writes of existing items, one update
//!    call.
//! 6. **Cells** (`cells.rs`): `LineItem` fields and `$deleted_flag`, as transactional
//!    writes that the client splits and reports call by call, so each call's requests get
//!    that call's send time and a failed call answers only its own; or (`import.rs`), for a large batch of a pairing with a bulk import
//!    configured, a CSV upload and an import whose failure dump rows are tied back to the
//!    requests of their rows. The import and its data source file are looked up at the
//!    pairing's first bulk write, and kept.
//! 7. **Deletes** (`items.rs`): `$delete_item`, one delete call by code; an item already gone
//!    counts as deleted.
//!
//! Last, the item ids of the batch's records go into the report (for `record_map`).
//!
//! Failures (`answers.rs`): a per-cell or per-item failure rejects only its requests, with
//! Anaplan's own words. A call that fails as a whole (after the client's retries) answers
//! `Retry` for the requests it carried (each retried on its own backoff, and given up in
//! the end); requests of calls that succeeded stay `Acked`. A cell write or property update
//! Anaplan refused as a whole (a status: one value can cause that, through a firewall in
//! front of the tenant for one) is first sent again in halves, down to the write at fault,
//! within a bound of splits per batch (`answers::MAX_SPLITS`). When the failure says the tenant
//! cannot be reached at all (the retry budget ran out, the transport failed, the token was
//! refused), its requests and the rest of the batch are answered `Unreachable` without
//! spending more calls.
//!
//! Call counts in the report come from the client's outcomes (`calls`) for writes, one per
//! single-request read, and the difference of the client's `bulk` counter around an import
//! (which includes retries and, if another task shares the client, its bulk calls too).

mod answers;
mod cells;
mod checked;
mod import;
mod items;
mod plan;
mod properties;

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;

use crate::anaplan::AnaplanClient;
use crate::engine::write::{WriteOutcome, WriteReport, WriteRequest};
use crate::rules::{Pairing, RuleSet};

use answers::{Run, permanent};
use items::Target;
use plan::{Op, RecordPlan, classify};

/// How the sink chooses between transactional and bulk writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaplanSinkSettings {
    /// A batch of more cells than this goes as a bulk import (when the pairing has one).
    pub transactional_max_cells: usize,
    /// Pairing name (rule file stem, e.g. "opportunity") → name of the import definition
    /// in the model that loads that module from a CSV (e.g. "Load Opportunities").
    pub bulk_imports: BTreeMap<String, String>,
}

impl Default for AnaplanSinkSettings {
    /// One transactional call's worth of cells; no bulk imports.
    fn default() -> Self {
        AnaplanSinkSettings {
            transactional_max_cells: 100_000,
            bulk_imports: BTreeMap::new(),
        }
    }
}

/// Writes batches to Anaplan. Holds the resolved ids and item caches of the pairings it has
/// written, so it is meant to live as long as the engine (one per tenant).
pub struct AnaplanSink {
    client: AnaplanClient,
    settings: AnaplanSinkSettings,
    targets: HashMap<String, Target>,
}

impl AnaplanSink {
    pub fn new(client: AnaplanClient, settings: AnaplanSinkSettings) -> AnaplanSink {
        AnaplanSink {
            client,
            settings,
            targets: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &AnaplanSinkSettings {
        &self.settings
    }

    /// Forgets every pairing's item cache (the next write of each pairing reads its list
    /// again), e.g. after items were changed outside plansync.
    pub fn forget_items(&mut self) {
        for t in self.targets.values_mut() {
            t.items = None;
        }
    }

    /// Writes one batch; one outcome per request (by outbox id), never panics, never errors as a whole.
    pub async fn write(&mut self, rules: &RuleSet, batch: &[WriteRequest]) -> WriteReport {
        let mut run = Run {
            outcomes: vec![None; batch.len()],
            items: Vec::new(),
            calls: BTreeMap::new(),
            down: None,
        };
        // Pairings in the order they first appear in the batch.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, req) in batch.iter().enumerate() {
            let name = req.record.pairing.as_str();
            match groups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, idxs)) => idxs.push(i),
                None => groups.push((name, vec![i])),
            }
        }
        for (name, idxs) in groups {
            let Some(pairing) = rules.pairing(name) else {
                for i in idxs {
                    run.reject(
                        i,
                        format!("unknown pairing `{name}`: no rule file defines it"),
                    );
                }
                continue;
            };
            self.write_pairing(pairing, batch, &idxs, &mut run).await;
        }
        let down = run.down.clone();
        WriteReport {
            outcomes: batch
                .iter()
                .zip(run.outcomes)
                .map(|(req, outcome)| {
                    let outcome = outcome.unwrap_or_else(|| match &down {
                        Some(message) => WriteOutcome::Unreachable {
                            message: message.clone(),
                        },
                        None => WriteOutcome::Retry {
                            message: "the Anaplan sink did not get to this write".to_string(),
                        },
                    });
                    (req.outbox_id, outcome)
                })
                .collect(),
            items: run.items,
            calls: run.calls.into_iter().collect(),
        }
    }

    async fn write_pairing(
        &mut self,
        pairing: &Pairing,
        batch: &[WriteRequest],
        idxs: &[usize],
        run: &mut Run,
    ) {
        // What each request asks; refusals need no call.
        let mut records: BTreeMap<&str, RecordPlan> = BTreeMap::new();
        for &i in idxs {
            let Some(req) = batch.get(i) else { continue };
            match classify(pairing, req) {
                Ok(op) => {
                    let plan = records.entry(req.record.crm_id.as_str()).or_default();
                    plan.key = Some(&req.record);
                    plan.ops.push((i, op));
                }
                Err(message) => run.reject(i, message),
            }
        }
        if records.is_empty() {
            return;
        }
        let all_ops = |records: &BTreeMap<&str, RecordPlan>| -> Vec<usize> {
            records
                .values()
                .flat_map(|p| p.ops.iter().map(|(i, _)| *i))
                .collect()
        };
        if let Some(message) = run.down.clone() {
            for i in all_ops(&records) {
                run.not_reached(i, &message);
            }
            return;
        }

        // 1. Names to ids.
        if let Err(e) = self.resolve(pairing, run).await {
            if permanent(&e) {
                let message = format!("pairing `{}`: {e}", pairing.name);
                for i in all_ops(&records) {
                    run.reject(i, message.clone());
                }
            } else {
                run.failed_call(all_ops(&records), "resolving the pairing's names", &e);
            }
            return;
        }
        let Some(target) = self.targets.get(&pairing.name) else {
            return;
        };
        // Line items the rule names but the module lacks.
        for plan in records.values_mut() {
            plan.ops.retain(|(i, op)| match op {
                Op::Cell { line_item, .. } => match target.line_item(line_item) {
                    Ok(_) => true,
                    Err(message) => {
                        run.reject(*i, message);
                        false
                    }
                },
                _ => true,
            });
        }

        // 2. The item cache.
        if let Err(e) = self.load_items(pairing, run).await {
            run.failed_call(all_ops(&records), "reading the list's items", &e);
            return;
        }

        // 3. Items first.
        self.create_items(pairing, &mut records, run).await;
        // Ensure requests of items that exist are done; nothing to send.
        let now = Utc::now();
        for plan in records.values() {
            for (i, op) in &plan.ops {
                if matches!(op, Op::Ensure) && run.pending(*i) {
                    run.ack(*i, now);
                }
            }
        }

        // 4. Writes that must not replace an edit not yet polled.
        self.check_expectations(pairing, batch, &mut records, run)
            .await;

        // 5. Properties of existing items.
        self.update_properties(pairing, &records, run).await;

        // 6. Cells.
        self.write_cells(pairing, &records, run).await;

        // 7. Deletes.
        self.delete_items(pairing, &records, run).await;

        // Items the batch's records have (for `record_map`).
        if let Some(items) = self
            .targets
            .get(&pairing.name)
            .and_then(|t| t.items.as_ref())
        {
            for (code, plan) in &records {
                if let (Some(key), Some(id)) = (plan.key, items.get(*code)) {
                    run.items.push((key.clone(), id.clone()));
                }
            }
        }
    }
}
