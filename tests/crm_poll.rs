//! The CRM watermark poller (`plansync::engine::crm_poll`) against the CRM org simulator over
//! real loopback sockets: the initial read, edits reported exactly once, records sharing the
//! watermark's millisecond, the lookback and its dedupe (and what a restart forgets), deletes,
//! paging over thousands of records, and the simulator's faults (revoked token, daily limit).
//!
//! Every outcome is checked against the simulator's own state through its handle, not only
//! against what the poller returned.

use crate::support::crm_sim;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use plansync::crm::{AuthConfig, CrmClient, CrmConfig, CrmError, RetryPolicy};
use plansync::engine::crm_poll::{CrmPoll, PollError, RecentSeen, poll_once};
use plansync::model::{Change, ChangeKind, Position, Side, Source};
use plansync::rules::Pairing;
use plansync::secret::Secret;
use plansync_sim::crm::{self, CrmSimConfig, CrmSimHandle, DEFAULT_CLIENT_ID, Seed};

/// Long enough that every record the tests touch stays inside the window.
const LOOKBACK: Duration = Duration::from_secs(3600);

fn client(sim: &CrmSimHandle) -> CrmClient {
    let auth = AuthConfig::ClientCredentials {
        client_id: DEFAULT_CLIENT_ID.into(),
        client_secret: Secret::new(crm::DEFAULT_CLIENT_SECRET),
    };
    let mut config = CrmConfig::new(sim.instance_url(), "59.0", auth);
    config.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    config.request_timeout = Duration::from_secs(20);
    CrmClient::new(config).expect("client config")
}

/// The example opportunity pairing, with `AccountId` read as an extra (unsynced) field.
fn pairing() -> Pairing {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/opportunity.toml");
    let mut pairing = plansync::rules::load_file(&path).expect("rule file compiles");
    pairing.extra_crm_fields.push("AccountId".into());
    pairing
}

fn selected(pairing: &Pairing) -> Vec<String> {
    pairing
        .fields
        .iter()
        .map(|f| f.crm.clone())
        .chain(pairing.extra_crm_fields.iter().cloned())
        .collect()
}

fn modstamp(sim: &CrmSimHandle, id: &str) -> DateTime<Utc> {
    let record = sim.record(id).expect("record exists");
    let raw = record["SystemModstamp"].as_str().expect("stamp is text");
    DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f%z")
        .expect("REST datetime")
        .with_timezone(&Utc)
}

/// Checks one change against the record as the simulator holds it.
fn assert_matches_sim(sim: &CrmSimHandle, pairing: &Pairing, change: &Change) {
    let id = &change.record.crm_id;
    let record = sim.record(id).expect("reported record exists");
    assert_eq!(change.record.pairing, pairing.name);
    assert_eq!(change.side, Side::Crm);
    assert_eq!(change.source, Source::Poll);
    assert!(!change.ours);
    let at = modstamp(sim, id);
    assert_eq!(
        change.committed_at, at,
        "{id}: committed_at is SystemModstamp"
    );
    assert_eq!(change.position, Position::Watermark { at, id: id.clone() });
    if record["IsDeleted"] == json!(true) {
        assert_eq!(change.kind, ChangeKind::Delete);
        assert!(change.fields.is_empty());
        return;
    }
    assert_eq!(change.kind, ChangeKind::Update);
    let fields: BTreeMap<&str, &Value> = change
        .fields
        .iter()
        .map(|f| (f.field.as_str(), &f.value))
        .collect();
    let expected = selected(pairing);
    assert_eq!(
        fields.keys().copied().collect::<BTreeSet<_>>(),
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "{id}: every mapped and extra field, nothing else"
    );
    for name in &expected {
        assert_eq!(
            fields[name.as_str()],
            &record[name.as_str()],
            "{id}.{name} as the simulator holds it"
        );
    }
}

fn ids(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| c.record.crm_id.clone()).collect()
}

/// The watermark a poll that reported `changes` must end at: the greatest SystemModstamp the
/// simulator holds for them, with the Id of the last change (the server's order breaks ties).
fn expected_watermark(sim: &CrmSimHandle, changes: &[Change]) -> Position {
    let at = changes
        .iter()
        .map(|c| modstamp(sim, &c.record.crm_id))
        .max()
        .expect("some records");
    let last = changes.last().expect("some records");
    assert_eq!(
        last.committed_at, at,
        "the last change is at the greatest stamp"
    );
    Position::Watermark {
        at,
        id: last.record.crm_id.clone(),
    }
}

fn is_live_opportunity(sim: &CrmSimHandle, id: &str) -> bool {
    sim.record(id)
        .is_some_and(|r| r["IsDeleted"] == json!(false) && r["attributes"]["type"] == "Opportunity")
}

