//! List property updates of items that already existed before the batch (a new item gets
//! its properties with the add, in `items.rs`): one update call, each item's requests
//! answered by that item's result; a call refused as a whole is split to the item at fault.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::Utc;

use crate::anaplan::ListItemWrite;
use crate::rules::Pairing;

use super::AnaplanSink;
use super::answers::{MAX_SPLITS, Run, refused_as_a_whole};
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
        // Runs of items still to send; a refused call's items come back split, down to the
        // item at fault (see `cells.rs`).
        let mut queue: VecDeque<std::ops::Range<usize>> = VecDeque::new();
        queue.push_back(0..writes.len());
        let mut splits_left = MAX_SPLITS;
        while let Some(range) = queue.pop_front() {
            if run.down.is_some() {
                return;
            }
            let at = Utc::now();
            match self
                .client
                .update_list_items(
                    &target.resolved.names.model,
                    &target.resolved.list_id,
                    &writes[range.clone()],
                )
                .await
            {
                Ok(outcome) => {
                    run.count("list_items", outcome.calls as u64);
                    tracing::debug!(target: "plansync::engine", event = "sink_properties_updated",
                        pairing = %pairing.name,
                        items = range.len(),
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
                    for (n, reqs) in carried[range].iter().enumerate() {
                        for &i in reqs {
                            match failures.get(&n) {
                                Some(why) => run.reject(i, why.clone()),
                                None => run.ack(i, at),
                            }
                        }
                    }
                }
                Err(e) if range.len() > 1 && splits_left > 0 && refused_as_a_whole(&e) => {
                    splits_left -= 1;
                    let middle = range.start + range.len() / 2;
                    tracing::debug!(target: "plansync::engine", event = "sink_call_split", pairing = %pairing.name, items = range.len(), error = %e, "a refused call is sent again in halves");
                    queue.push_front(middle..range.end);
                    queue.push_front(range.start..middle);
                }
                Err(e) => {
                    run.failed_call(carried[range].concat(), "updating list item properties", &e);
                }
            }
        }
    }
}
