//! Unit tests of the write path and the engine's reads.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::model::{ExceptionKind, ExceptionStatus, Position, Source, Value, ValueKind};

fn t(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 10, minute, 0).unwrap()
}

fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("plansync.db")).unwrap();
    (dir, store)
}

fn amount() -> ValueKind {
    ValueKind::Number { scale: 2 }
}

fn num(raw: &str) -> Value {
    Value::from_text(amount(), raw).unwrap()
}

fn key() -> FieldKey {
    FieldKey::new("opportunity", "006000000000001AAA", "Amount")
}

fn conflict(at: DateTime<Utc>) -> NewException {
    NewException {
        kind: ExceptionKind::Conflict,
        status: ExceptionStatus::Open,
        pairing: "opportunity".into(),
        object: "Opportunity".into(),
        crm_id: Some(key().record.crm_id),
        field: Some(ExceptionField {
            name: "Amount".into(),
            kind: amount(),
            crm_value: num("10"),
            anaplan_value: num("20"),
            base_value: num("5"),
        }),
        rule_id: Some("amount.shared".into()),
        rule_hash: Some("abc123".into()),
        message: "both sides changed Amount".into(),
        at,
    }
}

fn observed(raw: &str, minute: u32, source: Source) -> Option<Observed> {
    Some(Observed {
        value: num(raw),
        at: t(minute),
        source,
    })
}

fn table_count(store: &Store, table: &str) -> i64 {
    store
        .conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_batch_stores_rows_that_refer_to_each_other() {
    let (_dir, mut store) = open_temp();
    let mut batch = Batch::new(t(1));
    batch.upsert_record(RecordMapUpsert {
        record: key().record,
        anaplan_code: key().record.crm_id,
        anaplan_item_id: Some("1000001".into()),
        state: RecordState::Active,
    });
    let exception = batch.add_exception(conflict(t(1)));
    let write = batch.add_outbox(NewOutbox {
        key: key(),
        target: Side::Anaplan,
        kind: amount(),
        value: num("10"),
        reason: OutboxReason::Revert,
        exception: Some(exception),
        replaced: Value::Null,
    });
    let upsert = ShadowUpsert {
        key: key(),
        kind: amount(),
        base: observed("5", 0, Source::Reconcile),
        seen_crm: observed("10", 1, Source::Stream),
        seen_anaplan: Some(Observed {
            value: Value::Null,
            at: t(1),
            source: Source::Poll,
        }),
        in_flight: Some(write),
        held: Some(exception),
        last_ack: Some(crate::model::AckedWrite {
            to: crate::model::Side::Anaplan,
            value: num("5"),
            at: t(0),
            replaced: Some(num("4")),
        }),
    };
    batch.upsert_shadow(upsert);
    batch.add_audit(NewAudit {
        key: key(),
        at: t(1),
        side: Side::Crm,
        source: Source::Stream,
        kind: amount(),
        value: num("10"),
        decision: "held".into(),
        rule_id: Some("amount.shared".into()),
        rule_hash: Some("abc123".into()),
        exception: Some(exception),
    });
    let position = Position::Replay {
        channel: "/data/OpportunityChangeEvent".into(),
        replay_id: "42".into(),
    };
    batch.set_checkpoint("cdc:Opportunity", position.clone());
    let receipt = store.commit(&batch).unwrap();

    let exception_id = receipt.exception_id(exception).unwrap();
    let outbox_id = receipt.outbox_id(write).unwrap();
    let state = store.shadow(&key()).unwrap().unwrap();
    assert_eq!(state.kind, amount());
    assert_eq!(state.base, observed("5", 0, Source::Reconcile));
    assert_eq!(state.seen_crm, observed("10", 1, Source::Stream));
    assert_eq!(state.seen(Side::Anaplan).unwrap().value, Value::Null);
    assert_eq!(state.in_flight, Some(outbox_id));
    assert_eq!(state.held, Some(exception_id));
    assert_eq!(store.checkpoint("cdc:Opportunity").unwrap(), Some(position));
    assert_eq!(store.checkpoint("poll:anaplan").unwrap(), None);

    let pending = store.pending_outbox(Side::Anaplan, 10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].exception_id, Some(exception_id));
    assert_eq!(pending[0].value.to_text().unwrap(), "10.00");
    assert!(store.pending_outbox(Side::Crm, 10).unwrap().is_empty());

    let detail = store.exception_detail(exception_id).unwrap();
    assert_eq!(detail.history.len(), 1);
    assert_eq!(detail.history[0].exception_id, Some(exception_id));
    let entry = store.record_map_entry(&key().record).unwrap().unwrap();
    assert_eq!(entry.anaplan_item_id.as_deref(), Some("1000001"));

    // Storing the loaded state back is a no-op apart from `updated_at`.
    let mut again = Batch::new(t(2));
    again.upsert_shadow(ShadowUpsert::from_state(key(), &state));
    store.commit(&again).unwrap();
    let reloaded = store.shadow(&key()).unwrap().unwrap();
    assert_eq!(
        ShadowState {
            updated_at: state.updated_at,
            ..reloaded
        },
        state
    );
}

