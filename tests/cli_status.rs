//! `plansync status` through the real binary, over a store built with the engine's own
//! `Batch` writes: the JSON object and the tables agree with what was stored (lags measured
//! from a fixed `--now`), and a missing or foreign file is one clear error with exit 2.

use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value as Json, json};

use plansync::model::{ExceptionKind, ExceptionStatus, Position, Side, Value, ValueKind};
use plansync::store::{
    Batch, FieldKey, NewException, NewOutbox, OutboxReason, OutboxRef, OutboxState, OutboxUpdate,
    Store,
};

const NOW: &str = "2026-11-02T10:00:00Z";

fn plansync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PLANSYNC_DB")
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

fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, h, m, 0).unwrap()
}

fn write(n: usize, target: Side) -> NewOutbox {
    NewOutbox {
        key: FieldKey::new("opportunity", format!("006{n:015}"), "Amount"),
        target,
        kind: ValueKind::Number { scale: 2 },
        value: Value::Null,
        reason: OutboxReason::Decision,
        exception: None,
        replaced: Value::Null,
    }
}

fn exception(kind: ExceptionKind, status: ExceptionStatus, at: DateTime<Utc>) -> NewException {
    NewException {
        kind,
        status,
        pairing: "opportunity".into(),
        object: "Opportunity".into(),
        crm_id: None,
        field: None,
        rule_id: None,
        rule_hash: None,
        message: "stored by the test".into(),
        at,
    }
}

fn moved(id: i64, state: OutboxState) -> OutboxUpdate {
    OutboxUpdate {
        id: OutboxRef::stored(id),
        state,
        add_attempts: 1,
        last_error: None,
        result_exception: None,
        not_before: None,
    }
}

/// A store as a running engine leaves it: a CRM poller over three shards (shard 1 behind), a
/// CDC channel, an Anaplan poller; writes in every state; open and settled exceptions; counters.
fn build(db: &Path) {
    let mut store = Store::open(db).unwrap();
    let mut first = Batch::new(t(8, 0));
    for (shard, minute) in [(0, 50), (1, 12), (2, 58)] {
        first.set_checkpoint(
            format!("crm.opportunity#{shard}"),
            Position::Watermark {
                at: t(9, minute),
                id: format!("006{shard:015}"),
            },
        );
    }
    first.set_checkpoint(
        "/data/OpportunityChangeEvent",
        Position::Replay {
            channel: "/data/OpportunityChangeEvent".into(),
            replay_id: "4711".into(),
        },
    );
    let anaplan: Vec<OutboxRef> = (0..5)
        .map(|n| first.add_outbox(write(n, Side::Anaplan)))
        .collect();
    let crm: Vec<OutboxRef> = (10..12)
        .map(|n| first.add_outbox(write(n, Side::Crm)))
        .collect();
    first.add_exception(exception(
        ExceptionKind::Conflict,
        ExceptionStatus::Open,
        t(7, 0),
    ));
    first.add_exception(exception(
        ExceptionKind::Conflict,
        ExceptionStatus::AutoResolved,
        t(6, 0),
    ));
    first.set_metric("anaplan.calls", 40);
    let receipt = store.commit(&first).unwrap();
    let id = |r: OutboxRef| receipt.outbox_id(r).unwrap();

    let mut second = Batch::new(t(9, 30));
    // Anaplan: two acknowledged, one in flight, one refused; two (one new) still pending.
    second.update_outbox(moved(id(anaplan[0]), OutboxState::Done));
    second.update_outbox(moved(id(anaplan[1]), OutboxState::Done));
    second.update_outbox(moved(id(anaplan[2]), OutboxState::InFlight));
    second.update_outbox(moved(id(anaplan[3]), OutboxState::Failed));
    second.add_outbox(write(7, Side::Anaplan));
    second.update_outbox(moved(id(crm[0]), OutboxState::Done));
    second.add_exception(exception(
        ExceptionKind::WriteFailed,
        ExceptionStatus::Open,
        t(9, 30),
    ));
    second.add_exception(exception(
        ExceptionKind::Conflict,
        ExceptionStatus::Open,
        t(9, 0),
    ));
    // The CDC checkpoint moves on, stored at 9:30.
    second.set_checkpoint(
        "/data/OpportunityChangeEvent",
        Position::Replay {
            channel: "/data/OpportunityChangeEvent".into(),
            replay_id: "4800".into(),
        },
    );
    second.set_checkpoint("anaplan.opportunity", Position::PollRun { at: t(9, 57) });
    second.set_metric("anaplan.calls", 52);
    second.set_metric("anaplan.rate_limited", 3);
    second.set_metric("anaplan.calls_per_minute_budget", 600);
    second.set_metric("crm.calls", 9);
    second.set_metric("crm.api_used", 9500);
    second.set_metric("crm.api_max", 10000);
    store.commit(&second).unwrap();
}

