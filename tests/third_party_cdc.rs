//! The CRM simulator's change data capture driven by code it did not write: jsforce (the
//! widely used Salesforce client for Node.js, pinned in `tests/data/cdc_jsforce/`, installed
//! by `.ci/run` with `npm ci`), its Faye-based streaming client and its Replay extension,
//! unchanged. All retained events (-2), a resume after a stored replay id, and the tip (-1)
//! with an edit made while subscribed; each event is checked against the simulator's records.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::*;
use plansync_sim::crm::{CrmSimConfig, CrmSimHandle};
use serde_json::{Value as Json, json};

const CHANNEL: &str = "/data/OpportunityChangeEvent";

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/cdc_jsforce")
}

/// Starts the jsforce subscriber from `replay` until it has `count` events: a signal once it
/// says it is subscribed, and its events, in the order received.
fn subscriber(
    crm: &CrmSimHandle,
    token: &str,
    replay: i64,
    count: usize,
) -> (
    tokio::sync::oneshot::Receiver<()>,
    tokio::task::JoinHandle<Vec<Json>>,
) {
    let dir = client_dir();
    assert!(
        dir.join("node_modules/jsforce").is_dir(),
        "jsforce is not installed: run `npm ci --prefix tests/data/cdc_jsforce` (.ci/run does)"
    );
    let url = crm.instance_url().to_string();
    let token = token.to_string();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let events = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("node")
            .arg(dir.join("subscribe.mjs"))
            .current_dir(&dir)
            .env("CRM_URL", url)
            .env("CRM_TOKEN", token)
            .env("CDC_CHANNEL", CHANNEL)
            .env("CDC_REPLAY", replay.to_string())
            .env("CDC_COUNT", count.to_string())
            .env("CDC_WAIT_MS", "20000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node (Node.js 20, as on the CI machine)");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut said = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("stderr line");
            let subscribed = line == "subscribed";
            said.push(line);
            if subscribed {
                break;
            }
        }
        assert_eq!(
            said.last().map(String::as_str),
            Some("subscribed"),
            "{said:?}"
        );
        let _ = subscribed_tx.send(());
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "jsforce's subscriber failed: {said:?} {rest:?}"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
            .collect()
    });
    (subscribed, events)
}

async fn subscribe(crm: &CrmSimHandle, token: &str, replay: i64, count: usize) -> Vec<Json> {
    subscriber(crm, token, replay, count)
        .1
        .await
        .expect("subscriber")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsforce_subscribes_with_replay_ids_and_gets_each_change_once() {
    let crm = crm_sim(CrmSimConfig::default()).await;
    let client = crm_client(&crm);
    let ids: Vec<String> = client
        .query("SELECT Id FROM Opportunity ORDER BY Id")
        .await
        .expect("query")
        .records
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect();
    let edits = [(&ids[0], 111.0), (&ids[1], 222.0), (&ids[2], 333.0)];
    for (id, amount) in edits {
        crm.user_edit("Opportunity", id, json!({ "Amount": amount }), None)
            .expect("edit");
    }
    let token = client
        .token()
        .await
        .expect("token")
        .token
        .expose()
        .to_string();

    // Every retained event: the three edits, in order, with increasing replay ids.
    let all = subscribe(&crm, &token, -2, 3).await;
    assert_eq!(all.len(), 3, "{all:#?}");
    let mut last = 0;
    for (event, (id, amount)) in all.iter().zip(edits) {
        assert_eq!(event["changeType"], "UPDATE");
        assert_eq!(event["recordIds"], json!([id]));
        assert_eq!(event["payload"]["Amount"].as_f64(), Some(amount));
        assert!(
            event["changedFields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "Amount"),
            "{event}"
        );
        assert_eq!(
            crm.record(id).expect("record")["Amount"].as_f64(),
            Some(amount)
        );
        let replay = event["replayId"].as_i64().expect("a replay id");
        assert!(replay > last, "{all:#?}");
        last = replay;
    }

    // Resuming after the first event's replay id: only the two after it.
    let after = all[0]["replayId"].as_i64().unwrap();
    let resumed = subscribe(&crm, &token, after, 2).await;
    let replays: Vec<i64> = resumed
        .iter()
        .map(|e| e["replayId"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = all[1..]
        .iter()
        .map(|e| e["replayId"].as_i64().unwrap())
        .collect();
    assert_eq!(replays, want);

    // From the tip: nothing old, only what happens while subscribed.
    let (subscribed, events) = subscriber(&crm, &token, -1, 1);
    subscribed.await.expect("subscribed");
    crm.user_edit(
        "Opportunity",
        &ids[3],
        json!({ "StageName": "Closed Lost" }),
        None,
    )
    .expect("edit");
    let tip = events.await.expect("subscriber");
    assert_eq!(tip.len(), 1);
    assert_eq!(tip[0]["recordIds"], json!([ids[3]]));
    assert_eq!(tip[0]["payload"]["StageName"], "Closed Lost");
    assert!(tip[0]["replayId"].as_i64().unwrap() > last);
}
