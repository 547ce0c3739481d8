//! The demo's summary: what each source saw, what was written where and through which API,
//! the calls against the budget, the commit-to-acknowledgement latency (from the store's own
//! audit and outbox), the exceptions, and the check that both systems agree on every synced
//! field or that an open exception says why they do not.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Serialize;
use serde_json::Value as Json;

use chrono::{DateTime, Utc};

use super::DemoError;
use super::script::{BURST_RATE_PER_MINUTE, Done};
use crate::harness::world::World;
use plansync::engine::run::EngineHandle;
use plansync::model::{ExceptionStatus, Side, Source, Value};
use plansync::rules::RuleSet;
use plansync::rules::ruleset::AnaplanField;
use plansync::store::{DecisionCount, ExceptionFilter, Store, WriteLatency};

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

/// The commit-to-acknowledgement latency of the writes whose CRM commit fell in one phase of
/// the scripted day.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseLatency {
    pub phase: String,
    #[serde(flatten)]
    pub latency: Latency,
}

/// What the first run did.
#[derive(Debug, Clone, Serialize)]
pub struct FirstRun {
    /// Records read, both sides together.
    pub records_read: u64,
    /// Fields whose two sides already agreed (no write, no audit row).
    pub fields_in_step: u64,
    /// Fields decided otherwise (written, held, refused), from the audit.
    pub fields_decided: u64,
    pub ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Script {
    pub rep_edits: usize,
    pub planner_edits: usize,
    pub concurrent_edits: usize,
    pub invalid_values: usize,
    pub edits_while_stream_down: usize,
    pub quarter_end_edits: usize,
    /// Burst edits that move a number by more than half (held by the quarter-end rules).
    pub quarter_end_jumps: usize,
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
    /// The same (streamed and polled changes), by the phase of the day the commit fell in.
    pub latency_by_phase: Vec<PhaseLatency>,
    /// Anaplan's rate limit during the quarter-end burst, calls a minute.
    pub burst_rate_per_minute: u32,
    pub first_run: FirstRun,
    /// Field changes per side and source, by the decision taken (the store's audit).
    pub decisions: Vec<DecisionCount>,
    /// All exceptions raised, by kind.
    pub exceptions: BTreeMap<String, u64>,
    pub open_exceptions: u64,
    /// Write requests either simulator received after the engine had settled and polled
    /// again: anything but 0 would be an echo loop.
    pub writes_after_quiescence: u64,
    pub script: Script,
    pub records: usize,
    pub territories: usize,
    pub seconds: f64,
    pub db: String,
    /// The folder of quarter-end rules the demo switched to, beside the store.
    pub quarter_end_rules: String,
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
    pub quarter_end_rules: &'a Path,
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
        quarter_end_rules,
    } = inputs;
    let store = Store::open_read_only(db)?;
    let counters = engine.counters();
    let count = |name: &str| counters.get(name).copied().unwrap_or(0);

    let mut latencies = store.stream_write_latencies_ms()?;
    latencies.sort_by(f64::total_cmp);
    let latency_by_phase = by_phase(&done.phases, store.crm_write_latencies()?);
    let decisions = store.decision_counts()?;

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
        latency_ms: Latency::of(&latencies),
        latency_by_phase,
        burst_rate_per_minute: BURST_RATE_PER_MINUTE,
        first_run: FirstRun {
            records_read: count("changes.reconcile"),
            fields_in_step: count("reconcile.agreed"),
            fields_decided: decisions
                .iter()
                .filter(|d| d.source == Source::Reconcile)
                .map(|d| d.count)
                .sum(),
            ms: store.metric("reconcile.ms")?.unwrap_or(0).max(0) as u64,
        },
        decisions,
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
            quarter_end_jumps: done.quarter_end_jumps,
        },
        records,
        territories: world.territories.len(),
        seconds,
        db: db.display().to_string(),
        quarter_end_rules: quarter_end_rules.display().to_string(),
    })
}

