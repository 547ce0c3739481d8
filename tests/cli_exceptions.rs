//! The review workflow end to end: decisions made by the real rules engine over the example
//! rules are stored as exceptions (thousands of them), then listed, filtered, shown, counted
//! and resolved through the real `plansync exceptions` binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, Duration, TimeZone, Utc};

use plansync::model::{Decimal, ExceptionKind, ExceptionStatus, Side, Source, Value};
use plansync::rules::decide::Seen;
use plansync::rules::{self, Context, FieldState, Observation, decide};
use plansync::store::{Batch, ExceptionField, FieldKey, NewAudit, NewException, Store};

fn plansync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("USER", "reviewer")
        .output()
        .expect("run plansync")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a command that must fail with exit 2 and an error mentioning `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let out = plansync(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
}

fn n(units: i128) -> Value {
    Value::Number(Decimal {
        units: units * 100,
        scale: 2,
    })
}

/// What the test expects the database to hold: one entry per stored exception.
#[derive(Debug, Clone)]
struct Expected {
    kind: ExceptionKind,
    status: ExceptionStatus,
    field: String,
    crm_id: String,
    day: DateTime<Utc>,
}

const RECORDS: usize = 3000;

/// Decides a realistic mix of observations with the example rules and stores every exception
/// the decisions imply, with an audit row for each decision.
fn build(db: &Path) -> Vec<Expected> {
    let set = rules::load(&["rules/opportunity.toml".into()]).expect("example rules load");
    let pairing = &set.pairings[0];
    let mut store = Store::open(db).unwrap();
    let mut expected = Vec::new();
    let start = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let mut batch = Batch::new(start);
    for i in 0..RECORDS {
        let crm_id = format!("006{i:015}");
        let day = start + Duration::days((i % 10) as i64);
        // Quarter-end for every fifth record, mid-quarter otherwise.
        let at = if i % 5 == 0 {
            Utc.with_ymd_and_hms(2027, 1, 27, 15, 0, 0).unwrap()
        } else {
            day
        };
        let (field_name, side, base, other, value) = match i % 4 {
            0 => ("Amount", Side::Anaplan, n(1000), None, n(900)),
            1 => (
                "Forecast_Override__c",
                Side::Crm,
                n(500),
                Some(n(650)),
                n(700),
            ),
            2 => ("Amount", Side::Crm, n(1000), None, n(2600)),
            _ => (
                "Probability",
                Side::Anaplan,
                Value::Number(Decimal {
                    units: 40,
                    scale: 0,
                }),
                Some(Value::Number(Decimal {
                    units: 60,
                    scale: 0,
                })),
                Value::Number(Decimal {
                    units: 70,
                    scale: 0,
                }),
            ),
        };
        let field = pairing.field(field_name).unwrap();
        let mut state = FieldState {
            base: Some(base.clone()),
            ..FieldState::default()
        };
        let seen = Seen {
            value: other.clone().unwrap_or(base),
            at: at - Duration::hours(1),
        };
        match side.other() {
            Side::Crm => state.seen_crm = Some(seen),
            Side::Anaplan => state.seen_anaplan = Some(seen),
        }
        let mut ctx = Context::default();
        ctx.record
            .insert("StageName".into(), Value::Text("Negotiation".into()));
        let obs = Observation {
            side,
            value: value.clone(),
            at,
            ours: false,
        };
        let decision = decide(pairing, field, &state, &obs, &ctx);
        let key = FieldKey::new(pairing.name.clone(), crm_id.clone(), field_name);
        let exception = decision.exception.as_ref().map(|e| {
            let status = if e.auto_resolved {
                ExceptionStatus::AutoResolved
            } else {
                ExceptionStatus::Open
            };
            expected.push(Expected {
                kind: e.kind,
                status,
                field: field_name.into(),
                crm_id: crm_id.clone(),
                day,
            });
            batch.add_exception(NewException {
                kind: e.kind,
                status,
                pairing: pairing.name.clone(),
                object: pairing.crm_object.clone(),
                crm_id: Some(crm_id.clone()),
                field: Some(ExceptionField {
                    name: field_name.into(),
                    kind: field.kind,
                    crm_value: e.crm.clone().unwrap_or(Value::Null),
                    anaplan_value: e.anaplan.clone().unwrap_or(Value::Null),
                    base_value: e.base.clone().unwrap_or(Value::Null),
                }),
                rule_id: Some(decision.rule_id.clone()),
                rule_hash: Some(pairing.hash.clone()),
                message: e.message.clone(),
                at: day,
            })
        });
        batch.add_audit(NewAudit {
            key,
            at,
            side,
            source: Source::Stream,
            kind: field.kind,
            value,
            decision: decision.action.name().into(),
            rule_id: Some(decision.rule_id.clone()),
            rule_hash: Some(pairing.hash.clone()),
            exception,
        });
        if batch.len() >= 1000 {
            store.commit(&batch).unwrap();
            batch = Batch::new(start);
        }
    }
    store.commit(&batch).unwrap();
    expected
}

fn json_list(db: &str, filters: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["exceptions", "list", "--db", db, "--format", "json"];
    args.extend_from_slice(filters);
    let out = ok(&plansync(&args));
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn review_thousands_of_exceptions() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("plansync.db");
    let expected = build(&db_path);
    let db = db_path.to_str().unwrap();
    // The mix produced every kind the example rules imply.
    let kinds: BTreeMap<ExceptionKind, usize> =
        expected.iter().fold(BTreeMap::new(), |mut m, e| {
            *m.entry(e.kind).or_default() += 1;
            m
        });
    assert!(kinds.len() >= 3, "{kinds:?}");
    assert!(expected.len() > 2000, "{}", expected.len());

    // Filters, one at a time and combined, against the model.
    let all = json_list(db, &[]);
    assert_eq!(all.len(), expected.len());
    let count = |f: &dyn Fn(&Expected) -> bool| expected.iter().filter(|e| f(e)).count();
    let open_conflicts = json_list(db, &["--status", "open", "--kind", "conflict"]);
    assert_eq!(
        open_conflicts.len(),
        count(&|e| e.status == ExceptionStatus::Open && e.kind == ExceptionKind::Conflict)
    );
    assert!(!open_conflicts.is_empty());
    let amount_violations = json_list(
        db,
        &[
            "--field",
            "Amount",
            "--kind",
            "ownership_violation",
            "--object",
            "Opportunity",
        ],
    );
    assert_eq!(
        amount_violations.len(),
        count(&|e| e.field == "Amount" && e.kind == ExceptionKind::OwnershipViolation)
    );
    let day3 = Utc.with_ymd_and_hms(2026, 12, 3, 9, 0, 0).unwrap();
    let on_day3 = json_list(db, &["--since", "2026-12-03", "--until", "2026-12-03"]);
    assert_eq!(on_day3.len(), count(&|e| e.day == day3));
    let one_record = &expected[7].crm_id;
    assert_eq!(
        json_list(db, &["--record", one_record]).len(),
        count(&|e| &e.crm_id == one_record)
    );
    assert_eq!(
        json_list(db, &["--limit", "25", "--offset", "10"]).len(),
        25
    );
    assert!(json_list(db, &["--object", "Account"]).is_empty());

    // The JSON rows carry both values, the base, and the deciding rule with its file hash.
    let row = &open_conflicts[0];
    for key in [
        "id",
        "kind",
        "status",
        "object",
        "record",
        "field",
        "crm_value",
        "anaplan_value",
        "base_value",
        "rule_id",
        "rule_hash",
        "message",
        "created_at",
    ] {
        assert!(row.get(key).is_some(), "no `{key}` in {row}");
    }
    assert_eq!(row["crm_value"], "700.00");
    assert_eq!(row["anaplan_value"], "650.00");
    assert_eq!(row["base_value"], "500.00");
    assert_eq!(row["rule_id"], "Opportunity.Forecast_Override__c");

    // CSV: a header and one row per exception; table: for people.
    let csv = ok(&plansync(&[
        "exceptions",
        "list",
        "--db",
        db,
        "--format",
        "csv",
        "--kind",
        "validation",
    ]));
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert!(reader.headers().unwrap().iter().any(|h| h == "rule_hash"));
    assert_eq!(
        reader.records().count(),
        count(&|e| e.kind == ExceptionKind::Validation)
    );
    let table = ok(&plansync(&[
        "exceptions",
        "list",
        "--db",
        db,
        "--limit",
        "3",
    ]));
    assert!(
        table.contains("ownership_violation") || table.contains("conflict"),
        "{table}"
    );

    // Show: both values, the rule, and the field's history from the audit.
    let id = row["id"].as_i64().unwrap().to_string();
    let shown = ok(&plansync(&[
        "exceptions",
        "show",
        &id,
        "--db",
        db,
        "--format",
        "json",
    ]));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert!(shown.to_string().contains("hold"), "{shown}");
    let table = ok(&plansync(&["exceptions", "show", &id, "--db", db]));
    assert!(
        table.contains("700.00") && table.contains("650.00") && table.contains("500.00"),
        "{table}"
    );

    // Stats agree with the model.
    let stats = ok(&plansync(&[
        "exceptions",
        "stats",
        "--db",
        db,
        "--format",
        "json",
    ]));
    let open_total = count(&|e| e.status == ExceptionStatus::Open);
    assert!(
        stats.contains(&open_total.to_string()),
        "{open_total} not in {stats}"
    );

    // Resolve a held conflict by taking the CRM's value: queued for Anaplan only.
    let resolved = ok(&plansync(&[
        "exceptions",
        "resolve",
        &id,
        "--db",
        db,
        "--take",
        "crm",
        "--note",
        "rep confirmed",
        "--format",
        "json",
    ]));
    assert!(
        resolved.contains("anaplan") && resolved.contains("700.00"),
        "{resolved}"
    );
    let after = json_list(db, &["--status", "open", "--kind", "conflict"]);
    assert_eq!(after.len(), open_conflicts.len() - 1);
    fails_with(
        &[
            "exceptions",
            "resolve",
            &id,
            "--db",
            db,
            "--take",
            "anaplan",
        ],
        "not open",
    );

    // A set value is checked against the field's type; a bad one changes nothing.
    let other = after[0]["id"].as_i64().unwrap().to_string();
    // Said once: the store's error names the field, not the parse error a second time.
    let out = plansync(&["exceptions", "resolve", &other, "--db", db, "--set", "lots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.lines().last().unwrap_or_default(),
        "error: `lots` is not a number: Opportunity.Forecast_Override__c holds number:2 values",
        "{stderr}"
    );
    fails_with(
        &[
            "exceptions",
            "resolve",
            &other,
            "--db",
            db,
            "--set",
            "-5",
            "--rules",
            "rules",
        ],
        "refused by the rules",
    );
    assert_eq!(
        json_list(db, &["--status", "open", "--kind", "conflict"]).len(),
        after.len(),
        "a refused resolution changed nothing"
    );
    let set = ok(&plansync(&[
        "exceptions",
        "resolve",
        &other,
        "--db",
        db,
        "--set",
        "680",
        "--format",
        "json",
    ]));
    assert!(set.contains("680.00"), "{set}");
    assert_eq!(json_list(db, &["--status", "resolved"]).len(), 2);
    let by = json_list(db, &["--status", "resolved"]);
    assert!(by.iter().all(|r| r["resolved_by"] == "reviewer"), "{by:?}");

    // Exactly one way to resolve must be given.
    let neither = plansync(&["exceptions", "resolve", &other, "--db", db]);
    assert_eq!(neither.status.code(), Some(2));
}

#[test]
fn a_file_that_is_not_a_plansync_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    std::fs::write(&path, b"these are my notes, not a database").unwrap();
    let out = plansync(&["exceptions", "list", "--db", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a plansync database"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"these are my notes, not a database"
    );

    let missing = plansync(&[
        "exceptions",
        "stats",
        "--db",
        dir.path().join("nope.db").to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(!dir.path().join("nope.db").exists());

    let bad_since = plansync(&[
        "exceptions",
        "list",
        "--db",
        path.to_str().unwrap(),
        "--since",
        "yesterday",
    ]);
    assert_eq!(bad_since.status.code(), Some(2));
}

/// The SQL a RevOps admin is shown in the README runs against a real database and answers.
#[test]
fn the_readme_sql_queries_run() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("plansync.db");
    let expected = build(&db_path);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let sql_block = readme
        .split("```sql")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```sql block in the README");
    let statements: Vec<&str> = sql_block
        .split(';')
        .map(str::trim)
        .filter(|s| {
            s.lines()
                .any(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
        })
        .collect();
    assert_eq!(statements.len(), 3, "{statements:?}");
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    for sql in statements {
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
        let columns = stmt.column_count();
        let rows: Vec<Vec<rusqlite::types::Value>> = stmt
            .query_map([], |row| (0..columns).map(|i| row.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!rows.is_empty(), "no rows from: {sql}");
    }
    let open = expected
        .iter()
        .filter(|e| e.status == ExceptionStatus::Open)
        .count() as i64;
    let total: i64 = conn
        .query_row("SELECT sum(count) FROM open_exceptions_by_kind", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(total, open);
}
