//! The CRM simulator's Streaming API over real long-polling HTTP: a subscribe on one request
//! wakes the connect the client holds on another, so the events its replay value selects are
//! delivered at once (as Salesforce answers a held connect as soon as the client has events),
//! not at the next commit or the advice timeout.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use plansync_sim::crm::CrmSimConfig;

use crate::sim_crm_routes::{encode, start};

const V: &str = "/services/data/v59.0";

#[tokio::test]
async fn a_subscribe_wakes_the_held_long_poll_connect_with_its_replay() {
    let config = CrmSimConfig {
        connect_timeout: Duration::from_secs(60),
        ..CrmSimConfig::default()
    };
    let env = start(config).await;
    // One retained event to replay.
    let (_, body) = env
        .get(&format!(
            "{V}/query?q={}",
            encode("SELECT Id FROM Territory__c ORDER BY Name LIMIT 1")
        ))
        .await;
    let id = body["records"][0]["Id"].as_str().expect("id").to_string();
    env.sim
        .user_edit("Territory__c", &id, json!({"Annual_Quota__c": 11.0}), None)
        .expect("edit");

    let hs = env
        .bayeux(json!([{"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0", "supportedConnectionTypes": ["long-polling"], "id": "1"}]))
        .await;
    let cid = hs[0]["clientId"].as_str().expect("clientId").to_string();
    let first = env
        .bayeux(json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling", "id": "2"}]))
        .await;
    assert_eq!(first[0]["successful"], true);
    // The second connect is held (nothing subscribed yet) on its own HTTP request.
    let held = {
        let (http, token) = (env.http.clone(), env.token.clone());
        let url = format!("{}/cometd/59.0/connect", env.url);
        let cid = cid.clone();
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(token)
                .json(&json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling", "id": "3"}]))
                .send()
                .await
                .expect("connect");
            (Instant::now(), resp.json::<Value>().await.expect("json"))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the connect was not held");
    let channel = "/data/Territory__ChangeEvent";
    let subscribed = Instant::now();
    let sub = env
        .bayeux(json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": channel, "ext": {"replay": {channel: -2}}, "id": "4"}]))
        .await;
    assert_eq!(sub[0]["successful"], true, "{sub:?}");
    let (returned, msgs) = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held connect was not answered after the subscribe")
        .expect("join");
    assert!(returned.duration_since(subscribed) < Duration::from_secs(5));
    assert_eq!(msgs[0]["channel"], channel, "{msgs}");
    assert_eq!(
        msgs[0]["data"]["payload"]["ChangeEventHeader"]["recordIds"][0],
        id.as_str()
    );
    let last = msgs.as_array().and_then(|m| m.last()).expect("messages");
    assert_eq!(last["channel"], "/meta/connect");
    assert_eq!(last["successful"], true);
}
