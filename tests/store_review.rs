//! The store and the review output over a realistic database: 5,000 generated exceptions
//! across kinds, objects, fields, records and days, checked against an in-test model; plus
//! resolution, the refusals at open time, the file's mode, the SQL views and batch atomicity.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, TimeZone, Utc};
use plansync::model::{ExceptionKind, ExceptionStatus, Side, Source, Value, ValueKind};
use plansync::review::{self, Format, ListTable, TableWidth, TimeBound, parse_time_arg};
use plansync::store::{
    Batch, ExceptionField, ExceptionFilter, ExceptionRef, ExceptionUpdate, FieldKey, NewAudit,
    NewException, NewOutbox, Observed, OutboxReason, OutboxRef, Resolution, ResolutionHow,
    ResolutionKind, SCHEMA_VERSION, ShadowUpsert, Store, StoreError,
};

// ---------------------------------------------------------------------------------------------
// The generated data set and its model
// ---------------------------------------------------------------------------------------------

const EXCEPTIONS: usize = 5_000;

/// (pairing, CRM object, id prefix)
const OBJECTS: [(&str, &str, &str); 3] = [
    ("opportunity", "Opportunity", "006"),
    ("account", "Account", "001"),
    ("quota", "Quota__c", "a01"),
];

const FIELDS: [(&str, ValueKind); 4] = [
    ("Amount", ValueKind::Number { scale: 2 }),
    ("StageName", ValueKind::Picklist),
    ("CloseDate", ValueKind::Date),
    ("Description", ValueKind::Text),
];

/// Text values that CSV must quote, and JSON escape.
const AWKWARD: [&str; 6] = [
    "plain",
    "comma, separated",
    "quote \"inside\"",
    "multi\nline",
    "all, \"three\"\nat once",
    "  spaced  ",
];

/// xorshift64*: small, deterministic, good enough to spread test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

/// What the test believes one exception row holds.
#[derive(Debug, Clone)]
struct Model {
    id: i64,
    kind: ExceptionKind,
    status: ExceptionStatus,
    pairing: String,
    object: String,
    crm_id: Option<String>,
    field: Option<String>,
    crm_value: Option<String>,
    anaplan_value: Option<String>,
    base_value: Option<String>,
    message: String,
    created_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
}

impl Model {
    fn matches(&self, f: &ExceptionFilter) -> bool {
        f.status.is_none_or(|s| s == self.status)
            && f.kind.is_none_or(|k| k == self.kind)
            && f.object.as_ref().is_none_or(|o| *o == self.object)
            && f.field
                .as_ref()
                .is_none_or(|x| Some(x) == self.field.as_ref())
            && f.crm_id
                .as_ref()
                .is_none_or(|x| Some(x) == self.crm_id.as_ref())
            && f.since.is_none_or(|t| self.created_at >= t)
            && f.until.is_none_or(|t| self.created_at < t)
    }
}

