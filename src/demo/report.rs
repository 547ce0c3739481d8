//! The demo's summary: what each source saw, what was written where and through which API,
//! the calls against the budget, the commit-to-acknowledgement latency (from the store's own
//! audit and outbox), the exceptions, and the check that both systems agree on every synced
//! field or that an open exception says why they do not.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Serialize;
use serde_json::Value as Json;

use super::DemoError;
use super::script::Done;
use super::world::World;
use crate::engine::run::EngineHandle;
use crate::model::{ExceptionStatus, Side, Value};
use crate::rules::RuleSet;
use crate::rules::ruleset::AnaplanField;
use crate::store::{ExceptionFilter, Store};

const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";

#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    pub crm_stream: u64,
    pub crm_poll: u64,
    pub anaplan_poll: u64,
    pub reconcile: u64,
}

/// API calls that carried writes, by API.
#[derive(Debug, Clone, Serialize)]
pub struct Writes {
    pub anaplan_transactional: u64,
    pub anaplan_bulk: u64,
    pub crm_collections: u64,
    pub crm_bulk: u64,
    /// Field writes acknowledged by each side.
    pub anaplan_acked: u64,
    pub crm_acked: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Calls {
    pub anaplan: u64,
    pub crm: u64,
    /// The Anaplan budget the engine's client keeps to.
    pub anaplan_budget_per_minute: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Script {
    pub rep_edits: usize,
    pub planner_edits: usize,
    pub concurrent_edits: usize,
    pub invalid_values: usize,
    pub edits_while_stream_down: usize,
    pub quarter_end_edits: usize,
}

/// The demo's result; `--json` prints it as one object.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Every synced field holds the same value on both sides, or has an open exception.
    pub agree: bool,
    pub fields_checked: u64,
    pub fields_differing_with_exception: u64,
    /// `pairing/record.field: crm … anaplan …` for differences nothing explains (at most 20).
    pub unexplained: Vec<String>,
    pub changes: Changes,
    pub writes: Writes,
    pub calls: Calls,
    /// 429 answers the engine's Anaplan client received.
    pub rate_limited: u64,
    /// From the CRM commit of a streamed change to Anaplan's acknowledgement of its write.
    pub latency_ms: Latency,
    /// All exceptions raised, by kind.
    pub exceptions: BTreeMap<String, u64>,
    pub open_exceptions: u64,
    /// Write requests either simulator received after the engine had settled and polled
    /// again: anything but 0 would be an echo loop.
    pub writes_after_quiescence: u64,
    pub script: Script,
    pub records: usize,
    pub seconds: f64,
    pub db: String,
}

pub struct Inputs<'a> {
    pub rules: &'a RuleSet,
    pub world: &'a World,
    pub engine: &'a EngineHandle,
    pub db: &'a Path,
    pub done: Done,
    pub writes_after_quiescence: u64,
    pub records: usize,
    pub seconds: f64,
}

fn is_write(method: &str, path: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
        && !path.contains("/token/")
        && !path.contains("/oauth2/")
        && !path.contains("/cometd")
        && !path.contains("/__sim/")
}

/// Write requests in both simulators' logs since they were last cleared.
pub fn write_requests(world: &World) -> u64 {
    let anaplan = world
        .anaplan
        .request_log()
        .into_iter()
        .filter(|r| is_write(&r.method, &r.path))
        .count();
    let crm = world
        .crm
        .request_log()
        .into_iter()
        .filter(|r| is_write(&r.method, &r.path))
        .count();
    (anaplan + crm) as u64
}

