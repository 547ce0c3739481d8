//! List property updates of items that already existed before the batch (a new item gets
//! its properties with the add, in `items.rs`): one update call, each item's requests
//! answered by that item's result.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;

use crate::anaplan::ListItemWrite;
use crate::rules::Pairing;

use super::AnaplanSink;
use super::answers::Run;
use super::plan::{Op, RecordPlan};

impl AnaplanSink {
    /// One update call for the properties of items that already existed.
    pub(super) async fn update_properties(
        &mut self,
        pairing: &Pairing,
        records: &BTreeMap<&str, RecordPlan<'_>>,
        run: &mut Run,
    ) {
        if run.down.is_some() {
            return;
        }
        let Some(target) = self.targets.get(&pairing.name) else {
            return;
        };
        let mut writes = Vec::new();
        let mut carried: Vec<Vec<usize>> = Vec::new();
        for (code, plan) in records {
            let props: Vec<(usize, &String, &String)> = plan
                .ops
                .iter()
                .filter(|(i, _)| run.pending(*i))
                .filter_map(|(i, op)| match op {
                    Op::Property { name, value } => Some((*i, name, value)),
                    _ => None,
                })
                .collect();
            if props.is_empty() {
                continue;
            }
            writes.push(ListItemWrite {
                code: code.to_string(),
                properties: props
                    .iter()
                    .map(|(_, n, v)| ((*n).clone(), (*v).clone()))
                    .collect(),
                ..ListItemWrite::default()
            });
            carried.push(props.iter().map(|(i, _, _)| *i).collect());
        }
        if writes.is_empty() {
            return;
        }
        let at = Utc::now();
        match self
            .client
            .update_list_items(
                &target.resolved.names.model,
                &target.resolved.list_id,
                &writes,
            )
            .await
        {
            Ok(outcome) => {
                run.count("list_items", outcome.calls as u64);
                tracing::debug!(target: "plansync::engine", event = "sink_properties_updated",
                    pairing = %pairing.name,
                    items = writes.len(),
                    updated = outcome.updated,
                    failures = outcome.failures.len(),
                    calls = outcome.calls,
                    "updated list item properties"
                );
                let failures: HashMap<usize, String> = outcome
                    .failures
                    .iter()
                    .map(|f| (f.index, format!("{}: {}", f.failure_type, f.details)))
                    .collect();
                for (n, reqs) in carried.iter().enumerate() {
                    for &i in reqs {
                        match failures.get(&n) {
                            Some(why) => run.reject(i, why.clone()),
                            None => run.ack(i, at),
                        }
                    }
                }
            }
            Err(e) => {
                run.failed_call(carried.concat(), "updating list item properties", &e);
            }
        }
    }
}