#[tokio::test]
async fn the_first_poll_reads_every_live_record_with_its_mapped_fields() {
    let sim = crm_sim(CrmSimConfig::default()).await;
    let client = client(&sim);
    let pairing = pairing();
    // Learn the ids the way an operator would, then delete one: the initial read is of live
    // records only.
    let all = client
        .query("SELECT Id FROM Opportunity")
        .await
        .expect("query");
    let all: Vec<String> = all
        .records
        .iter()
        .map(|r| r["Id"].as_str().expect("Id").to_string())
        .collect();
    assert_eq!(all.len(), 4, "the default org has four opportunities");
    sim.delete(&all[3], None).expect("delete");

    let mut seen = RecentSeen::new();
    let outcome = poll_once(&client, &pairing, None, LOOKBACK, &mut seen)
        .await
        .expect("poll");

    let got = ids(&outcome.changes);
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>(),
        all[..3].iter().collect::<BTreeSet<_>>()
    );
    assert!(got.iter().all(|id| is_live_opportunity(&sim, id)));
    for change in &outcome.changes {
        assert_matches_sim(&sim, &pairing, change);
    }
    let stamps: Vec<_> = outcome.changes.iter().map(|c| c.committed_at).collect();
    assert!(stamps.is_sorted(), "changes come in SystemModstamp order");
    assert_eq!(
        outcome.cursor,
        Some(expected_watermark(&sim, &outcome.changes))
    );
    assert_eq!(outcome.records, 3);
    assert_eq!(outcome.calls, 1);
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    assert_eq!(seen.len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn edits_are_reported_exactly_once_and_quiet_polls_report_nothing() {
    let sim = crm_sim(CrmSimConfig::default()).await;
    let client = client(&sim);
    let pairing = pairing();
    let mut seen = RecentSeen::new();
    let first = poll_once(&client, &pairing, None, LOOKBACK, &mut seen)
        .await
        .expect("initial read");
    let opps = ids(&first.changes);
    assert_eq!(opps.len(), 4);

    // Nothing changed: the lookback re-reads the four records, the dedupe drops them.
    let quiet = poll_once(
        &client,
        &pairing,
        first.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("quiet poll");
    assert!(quiet.changes.is_empty(), "{:?}", ids(&quiet.changes));
    assert_eq!(quiet.records, 4, "the lookback re-read them");
    assert_eq!(quiet.cursor, first.cursor, "the watermark stays put");

    sim.user_edit("Opportunity", &opps[1], json!({"Amount": 4242.5}), None)
        .expect("edit");
    sim.user_edit(
        "Opportunity",
        &opps[3],
        json!({"StageName": "Closed Won", "Probability": 100}),
        None,
    )
    .expect("edit");

    let edited = poll_once(
        &client,
        &pairing,
        quiet.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("poll after edits");
    assert_eq!(
        ids(&edited.changes),
        vec![opps[1].clone(), opps[3].clone()],
        "exactly the edited records, in commit order"
    );
    for change in &edited.changes {
        assert_matches_sim(&sim, &pairing, change);
    }
    assert_eq!(
        sim.record(&opps[1]).expect("record")["Amount"],
        json!(4242.5)
    );
    assert_eq!(
        edited.cursor,
        Some(expected_watermark(&sim, &edited.changes))
    );

    for _ in 0..3 {
        let again = poll_once(
            &client,
            &pairing,
            edited.cursor.as_ref(),
            LOOKBACK,
            &mut seen,
        )
        .await
        .expect("repeat poll");
        assert!(again.changes.is_empty(), "{:?}", ids(&again.changes));
        assert_eq!(again.cursor, edited.cursor);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn records_sharing_the_watermarks_millisecond_are_not_skipped() {
    // Every seeded record carries the org's start time as its SystemModstamp: 60 records in
    // one millisecond, read 10 to a page.
    let mut seed = Seed::default_org();
    seed.generate("Opportunity", 56, |i| {
        vec![
            ("Name".into(), json!(format!("Same ms {i:02}"))),
            ("StageName".into(), json!("Prospecting")),
            ("CloseDate".into(), json!("2027-06-30")),
        ]
    });
    let sim = crm_sim(CrmSimConfig {
        seed,
        query_batch_size: 10,
        ..CrmSimConfig::default()
    })
    .await;
    let client = client(&sim);
    let pairing = pairing();
    let mut seen = RecentSeen::new();

    // The engine stores the first page with its watermark, then stops.
    let (page_one, cursor) = {
        let mut poll =
            CrmPoll::start(&client, &pairing, None, Duration::ZERO, &mut seen).expect("start");
        let batch = poll.next_batch().await.expect("page").expect("a page");
        (ids(&batch.changes), batch.cursor.expect("a watermark"))
    };
    assert_eq!(page_one.len(), 10);
    let Position::Watermark { at, id } = &cursor else {
        panic!("not a watermark: {cursor:?}");
    };
    assert_eq!(id, &page_one[9]);
    assert!(
        page_one.iter().all(|id| modstamp(&sim, id) == *at),
        "the first page shares one millisecond"
    );

    // Resuming with no lookback at all: the 50 records at the same millisecond but after the
    // watermark's Id must all come, and none of the first page again.
    let rest = poll_once(&client, &pairing, Some(&cursor), Duration::ZERO, &mut seen)
        .await
        .expect("resume");
    let rest_ids = ids(&rest.changes);
    assert_eq!(rest_ids.len(), 50);
    assert!(rest_ids.iter().all(|r| !page_one.contains(r)));
    assert!(rest_ids.iter().all(|r| modstamp(&sim, r) == *at));
    for change in &rest.changes {
        assert_matches_sim(&sim, &pairing, change);
    }
    let all: BTreeSet<_> = page_one.iter().chain(&rest_ids).collect();
    assert_eq!(all.len(), 60, "every opportunity exactly once");
    assert!(all.iter().all(|id| is_live_opportunity(&sim, id)));
    assert_eq!(rest.calls, 6, "sixty rows, ten to a page");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_lookback_is_deduped_until_a_restart_forgets_it() {
    let sim = crm_sim(CrmSimConfig::default()).await;
    let client = client(&sim);
    let pairing = pairing();
    let mut seen = RecentSeen::new();
    let first = poll_once(&client, &pairing, None, LOOKBACK, &mut seen)
        .await
        .expect("initial read");
    let opps = ids(&first.changes);
    sim.user_edit("Opportunity", &opps[0], json!({"Amount": 1.0}), None)
        .expect("edit");
    let edited = poll_once(
        &client,
        &pairing,
        first.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("poll");
    assert_eq!(ids(&edited.changes), vec![opps[0].clone()]);

    // The watermark is now past the seeded records, but they are inside the lookback: read
    // again, reported never.
    let deduped = poll_once(
        &client,
        &pairing,
        edited.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("poll");
    assert_eq!(deduped.records, 4);
    assert!(deduped.changes.is_empty());

    // A restart loses the set: everything inside the lookback is reported once more, with
    // the values the simulator holds (a no-op for the engine), then deduped again.
    seen.clear();
    let restarted = poll_once(
        &client,
        &pairing,
        edited.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("poll");
    assert_eq!(
        ids(&restarted.changes).iter().collect::<BTreeSet<_>>(),
        opps.iter().collect::<BTreeSet<_>>()
    );
    for change in &restarted.changes {
        assert_matches_sim(&sim, &pairing, change);
    }
    let after = poll_once(
        &client,
        &pairing,
        restarted.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("poll");
    assert!(after.changes.is_empty());

    // With a short lookback, records older than the window are neither read nor remembered.
    tokio::time::sleep(Duration::from_millis(30)).await;
    sim.user_edit("Opportunity", &opps[2], json!({"Amount": 2.0}), None)
        .expect("edit");
    let short = poll_once(
        &client,
        &pairing,
        after.cursor.as_ref(),
        Duration::from_millis(1),
        &mut seen,
    )
    .await
    .expect("poll");
    assert_eq!(ids(&short.changes), vec![opps[2].clone()]);
    assert_eq!(
        short.records, 2,
        "a 1 ms lookback re-reads only the watermark's own record (deduped) and the new edit"
    );
    assert_eq!(seen.len(), 1, "older pairs pruned as the watermark moved");
    sim.shutdown().await;
}

#[tokio::test]
async fn deletes_and_undeletes_the_stream_missed_are_polled() {
    let sim = crm_sim(CrmSimConfig::default()).await;
    let client = client(&sim);
    let pairing = pairing();
    let mut seen = RecentSeen::new();
    let first = poll_once(&client, &pairing, None, LOOKBACK, &mut seen)
        .await
        .expect("initial read");
    let opps = ids(&first.changes);

    sim.delete(&opps[2], None).expect("delete");
    let deleted = poll_once(
        &client,
        &pairing,
        first.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("poll");
    assert_eq!(ids(&deleted.changes), vec![opps[2].clone()]);
    assert_eq!(deleted.changes[0].kind, ChangeKind::Delete);
    assert_eq!(
        sim.record(&opps[2]).expect("record")["IsDeleted"],
        json!(true)
    );
    assert_matches_sim(&sim, &pairing, &deleted.changes[0]);

    sim.undelete(&opps[2], None).expect("undelete");
    let back = poll_once(
        &client,
        &pairing,
        deleted.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("poll");
    assert_eq!(ids(&back.changes), vec![opps[2].clone()]);
    assert_eq!(
        back.changes[0].kind,
        ChangeKind::Update,
        "an undelete reads as an update"
    );
    assert_matches_sim(&sim, &pairing, &back.changes[0]);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_poll_over_thousands_of_records_pages_and_stays_exact() {
    const GENERATED: usize = 5_321;
    let mut seed = Seed::default_org();
    seed.generate("Opportunity", GENERATED, |i| {
        vec![
            ("Name".into(), json!(format!("Generated {i:05}"))),
            ("StageName".into(), json!("Prospecting")),
            ("CloseDate".into(), json!("2027-06-30")),
            ("Amount".into(), json!(i as f64)),
        ]
    });
    let sim = crm_sim(CrmSimConfig {
        seed,
        ..CrmSimConfig::default()
    })
    .await;
    let client = client(&sim);
    let pairing = pairing();
    let mut seen = RecentSeen::new();
    sim.reset_request_log();

    let first = poll_once(&client, &pairing, None, LOOKBACK, &mut seen)
        .await
        .expect("initial read");
    let total = GENERATED + 4;
    let got = ids(&first.changes);
    assert_eq!(got.len(), total);
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>().len(),
        total,
        "no repeats"
    );
    assert_eq!(first.records, total);
    assert_eq!(first.calls, total.div_ceil(2000), "2,000 rows a page");
    assert_eq!(sim.request_counts().query as usize, first.calls);
    // Spot-check values against the simulator across the pages.
    for change in first.changes.iter().step_by(997) {
        assert_matches_sim(&sim, &pairing, change);
    }

    let picked = [got[17].clone(), got[2500].clone(), got[total - 1].clone()];
    for (n, id) in picked.iter().enumerate() {
        sim.user_edit("Opportunity", id, json!({"Amount": 1_000_000 + n}), None)
            .expect("edit");
    }
    let edited = poll_once(
        &client,
        &pairing,
        first.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("poll");
    assert_eq!(ids(&edited.changes), picked.to_vec());
    for change in &edited.changes {
        assert_matches_sim(&sim, &pairing, change);
    }
    assert_eq!(
        edited.records, total,
        "everything is inside the lookback and was re-read"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_is_renewed_and_a_spent_daily_limit_fails_the_poll() {
    let sim = crm_sim(CrmSimConfig::default()).await;
    let client = client(&sim);
    let pairing = pairing();
    let mut seen = RecentSeen::new();
    let first = poll_once(&client, &pairing, None, LOOKBACK, &mut seen)
        .await
        .expect("initial read");
    let opps = ids(&first.changes);

    sim.revoke_all_tokens();
    sim.user_edit("Opportunity", &opps[0], json!({"Amount": 7.0}), None)
        .expect("edit");
    let reauths = client.stats().reauths;
    let renewed = poll_once(
        &client,
        &pairing,
        first.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("the client logs in again");
    assert_eq!(ids(&renewed.changes), vec![opps[0].clone()]);
    assert!(client.stats().reauths > reauths);
    assert_matches_sim(&sim, &pairing, &renewed.changes[0]);

    sim.user_edit("Opportunity", &opps[1], json!({"Amount": 8.0}), None)
        .expect("edit");
    sim.set_daily_limit(Some(1_000), Some(1_000));
    let seen_before = seen.len();
    let err = poll_once(
        &client,
        &pairing,
        renewed.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect_err("the budget is spent");
    assert!(
        matches!(
            &err,
            PollError::Crm {
                source: CrmError::RequestLimit { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(seen.len(), seen_before, "a failed poll reports nothing");

    // Once the budget is back, the edit made meanwhile is still there to be found.
    sim.set_daily_limit(Some(100_000), Some(0));
    let later = poll_once(
        &client,
        &pairing,
        renewed.cursor.as_ref(),
        LOOKBACK,
        &mut seen,
    )
    .await
    .expect("poll");
    assert_eq!(ids(&later.changes), vec![opps[1].clone()]);
    assert_eq!(sim.record(&opps[1]).expect("record")["Amount"], json!(8.0));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_cursor_that_is_not_a_watermark_is_refused() {
    let sim = crm_sim(CrmSimConfig::default()).await;
    let client = client(&sim);
    let pairing = pairing();
    let mut seen = RecentSeen::new();
    sim.reset_request_log();
    let replay = Position::Replay {
        channel: "/data/OpportunityChangeEvent".into(),
        replay_id: "42".into(),
    };
    let err = poll_once(&client, &pairing, Some(&replay), LOOKBACK, &mut seen)
        .await
        .expect_err("wrong kind of cursor");
    assert!(matches!(err, PollError::NotAWatermark(_)), "{err}");
    assert_eq!(sim.request_counts().query, 0, "nothing was sent");
    sim.shutdown().await;
}