fn value_for(kind: ValueKind, rng: &mut Rng) -> Value {
    let raw = match kind {
        ValueKind::Number { .. } => format!("{}.{}", rng.below(100_000), rng.below(100)),
        ValueKind::Picklist => rng
            .pick(&["Prospecting", "Closed Won", "Negotiation/Review"])
            .to_string(),
        ValueKind::Date => format!("2026-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
        _ => rng.pick(&AWKWARD).to_string(),
    };
    if rng.below(6) == 0 {
        Value::Null
    } else {
        Value::from_text(kind, &raw).unwrap()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Store,
    models: Vec<Model>,
    /// Audit rows per (pairing, crm_id, field).
    audits: BTreeMap<(String, String, String), usize>,
}

/// Builds the 5,000-exception database: inserted open or auto-resolved in batches, then some
/// converged by a batch update and some resolved (dismissed) by a person.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plansync.db");
    let mut store = Store::open(&path).unwrap();
    let mut rng = Rng(0x5EED_2026_1101);
    let mut models = Vec::with_capacity(EXCEPTIONS);
    let mut audits = BTreeMap::new();

    let mut pending: Vec<(NewException, Model)> = Vec::new();
    for i in 0..EXCEPTIONS {
        let kind = *rng.pick(&ExceptionKind::ALL);
        let (pairing, object, prefix) = *rng.pick(&OBJECTS);
        let created_at = start()
            + Duration::days(rng.below(30) as i64)
            + Duration::seconds(rng.below(86_400) as i64)
            + Duration::microseconds(rng.below(1_000_000) as i64);
        let crm_id = (kind != ExceptionKind::Gap).then(|| format!("{prefix}{:015}", rng.below(40)));
        let field = match kind {
            ExceptionKind::Gap | ExceptionKind::Lifecycle => None,
            _ => {
                let (name, vk) = *rng.pick(&FIELDS);
                Some(ExceptionField {
                    name: name.into(),
                    kind: vk,
                    crm_value: value_for(vk, &mut rng),
                    anaplan_value: value_for(vk, &mut rng),
                    base_value: value_for(vk, &mut rng),
                })
            }
        };
        let status = if kind == ExceptionKind::Conflict && rng.below(3) == 0 {
            ExceptionStatus::AutoResolved
        } else {
            ExceptionStatus::Open
        };
        let message = format!("{kind} #{i}, seen by \"poller\", at {object}");
        let model = Model {
            id: 0,
            kind,
            status,
            pairing: pairing.into(),
            object: object.into(),
            crm_id: crm_id.clone(),
            field: field.as_ref().map(|f| f.name.clone()),
            crm_value: field.as_ref().and_then(|f| f.crm_value.to_text()),
            anaplan_value: field.as_ref().and_then(|f| f.anaplan_value.to_text()),
            base_value: field.as_ref().and_then(|f| f.base_value.to_text()),
            message: message.clone(),
            created_at,
            resolved_at: (status != ExceptionStatus::Open).then_some(created_at),
        };
        let row = NewException {
            kind,
            status,
            pairing: pairing.into(),
            object: object.into(),
            crm_id,
            field,
            rule_id: Some(format!("{pairing}.rule{}", i % 5)),
            rule_hash: Some(format!("{:064x}", i % 3)),
            message,
            at: created_at,
        };
        pending.push((row, model));
        if pending.len() == 500 || i + 1 == EXCEPTIONS {
            let mut batch = Batch::new(start());
            let mut refs = Vec::new();
            for (row, _) in &pending {
                let r = batch.add_exception(row.clone());
                // One decision per field exception, pointing at it, for `show`'s history.
                if let (Some(crm_id), Some(field)) = (&row.crm_id, &row.field) {
                    batch.add_audit(NewAudit {
                        key: FieldKey::new(&row.pairing, crm_id, &field.name),
                        at: row.at,
                        side: Side::Crm,
                        source: Source::Stream,
                        kind: field.kind,
                        value: field.crm_value.clone(),
                        decision: "held".into(),
                        rule_id: row.rule_id.clone(),
                        rule_hash: row.rule_hash.clone(),
                        exception: Some(r),
                    });
                    *audits
                        .entry((row.pairing.clone(), crm_id.clone(), field.name.clone()))
                        .or_default() += 1;
                }
                refs.push(r);
            }
            let receipt = store.commit(&batch).unwrap();
            for ((_, mut model), r) in pending.drain(..).zip(refs) {
                model.id = receipt.exception_id(r).unwrap();
                models.push(model);
            }
        }
    }

    // Some open ones converge (a batch update), some are dismissed by a person.
    let converged_at = start() + Duration::days(31);
    let mut batch = Batch::new(converged_at);
    for m in models.iter_mut() {
        if m.status != ExceptionStatus::Open {
            continue;
        }
        match rng.below(10) {
            0 => {
                batch.update_exception(ExceptionUpdate {
                    id: ExceptionRef::stored(m.id),
                    crm_value: Value::Null,
                    anaplan_value: Value::Null,
                    status: ExceptionStatus::Converged,
                });
                m.status = ExceptionStatus::Converged;
                m.resolved_at = Some(converged_at);
                m.crm_value = None;
                m.anaplan_value = None;
            }
            1 => {
                let at = m.created_at + Duration::hours(rng.below(100) as i64);
                store
                    .resolve(
                        m.id,
                        &Resolution {
                            how: ResolutionHow::Dismiss,
                            by: "reviewer".into(),
                            note: Some("known, fixed upstream".into()),
                            at,
                        },
                    )
                    .unwrap();
                m.status = ExceptionStatus::Resolved;
                m.resolved_at = Some(at);
            }
            _ => {}
        }
    }
    let receipt = store.commit(&batch).unwrap();
    assert!(receipt.stale_exception_updates.is_empty());

    Fixture {
        _dir: dir,
        path,
        store,
        models,
        audits,
    }
}

fn expected_ids(models: &[Model], filter: &ExceptionFilter) -> Vec<i64> {
    let mut ids: Vec<i64> = models
        .iter()
        .filter(|m| m.matches(filter))
        .map(|m| m.id)
        .collect();
    ids.sort_unstable();
    let ids = ids.into_iter().skip(filter.offset);
    match filter.limit {
        Some(limit) => ids.take(limit).collect(),
        None => ids.collect(),
    }
}

fn check_filter(f: &Fixture, filter: &ExceptionFilter) {
    let expected = expected_ids(&f.models, filter);
    let listed: Vec<i64> = f
        .store
        .list_exceptions(filter)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, expected, "filter {filter:?}");
    let unpaged = ExceptionFilter {
        limit: None,
        offset: 0,
        ..filter.clone()
    };
    let count = f.store.count_exceptions(filter).unwrap();
    assert_eq!(
        count as usize,
        expected_ids(&f.models, &unpaged).len(),
        "count for {filter:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

/// The values each filter dimension is tried with (`None` = not set).
struct Dimensions {
    status: Vec<Option<ExceptionStatus>>,
    kind: Vec<Option<ExceptionKind>>,
    object: Vec<Option<String>>,
    field: Vec<Option<String>>,
    crm_id: Vec<Option<String>>,
    since: Vec<Option<DateTime<Utc>>>,
    until: Vec<Option<DateTime<Utc>>>,
}

fn dimensions(models: &[Model]) -> Dimensions {
    let some = |v: Vec<String>| -> Vec<Option<String>> {
        std::iter::once(None)
            .chain(v.into_iter().map(Some))
            .collect()
    };
    // Records that occur, plus one that does not.
    let mut records: Vec<String> = models
        .iter()
        .filter_map(|m| m.crm_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .step_by(17)
        .collect();
    records.push("006999999999999999".into());
    let times = |bound| {
        let mut v = vec![None];
        for raw in [
            "2026-11-01",
            "2026-11-07",
            "2026-11-15T12:00:00Z",
            "2026-11-30",
            "2026-12-05",
        ] {
            v.push(Some(parse_time_arg(raw, bound).unwrap()));
        }
        // An exact creation time, to pin inclusive `since` and exclusive `until`.
        v.push(Some(models[123].created_at));
        v
    };
    Dimensions {
        status: std::iter::once(None)
            .chain(ExceptionStatus::ALL.map(Some))
            .collect(),
        kind: std::iter::once(None)
            .chain(ExceptionKind::ALL.map(Some))
            .collect(),
        object: some(
            OBJECTS
                .iter()
                .map(|o| o.1.to_string())
                .chain(["Lead".to_string()])
                .collect(),
        ),
        field: some(
            FIELDS
                .iter()
                .map(|f| f.0.to_string())
                .chain(["NoSuchField__c".to_string()])
                .collect(),
        ),
        crm_id: some(records),
        since: times(TimeBound::Since),
        until: times(TimeBound::Until),
    }
}

fn filter_at(d: &Dimensions, idx: [usize; 7]) -> ExceptionFilter {
    ExceptionFilter {
        status: d.status[idx[0] % d.status.len()],
        kind: d.kind[idx[1] % d.kind.len()],
        object: d.object[idx[2] % d.object.len()].clone(),
        field: d.field[idx[3] % d.field.len()].clone(),
        crm_id: d.crm_id[idx[4] % d.crm_id.len()].clone(),
        since: d.since[idx[5] % d.since.len()],
        until: d.until[idx[6] % d.until.len()],
        limit: None,
        offset: 0,
    }
}

#[test]
fn every_filter_and_combination_matches_the_model() {
    let f = fixture();
    assert_eq!(
        f.store
            .count_exceptions(&ExceptionFilter::default())
            .unwrap(),
        EXCEPTIONS as u64
    );
    let d = dimensions(&f.models);
    let sizes = [
        d.status.len(),
        d.kind.len(),
        d.object.len(),
        d.field.len(),
        d.crm_id.len(),
        d.since.len(),
        d.until.len(),
    ];

    // Every value of every dimension alone.
    for dim in 0..7 {
        for v in 0..sizes[dim] {
            let mut idx = [0; 7];
            idx[dim] = v;
            check_filter(&f, &filter_at(&d, idx));
        }
    }
    // Every pair of dimensions, every pair of values.
    for a in 0..7 {
        for b in a + 1..7 {
            for va in 1..sizes[a] {
                for vb in 1..sizes[b] {
                    let mut idx = [0; 7];
                    idx[a] = va;
                    idx[b] = vb;
                    check_filter(&f, &filter_at(&d, idx));
                }
            }
        }
    }
    // Random combinations of everything, with paging.
    let mut rng = Rng(42);
    let mut nonempty = 0;
    for _ in 0..300 {
        let mut idx = [0; 7];
        for (i, size) in sizes.iter().enumerate() {
            // Leave a dimension unset half the time so results are not all empty.
            idx[i] = if rng.below(2) == 0 {
                0
            } else {
                rng.below(*size)
            };
        }
        let mut filter = filter_at(&d, idx);
        if rng.below(3) == 0 {
            filter.limit = Some(rng.below(50));
            filter.offset = rng.below(100);
        }
        if !expected_ids(&f.models, &filter).is_empty() {
            nonempty += 1;
        }
        check_filter(&f, &filter);
    }
    // The combinations must exercise real matches, not only empty results.
    assert!(nonempty > 100, "only {nonempty} non-empty combinations");
}

#[test]
fn paging_walks_the_whole_selection_in_id_order() {
    let f = fixture();
    let base = ExceptionFilter {
        status: Some(ExceptionStatus::Open),
        ..Default::default()
    };
    let all = expected_ids(&f.models, &base);
    let mut walked = Vec::new();
    for page in 0.. {
        let filter = ExceptionFilter {
            limit: Some(333),
            offset: page * 333,
            ..base.clone()
        };
        let rows = f.store.list_exceptions(&filter).unwrap();
        if rows.is_empty() {
            break;
        }
        walked.extend(rows.iter().map(|e| e.id));
    }
    assert_eq!(walked, all);
}

// ---------------------------------------------------------------------------------------------
// Output formats
// ---------------------------------------------------------------------------------------------

const LIST_KEYS: [&str; 21] = [
    "id",
    "kind",
    "status",
    "object",
    "pairing",
    "record",
    "field",
    "value_kind",
    "crm_value",
    "anaplan_value",
    "base_value",
    "rule_id",
    "rule_hash",
    "message",
    "created_at",
    "updated_at",
    "resolved_at",
    "resolved_by",
    "resolution",
    "resolution_value",
    "note",
];

fn render(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn json_list_parses_back_to_the_model() {
    let f = fixture();
    let filter = ExceptionFilter {
        object: Some("Opportunity".into()),
        ..Default::default()
    };
    let text = render(|out| {
        review::list(&f.store, &filter, Format::Json, &ListTable::default(), out).unwrap();
    });
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = parsed.as_array().unwrap();
    let expected = expected_ids(&f.models, &filter);
    assert_eq!(rows.len(), expected.len());
    let by_id: BTreeMap<i64, &Model> = f.models.iter().map(|m| (m.id, m)).collect();
    for row in rows {
        let obj = row.as_object().unwrap();
        let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys, LIST_KEYS.into_iter().collect());
        let m = by_id[&row["id"].as_i64().unwrap()];
        assert_eq!(row["kind"], m.kind.as_str());
        assert_eq!(row["status"], m.status.as_str());
        assert_eq!(row["object"], m.object.as_str());
        assert_eq!(row["pairing"], m.pairing.as_str());
        assert_eq!(row["record"].as_str(), m.crm_id.as_deref());
        assert_eq!(row["field"].as_str(), m.field.as_deref());
        assert_eq!(row["crm_value"].as_str(), m.crm_value.as_deref());
        assert_eq!(row["anaplan_value"].as_str(), m.anaplan_value.as_deref());
        assert_eq!(row["base_value"].as_str(), m.base_value.as_deref());
        assert_eq!(row["message"].as_str(), Some(m.message.as_str()));
        let created = DateTime::parse_from_rfc3339(row["created_at"].as_str().unwrap()).unwrap();
        assert_eq!(created, m.created_at);
    }
    // An empty selection is an empty array.
    let none = ExceptionFilter {
        object: Some("Lead".into()),
        ..Default::default()
    };
    let text = render(|out| {
        review::list(&f.store, &none, Format::Json, &ListTable::default(), out).unwrap();
    });
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::json!([])
    );
}

#[test]
fn csv_list_has_a_header_one_row_per_exception_and_quotes_awkward_values() {
    let f = fixture();
    let filter = ExceptionFilter {
        field: Some("Description".into()),
        ..Default::default()
    };
    let text = render(|out| {
        review::list(&f.store, &filter, Format::Csv, &ListTable::default(), out).unwrap();
    });
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, LIST_KEYS);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let expected = expected_ids(&f.models, &filter);
    assert_eq!(records.len(), expected.len());
    // Newlines inside values must not add lines the parser would count as rows.
    assert!(text.lines().count() > records.len() + 1);

    let by_id: BTreeMap<i64, &Model> = f.models.iter().map(|m| (m.id, m)).collect();
    let col = |name: &str| LIST_KEYS.iter().position(|k| *k == name).unwrap();
    let mut awkward_seen = BTreeSet::new();
    for r in &records {
        let m = by_id[&r[col("id")].parse::<i64>().unwrap()];
        // CSV has no null: a null value is an empty cell.
        assert_eq!(&r[col("crm_value")], m.crm_value.as_deref().unwrap_or(""));
        assert_eq!(
            &r[col("anaplan_value")],
            m.anaplan_value.as_deref().unwrap_or("")
        );
        assert_eq!(&r[col("base_value")], m.base_value.as_deref().unwrap_or(""));
        assert_eq!(&r[col("message")], m.message);
        awkward_seen.insert(r[col("crm_value")].to_string());
    }
    for value in AWKWARD {
        assert!(awkward_seen.contains(value), "no row carried {value:?}");
    }
    // Quoting is real CSV quoting: doubled quotes inside a quoted cell.
    assert!(text.contains("\"quote \"\"inside\"\"\""));

    // An empty selection still has the header.
    let none = ExceptionFilter {
        object: Some("Lead".into()),
        ..Default::default()
    };
    let text = render(|out| {
        review::list(&f.store, &none, Format::Csv, &ListTable::default(), out).unwrap();
    });
    assert_eq!(text.trim_end(), LIST_KEYS.join(","));
}

#[test]
fn table_list_names_the_rows_and_the_total() {
    let f = fixture();
    let filter = ExceptionFilter {
        kind: Some(ExceptionKind::Validation),
        limit: Some(5),
        ..Default::default()
    };
    let text = render(|out| {
        assert_eq!(
            review::list(&f.store, &filter, Format::Table, &ListTable::default(), out).unwrap(),
            5
        );
    });
    let total = expected_ids(
        &f.models,
        &ExceptionFilter {
            limit: None,
            ..filter.clone()
        },
    )
    .len();
    assert!(
        text.contains(&format!("5 of {total} matching exceptions")),
        "{text}"
    );
    for id in expected_ids(&f.models, &filter) {
        assert!(text.contains(&id.to_string()));
    }
    assert_eq!(text.matches("┆ validation ┆").count(), 5, "{text}");
}

#[test]
fn show_gives_values_rule_history_and_related_exceptions() {
    let f = fixture();
    // A field exception whose field has several exceptions.
    let m = f
        .models
        .iter()
        .filter(|m| m.field.is_some())
        .max_by_key(|m| {
            f.audits[&(
                m.pairing.clone(),
                m.crm_id.clone().unwrap(),
                m.field.clone().unwrap(),
            )]
        })
        .unwrap();
    let key = (
        m.pairing.clone(),
        m.crm_id.clone().unwrap(),
        m.field.clone().unwrap(),
    );
    let on_field = f.audits[&key];
    assert!(on_field > 1);

    let text = render(|out| {
        review::show(&f.store, m.id, Format::Json, TableWidth::Unlimited, out).unwrap()
    });
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["id"], m.id);
    assert_eq!(json["crm_value"].as_str(), m.crm_value.as_deref());
    assert_eq!(json["base_value"].as_str(), m.base_value.as_deref());
    assert!(json["rule_id"].as_str().unwrap().starts_with(&m.pairing));
    assert_eq!(json["rule_hash"].as_str().unwrap().len(), 64);
    assert_eq!(json["history"].as_array().unwrap().len(), on_field);
    assert_eq!(json["history_total"], on_field);
    assert_eq!(json["related"].as_array().unwrap().len(), on_field - 1);
    for h in json["history"].as_array().unwrap() {
        assert_eq!(h["decision"], "held");
    }

    let text = render(|out| {
        review::show(&f.store, m.id, Format::Table, TableWidth::Unlimited, out).unwrap()
    });
    for needle in [
        format!("exception {}", m.id),
        m.message.clone(),
        "rule hash".to_string(),
        "History of".to_string(),
        "Other exceptions on this field".to_string(),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in\n{text}");
    }

    let text = render(|out| {
        review::show(&f.store, m.id, Format::Csv, TableWidth::Unlimited, out).unwrap()
    });
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(reader.records().count(), 1);

    let err = review::show(
        &f.store,
        999_999,
        Format::Table,
        TableWidth::Unlimited,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no exception with id 999999"),
        "{err}"
    );
}