fn find<'a>(items: &'a Json, key: &str, value: &str) -> &'a Json {
    items
        .as_array()
        .expect("an array")
        .iter()
        .find(|i| i[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {items}"))
}

#[test]
fn json_reports_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("plansync.db");
    build(&db);
    let db = db.to_str().unwrap();
    let out = ok(&plansync(&[
        "status", "--db", db, "--format", "json", "--now", NOW,
    ]));
    let report: Json = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(report["now"], "2026-11-02T10:00:00Z");

    let sources = &report["sources"];
    assert_eq!(sources.as_array().unwrap().len(), 3, "{sources}");
    let crm = find(sources, "source", "crm.opportunity");
    assert_eq!(crm["shards"], 3);
    assert_eq!(
        crm["position"],
        json!({"kind": "watermark", "at": "2026-11-02T09:12:00Z", "id": "006000000000000001"})
    );
    assert_eq!(crm["lag_seconds"], 48 * 60, "the oldest shard decides");
    let cdc = find(sources, "source", "/data/OpportunityChangeEvent");
    assert_eq!(cdc["shards"], 1);
    assert_eq!(cdc["position"]["replay_id"], "4800");
    assert_eq!(
        cdc["lag_seconds"],
        30 * 60,
        "a replay id is as old as its checkpoint"
    );
    let anaplan = find(sources, "source", "anaplan.opportunity");
    assert_eq!(anaplan["position"]["kind"], "poll_run");
    assert_eq!(anaplan["lag_seconds"], 180);

    let outbox = report["outbox"].as_array().unwrap();
    let depth = |target: &str, state: &str| {
        outbox
            .iter()
            .find(|d| d["target"] == target && d["state"] == state)
            .cloned()
    };
    let pending = depth("anaplan", "pending").expect("pending anaplan writes");
    assert_eq!(pending["count"], 2);
    assert_eq!(pending["oldest_age_seconds"], 2 * 3600, "created at 8:00");
    assert_eq!(depth("anaplan", "in_flight").unwrap()["count"], 1);
    assert_eq!(depth("anaplan", "done").unwrap()["count"], 2);
    assert_eq!(
        depth("anaplan", "done").unwrap()["oldest_age_seconds"],
        Json::Null
    );
    assert_eq!(depth("anaplan", "failed").unwrap()["count"], 1);
    assert_eq!(depth("crm", "pending").unwrap()["count"], 1);
    assert_eq!(depth("crm", "done").unwrap()["count"], 1);
    assert!(
        depth("crm", "failed").is_none(),
        "states that do not occur are left out"
    );
    assert_eq!(outbox.len(), 6);

    let open = &report["open_exceptions"];
    assert_eq!(open.as_array().unwrap().len(), 2);
    let conflicts = find(open, "kind", "conflict");
    assert_eq!(conflicts["count"], 2, "the auto-resolved one is not open");
    assert_eq!(conflicts["oldest_age_seconds"], 3 * 3600);
    assert_eq!(find(open, "kind", "write_failed")["count"], 1);

    let metrics = &report["metrics"];
    assert_eq!(find(metrics, "name", "anaplan.calls")["value"], 52);
    assert_eq!(find(metrics, "name", "anaplan.rate_limited")["value"], 3);
    assert_eq!(
        find(metrics, "name", "anaplan.calls_per_minute_budget")["value"],
        600
    );
    assert_eq!(find(metrics, "name", "crm.calls")["value"], 9);

    // Without --now the clock is used: every lag is at least the fixed one.
    let live: Json =
        serde_json::from_str(&ok(&plansync(&["status", "--db", db, "--format", "json"]))).unwrap();
    let live_lag = find(&live["sources"], "source", "crm.opportunity")["lag_seconds"]
        .as_i64()
        .unwrap();
    assert!(live_lag >= 48 * 60, "{live_lag}");
}