#[test]
fn a_never_agreed_field_has_no_base() {
    let (_dir, mut store) = open_temp();
    let mut batch = Batch::new(t(1));
    batch.upsert_shadow(ShadowUpsert {
        key: key(),
        kind: amount(),
        base: None,
        seen_crm: observed("1", 1, Source::Poll),
        seen_anaplan: None,
        in_flight: None,
        held: None,
        last_ack: None,
    });
    store.commit(&batch).unwrap();
    let state = store.shadow(&key()).unwrap().unwrap();
    assert_eq!(state.last_ack, None);
    assert_eq!(state.base, None);
    assert_eq!(state.seen_anaplan, None);
    assert!(
        store
            .shadow(&FieldKey::new("x", "y", "z"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_reference_into_another_batch_fails_the_whole_commit() {
    let (_dir, mut store) = open_temp();
    let mut other = Batch::new(t(1));
    let foreign = other.add_exception(conflict(t(1)));
    let mut batch = Batch::new(t(1));
    batch.add_exception(conflict(t(1)));
    batch.add_audit(NewAudit {
        key: key(),
        at: t(1),
        side: Side::Crm,
        source: Source::Stream,
        kind: amount(),
        value: num("1"),
        decision: "held".into(),
        rule_id: None,
        rule_hash: None,
        exception: Some(foreign),
    });
    let err = store.commit(&batch).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BadReference {
                what: "exception",
                index: 0
            }
        ),
        "{err}"
    );
    assert_eq!(table_count(&store, "exceptions"), 0);
    assert_eq!(table_count(&store, "audit"), 0);
}

#[test]
fn exception_updates_track_an_open_exception_and_report_stale_ones() {
    let (_dir, mut store) = open_temp();
    let mut batch = Batch::new(t(1));
    let first = batch.add_exception(conflict(t(1)));
    let second = batch.add_exception(conflict(t(1)));
    let receipt = store.commit(&batch).unwrap();
    let (first, second) = (
        receipt.exception_id(first).unwrap(),
        receipt.exception_id(second).unwrap(),
    );
    store
        .resolve(
            second,
            &Resolution {
                how: ResolutionHow::Dismiss,
                by: "alice".into(),
                note: None,
                at: t(2),
            },
        )
        .unwrap();

    let mut batch = Batch::new(t(3));
    for id in [first, second] {
        batch.update_exception(ExceptionUpdate {
            id: ExceptionRef::stored(id),
            crm_value: num("30"),
            anaplan_value: num("30"),
            status: ExceptionStatus::Converged,
        });
    }
    let receipt = store.commit(&batch).unwrap();
    assert_eq!(receipt.stale_exception_updates, vec![second]);
    let converged = store.exception(first).unwrap();
    assert_eq!(converged.status, ExceptionStatus::Converged);
    assert_eq!(converged.resolved_at, Some(t(3)));
    assert_eq!(converged.field.unwrap().crm_value, num("30"));
    // The dismissed one kept what the person recorded.
    let dismissed = store.exception(second).unwrap();
    assert_eq!(dismissed.status, ExceptionStatus::Resolved);
    assert_eq!(dismissed.field.unwrap().crm_value, num("10"));
}

#[test]
fn outbox_updates_count_attempts_and_refuse_unknown_rows() {
    let (_dir, mut store) = open_temp();
    let mut batch = Batch::new(t(1));
    let write = batch.add_outbox(NewOutbox {
        key: key(),
        target: Side::Crm,
        kind: amount(),
        value: num("7"),
        reason: OutboxReason::Decision,
        exception: None,
        replaced: Value::Null,
    });
    batch.update_outbox(OutboxUpdate {
        id: write,
        state: OutboxState::InFlight,
        add_attempts: 1,
        last_error: None,
        result_exception: None,
        not_before: None,
    });
    let id = store.commit(&batch).unwrap().outbox_id(write).unwrap();

    let mut batch = Batch::new(t(2));
    batch.update_outbox(OutboxUpdate {
        id: OutboxRef::stored(id),
        state: OutboxState::Failed,
        add_attempts: 2,
        last_error: Some("FIELD_CUSTOM_VALIDATION_EXCEPTION".into()),
        result_exception: None,
        not_before: None,
    });
    store.commit(&batch).unwrap();
    let row = store.outbox(id).unwrap().unwrap();
    assert_eq!(row.state, OutboxState::Failed);
    assert_eq!(row.attempts, 3);
    assert_eq!(
        row.last_error.as_deref(),
        Some("FIELD_CUSTOM_VALIDATION_EXCEPTION")
    );
    assert_eq!(row.updated_at, t(2));

    let mut batch = Batch::new(t(3));
    batch.set_checkpoint("poll:crm", Position::PollRun { at: t(3) });
    batch.update_outbox(OutboxUpdate {
        id: OutboxRef::stored(id + 1000),
        state: OutboxState::Done,
        add_attempts: 0,
        last_error: None,
        result_exception: None,
        not_before: None,
    });
    assert!(matches!(
        store.commit(&batch),
        Err(StoreError::UnknownOutbox { .. })
    ));
    assert_eq!(store.checkpoint("poll:crm").unwrap(), None);
}

#[test]
fn a_read_only_store_refuses_writes() {
    let (dir, store) = open_temp();
    drop(store);
    let mut ro = Store::open_read_only(dir.path().join("plansync.db")).unwrap();
    assert!(ro.is_read_only());
    let mut batch = Batch::new(t(1));
    batch.set_checkpoint("x", Position::PollRun { at: t(1) });
    assert!(matches!(ro.commit(&batch), Err(StoreError::ReadOnly)));
}

#[test]
fn reopening_keeps_the_data_and_the_schema_version() {
    let (dir, mut store) = open_temp();
    let mut batch = Batch::new(t(1));
    batch.add_exception(conflict(t(1)));
    store.commit(&batch).unwrap();
    drop(store);
    let store = Store::open(dir.path().join("plansync.db")).unwrap();
    let version: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(table_count(&store, "exceptions"), 1);
}

#[test]
fn gated_writers_commit_from_threads_and_the_wal_waits_for_an_explicit_checkpoint() {
    let (dir, mut first) = open_temp();
    let path = dir.path().join("plansync.db");
    let gate = WriteGate::default();
    let mut second = Store::open(&path).unwrap();
    for store in [&mut first, &mut second] {
        store.set_write_gate(gate.clone());
        store.disable_auto_checkpoint().unwrap();
    }
    // Enough commits to pass the default auto-checkpoint (1,000 pages) several times over.
    let write = |mut store: Store, from: i64| {
        std::thread::spawn(move || {
            for i in 0..300 {
                let mut batch = Batch::new(t(1));
                for m in 0..20 {
                    batch.set_metric(format!("m{}", from + i * 20 + m), i);
                }
                store.commit(&batch).unwrap();
            }
            store
        })
    };
    let (a, b) = (write(first, 0), write(second, 1_000_000));
    let mut first = a.join().unwrap();
    b.join().unwrap();
    assert_eq!(table_count(&first, "metrics"), 2 * 300 * 20);
    // With auto-checkpoints the WAL would restart after ~1,000 frames and stay near that size.
    let wal = std::fs::metadata(dir.path().join("plansync.db-wal"))
        .unwrap()
        .len();
    let frames = wal.saturating_sub(32) / (4096 + 24);
    assert!(
        frames > 2_000,
        "no commit checkpointed, so the WAL grew: {frames} frames"
    );
    let passive = first.checkpoint_wal().unwrap();
    assert_eq!(passive.left, 0, "a passive checkpoint copies it all");
    assert_eq!(passive.frames, frames as i64, "but the WAL is as long");
}

#[test]
fn a_restarted_wal_is_written_from_its_start_and_cut_to_its_limit() {
    let (dir, mut store) = open_temp();
    store.set_write_gate(WriteGate::default());
    store.disable_auto_checkpoint().unwrap();
    store.set_wal_size_limit(64 * 1024).unwrap();
    let wal = || {
        std::fs::metadata(dir.path().join("plansync.db-wal"))
            .unwrap()
            .len()
    };
    let commit = |store: &mut Store, from: i64, n: i64| {
        for i in 0..n {
            let mut batch = Batch::new(t(1));
            for m in 0..20 {
                batch.set_metric(format!("m{}", from + i * 20 + m), i);
            }
            store.commit(&batch).unwrap();
        }
    };
    commit(&mut store, 0, 200);
    let long = wal();
    assert!(long > 1024 * 1024, "the WAL grew: {long} bytes");
    assert!(store.restart_wal(Duration::from_secs(1)).unwrap());
    assert_eq!(store.checkpoint_wal().unwrap().left, 0);
    // The next commit writes from the start, and the file is cut back to the limit.
    commit(&mut store, 1_000_000, 1);
    let after = wal();
    assert!(
        after <= 64 * 1024,
        "{after} bytes after a restart, {long} before"
    );
    let frames = store.checkpoint_wal().unwrap().frames;
    assert!(
        (1..10).contains(&frames),
        "one commit's frames, not {frames}"
    );
    assert_eq!(table_count(&store, "metrics"), 200 * 20 + 20);
}

fn staged(crm_id: &str, amount_text: &str) -> StagedItem {
    StagedItem {
        record: RecordKey {
            pairing: "opportunity".into(),
            crm_id: crm_id.into(),
        },
        at: t(5),
        fields: vec![
            (
                "Amount".into(),
                amount(),
                Value::from_text(amount(), amount_text).unwrap(),
            ),
            ("Name".into(), ValueKind::Text, Value::Null),
        ],
    }
}

#[test]
fn staged_items_are_read_back_and_the_unclaimed_ones_end_in_the_shadow() {
    let (_dir, mut store) = open_temp();
    let mut batch = Batch::new(t(5));
    for i in 0..5 {
        batch.stage_anaplan(staged(&format!("006{i}"), "10.00"));
    }
    // Staging an item again replaces it.
    batch.stage_anaplan(staged("0061", "11.00"));
    store.commit(&batch).unwrap();
    let item = store
        .staged_item(&RecordKey {
            pairing: "opportunity".into(),
            crm_id: "0061".into(),
        })
        .unwrap()
        .expect("staged");
    assert_eq!(item, staged("0061", "11.00"));

    // Two records were claimed: a shard decided them and stored their fields.
    let mut claimed = Batch::new(t(6));
    for id in ["0061", "0063"] {
        claimed.upsert_shadow(ShadowUpsert {
            key: FieldKey::new("opportunity", id, "Amount"),
            kind: amount(),
            base: None,
            seen_crm: Some(Observed {
                value: Value::from_text(amount(), "99.00").unwrap(),
                at: t(6),
                source: Source::Reconcile,
            }),
            seen_anaplan: None,
            in_flight: None,
            held: None,
            last_ack: None,
        });
    }
    store.commit(&claimed).unwrap();

    // Pages of two: the scan goes on past pages with nothing to move.
    let done = store
        .unstage_first_run(t(7), 2, &Default::default())
        .unwrap();
    assert_eq!(
        done,
        Unstaged {
            items: 3,
            fields: 6,
            cleared: 5
        }
    );
    assert_eq!(table_count(&store, "first_run_anaplan"), 0);
    let moved = store
        .shadow(&FieldKey::new("opportunity", "0064", "Amount"))
        .unwrap()
        .expect("moved");
    assert_eq!(moved.seen_crm, None);
    assert_eq!(moved.base, None);
    assert_eq!(
        moved.seen_anaplan,
        Some(Observed {
            value: Value::from_text(amount(), "10.00").unwrap(),
            at: t(5),
            source: Source::Reconcile,
        })
    );
    // A claimed record keeps what its shard stored.
    let kept = store
        .shadow(&FieldKey::new("opportunity", "0061", "Amount"))
        .unwrap()
        .expect("kept");
    assert_eq!(kept.seen_anaplan, None);
    assert!(
        store
            .shadow(&FieldKey::new("opportunity", "0061", "Name"))
            .unwrap()
            .is_none()
    );
    // Nothing staged: nothing to do.
    assert_eq!(
        store
            .unstage_first_run(t(8), 2, &Default::default())
            .unwrap(),
        Unstaged::default()
    );
}

#[test]
fn a_v4_shadow_is_migrated_to_integer_times_with_its_values_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plansync.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for m in &super::schema::MIGRATIONS[..4] {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 4).unwrap();
        let insert = "INSERT INTO shadow (pairing, crm_id, field, value_kind, base_value,
                base_at, base_source, seen_crm_value, seen_crm_at, seen_crm_source,
                seen_anaplan_value, seen_anaplan_at, seen_anaplan_source, last_ack_target,
                last_ack_value, last_ack_at, last_ack_replaced, updated_at)
            VALUES ('opportunity', ?1, 'Amount', 'number:2', '5.00', ?2, 'poll', '10.00',
                '2026-11-02T10:07:00.123456Z', 'stream', NULL, NULL, NULL, 'anaplan', '5.00',
                '2026-11-02T10:03:00.000001Z', NULL, '2026-11-02T10:08:00.000000Z')";
        conn.execute(
            insert,
            ["006000000000001AAA", "2026-11-02T10:05:00.000000Z"],
        )
        .unwrap();
        // Hand-edited cells: another RFC 3339 shape is converted; anything else (an
        // impossible date, a number) is kept as it was and reported when read.
        conn.execute(insert, ["006000000000002AAA", "yesterday"])
            .unwrap();
        conn.execute(
            insert,
            ["006000000000003AAA", "2026-11-02T12:05:00.5+02:00"],
        )
        .unwrap();
        conn.execute(
            insert,
            ["006000000000004AAA", "2026-13-02T10:05:00.000000Z"],
        )
        .unwrap();
        conn.execute(insert, ["006000000000005AAA", "12345"])
            .unwrap();
    }

    let store = Store::open(&path).unwrap();
    let state = store.shadow(&key()).unwrap().unwrap();
    let base = state.base.unwrap();
    assert_eq!(
        (base.value, base.at, base.source),
        (num("5"), t(5), Source::Poll)
    );
    let crm = state.seen_crm.unwrap();
    assert_eq!(crm.at, t(7) + chrono::Duration::microseconds(123_456));
    assert_eq!(crm.source, Source::Stream);
    assert!(state.seen_anaplan.is_none());
    let ack = state.last_ack.unwrap();
    assert_eq!(ack.at, t(3) + chrono::Duration::microseconds(1));
    assert_eq!(ack.replaced, Some(Value::Null));
    assert_eq!(state.updated_at, t(8));

    let readable: (String, String, Option<String>, String) = store
        .conn
        .query_row(
            "SELECT base_at, seen_crm_at, seen_anaplan_at, last_ack_at FROM shadow_readable
             WHERE crm_id = '006000000000001AAA'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        readable,
        (
            "2026-11-02T10:05:00.000000Z".to_string(),
            "2026-11-02T10:07:00.123456Z".to_string(),
            None,
            "2026-11-02T10:03:00.000001Z".to_string()
        )
    );

    let other = FieldKey::new("opportunity", "006000000000003AAA", "Amount");
    let base = store.shadow(&other).unwrap().unwrap().base.unwrap();
    assert_eq!(base.at, t(5) + chrono::Duration::milliseconds(500));
    for (id, raw) in [
        ("006000000000002AAA", "yesterday"),
        ("006000000000004AAA", "2026-13-02T10:05:00.000000Z"),
        ("006000000000005AAA", "12345"),
    ] {
        let damaged = FieldKey::new("opportunity", id, "Amount");
        let err = store.shadow(&damaged).unwrap_err().to_string();
        assert!(
            err.contains(&format!("shadow.base_at holds `{raw}`")),
            "{err}"
        );
        let shown: String = store
            .conn
            .query_row(
                "SELECT CAST(base_at AS TEXT) FROM shadow_readable WHERE crm_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(shown, raw, "the view shows a damaged cell as it is");
    }
}