#[test]
fn stats_match_the_model() {
    let f = fixture();
    for filter in [
        ExceptionFilter::default(),
        ExceptionFilter {
            object: Some("Account".into()),
            since: Some(parse_time_arg("2026-11-10", TimeBound::Since).unwrap()),
            ..Default::default()
        },
    ] {
        let stats = f.store.exception_stats(&filter).unwrap();
        let selected: Vec<&Model> = f.models.iter().filter(|m| m.matches(&filter)).collect();
        assert_eq!(stats.total as usize, selected.len());
        let open: Vec<&&Model> = selected
            .iter()
            .filter(|m| m.status == ExceptionStatus::Open)
            .collect();
        assert_eq!(stats.open as usize, open.len());

        let mut by_status_kind: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for m in &selected {
            *by_status_kind
                .entry((m.status.as_str(), m.kind.as_str()))
                .or_default() += 1;
        }
        let got: BTreeMap<(&str, &str), u64> = stats
            .by_status_kind
            .iter()
            .map(|c| ((c.status.as_str(), c.kind.as_str()), c.count))
            .collect();
        assert_eq!(got, by_status_kind);

        let mut by_field: BTreeMap<(String, Option<String>), (u64, DateTime<Utc>)> =
            BTreeMap::new();
        for m in &open {
            let e = by_field
                .entry((m.object.clone(), m.field.clone()))
                .or_insert((0, m.created_at));
            e.0 += 1;
            e.1 = e.1.min(m.created_at);
        }
        let got: BTreeMap<_, _> = stats
            .open_by_field
            .iter()
            .map(|c| ((c.object.clone(), c.field.clone()), (c.count, c.oldest)))
            .collect();
        assert_eq!(got, by_field);
        assert!(
            stats
                .open_by_field
                .windows(2)
                .all(|w| w[0].count >= w[1].count)
        );

        let mut oldest: Vec<&&Model> = open.clone();
        oldest.sort_by_key(|m| (m.created_at, m.id));
        let want: Vec<i64> = oldest.iter().take(10).map(|m| m.id).collect();
        let got: Vec<i64> = stats.oldest_open.iter().map(|e| e.id).collect();
        assert_eq!(got, want);

        let text = render(|out| {
            review::stats(&f.store, &filter, Format::Json, TableWidth::Unlimited, out).unwrap()
        });
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["total"], selected.len());
        assert_eq!(json["oldest_open"][0]["id"], want[0]);

        let text = render(|out| {
            review::stats(&f.store, &filter, Format::Csv, TableWidth::Unlimited, out).unwrap()
        });
        let rows = csv::Reader::from_reader(text.as_bytes()).records().count();
        assert_eq!(rows, stats.by_status_kind.len() + stats.open_by_field.len());

        let text = render(|out| {
            review::stats(&f.store, &filter, Format::Table, TableWidth::Unlimited, out).unwrap()
        });
        assert!(text.contains(&format!(
            "{} exceptions, {} open.",
            selected.len(),
            open.len()
        )));
    }
}