#[test]
fn tables_show_each_section() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("plansync.db");
    build(&db);
    let out = ok(&plansync(&[
        "status",
        "--db",
        db.to_str().unwrap(),
        "--now",
        NOW,
    ]));
    assert!(out.contains("as of 2026-11-02 10:00:00Z"), "{out}");
    let line = |needle: &str| -> String {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{out}"))
            .to_string()
    };
    let crm = line("crm.opportunity");
    assert!(crm.contains("┆ 3 "), "{crm}");
    assert!(crm.contains("watermark 2026-11-02 09:12:00Z"), "{crm}");
    assert!(crm.contains("48m 00s"), "{crm}");
    assert!(line("/data/OpportunityChangeEvent").contains("replay 4800"));
    assert!(line("anaplan.opportunity").contains("3m 00s"));
    let pending = out
        .lines()
        .find(|l| l.contains("anaplan") && l.contains("pending"))
        .expect("pending row");
    assert!(pending.contains("2h 00m"), "{pending}");
    assert!(line("write_failed").contains("30m 00s"));
    assert!(line("anaplan.rate_limited").contains(" 3 "));
    assert_eq!(
        line("CRM API today"),
        "CRM API today: 9500 of 10000 calls used, 500 left"
    );
    for heading in ["Sources", "Outbox", "Open exceptions", "Metrics"] {
        assert!(out.lines().any(|l| l == heading), "{heading} in\n{out}");
    }

    // An empty store says so in each section.
    let empty = dir.path().join("empty.db");
    drop(Store::open(&empty).unwrap());
    let out = ok(&plansync(&["status", "--db", empty.to_str().unwrap()]));
    assert!(out.contains("(no checkpoints yet)"), "{out}");
    assert!(!out.contains("CRM API today"), "not known, not said: {out}");
    assert!(out.contains("(no writes queued)"), "{out}");
}

#[test]
fn a_missing_or_foreign_file_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let out = plansync(&["status", "--db", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("nope.db"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(!missing.exists(), "status never creates a store");

    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a database at all, just some notes").unwrap();
    let out = plansync(&["status", "--db", notes.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a plansync database"));

    let db = dir.path().join("plansync.db");
    build(&db);
    let out = plansync(&["status", "--db", db.to_str().unwrap(), "--now", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--now"));
}

/// A poller that ran recently is that far behind, however old the newest change it found:
/// on a quiet org the watermark stays put while the poller stays current.
#[test]
fn a_pollers_lag_counts_from_its_last_completed_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("plansync.db");
    build(&db);
    let mut store = Store::open(&db).unwrap();
    store.set_last_poll("crm.opportunity", t(9, 59)).unwrap();
    drop(store);
    let out = ok(&plansync(&[
        "status",
        "--db",
        db.to_str().unwrap(),
        "--format",
        "json",
        "--now",
        NOW,
    ]));
    let report: Json = serde_json::from_str(&out).expect("one JSON object");
    let crm = find(&report["sources"], "source", "crm.opportunity");
    assert_eq!(crm["lag_seconds"], 60, "{crm}");
    let cdc = find(&report["sources"], "source", "/data/OpportunityChangeEvent");
    assert_eq!(cdc["lag_seconds"], 30 * 60, "a stream has no poll run");
}
