//! The review workflow end to end: decisions made by the real rules engine over the example
//! rules are stored as exceptions (thousands of them), then listed, filtered, shown, counted
//! and resolved through the real `plansync exceptions` binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, Duration, TimeZone, Utc};

use plansync::model::{Decimal, ExceptionKind, ExceptionStatus, Side, Source, Value, ValueKind};
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

// ---------------------------------------------------------------------------------------------
// The list table at a terminal's width, its columns, `--status all`, and who resolved.

const LONG_MESSAGE: &str = "CRM and Anaplan both changed Amount since the last sync and the \
     rules hold the field for a person to decide which value is right";

/// A small store: two open exceptions (one with a long message), one auto-resolved.
fn small_store(db: &Path) {
    let mut store = Store::open(db).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let mut batch = Batch::new(at);
    let rows = [
        (
            ExceptionKind::Conflict,
            ExceptionStatus::Open,
            "006A",
            LONG_MESSAGE,
        ),
        (
            ExceptionKind::Validation,
            ExceptionStatus::Open,
            "006B",
            "below the floor",
        ),
        (
            ExceptionKind::Conflict,
            ExceptionStatus::AutoResolved,
            "006C",
            "newest wins",
        ),
    ];
    for (i, (kind, status, crm_id, message)) in rows.into_iter().enumerate() {
        batch.add_exception(NewException {
            kind,
            status,
            pairing: "opportunity".into(),
            object: "Opportunity".into(),
            crm_id: Some(crm_id.into()),
            field: Some(ExceptionField {
                name: "Amount".into(),
                kind: ValueKind::Number { scale: 2 },
                crm_value: n(700),
                anaplan_value: n(650),
                base_value: n(500),
            }),
            rule_id: Some("Opportunity.Amount".into()),
            rule_hash: None,
            message: message.into(),
            at: at + Duration::hours(i as i64),
        });
    }
    store.commit(&batch).unwrap();
}

fn list_at(db: &str, columns: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plansync"));
    command
        .args(["exceptions", "list", "--db", db])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("COLUMNS");
    if let Some(columns) = columns {
        command.env("COLUMNS", columns);
    }
    command.output().expect("run plansync")
}

/// The header cells of a table's first row of text.
fn headers(table: &str) -> Vec<String> {
    table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .trim_matches('│')
        .split('┆')
        .map(|cell| cell.trim().to_string())
        .collect()
}

#[test]
fn the_list_fits_the_width_it_is_given_and_cuts_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("plansync.db");
    small_store(&db_path);
    let db = db_path.to_str().unwrap();

    let table = ok(&list_at(db, Some("80"), &[]));
    for line in table.lines() {
        assert!(line.chars().count() <= 80, "wider than 80:\n{table}");
    }
    assert_eq!(
        headers(&table),
        [
            "id", "kind", "status", "field", "record", "crm", "anaplan", "base", "age", "message"
        ],
        "{table}"
    );
    // One line per exception, and the long message ends in `…` instead of wrapping.
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("│ ")).collect();
    assert_eq!(rows.len(), 4, "a header and three rows:\n{table}");
    assert!(rows[1].contains("…"), "{table}");
    assert!(!table.contains("right"), "{table}");
    assert!(table.ends_with("3 of 3 matching exceptions\n"), "{table}");

    // A status the filter fixes is not a column.
    let open = ok(&list_at(db, Some("80"), &["--status", "open"]));
    assert!(!headers(&open).contains(&"status".to_string()), "{open}");

    // Exactly the columns asked for, in that order: a golden table.
    let chosen = ok(&list_at(
        db,
        Some("60"),
        &["--columns", "id,kind,record,message"],
    ));
    assert_eq!(
        chosen,
        "\
┌────┬────────────┬────────┬───────────────────────────────┐
│ id ┆ kind       ┆ record ┆ message                       │
╞════╪════════════╪════════╪═══════════════════════════════╡
│ 1  ┆ conflict   ┆ 006A   ┆ CRM and Anaplan both changed… │
│ 2  ┆ validation ┆ 006B   ┆ below the floor               │
│ 3  ┆ conflict   ┆ 006C   ┆ newest wins                   │
└────┴────────────┴────────┴───────────────────────────────┘
3 of 3 matching exceptions
"
    );
    let two = ok(&list_at(db, Some("80"), &["--columns", "id,message"]));
    assert_eq!(headers(&two), ["id", "message"], "{two}");

    // --wide: every column, every value whole, whatever the width.
    let wide = ok(&list_at(db, Some("80"), &["--wide"]));
    assert_eq!(
        headers(&wide),
        [
            "id",
            "kind",
            "status",
            "field",
            "record",
            "crm",
            "anaplan",
            "base",
            "rule",
            "created",
            "age",
            "resolution",
            "by",
            "note",
            "message"
        ],
        "{wide}"
    );
    assert!(wide.contains(LONG_MESSAGE), "{wide}");
    assert!(!wide.contains('…'), "{wide}");

    // Not a terminal and no COLUMNS (a pipe, a file): nothing is cut, the same text always.
    let piped = ok(&list_at(db, None, &[]));
    assert!(piped.contains(LONG_MESSAGE), "{piped}");
    assert_eq!(piped.lines().filter(|l| l.starts_with("│ ")).count(), 4);

    // JSON and CSV are not tables: every field, whole, at any width.
    let json = ok(&list_at(db, Some("40"), &["--format", "json"]));
    assert!(
        json.contains(LONG_MESSAGE) && json.contains("rule_id"),
        "{json}"
    );
    let csv = ok(&list_at(
        db,
        Some("40"),
        &["--format", "csv", "--columns", "id"],
    ));
    assert!(csv.contains(LONG_MESSAGE), "{csv}");
}