// ---------------------------------------------------------------------------------------------
// SQL views
// ---------------------------------------------------------------------------------------------

fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

#[test]
fn views_answer_the_review_questions() {
    let f = fixture();
    let conn =
        rusqlite::Connection::open_with_flags(&f.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let open: Vec<&Model> = f
        .models
        .iter()
        .filter(|m| m.status == ExceptionStatus::Open)
        .collect();

    type Group = (String, Option<String>, String);
    let mut want: BTreeMap<Group, (i64, String)> = BTreeMap::new();
    for m in &open {
        let e = want
            .entry((
                m.object.clone(),
                m.field.clone(),
                m.kind.as_str().to_string(),
            ))
            .or_insert((0, "~".into()));
        e.0 += 1;
        let created = m
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        e.1 = e.1.clone().min(created);
    }
    let mut got: BTreeMap<Group, (i64, String)> = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT object, field, kind, count, oldest FROM open_exceptions_by_kind")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok(((r.get(0)?, r.get(1)?, r.get(2)?), (r.get(3)?, r.get(4)?)))
        })
        .unwrap();
    for row in rows {
        let (k, v) = row.unwrap();
        got.insert(k, v);
    }
    assert_eq!(got, want);

    let mut oldest: Vec<&&Model> = open.iter().collect();
    oldest.sort_by_key(|m| (m.created_at, m.id));
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM oldest_open_exceptions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, oldest.iter().map(|m| m.id).collect::<Vec<_>>());
    let age: f64 = conn
        .query_row(
            "SELECT age_days FROM oldest_open_exceptions LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let expected_age = (Utc::now() - oldest[0].created_at).num_seconds() as f64 / 86_400.0;
    assert!((age - expected_age).abs() < 0.01, "{age} vs {expected_age}");

    let mut want: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for m in &f.models {
        want.entry((day(m.created_at), m.kind.as_str().into()))
            .or_default()
            .0 += 1;
        if let Some(at) = m.resolved_at {
            want.entry((day(at), m.kind.as_str().into())).or_default().1 += 1;
        }
    }
    let got: BTreeMap<(String, String), (i64, i64)> = conn
        .prepare("SELECT day, kind, opened, resolved FROM exceptions_per_day")
        .unwrap()
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------------------------

fn amount_kind() -> ValueKind {
    ValueKind::Number { scale: 2 }
}

fn num(raw: &str) -> Value {
    Value::from_text(amount_kind(), raw).unwrap()
}

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, hour, 0, 0).unwrap()
}

