//! A model test of the engine's core: random interleavings of CRM edits (streamed, polled),
//! Anaplan edits (polled), write acknowledgements, refusals and retries, and resolutions,
//! driven through a real shard over a real SQLite file against an in-memory model of both
//! remote sides. After every step and at the end it checks the brief's invariants:
//!
//! - one writer per field: never two decided writes open for the same field;
//! - no echo loop: once the inputs stop, the system goes quiet within a few rounds;
//! - no silent divergence: at rest, every field holds the same value on both sides, or an
//!   open exception (or a held conflict) says why not;
//! - determinism: the same interleaving on a fresh store ends in the same state;
//! - restarts: the same interleaving with the shard stopped and started again on its file
//!   between steps (in-memory state gone, the store kept) ends in the same state as without.
//!
//! Anaplan's `Approved` flag (the `when.approved` override of the forecast) is part of the
//! inputs: decision state a restart must not forget.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

use plansync::engine::shard::{ShardCore, ShardMsg};
use plansync::engine::write::WriteOutcome;
use plansync::model::{Change, ChangeKind, FieldChange, Position, RecordKey, Side, Source, Value};
use plansync::rules::{self, RuleSet};
use plansync::store::{ExceptionFilter, Resolution, ResolutionHow, Store};

/// Every write the model delivers is sendable: the model's clock is its own, and a write's
/// own backoff (`not_before`) is the engine's business, not the model's.
fn far_future() -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .expect("a valid time")
}

/// The model's "503" answers are retried until they pass: its invariants are about what a
/// write that lands does, not about giving up.
fn never_give_up() -> plansync::engine::write::WriteRetry {
    plansync::engine::write::WriteRetry {
        attempts: u32::MAX,
        give_up_after: std::time::Duration::MAX,
        ..plansync::engine::write::WriteRetry::default()
    }
}

const RECORDS: usize = 3;
const FIELDS: [&str; 4] = ["Amount", "Forecast_Override__c", "Probability", "StageName"];
const STAGES: [&str; 5] = [
    "Prospecting",
    "Qualification",
    "Negotiation",
    "Closed Won",
    "Closed Lost",
];

fn rules() -> RuleSet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    rules::load(&[dir]).expect("the example rules load")
}

fn id(r: usize) -> String {
    format!("006MODEL0000000{r:02}A")
}

/// The raw value a side would report for value number `v` of field `f`.
fn raw(f: usize, v: i64) -> serde_json::Value {
    match FIELDS[f] {
        "StageName" => json!(STAGES[v.rem_euclid(STAGES.len() as i64) as usize]),
        "Probability" => json!((v * 10).to_string()),
        _ => json!((v * 100).to_string()),
    }
}

/// Values as the test compares them: the text the store would hold.
fn text(f: usize, v: &serde_json::Value) -> String {
    let rules = rules();
    let pairing = rules.pairing("opportunity").expect("pairing");
    let rule = pairing.field(FIELDS[f]).expect("field");
    rule.normalise(Side::Crm, v)
        .ok()
        .and_then(|v| v.to_text())
        .unwrap_or_else(|| format!("{v}"))
}

#[derive(Debug, Clone)]
enum Op {
    CrmEdit {
        r: usize,
        f: usize,
        v: i64,
    },
    AnaplanEdit {
        r: usize,
        f: usize,
        v: i64,
    },
    Stream {
        n: usize,
    },
    CrmPoll,
    AnaplanPoll,
    Deliver {
        side: Side,
        how: u8,
    },
    Resolve {
        take: Side,
    },
    /// A planner sets or clears record `r`'s `Approved` flag (seen at the next poll).
    Approve {
        r: usize,
        on: bool,
    },
    /// The shard stops and starts again on the same file.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Side::Crm), Just(Side::Anaplan)];
    prop_oneof![
        4 => (0..RECORDS, 0..FIELDS.len(), -1i64..5).prop_map(|(r, f, v)| Op::CrmEdit { r, f, v }),
        4 => (0..RECORDS, 0..FIELDS.len(), -1i64..5).prop_map(|(r, f, v)| Op::AnaplanEdit { r, f, v }),
        3 => (1usize..4).prop_map(|n| Op::Stream { n }),
        1 => Just(Op::CrmPoll),
        2 => Just(Op::AnaplanPoll),
        // how: 0..6 acknowledged, 6 refused, 7 retried later.
        4 => (side.clone(), 0u8..8).prop_map(|(side, how)| Op::Deliver { side, how }),
        1 => side.prop_map(|take| Op::Resolve { take }),
        1 => (0..RECORDS, any::<bool>()).prop_map(|(r, on)| Op::Approve { r, on }),
        2 => Just(Op::Restart),
    ]
}