pub fn build(inputs: Inputs<'_>) -> Result<DemoReport, super::DemoError> {
    let Inputs {
        rules,
        world,
        engine,
        db,
        done,
        writes_after_quiescence,
        records,
        seconds,
    } = inputs;
    let store = Store::open_read_only(db)?;
    let counters = engine.counters();
    let count = |name: &str| counters.get(name).copied().unwrap_or(0);

    let mut latencies = store.stream_write_latencies_ms()?;
    latencies.sort_by(f64::total_cmp);

    let stats = store.exception_stats(&ExceptionFilter::default())?;
    let mut exceptions = BTreeMap::new();
    for row in &stats.by_status_kind {
        *exceptions.entry(row.kind.as_str().to_string()).or_default() += row.count;
    }

    let (checked, explained, unexplained) = agreement(rules, world, &store)?;
    Ok(DemoReport {
        agree: unexplained.is_empty(),
        fields_checked: checked,
        fields_differing_with_exception: explained,
        unexplained,
        changes: Changes {
            crm_stream: count("changes.stream"),
            crm_poll: count("changes.crm_poll"),
            anaplan_poll: count("changes.anaplan_poll"),
            reconcile: count("changes.reconcile"),
        },
        writes: Writes {
            anaplan_transactional: count("calls.anaplan.cells"),
            anaplan_bulk: count("calls.anaplan.import"),
            crm_collections: count("calls.crm.collections"),
            crm_bulk: count("calls.crm.bulk"),
            anaplan_acked: count("writes.acked.anaplan"),
            crm_acked: count("writes.acked.crm"),
        },
        calls: Calls {
            anaplan: count("anaplan.calls"),
            crm: count("crm.calls"),
            anaplan_budget_per_minute: 600,
            seconds,
        },
        rate_limited: count("anaplan.rate_limited"),
        latency_ms: Latency {
            p50: crate::bench::percentile(&latencies, 50.0),
            p99: crate::bench::percentile(&latencies, 99.0),
            max: latencies.last().copied().unwrap_or(0.0),
            samples: latencies.len(),
        },
        exceptions,
        open_exceptions: stats.open,
        writes_after_quiescence,
        script: Script {
            rep_edits: done.rep_edits,
            planner_edits: done.planner_edits,
            concurrent_edits: done.concurrent_edits,
            invalid_values: done.invalid_values,
            edits_while_stream_down: done.edits_while_stream_down,
            quarter_end_edits: done.quarter_end_edits,
        },
        records,
        seconds,
        db: db.display().to_string(),
    })
}

/// Compares every synced field of every record in both simulators. Returns the fields
/// checked, the differing ones an open exception explains, and the unexplained ones.
fn agreement(
    rules: &RuleSet,
    world: &World,
    store: &Store,
) -> Result<(u64, u64, Vec<String>), DemoError> {
    let open = store.list_exceptions(&ExceptionFilter {
        status: Some(ExceptionStatus::Open),
        ..ExceptionFilter::default()
    })?;
    // An open exception explains its field, or the whole record when it names no field.
    let explained: HashSet<(String, Option<String>)> = open
        .iter()
        .filter_map(|e| {
            e.crm_id
                .clone()
                .map(|id| (id, e.field.as_ref().map(|f| f.name.clone())))
        })
        .collect();
    let mut checked = 0;
    let mut with_exception = 0;
    let mut unexplained = Vec::new();
    for pairing in &rules.pairings {
        let ids = if pairing.crm_object == "Opportunity" {
            &world.opportunities
        } else {
            &world.territories
        };
        let cells = world
            .anaplan
            .cells(MODEL, &pairing.anaplan.module)
            .unwrap_or_default();
        let items: BTreeMap<String, BTreeMap<String, String>> = world
            .anaplan
            .list_items(MODEL, &pairing.anaplan.list)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.code.map(|c| (c, i.properties)))
            .collect();
        for id in ids {
            let Some(record) = world.crm.record(id) else {
                continue;
            };
            for rule in &pairing.fields {
                checked += 1;
                let crm = rule
                    .normalise(Side::Crm, record.get(&rule.crm).unwrap_or(&Json::Null))
                    .unwrap_or(Value::Null);
                let raw = match &rule.anaplan {
                    AnaplanField::LineItem(name) => cells
                        .get(id)
                        .and_then(|row| row.get(name))
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    AnaplanField::ListProperty(name) => items
                        .get(id)
                        .and_then(|p| p.get(name))
                        .cloned()
                        .unwrap_or_default(),
                };
                let anaplan = rule
                    .normalise(Side::Anaplan, &Json::String(raw))
                    .unwrap_or(Value::Null);
                if crm == anaplan {
                    continue;
                }
                if explained.contains(&(id.clone(), Some(rule.crm.clone())))
                    || explained.contains(&(id.clone(), None))
                {
                    with_exception += 1;
                } else if unexplained.len() < 20 {
                    unexplained.push(format!(
                        "{}/{id}.{}: crm {crm}, anaplan {anaplan}",
                        pairing.name, rule.crm
                    ));
                }
            }
        }
    }
    Ok((checked, with_exception, unexplained))
}