/// A fresh store with five open Amount conflicts (crm 10, anaplan 20, base 5), one of them
/// holding its field, and one gap; returns their ids.
fn resolution_store() -> (tempfile::TempDir, Store, Vec<i64>, i64) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("plansync.db")).unwrap();
    let mut batch = Batch::new(at(1));
    let mut refs = Vec::new();
    for n in 0..5 {
        refs.push(batch.add_exception(NewException {
            kind: ExceptionKind::Conflict,
            status: ExceptionStatus::Open,
            pairing: "opportunity".into(),
            object: "Opportunity".into(),
            crm_id: Some(format!("006{n:015}")),
            field: Some(ExceptionField {
                name: "Amount".into(),
                kind: amount_kind(),
                crm_value: num("10"),
                anaplan_value: num("20"),
                base_value: num("5"),
            }),
            rule_id: Some("opportunity.amount".into()),
            rule_hash: Some("feed".into()),
            message: "both sides changed Amount".into(),
            at: at(1),
        }));
    }
    batch.upsert_shadow(ShadowUpsert {
        key: FieldKey::new("opportunity", "006000000000000000", "Amount"),
        kind: amount_kind(),
        base: Some(Observed {
            value: num("5"),
            at: at(0),
            source: Source::Reconcile,
        }),
        seen_crm: None,
        seen_anaplan: None,
        in_flight: None,
        held: Some(refs[0]),
        last_ack: None,
    });
    let gap = batch.add_exception(NewException {
        kind: ExceptionKind::Gap,
        status: ExceptionStatus::Open,
        pairing: "opportunity".into(),
        object: "Opportunity".into(),
        crm_id: None,
        field: None,
        rule_id: None,
        rule_hash: None,
        message: "CDC gap: 1200 events lost; records re-read".into(),
        at: at(1),
    });
    let receipt = store.commit(&batch).unwrap();
    let ids = refs
        .iter()
        .map(|r| receipt.exception_id(*r).unwrap())
        .collect();
    (dir, store, ids, receipt.exception_id(gap).unwrap())
}

fn resolution(how: ResolutionHow) -> Resolution {
    Resolution {
        how,
        by: "alice".into(),
        note: Some("checked with finance, \"final\"".into()),
        at: at(9),
    }
}