/// Groups the latencies by the phase their CRM commit fell in (a phase runs until the next
/// begins); phases with no write are left out.
fn by_phase(
    phases: &[(&'static str, DateTime<Utc>)],
    latencies: Vec<WriteLatency>,
) -> Vec<PhaseLatency> {
    let mut groups: Vec<Vec<f64>> = vec![Vec::new(); phases.len()];
    for l in latencies {
        // Commits before the first phase (none in the script) join the first.
        let at = phases
            .iter()
            .rposition(|(_, start)| *start <= l.committed_at)
            .unwrap_or(0);
        if let Some(group) = groups.get_mut(at) {
            group.push(l.ms);
        }
    }
    phases
        .iter()
        .zip(groups)
        .filter(|(_, g)| !g.is_empty())
        .map(|((name, _), mut g)| {
            g.sort_by(f64::total_cmp);
            PhaseLatency {
                phase: (*name).to_string(),
                latency: Latency::of(&g),
            }
        })
        .collect()
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
    /// The summary for people: every figure with its unit, and a line wherever two figures
    /// do not visibly add up.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Values wrap under their own column, so the summary reads in a 100-column terminal.
        let line = |out: &mut String, label: &str, value: String| {
            let mut lines = wrap(&value, 100 - 39).into_iter();
            out.push_str(&format!(
                "  {label:<36} {}\n",
                lines.next().unwrap_or_default()
            ));
            for more in lines {
                out.push_str(&format!("  {:<36} {more}\n", ""));
            }
        };
        let note = |out: &mut String, text: &str| {
            for l in wrap(text, 86) {
                out.push_str(&format!("    {l}\n"));
            }
        };
        out.push_str(&format!(
            "plansync demo: {} opportunities and {} territories, {:.1} s\n\n",
            n(self.records as u64),
            n(self.territories as u64),
            self.seconds
        ));

        out.push_str("What people did\n");
        let s = &self.script;
        line(&mut out, "reps' edits in the CRM", edits(s.rep_edits));
        line(
            &mut out,
            "planners' edits in Anaplan",
            edits(s.planner_edits),
        );
        line(
            &mut out,
            "true concurrent edits",
            format!(
                "{} fields, edited on both sides at once",
                n(s.concurrent_edits as u64)
            ),
        );
        line(&mut out, "values the rules refuse", edits(s.invalid_values));
        line(
            &mut out,
            "edits while the stream was down",
            edits(s.edits_while_stream_down),
        );
        line(
            &mut out,
            "quarter-end burst",
            format!(
                "{}, {} of them jumps of more than half, which the quarter-end rules hold \
                 for review",
                edits(s.quarter_end_edits),
                n(s.quarter_end_jumps as u64)
            ),
        );

        out.push_str("\nThe first reconciliation\n");
        let f = &self.first_run;
        line(
            &mut out,
            "records read",
            format!("{} records, both systems together", n(f.records_read)),
        );
        line(
            &mut out,
            "fields already in step",
            format!("{} fields (no write, no audit row)", n(f.fields_in_step)),
        );
        line(
            &mut out,
            "fields found different",
            format!("{} fields", n(f.fields_decided)),
        );
        line(&mut out, "time", format!("{} ms", n(f.ms)));

        out.push_str("\nWhat plansync decided, per field change (from the audit)\n");
        for (side, source, label) in [
            (Side::Crm, Source::Stream, "CRM changes, streamed"),
            (Side::Crm, Source::Poll, "CRM changes, polled"),
            (Side::Anaplan, Source::Poll, "Anaplan changes, polled"),
            (Side::Crm, Source::Resolution, "resolutions"),
        ] {
            let rows: Vec<&DecisionCount> = self
                .decisions
                .iter()
                .filter(|d| d.side == side && d.source == source)
                .collect();
            let total: u64 = rows.iter().map(|d| d.count).sum();
            if total == 0 && source == Source::Resolution {
                continue;
            }
            let parts: Vec<String> = rows
                .iter()
                .map(|d| format!("{} {}", n(d.count), decision_words(&d.decision, side)))
                .collect();
            let value = if parts.is_empty() {
                "0 field changes".to_string()
            } else {
                format!("{} field changes: {}", n(total), parts.join(", "))
            };
            line(&mut out, label, value);
        }
        let c = &self.changes;
        note(
            &mut out,
            &format!(
                "Why these differ from what people did: an edit of several fields is several \
                 field changes; a poll sees a cell's latest value, so edits of one cell \
                 between two polls are one change; a change that waited for a write in flight \
                 is decided again once the write is answered. The CRM poller read {} records \
                 and the stream delivered {} change events: the poller looks back a minute \
                 past its watermark, so most of what it reads the stream had already \
                 delivered (read again, decided once).",
                n(c.crm_poll),
                n(c.crm_stream)
            ),
        );

        out.push_str("\nWhat it wrote\n");
        let w = &self.writes;
        line(
            &mut out,
            "to Anaplan",
            format!(
                "{} field values acknowledged, in {} transactional cell writes and {} bulk imports",
                n(w.anaplan_acked),
                n(w.anaplan_transactional),
                n(w.anaplan_bulk)
            ),
        );
        line(
            &mut out,
            "to the CRM",
            format!(
                "{} field values acknowledged, in {} sObject Collections calls and {} Bulk API 2.0 jobs",
                n(w.crm_acked),
                n(w.crm_collections),
                n(w.crm_bulk)
            ),
        );

        out.push_str("\nAPI calls\n");
        let per_minute = self.calls.anaplan as f64 / (self.calls.seconds / 60.0).max(1.0 / 60.0);
        line(
            &mut out,
            "Anaplan",
            format!(
                "{} calls, {per_minute:.0} a minute on average (the engine's budget: {} a minute)",
                n(self.calls.anaplan),
                n(self.calls.anaplan_budget_per_minute)
            ),
        );
        line(
            &mut out,
            "Anaplan answers 429 (rate limited)",
            format!(
                "{} answers (the burst runs under a limit squeezed to {} calls a minute)",
                n(self.rate_limited),
                self.burst_rate_per_minute
            ),
        );
        line(&mut out, "CRM", format!("{} calls", n(self.calls.crm)));

        out.push_str("\nLatency, CRM commit → Anaplan acknowledgement, by phase of the day\n");
        for p in &self.latency_by_phase {
            line(&mut out, &p.phase, p.latency.render());
        }
        line(&mut out, "all streamed changes", self.latency_ms.render());
        let burst = if self.rate_limited > 0 {
            format!(
                "Anaplan answered {} calls with 429, so the burst's writes waited for the \
                 budget and went out in a few large batches: that is why they are slower \
                 (nothing is lost; a 429 is retried after the wait Anaplan asks for).",
                n(self.rate_limited)
            )
        } else {
            "This burst fitted within it.".to_string()
        };
        note(
            &mut out,
            &format!(
                "During the quarter-end burst the demo squeezes Anaplan's limit to {} calls a \
                 minute. {burst} Away from the burst, the stream carries a CRM edit to Anaplan \
                 well within a second; edits made while the stream was down wait for its \
                 reconnection (replay) or the next CRM poll.",
                self.burst_rate_per_minute
            ),
        );

        out.push_str("\nExceptions raised, by kind\n");
        for (kind, count) in &self.exceptions {
            let why = match kind.as_str() {
                "conflict" => " (the true concurrent edits)".to_string(),
                "validation" => {
                    " (the refused values, and the burst's jumps the quarter-end rules hold)"
                        .to_string()
                }
                _ => String::new(),
            };
            line(&mut out, kind, format!("{} exceptions{why}", n(*count)));
        }
        line(
            &mut out,
            "still open, for review",
            format!("{} exceptions", n(self.open_exceptions)),
        );

        out.push_str("\nChecks\n");
        line(
            &mut out,
            "writes after quiescence",
            format!(
                "{} write requests ({})",
                n(self.writes_after_quiescence),
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
                    "yes: {} fields compared, {} differ with an open exception saying why",
                    n(self.fields_checked),
                    n(self.fields_differing_with_exception)
                )
            } else {
                format!("NO: {}", self.unexplained.join("; "))
            },
        );

        out.push_str(&format!(
            "\nLeft behind (the next demo with the same --db replaces them):\n  {db}\n      the store, for review\n  {rules}/\n      the quarter-end rules the demo switched to (the audit's rule hashes name them)\n",
            db = self.db,
            rules = self.quarter_end_rules,
        ));
        out.push_str(&format!(
            "\nNext, review what plansync held back:\n  plansync exceptions list --db {db} --status open\n  plansync exceptions stats --db {db}\n  plansync exceptions show <id> --db {db}\n  plansync status --db {db}\n",
            db = self.db
        ));
        out
    }
}