/// A CDC event: record, (field, raw value)s, commit time, made by plansync.
type Event = (usize, Vec<(usize, serde_json::Value)>, DateTime<Utc>, bool);

/// Both remote systems, as plain maps of (record, field) → raw value.
struct World {
    rules: RuleSet,
    shard: ShardCore,
    reviewer: Store,
    crm: BTreeMap<(usize, usize), serde_json::Value>,
    anaplan: BTreeMap<(usize, usize), serde_json::Value>,
    /// CDC events not yet delivered: (record, fields, commit time, ours).
    stream: VecDeque<Event>,
    /// Each CRM record's last commit time (its SystemModstamp).
    modstamp: BTreeMap<usize, DateTime<Utc>>,
    /// Each Anaplan row's `Approved` flag.
    approved: BTreeMap<usize, bool>,
    clock: DateTime<Utc>,
    replay: i64,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.db");
        let shard =
            ShardCore::new(0, Store::open(&path).expect("store"), never_give_up()).expect("shard");
        let reviewer = Store::open(&path).expect("second connection");
        let mut w = World {
            rules: rules(),
            shard,
            reviewer,
            crm: BTreeMap::new(),
            anaplan: BTreeMap::new(),
            stream: VecDeque::new(),
            modstamp: BTreeMap::new(),
            approved: BTreeMap::new(),
            // Mid-quarter: no quarter-end override.
            clock: Utc.with_ymd_and_hms(2026, 12, 8, 15, 0, 0).unwrap(),
            replay: 0,
            path,
            _dir: dir,
        };
        for r in 0..RECORDS {
            for f in 0..FIELDS.len() {
                w.crm.insert((r, f), raw(f, 1));
                w.anaplan.insert((r, f), raw(f, 1));
            }
            w.modstamp.insert(r, w.clock);
        }
        // The first reconciliation: Anaplan's values, then the CRM's.
        let a = (0..RECORDS)
            .map(|r| {
                w.anaplan_change(
                    r,
                    ChangeKind::Create,
                    Source::Reconcile,
                    (0..FIELDS.len()).collect(),
                )
            })
            .collect();
        w.round(a);
        let c = (0..RECORDS)
            .map(|r| w.crm_poll_change(r, Source::Reconcile))
            .collect();
        w.round(c);
        w
    }

    fn tick(&mut self) -> DateTime<Utc> {
        self.clock += Duration::seconds(1);
        self.clock
    }

    fn round(&mut self, msgs: Vec<ShardMsg>) {
        let now = self.clock;
        self.shard
            .round(&self.rules, msgs, now)
            .expect("a round commits");
    }

    fn record(r: usize) -> RecordKey {
        RecordKey {
            pairing: "opportunity".into(),
            crm_id: id(r),
        }
    }

    fn anaplan_change(
        &mut self,
        r: usize,
        kind: ChangeKind,
        source: Source,
        fields: Vec<usize>,
    ) -> ShardMsg {
        let at = self.tick();
        ShardMsg::Change(Change {
            side: Side::Anaplan,
            record: World::record(r),
            kind,
            fields: fields
                .into_iter()
                .map(|f| FieldChange {
                    field: FIELDS[f].into(),
                    value: self.anaplan[&(r, f)].clone(),
                })
                .collect(),
            committed_at: at,
            source,
            ours: false,
            position: Position::PollRun { at },
        })
    }

    fn crm_poll_change(&self, r: usize, source: Source) -> ShardMsg {
        ShardMsg::Change(Change {
            side: Side::Crm,
            record: World::record(r),
            kind: ChangeKind::Update,
            fields: (0..FIELDS.len())
                .map(|f| FieldChange {
                    field: FIELDS[f].into(),
                    value: self.crm[&(r, f)].clone(),
                })
                .collect(),
            committed_at: self.modstamp[&r],
            source,
            ours: false,
            position: Position::Watermark {
                at: self.modstamp[&r],
                id: id(r),
            },
        })
    }

    fn crm_commit(&mut self, r: usize, fields: Vec<(usize, serde_json::Value)>, ours: bool) {
        let at = self.tick();
        for (f, v) in &fields {
            self.crm.insert((r, *f), v.clone());
        }
        self.modstamp.insert(r, at);
        self.stream.push_back((r, fields, at, ours));
    }

    fn apply(&mut self, op: &Op) {
        match op.clone() {
            Op::CrmEdit { r, f, v } => self.crm_commit(r, vec![(f, raw(f, v))], false),
            Op::AnaplanEdit { r, f, v } => {
                self.anaplan.insert((r, f), raw(f, v));
            }
            Op::Stream { n } => {
                let mut msgs = Vec::new();
                for _ in 0..n {
                    let Some((r, fields, at, ours)) = self.stream.pop_front() else {
                        break;
                    };
                    self.replay += 1;
                    msgs.push(ShardMsg::Change(Change {
                        side: Side::Crm,
                        record: World::record(r),
                        kind: ChangeKind::Update,
                        fields: fields
                            .into_iter()
                            .map(|(f, value)| FieldChange {
                                field: FIELDS[f].into(),
                                value,
                            })
                            .collect(),
                        committed_at: at,
                        source: Source::Stream,
                        ours,
                        position: Position::Replay {
                            channel: "/data/OpportunityChangeEvent".into(),
                            replay_id: self.replay.to_string(),
                        },
                    }));
                }
                self.round(msgs);
            }
            Op::CrmPoll => {
                let msgs = (0..RECORDS)
                    .map(|r| self.crm_poll_change(r, Source::Poll))
                    .collect();
                self.round(msgs);
            }
            Op::AnaplanPoll => {
                let seen = self
                    .shard
                    .store()
                    .anaplan_seen("opportunity")
                    .expect("seen");
                // Flags first, as the poller sends them, so conditions see them.
                let mut msgs: Vec<ShardMsg> = (0..RECORDS)
                    .map(|r| ShardMsg::Flags {
                        record: World::record(r),
                        flags: [(
                            "Approved".to_string(),
                            self.approved.get(&r).copied().unwrap_or(false),
                        )]
                        .into(),
                    })
                    .collect();
                for r in 0..RECORDS {
                    let known = seen.get(&id(r));
                    let differing: Vec<usize> = (0..FIELDS.len())
                        .filter(|f| {
                            let now = text(*f, &self.anaplan[&(r, *f)]);
                            known
                                .and_then(|k| k.get(FIELDS[*f]))
                                .and_then(Value::to_text)
                                .is_none_or(|old| old != now)
                        })
                        .collect();
                    if !differing.is_empty() {
                        msgs.push(self.anaplan_change(
                            r,
                            ChangeKind::Update,
                            Source::Poll,
                            differing,
                        ));
                    }
                }
                self.round(msgs);
            }
            Op::Deliver { side, how } => {
                let rows = self
                    .shard
                    .store()
                    .sendable_outbox(side, 1000, far_future())
                    .expect("outbox");
                let mut msgs = Vec::new();
                let mut echoes = Vec::new();
                for row in rows {
                    let r = (0..RECORDS)
                        .find(|r| id(*r) == row.key.record.crm_id)
                        .expect("record");
                    let Some(f) = FIELDS.iter().position(|f| *f == row.key.field) else {
                        // A lifecycle operation (none happen here): acknowledge it.
                        msgs.push(ShardMsg::Ack {
                            outbox_id: row.id,
                            outcome: WriteOutcome::Acked { at: self.clock },
                        });
                        continue;
                    };
                    let outcome = match how {
                        6 => WriteOutcome::Rejected {
                            message: "FIELD_CUSTOM_VALIDATION_EXCEPTION: no".into(),
                        },
                        7 => WriteOutcome::Retry {
                            message: "503".into(),
                        },
                        _ if side == Side::Anaplan
                            && matches!(FIELDS[f], "Forecast_Override__c" | "Probability")
                            && text(f, &self.anaplan[&(r, f)])
                                != row.replaced.to_text().unwrap_or_default() =>
                        {
                            // The sink's read-before-write of fields planners may edit.
                            let rules = rules();
                            let rule = rules
                                .pairing("opportunity")
                                .and_then(|p| p.field(FIELDS[f]))
                                .expect("rule");
                            let current = rule
                                .normalise(Side::Anaplan, &self.anaplan[&(r, f)])
                                .expect("a value the model wrote");
                            WriteOutcome::Stale { current }
                        }
                        _ => {
                            let value = match &row.value {
                                Value::Null => serde_json::Value::Null,
                                Value::Bool(b) => json!(b),
                                other => json!(other.to_text()),
                            };
                            match side {
                                Side::Anaplan => {
                                    self.anaplan.insert((r, f), value);
                                }
                                Side::Crm => echoes.push((r, f, value)),
                            }
                            WriteOutcome::Acked { at: self.clock }
                        }
                    };
                    msgs.push(ShardMsg::Ack {
                        outbox_id: row.id,
                        outcome,
                    });
                }
                for (r, f, value) in echoes {
                    self.crm_commit(r, vec![(f, value)], true);
                }
                self.tick();
                self.round(msgs);
            }
            Op::Resolve { take } => {
                let filter = ExceptionFilter {
                    status: Some(plansync::model::ExceptionStatus::Open),
                    kind: Some(plansync::model::ExceptionKind::Conflict),
                    limit: Some(1),
                    ..ExceptionFilter::default()
                };
                let open = self.reviewer.list_exceptions(&filter).expect("list");
                let Some(e) = open.first() else { return };
                let how = match take {
                    Side::Crm => ResolutionHow::TakeCrm,
                    Side::Anaplan => ResolutionHow::TakeAnaplan,
                };
                let resolution = Resolution {
                    how,
                    by: "model".into(),
                    note: None,
                    at: self.clock,
                };
                // Refused while a write to the field is in flight: a person would retry later.
                if self.reviewer.resolve(e.id, &resolution).is_err() {
                    return;
                }
                let claims = self
                    .shard
                    .store()
                    .unclaimed_outbox(100)
                    .expect("unclaimed")
                    .into_iter()
                    .map(|row| ShardMsg::Claim { outbox_id: row.id })
                    .collect();
                self.round(claims);
            }
            Op::Approve { r, on } => {
                self.approved.insert(r, on);
            }
            Op::Restart => {
                self.shard =
                    ShardCore::new(0, Store::open(&self.path).expect("store"), never_give_up())
                        .expect("the shard starts again");
            }
        }
        self.check_one_writer();
    }

    fn check_one_writer(&self) {
        let open = self
            .shard
            .store()
            .sendable_outbox(Side::Crm, 10_000, far_future())
            .expect("crm")
            .into_iter()
            .chain(
                self.shard
                    .store()
                    .sendable_outbox(Side::Anaplan, 10_000, far_future())
                    .expect("anaplan"),
            );
        let mut per_field: BTreeMap<(String, String), usize> = BTreeMap::new();
        for row in open {
            *per_field
                .entry((row.key.record.crm_id, row.key.field))
                .or_default() += 1;
        }
        for (field, n) in per_field {
            assert!(n <= 1, "{n} writes sendable at once for {field:?}");
        }
    }

    /// Delivers, streams and polls until nothing moves; false if it never settles.
    fn settle(&mut self) -> bool {
        for _ in 0..12 {
            let before = self.fingerprint();
            let n = self.stream.len();
            self.apply(&Op::Stream { n: n.max(1) });
            self.apply(&Op::Deliver {
                side: Side::Anaplan,
                how: 0,
            });
            self.apply(&Op::Deliver {
                side: Side::Crm,
                how: 0,
            });
            let n = self.stream.len();
            self.apply(&Op::Stream { n: n.max(1) });
            self.apply(&Op::AnaplanPoll);
            self.apply(&Op::CrmPoll);
            if self.fingerprint() == before && self.stream.is_empty() {
                return true;
            }
        }
        false
    }

    /// What must stop changing for the system to count as quiet. The open writes are named
    /// by id, not counted: one write failing while the next is queued leaves the count alone.
    fn fingerprint(&self) -> (Vec<i64>, String) {
        (
            self.open_writes(),
            format!("{:?}{:?}", self.crm, self.anaplan),
        )
    }

    fn open_writes(&self) -> Vec<i64> {
        let store = self.shard.store();
        let mut ids: Vec<i64> = store
            .sendable_outbox(Side::Crm, 10_000, far_future())
            .expect("crm")
            .into_iter()
            .chain(
                store
                    .sendable_outbox(Side::Anaplan, 10_000, far_future())
                    .expect("anaplan"),
            )
            .chain(store.unclaimed_outbox(10_000).expect("unclaimed"))
            .map(|row| row.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every field agrees on both sides, or an open exception or a held conflict says why.
    fn check_agreement(&self) {
        for r in 0..RECORDS {
            for (f, name) in FIELDS.iter().enumerate() {
                let (c, a) = (text(f, &self.crm[&(r, f)]), text(f, &self.anaplan[&(r, f)]));
                if c == a {
                    continue;
                }
                let filter = ExceptionFilter {
                    status: Some(plansync::model::ExceptionStatus::Open),
                    crm_id: Some(id(r)),
                    field: Some((*name).into()),
                    ..ExceptionFilter::default()
                };
                let open = self.reviewer.count_exceptions(&filter).expect("count");
                assert!(
                    open > 0,
                    "{}.{} differs (crm {c}, anaplan {a}) with no open exception",
                    id(r),
                    name
                );
            }
        }
    }

    fn state(&self) -> String {
        let mut out = String::new();
        for r in 0..RECORDS {
            for f in FIELDS {
                let key = plansync::store::FieldKey::new("opportunity", id(r), f);
                let s = self.shard.store().shadow(&key).expect("shadow");
                out.push_str(&format!(
                    "{:?}\n",
                    s.map(|s| (s.base.map(|b| b.value), s.held.is_some()))
                ));
            }
        }
        format!("{out}{:?}{:?}", self.crm, self.anaplan)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_core_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..40)) {
        let mut world = World::new();
        prop_assert!(world.open_writes().is_empty(), "equal sides need no write at reconciliation");
        for op in &ops {
            world.apply(op);
        }
        prop_assert!(world.settle(), "the system did not go quiet: an echo loop?");
        world.check_agreement();
        // Quiet means quiet: one more full round changes nothing.
        let before = world.fingerprint();
        prop_assert!(world.settle());
        prop_assert_eq!(before, world.fingerprint());

        let mut again = World::new();
        for op in &ops {
            again.apply(op);
        }
        prop_assert!(again.settle());
        prop_assert_eq!(world.state(), again.state(), "the same inputs must end the same way");

        // A restart never changes what is decided.
        let mut unbroken = World::new();
        for op in ops.iter().filter(|op| !matches!(op, Op::Restart)) {
            unbroken.apply(op);
        }
        prop_assert!(unbroken.settle());
        prop_assert_eq!(world.state(), unbroken.state(), "a restart changed what was decided");
    }
}