fn outbox_count(store_path: &Path) -> i64 {
    rusqlite::Connection::open(store_path)
        .unwrap()
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn resolve_queues_the_chosen_value_to_each_side_that_lacks_it() {
    let (dir, mut store, ids, _) = resolution_store();

    let take_crm = store
        .resolve(ids[0], &resolution(ResolutionHow::TakeCrm))
        .unwrap();
    assert_eq!(take_crm.queued.len(), 1);
    let w = &take_crm.queued[0];
    assert_eq!(w.target, Side::Anaplan);
    assert_eq!(w.value, num("10"));
    assert_eq!(w.reason, OutboxReason::Resolution);
    assert_eq!(w.exception_id, Some(ids[0]));
    assert_eq!(
        w.key,
        FieldKey::new("opportunity", "006000000000000000", "Amount")
    );
    let e = &take_crm.exception;
    assert_eq!(e.status, ExceptionStatus::Resolved);
    assert_eq!(e.resolution, Some(ResolutionKind::TakeCrm));
    assert_eq!(e.resolution_value, Some(num("10")));
    assert_eq!(e.resolved_by.as_deref(), Some("alice"));
    assert_eq!(e.resolved_at, Some(at(9)));
    assert_eq!(e.note.as_deref(), Some("checked with finance, \"final\""));
    // The field it held is released.
    let key = FieldKey::new("opportunity", "006000000000000000", "Amount");
    assert_eq!(store.shadow(&key).unwrap().unwrap().held, None);
    // An engine round that loaded the state before the resolution must not hold it again.
    let mut stale = store.shadow(&key).unwrap().unwrap();
    stale.held = Some(ids[0]);
    let mut batch = Batch::new(at(10));
    batch.upsert_shadow(ShadowUpsert::from_state(key.clone(), &stale));
    store.commit(&batch).unwrap();
    assert_eq!(store.shadow(&key).unwrap().unwrap().held, None);

    let take_anaplan = store
        .resolve(ids[1], &resolution(ResolutionHow::TakeAnaplan))
        .unwrap();
    let targets: Vec<(Side, Value)> = take_anaplan
        .queued
        .iter()
        .map(|w| (w.target, w.value.clone()))
        .collect();
    assert_eq!(targets, vec![(Side::Crm, num("20"))]);

    // A new value goes to both sides, normalised to the field's scale.
    let set = store
        .resolve(ids[2], &resolution(ResolutionHow::SetValue("12.5".into())))
        .unwrap();
    let targets: Vec<(Side, String)> = set
        .queued
        .iter()
        .map(|w| (w.target, w.value.to_text().unwrap()))
        .collect();
    assert_eq!(
        targets,
        vec![(Side::Crm, "12.50".into()), (Side::Anaplan, "12.50".into())]
    );
    // A value one side already holds goes only to the other.
    let set_same = store
        .resolve(
            ids[3],
            &resolution(ResolutionHow::SetValue("20.000".into())),
        )
        .unwrap();
    assert_eq!(set_same.queued.len(), 1);
    assert_eq!(set_same.queued[0].target, Side::Crm);

    let dismiss = store
        .resolve(ids[4], &resolution(ResolutionHow::Dismiss))
        .unwrap();
    assert!(dismiss.queued.is_empty());
    assert_eq!(dismiss.exception.resolution, Some(ResolutionKind::Dismiss));
    assert_eq!(dismiss.exception.resolution_value, None);

    // What was returned is what is pending for the sinks.
    let pending: Vec<i64> = [Side::Crm, Side::Anaplan]
        .into_iter()
        .flat_map(|s| store.pending_outbox(s, 100).unwrap())
        .map(|w| w.id)
        .collect();
    assert_eq!(pending.len(), 5);
    assert_eq!(outbox_count(&dir.path().join("plansync.db")), 5);
}

#[test]
fn resolving_twice_a_bad_value_or_a_missing_field_is_an_error_that_changes_nothing() {
    let (dir, mut store, ids, gap) = resolution_store();
    let path = dir.path().join("plansync.db");

    store
        .resolve(ids[0], &resolution(ResolutionHow::TakeCrm))
        .unwrap();
    let err = store
        .resolve(ids[0], &resolution(ResolutionHow::TakeAnaplan))
        .unwrap_err();
    assert!(matches!(err, StoreError::NotOpen { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("is resolved, not open") && msg.contains("resolved by alice"),
        "{msg}"
    );
    assert_eq!(outbox_count(&path), 1);

    let err = store
        .resolve(ids[1], &resolution(ResolutionHow::SetValue("a lot".into())))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("number:2") && msg.contains("Opportunity.Amount"),
        "{msg}"
    );
    assert_eq!(
        store.exception(ids[1]).unwrap().status,
        ExceptionStatus::Open
    );
    assert_eq!(outbox_count(&path), 1);

    let err = store
        .resolve(gap, &resolution(ResolutionHow::TakeCrm))
        .unwrap_err();
    assert!(err.to_string().contains("--how dismiss"), "{err}");
    assert_eq!(store.exception(gap).unwrap().status, ExceptionStatus::Open);
    let dismissed = store
        .resolve(gap, &resolution(ResolutionHow::Dismiss))
        .unwrap();
    assert!(dismissed.queued.is_empty());
    assert_eq!(dismissed.exception.status, ExceptionStatus::Resolved);

    let err = store
        .resolve(
            ids[2],
            &Resolution {
                by: " ".into(),
                ..resolution(ResolutionHow::TakeCrm)
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::MissingResolver));

    let err = store
        .resolve(424_242, &resolution(ResolutionHow::Dismiss))
        .unwrap_err();
    assert!(matches!(err, StoreError::ExceptionNotFound { id: 424_242 }));

    // Auto-resolved exceptions are not open either.
    let mut batch = Batch::new(at(2));
    let auto = batch.add_exception(NewException {
        status: ExceptionStatus::AutoResolved,
        ..store_exception_template()
    });
    let auto = store.commit(&batch).unwrap().exception_id(auto).unwrap();
    let err = store
        .resolve(auto, &resolution(ResolutionHow::Dismiss))
        .unwrap_err();
    assert!(err.to_string().contains("auto_resolved"), "{err}");
    assert_eq!(outbox_count(&path), 1);
}

fn store_exception_template() -> NewException {
    NewException {
        kind: ExceptionKind::Conflict,
        status: ExceptionStatus::Open,
        pairing: "opportunity".into(),
        object: "Opportunity".into(),
        crm_id: Some("006000000000000009".into()),
        field: Some(ExceptionField {
            name: "Amount".into(),
            kind: amount_kind(),
            crm_value: num("1"),
            anaplan_value: num("2"),
            base_value: Value::Null,
        }),
        rule_id: None,
        rule_hash: None,
        message: "crm_wins".into(),
        at: at(2),
    }
}

#[test]
fn review_resolve_prints_what_was_recorded_and_queued() {
    let (_dir, mut store, ids, _) = resolution_store();
    let text = render(|out| {
        review::resolve(
            &mut store,
            ids[0],
            &resolution(ResolutionHow::SetValue("7".into())),
            Format::Json,
            out,
        )
        .unwrap();
    });
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["exception"]["status"], "resolved");
    assert_eq!(json["exception"]["resolution"], "set_value");
    assert_eq!(json["exception"]["resolution_value"], "7.00");
    assert_eq!(json["exception"]["resolved_by"], "alice");
    let writes = json["queued_writes"].as_array().unwrap();
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[0]["target"], "crm");
    assert_eq!(writes[1]["target"], "anaplan");
    assert_eq!(writes[1]["value"], "7.00");
    assert_eq!(writes[1]["reason"], "resolution");
    assert_eq!(writes[1]["exception_id"], ids[0]);

    let text = render(|out| {
        review::resolve(
            &mut store,
            ids[1],
            &resolution(ResolutionHow::TakeCrm),
            Format::Table,
            out,
        )
        .unwrap();
    });
    assert!(
        text.contains(&format!("Resolved exception {}", ids[1])),
        "{text}"
    );
    assert!(text.contains("take_crm (10.00) by alice"), "{text}");
    assert!(text.contains("Queued 1 write(s)"), "{text}");

    let text = render(|out| {
        review::resolve(
            &mut store,
            ids[2],
            &resolution(ResolutionHow::Dismiss),
            Format::Csv,
            out,
        )
        .unwrap();
    });
    assert_eq!(
        text.trim_end(),
        "id,target,pairing,record,field,value_kind,value,reason,exception_id,state"
    );
}