impl DemoReport {
    /// The summary for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, label: &str, value: String| {
            out.push_str(&format!("  {label:<34} {value}\n"));
        };
        out.push_str(&format!(
            "plansync demo: {} opportunities, {:.1} s\n\n",
            self.records, self.seconds
        ));
        out.push_str("What people did\n");
        let s = &self.script;
        line(&mut out, "reps' edits (streamed)", s.rep_edits.to_string());
        line(
            &mut out,
            "planners' edits (polled)",
            s.planner_edits.to_string(),
        );
        line(
            &mut out,
            "true concurrent edits",
            s.concurrent_edits.to_string(),
        );
        line(&mut out, "invalid values", s.invalid_values.to_string());
        line(
            &mut out,
            "edits while the stream was down",
            s.edits_while_stream_down.to_string(),
        );
        line(
            &mut out,
            "quarter-end burst",
            s.quarter_end_edits.to_string(),
        );
        out.push_str("\nWhat plansync saw\n");
        let c = &self.changes;
        line(&mut out, "CRM stream changes", c.crm_stream.to_string());
        line(&mut out, "CRM poll changes", c.crm_poll.to_string());
        line(&mut out, "Anaplan poll changes", c.anaplan_poll.to_string());
        line(&mut out, "first reconciliation", c.reconcile.to_string());
        out.push_str("\nWhat it wrote\n");
        let w = &self.writes;
        line(
            &mut out,
            "Anaplan: field writes acknowledged",
            w.anaplan_acked.to_string(),
        );
        line(
            &mut out,
            "  in transactional cell writes",
            format!("{} calls", w.anaplan_transactional),
        );
        line(
            &mut out,
            "  in bulk imports",
            format!("{} imports", w.anaplan_bulk),
        );
        line(
            &mut out,
            "CRM: field writes acknowledged",
            w.crm_acked.to_string(),
        );
        line(
            &mut out,
            "  in sObject Collections",
            format!("{} calls", w.crm_collections),
        );
        line(
            &mut out,
            "  in Bulk API 2.0",
            format!("{} calls", w.crm_bulk),
        );
        out.push_str("\nAPI budget\n");
        let per_minute = self.calls.anaplan as f64 / (self.calls.seconds / 60.0).max(1.0 / 60.0);
        line(
            &mut out,
            "Anaplan calls",
            format!(
                "{} ({per_minute:.0}/min against {}/min)",
                self.calls.anaplan, self.calls.anaplan_budget_per_minute
            ),
        );
        line(
            &mut out,
            "Anaplan 429s received",
            self.rate_limited.to_string(),
        );
        line(&mut out, "CRM calls", self.calls.crm.to_string());
        out.push_str("\nLatency, CRM commit → Anaplan acknowledgement\n");
        let l = &self.latency_ms;
        line(
            &mut out,
            "p50 / p99 / max",
            format!(
                "{:.0} / {:.0} / {:.0} ms ({} writes)",
                l.p50, l.p99, l.max, l.samples
            ),
        );
        out.push_str("\nExceptions (all, by kind)\n");
        for (kind, n) in &self.exceptions {
            line(&mut out, kind, n.to_string());
        }
        line(
            &mut out,
            "open, for review",
            self.open_exceptions.to_string(),
        );
        out.push_str("\nChecks\n");
        line(
            &mut out,
            "writes after quiescence",
            format!(
                "{} ({})",
                self.writes_after_quiescence,
                if self.writes_after_quiescence == 0 {
                    "no echo loop"
                } else {
                    "ECHO LOOP"
                }
            ),
        );
        line(
            &mut out,
            "both systems agree",
            if self.agree {
                format!(
                    "yes: {} fields, {} differ with an open exception",
                    self.fields_checked, self.fields_differing_with_exception
                )
            } else {
                format!("NO: {}", self.unexplained.join("; "))
            },
        );
        out.push_str(&format!(
            "\nNext, review what plansync held back:\n  plansync exceptions list --db {db} --status open\n  plansync exceptions stats --db {db}\n  plansync exceptions show <id> --db {db}\n  plansync status --db {db}\n",
            db = self.db
        ));
        out
    }
}