/// A rep's edit of an approved forecast right after a restart is decided with the flag as
/// last polled: refused (Anaplan owns an approved forecast), as without the restart.
#[test]
fn an_approval_flag_outlives_a_restart() {
    let ops = [
        Op::Approve { r: 0, on: true },
        Op::AnaplanPoll,
        Op::Restart,
        Op::CrmEdit { r: 0, f: 1, v: 3 },
        Op::Stream { n: 1 },
    ];
    let mut world = World::new();
    for op in &ops {
        world.apply(op);
    }
    assert!(world.settle());
    assert_eq!(
        world.anaplan[&(0, 1)],
        raw(1, 1),
        "the approved forecast in Anaplan is not overwritten"
    );
}

/// Found by the model test: a planner's edit to a CRM-owned field, polled while a CRM edit of
/// another field of the same record was being streamed.
#[test]
fn a_reverted_planner_edit_settles_in_one_pass() {
    let ops = [
        Op::CrmEdit { r: 1, f: 1, v: 2 },
        Op::AnaplanEdit { r: 1, f: 1, v: 2 },
        Op::Stream { n: 1 },
        Op::AnaplanEdit { r: 0, f: 0, v: 2 },
    ];
    let mut world = World::new();
    for op in &ops {
        world.apply(op);
    }
    assert!(world.settle());
    world.check_agreement();
    let before = world.fingerprint();
    assert!(world.settle());
    assert_eq!(before, world.fingerprint());
}