// ---------------------------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------------------------

fn sidecars_absent(path: &Path) -> bool {
    ["-wal", "-shm", "-journal"].iter().all(|s| {
        let mut p = path.as_os_str().to_owned();
        p.push(s);
        !PathBuf::from(p).exists()
    })
}

#[test]
fn a_new_store_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plansync.db");
    let store = Store::open(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_mode = fs::metadata(PathBuf::from(wal))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(wal_mode, 0o600, "{wal_mode:o}");
    drop(store);
    // Reopening keeps the mode.
    drop(Store::open(&path).unwrap());
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn garbage_is_not_a_plansync_database_and_stays_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&path, &garbage).unwrap();
    for read_only in [false, true] {
        let err = if read_only {
            Store::open_read_only(&path).unwrap_err()
        } else {
            Store::open(&path).unwrap_err()
        };
        assert!(matches!(err, StoreError::NotPlansync { .. }), "{err}");
        assert!(
            err.to_string().contains("is not a plansync database"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), garbage);
        assert!(sidecars_absent(&path));
    }
    // Even a file that starts like SQLite but is not.
    let mut fake = b"SQLite format 3\0".to_vec();
    fake.extend(std::iter::repeat_n(0xAB, 4000));
    fs::write(&path, &fake).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        err.to_string().contains("is not a plansync database"),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), fake);
}

#[test]
fn another_applications_database_stays_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Tables but no mark (application_id 0), and a mark of someone else with no tables.
    let cases: [(&str, &str); 2] = [
        (
            "tables.db",
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);
                       INSERT INTO invoices (total) VALUES (12.5);",
        ),
        ("marked.db", "PRAGMA application_id = 1234;"),
    ];
    for (name, sql) in cases {
        let path = dir.path().join(name);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let before = fs::read(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::NotPlansync { .. }), "{err}");
        assert!(err.to_string().contains("another application"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before, "{name} was changed");
        assert!(sidecars_absent(&path));
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(err, StoreError::NotPlansync { .. }), "{err}");
    }
}

#[test]
fn a_store_from_a_newer_plansync_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plansync.db");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let before = fs::read(&path).unwrap();
    for read_only in [false, true] {
        let err = if read_only {
            Store::open_read_only(&path).unwrap_err()
        } else {
            Store::open(&path).unwrap_err()
        };
        let msg = err.to_string();
        let want = format!(
            "created by a newer plansync (schema v{}, this build knows v{SCHEMA_VERSION}): upgrade plansync",
            SCHEMA_VERSION + 1
        );
        assert!(msg.contains(&want), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), before);
    }
}

#[test]
fn a_missing_directory_or_file_is_a_clear_error_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no").join("such");
    let err = Store::open(missing_dir.join("plansync.db")).unwrap_err();
    assert!(matches!(err, StoreError::DirectoryMissing { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!dir.path().join("no").exists());

    let path = dir.path().join("plansync.db");
    let err = Store::open_read_only(&path).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(!path.exists());

    // A regular file where the directory should be.
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = Store::open(file.join("plansync.db")).unwrap_err();
    assert!(matches!(err, StoreError::DirectoryMissing { .. }), "{err}");
}

#[test]
fn an_unwritable_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plansync.db");
    drop(Store::open(&path).unwrap());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    // Root ignores permission bits; only assert where they are enforced.
    let enforced = fs::OpenOptions::new().write(true).open(&path).is_err();
    let result = Store::open(&path);
    if enforced {
        let err = result.unwrap_err();
        assert!(matches!(err, StoreError::NotWritable { .. }), "{err}");
        assert!(err.to_string().contains("for writing"), "{err}");
    }
    // Reading still works.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    drop(Store::open_read_only(&path).unwrap());
}

