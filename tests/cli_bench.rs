//! `plansync bench` through the command line: the reconcile scenario runs the real engine as
//! its own process against both simulators, and what it reports is checked against the
//! SQLite file that engine left behind.

use std::path::Path;
use std::process::Command;

use rusqlite::{Connection, OpenFlags};
use serde_json::Value as Json;

fn count(conn: &Connection, sql: &str) -> u64 {
    conn.query_row(sql, [], |r| r.get::<_, i64>(0))
        .map(|n| u64::try_from(n).expect("a count"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn the_first_run_records_agreeing_values_as_the_base_without_an_audit_row_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args([
            "bench",
            "--scenario",
            "reconcile",
            "--quick",
            "--json",
            "--dir",
        ])
        .arg(dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run plansync bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Json = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let r = &report["reconcile"];
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert!(n("records") >= 2000, "{r}");
    assert_eq!(n("writes_queued"), 0, "the seeded sides agree: {r}");
    assert!(r["engine_cpu_seconds"].as_f64().expect("cpu") > 0.0, "{r}");
    assert!(r["peak_rss_mb"].as_f64().expect("rss") > 1.0, "{r}");
    // Quick sizes read the CRM through a Bulk API 2.0 query job (above 1,000 records), then
    // again through REST pages: fewer query calls, the same decisions.
    assert_eq!(r["crm_read"], "bulk_query", "{r}");
    assert!(n("crm_bulk_calls") >= 3, "create, state, results: {r}");
    let rest = &r["rest_read"];
    let rest_queries = rest["crm_query_calls"].as_u64().expect("rest_read");
    assert!(rest_queries > n("crm_query_calls"), "{r}");
    assert_eq!(rest["crm_bulk_calls"], 0, "{r}");

    let db = dir.path().join("reconcile/bench-reconcile.db");
    assert!(Path::new(&db).exists(), "{}", db.display());
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let agreed = n("fields_agreed");
    // Each agreeing field is the base now, seen the same on both sides, dated by the run. A
    // CRM null and Anaplan's blank 0 / false agree (the base is the CRM's null).
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM shadow WHERE base_source = 'reconcile'
               AND base_value IS seen_crm_value
               AND (base_value IS seen_anaplan_value
                    OR (base_value IS NULL AND value_kind LIKE 'number%'
                        AND CAST(seen_anaplan_value AS REAL) = 0)
                    OR (base_value IS NULL AND value_kind = 'boolean'
                        AND seen_anaplan_value = 'false'))"
        ),
        agreed
    );
    // Six mapped fields of each opportunity, at least.
    assert!(agreed >= 6 * 2000, "{agreed}");
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM audit WHERE source = 'reconcile' AND exception_id IS NULL"
        ),
        0,
        "no audit row for values that already agreed"
    );
    // What did not agree is on record: each exception has its audit row. The seeded sides
    // agree throughout; the demo org's null forecasts against Anaplan's blank (0) cells used
    // to be conflicts, and a CRM null and a blank Anaplan number are one value now.
    let raised = n("exceptions_raised");
    assert_eq!(
        raised, 0,
        "a null against a blank number is no conflict: {r}"
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM exceptions"),
        raised,
        "{r}"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(DISTINCT exception_id) FROM audit WHERE exception_id IS NOT NULL"
        ),
        raised
    );
    let metric: i64 = conn
        .query_row(
            "SELECT value FROM metrics WHERE name = 'reconcile.agreed'",
            [],
            |r| r.get(0),
        )
        .expect("the metric");
    assert_eq!(u64::try_from(metric).expect("count"), agreed);
}