impl Latency {
    /// The percentiles of `sorted` (ascending milliseconds).
    fn of(sorted: &[f64]) -> Latency {
        Latency {
            p50: crate::harness::percentile(sorted, 50.0),
            p99: crate::harness::percentile(sorted, 99.0),
            max: sorted.last().copied().unwrap_or(0.0),
            samples: sorted.len(),
        }
    }

    fn render(&self) -> String {
        format!(
            "p50 {} ms, p99 {} ms, max {} ms ({} writes)",
            n(self.p50.round() as u64),
            n(self.p99.round() as u64),
            n(self.max.round() as u64),
            n(self.samples as u64)
        )
    }
}

fn edits(count: usize) -> String {
    format!("{} edits", n(count as u64))
}

/// What one decision did with a change observed on `side`, in words.
fn decision_words(decision: &str, side: Side) -> String {
    let other = match side.other() {
        Side::Crm => "the CRM",
        Side::Anaplan => "Anaplan",
    };
    match decision {
        "write" => format!("written to {other}"),
        "echo" => "echoes of its own writes".into(),
        "unchanged" => "unchanged".into(),
        "converged" => "already equal on both sides".into(),
        "wait" => "waited for a write in flight (then decided again)".into(),
        "hold" => "held as conflicts".into(),
        "reject" => "refused: owned by the other side".into(),
        "revert" => "reverted to the owner's value".into(),
        "invalid" => "refused by validation".into(),
        "overwritten" => "overwritten edits recorded".into(),
        "seed" => "seeded into new items".into(),
        other => other.replace('_', " "),
    }
}

/// A count with thousands separators.
fn n(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Words in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(n(0), "0");
        assert_eq!(n(999), "999");
        assert_eq!(n(1_000), "1,000");
        assert_eq!(n(12_139), "12,139");
        assert_eq!(n(1_234_567), "1,234,567");
    }

    #[test]
    fn notes_wrap_at_word_boundaries() {
        let lines = wrap("one two three four", 9);
        assert_eq!(lines, vec!["one two", "three", "four"]);
    }
}