#[test]
fn a_v6_outbox_is_rebuilt_with_its_rows_and_the_references_to_them_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plansync.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for m in &super::schema::MIGRATIONS[..6] {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 6).unwrap();
        let insert = "INSERT INTO outbox (id, pairing, crm_id, field, target, value, value_kind,
                reason, state, attempts, last_error, created_at, updated_at)
            VALUES (?1, 'opportunity', '006000000000001AAA', 'Amount', 'anaplan', '5.00', 'number:2',
                'decision', ?2, 1, ?3, '2026-11-02T10:05:00.000000Z',
                '2026-11-02T10:06:00.000000Z')";
        conn.execute(insert, rusqlite::params![1, "done", None::<String>])
            .unwrap();
        conn.execute(
            insert,
            rusqlite::params![
                2,
                "failed",
                "not written: anaplan had changed to 7.00 since it was last read"
            ],
        )
        .unwrap();
        conn.execute(
            insert,
            rusqlite::params![3, "failed", "FIELD_CUSTOM_VALIDATION_EXCEPTION"],
        )
        .unwrap();
        conn.execute(insert, rusqlite::params![4, "in_flight", None::<String>])
            .unwrap();
        // The field's lock names a write: the rebuilt table must keep that reference whole.
        conn.execute(
            "INSERT INTO shadow (pairing, crm_id, field, value_kind, in_flight_outbox_id,
                updated_at) VALUES ('opportunity', '006000000000001AAA', 'Amount', 'number:2', 4, 0)",
            [],
        )
        .unwrap();
    }

    let store = Store::open(&path).unwrap();
    let states: Vec<(i64, OutboxState, Option<i64>)> = (1..=4)
        .map(|id| {
            let row = store.outbox(id).unwrap().expect("kept");
            (id, row.state, row.result_exception_id)
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (1, OutboxState::Done, None),
            (2, OutboxState::Superseded, None),
            (3, OutboxState::Failed, None),
            (4, OutboxState::InFlight, None),
        ]
    );
    assert_eq!(store.shadow(&key()).unwrap().unwrap().in_flight, Some(4));
    // Foreign keys are enforced again once the migrations ran.
    let enforced: i64 = store
        .conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(enforced, 1);
    let err = store
        .conn
        .execute(
            "UPDATE outbox SET result_exception_id = 999 WHERE id = 1",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
}