#[test]
fn an_unknown_column_or_status_names_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("plansync.db");
    small_store(&db_path);
    let db = db_path.to_str().unwrap();
    fails_with(
        &["exceptions", "list", "--db", db, "--columns", "id,colour"],
        "unknown column `colour` (one of: id, kind, status, field, record, crm, anaplan, base, \
         rule, created, age, resolution, by, note, message)",
    );
    for command in ["list", "stats"] {
        fails_with(
            &["exceptions", command, "--db", db, "--status", "closed"],
            "unknown status `closed` (one of: all, open, resolved, auto_resolved, converged)",
        );
    }
}

#[test]
fn status_all_is_every_status() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("plansync.db");
    small_store(&db_path);
    let db = db_path.to_str().unwrap();
    ok(&plansync(&[
        "exceptions",
        "resolve",
        "2",
        "--db",
        db,
        "--dismiss",
        "--by",
        "ana",
    ]));
    let all = json_list(db, &["--status", "all"]);
    let statuses: Vec<&str> = all.iter().filter_map(|r| r["status"].as_str()).collect();
    assert_eq!(statuses, ["open", "resolved", "auto_resolved"]);
    assert_eq!(all.len(), json_list(db, &[]).len());

    let table = ok(&list_at(db, Some("100"), &["--status", "all"]));
    assert!(headers(&table).contains(&"status".to_string()), "{table}");
    assert!(
        table.contains("resolved") && table.contains("open"),
        "{table}"
    );

    let stats = ok(&plansync(&[
        "exceptions",
        "stats",
        "--db",
        db,
        "--status",
        "all",
        "--format",
        "json",
    ]));
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["open"], 1);
}

/// What `id -un` says this process's user is called.
fn os_user_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_resolution_without_by_or_user_is_recorded_under_the_systems_name() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("plansync.db");
    small_store(&db_path);
    let db = db_path.to_str().unwrap();
    let expected = os_user_name();
    assert!(!expected.is_empty() && expected != "unknown");
    // No $USER, then an empty one: both fall back to the passwd entry of the uid.
    for (id, user) in [("1", None), ("2", Some(""))] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_plansync"));
        command
            .args(["exceptions", "resolve", id, "--db", db, "--dismiss"])
            .env("NO_COLOR", "1")
            .env_remove("USER")
            .env_remove("USERNAME");
        if let Some(user) = user {
            command.env("USER", user);
        }
        let out = ok(&command.output().expect("run plansync"));
        assert!(out.contains(&format!("by {expected} at")), "{out}");
    }
    let resolved = json_list(db, &["--status", "resolved"]);
    assert_eq!(resolved.len(), 2);
    for row in &resolved {
        assert_eq!(row["resolved_by"], expected.as_str(), "{row}");
    }
    let shown = ok(&plansync(&["exceptions", "show", "1", "--db", db]));
    assert!(
        shown.contains(&format!("resolved by   ┆ {expected}")),
        "{shown}"
    );
    assert!(!shown.contains("unknown"), "{shown}");
}