#[test]
fn an_empty_file_becomes_a_store_and_a_store_reads_while_another_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plansync.db");
    fs::write(&path, b"").unwrap();
    let mut writer = Store::open(&path).unwrap();
    let reader = Store::open_read_only(&path).unwrap();
    let mut batch = Batch::new(at(1));
    batch.add_exception(store_exception_template());
    writer.commit(&batch).unwrap();
    assert_eq!(
        reader
            .count_exceptions(&ExceptionFilter::default())
            .unwrap(),
        1
    );
    // Read-only opening of an empty file is refused (nothing to review, and no creating).
    let empty = dir.path().join("empty.db");
    fs::write(&empty, b"").unwrap();
    let err = Store::open_read_only(&empty).unwrap_err();
    assert!(matches!(err, StoreError::NotPlansync { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Batch atomicity
// ---------------------------------------------------------------------------------------------

fn counts(path: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    [
        "exceptions",
        "outbox",
        "shadow",
        "audit",
        "checkpoints",
        "record_map",
    ]
    .iter()
    .map(|t| {
        conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    })
    .collect()
}

#[test]
fn a_failing_statement_leaves_nothing_of_its_batch() {
    let (dir, mut store, _, _) = resolution_store();
    let path = dir.path().join("plansync.db");
    let before = counts(&path);
    let checkpoint_before = store.checkpoint("cdc:Opportunity").unwrap();

    let mut batch = Batch::new(at(3));
    let e = batch.add_exception(store_exception_template());
    let w = batch.add_outbox(NewOutbox {
        key: FieldKey::new("opportunity", "006000000000000009", "Amount"),
        target: Side::Anaplan,
        kind: amount_kind(),
        value: num("1"),
        reason: OutboxReason::Decision,
        exception: Some(e),
        replaced: Value::Null,
    });
    for n in 0..3_000 {
        batch.upsert_shadow(ShadowUpsert {
            key: FieldKey::new("opportunity", format!("006{n:015}"), "Amount"),
            kind: amount_kind(),
            base: None,
            seen_crm: None,
            seen_anaplan: None,
            in_flight: (n == 0).then_some(w),
            held: None,
            last_ack: None,
        });
    }
    batch.set_checkpoint(
        "cdc:Opportunity",
        plansync::model::Position::Replay {
            channel: "/data/OpportunityChangeEvent".into(),
            replay_id: "99".into(),
        },
    );
    // The last row points at a write that does not exist: the foreign key fails.
    batch.upsert_shadow(ShadowUpsert {
        key: FieldKey::new("opportunity", "006999999999999999", "Amount"),
        kind: amount_kind(),
        base: None,
        seen_crm: None,
        seen_anaplan: None,
        in_flight: Some(OutboxRef::stored(987_654)),
        held: None,
        last_ack: None,
    });
    let err = store.commit(&batch).unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    assert_eq!(counts(&path), before);
    assert_eq!(
        store.checkpoint("cdc:Opportunity").unwrap(),
        checkpoint_before
    );

    // The store is still usable, and the same batch without the bad row goes through whole.
    let mut good = Batch::new(at(3));
    let e = good.add_exception(store_exception_template());
    good.add_outbox(NewOutbox {
        key: FieldKey::new("opportunity", "006000000000000009", "Amount"),
        target: Side::Anaplan,
        kind: amount_kind(),
        value: num("1"),
        reason: OutboxReason::Decision,
        exception: Some(e),
        replaced: Value::Null,
    });
    store.commit(&good).unwrap();
    let after = counts(&path);
    assert_eq!(after[0], before[0] + 1);
    assert_eq!(after[1], before[1] + 1);
}

/// A resolution acts on what the sides show now, and never beside a write in flight.
#[test]
fn resolve_uses_current_values_and_waits_for_a_write_in_flight() {
    let (dir, mut store, ids, _) = resolution_store();
    let key = FieldKey::new("opportunity", "006000000000000001", "Amount");
    // Since the exception was raised, the CRM moved on to 30 and Anaplan to 10.
    let mut batch = Batch::new(at(2));
    batch.upsert_shadow(ShadowUpsert {
        key: key.clone(),
        kind: amount_kind(),
        base: None,
        seen_crm: Some(Observed {
            value: num("30"),
            at: at(2),
            source: Source::Stream,
        }),
        seen_anaplan: Some(Observed {
            value: num("10"),
            at: at(2),
            source: Source::Poll,
        }),
        in_flight: None,
        held: None,
        last_ack: None,
    });
    store.commit(&batch).unwrap();
    let out = store
        .resolve(ids[1], &resolution(ResolutionHow::TakeCrm))
        .unwrap();
    assert_eq!(out.exception.resolution_value, Some(num("30")));
    assert_eq!(out.queued.len(), 1);
    assert_eq!(
        (out.queued[0].target, &out.queued[0].value),
        (Side::Anaplan, &num("30"))
    );

    // A field with a write in flight: refused, nothing changed.
    let key = FieldKey::new("opportunity", "006000000000000002", "Amount");
    let mut batch = Batch::new(at(3));
    let write = batch.add_outbox(NewOutbox {
        key: key.clone(),
        target: Side::Crm,
        kind: amount_kind(),
        value: num("12"),
        reason: OutboxReason::Decision,
        exception: None,
        replaced: Value::Null,
    });
    batch.upsert_shadow(ShadowUpsert {
        key,
        kind: amount_kind(),
        base: None,
        seen_crm: None,
        seen_anaplan: None,
        in_flight: Some(write),
        held: None,
        last_ack: None,
    });
    store.commit(&batch).unwrap();
    let before = outbox_count(&dir.path().join("plansync.db"));
    let err = store
        .resolve(ids[2], &resolution(ResolutionHow::TakeAnaplan))
        .unwrap_err();
    assert!(err.to_string().contains("is in flight"), "{err}");
    assert_eq!(
        store.exception(ids[2]).unwrap().status,
        ExceptionStatus::Open
    );
    assert_eq!(outbox_count(&dir.path().join("plansync.db")), before);
}