/// Values from the remote systems reach a reviewer's spreadsheet and terminal: a formula
/// stays text in CSV, an escape sequence stays visible in a table, and JSON keeps both as
/// they were.
#[test]
fn hostile_values_are_inert_in_csv_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let mut store = Store::open(&db).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let mut batch = Batch::new(at);
    let formula = "=HYPERLINK(\"http://x.example\",\"open\")";
    let escape = "\u{1b}]0;owned\u{7}\u{1b}[2Jrm -rf\r";
    batch.add_exception(NewException {
        kind: ExceptionKind::Conflict,
        status: ExceptionStatus::Open,
        pairing: "opportunity".into(),
        object: "Opportunity".into(),
        crm_id: Some("006A".into()),
        field: Some(ExceptionField {
            name: "Description".into(),
            kind: ValueKind::Text,
            crm_value: Value::Text(formula.into()),
            anaplan_value: Value::Text(escape.into()),
            base_value: Value::Text("-40".into()),
        }),
        rule_id: Some("Opportunity.Description".into()),
        rule_hash: None,
        message: format!("@SUM(A1) {escape}"),
        at,
    });
    store.commit(&batch).unwrap();
    drop(store);
    let db = db.to_str().unwrap();

    for args in [
        vec!["exceptions", "list", "--db", db, "--format", "csv"],
        vec!["exceptions", "show", "1", "--db", db, "--format", "csv"],
    ] {
        let csv = ok(&plansync(&args));
        let mut rows = csv::Reader::from_reader(csv.as_bytes());
        let header = rows.headers().unwrap().clone();
        let row = rows.records().next().unwrap().unwrap();
        let cell = |name: &str| row[header.iter().position(|h| h == name).unwrap()].to_string();
        assert_eq!(cell("crm_value"), format!("'{formula}"), "{args:?}");
        assert_eq!(cell("message"), format!("'@SUM(A1) {escape}"), "{args:?}");
        // A plain number is left a number.
        assert_eq!(cell("base_value"), "-40", "{args:?}");
        assert_eq!(cell("id"), "1");
    }
    for args in [
        vec!["exceptions", "list", "--db", db, "--wide"],
        vec!["exceptions", "show", "1", "--db", db],
    ] {
        let table = ok(&plansync(&args));
        assert!(
            !table.contains('\u{1b}') && !table.contains('\r') && !table.contains('\u{7}'),
            "{args:?}: {table:?}"
        );
        assert!(table.contains("\\u{1b}]0;owned\\u{7}"), "{args:?}: {table}");
    }
    // JSON is for programs: the values as stored.
    let json = json_list(db, &[]);
    assert_eq!(json[0]["anaplan_value"], escape);
    assert_eq!(json[0]["crm_value"], formula);
}

// ---------------------------------------------------------------------------------------------
// The store file: private, and its failures said as what they are.

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `plansync` run as the unprivileged `nobody`, when this test runs as root (as CI does) and
/// `setpriv` is there; `None` otherwise.
fn as_nobody(args: &[&str]) -> Option<Output> {
    // The effective user, as the shell would say it.
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("not root: the checks as another user are skipped");
        return None;
    }
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_plansync"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .ok()
}

#[test]
fn a_store_others_can_read_is_made_private_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let db = dir.path().join("x.db");
    small_store(&db);
    assert_eq!(mode(&db), 0o600, "created private");
    chmod(&db, 0o644);
    ok(&plansync(&[
        "exceptions",
        "list",
        "--db",
        db.to_str().unwrap(),
    ]));
    assert_eq!(mode(&db), 0o600, "tightened by its owner");

    chmod(&db, 0o644);
    if let Some(out) = as_nobody(&["exceptions", "list", "--db", db.to_str().unwrap()]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("can be read by other users (mode 644)")
                && stderr.contains("chmod 600"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "nothing of the store was shown");
    }

    // A reader in a directory it cannot write to: SQLite needs the -shm file beside the store.
    chmod(&db, 0o600);
    std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
    if let Some(out) = as_nobody(&["exceptions", "list", "--db", db.to_str().unwrap()]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("x.db-shm") && stderr.contains("let this user write to"),
            "{stderr}"
        );
    }
    // Without a -shm left by an earlier reader, the directory is what is missing.
    let _ = std::fs::remove_file(dir.path().join("x.db-shm"));
    let _ = std::fs::remove_file(dir.path().join("x.db-wal"));
    if let Some(out) = as_nobody(&["exceptions", "list", "--db", db.to_str().unwrap()]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let want = format!("let this user write to {}", dir.path().display());
        assert!(stderr.contains(&want), "{stderr}");
    }
}

#[test]
fn a_locked_or_damaged_store_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    small_store(&db);
    let path = db.to_str().unwrap();

    // Another process holds the write lock: a resolution waits, then says who to look for.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = plansync(&[
        "exceptions",
        "resolve",
        "1",
        "--dismiss",
        "--note",
        "n",
        "--by",
        "r",
        "--db",
        path,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("locked by another process"), "{stderr}");
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);

    // Pages overwritten with noise past the header: damaged, and said so.
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "a store of several pages");
    for b in &mut bytes[4096..] {
        *b = 0x5a;
    }
    std::fs::write(&db, &bytes).unwrap();
    let out = plansync(&["exceptions", "list", "--db", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the store file is damaged"), "{stderr}");
}
