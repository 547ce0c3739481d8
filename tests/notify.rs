//! Notifications over a real webhook (an HTTP server on loopback): new `write_failed`
//! exceptions, credentials refused, a stream down and a write waiting too long are each said
//! once when they start and once when they clear, however long they last: an outage is a
//! message, not thousands.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use axum::Json;
use axum::routing::post;
use plansync::backoff::Backoff;
use plansync::engine::write::WriteRetry;
use plansync::notify::{NotifySettings, run};
use plansync::secret::Secret;
use serde_json::Value;
use tokio::net::TcpListener;

/// A webhook that keeps every body it is sent.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hooks/T000/B000/secret",
        post(move |Json(body): Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/T000/B000/secret",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

/// How many messages of `condition` in `state` arrived.
fn count(got: &Mutex<Vec<Value>>, condition: &str, state: &str) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|b| b["plansync"]["condition"] == condition && b["plansync"]["state"] == state)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_condition_is_one_message_when_it_starts_and_one_when_it_clears() {
    let mut env = Env::new(&rules_dir()).await;
    // A write answered "try again" once is given up at once: a write_failed exception.
    env.write_retry = Some(WriteRetry {
        attempts: 1,
        give_up_after: Duration::from_secs(3600),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_millis(200)),
    });
    env.tune = Some(|o| o.crm_poll_stream_down = Duration::from_secs(1));
    env.start(true).await;
    env.settle().await;
    let (url, got) = webhook().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let notifier = tokio::spawn(run(
        env.engine().observer(),
        NotifySettings {
            webhook: Secret::new(url),
            stream_down_after: Duration::from_secs(1),
            outbox_older_than: Duration::from_secs(3),
            repeat_after: Duration::from_secs(3600),
        },
        stopped,
    ));

    // Two writes that fail for good, close together: one message.
    let territories = env.ids("Territory__c").await;
    for (id, quota) in [(&territories[0], "7100000"), (&territories[1], "7200000")] {
        env.crm.lock_record(id, true);
        env.planner_sets(TER_MODULE, TER_LIST, id, "Annual Quota", number(quota))
            .await;
    }
    env.engine().poll_now(None);
    wait_for("a write_failed message", || async {
        count(&got, "write_failed", "firing") == 1
    })
    .await;
    wait_for("both write_failed exceptions", || async {
        env.exceptions(Some(plansync::model::ExceptionKind::WriteFailed))
            .len()
            == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        count(&got, "write_failed", "firing"),
        1,
        "{:#?}",
        got.lock().unwrap()
    );

    // The stream down for several checks: one message, then one when it is back.
    env.crm
        .refuse_streaming(Some("403::Organization total events daily limit exceeded"));
    wait_for("a stream_down message", || async {
        count(&got, "stream_down", "firing") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(count(&got, "stream_down", "firing"), 1);
    let text = got
        .lock()
        .unwrap()
        .iter()
        .find(|b| b["plansync"]["condition"] == "stream_down")
        .map(|b| b["text"].as_str().unwrap().to_string())
        .unwrap();
    assert!(
        text.contains("stream is down") && text.contains("403"),
        "{text}"
    );
    env.crm.refuse_streaming(None);
    wait_for("the stream's recovery message", || async {
        count(&got, "stream_down", "resolved") == 1
    })
    .await;

    // Anaplan refuses the credentials; meanwhile a CRM change waits to be written there.
    env.anaplan.refuse_credentials(true);
    env.anaplan.expire_tokens();
    let deals = env.opportunities().await;
    env.rep_edits(&deals[0], serde_json::json!({ "Amount": 616161 }));
    env.engine().poll_now(None);
    wait_for("an auth_refused message", || async {
        count(&got, "auth_refused:anaplan", "firing") == 1
    })
    .await;
    wait_for("an outbox_old message", || async {
        count(&got, "outbox_old:anaplan", "firing") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(count(&got, "auth_refused:anaplan", "firing"), 1);
    assert_eq!(count(&got, "outbox_old:anaplan", "firing"), 1);
    env.anaplan.refuse_credentials(false);
    env.engine().poll_now(None);
    env.wait_cell(&deals[0], "Amount", "616161").await;
    wait_for("the recoveries", || async {
        count(&got, "auth_refused:anaplan", "resolved") == 1
            && count(&got, "outbox_old:anaplan", "resolved") == 1
    })
    .await;

    // Every message is Slack-shaped (a `text`) and names no secret.
    for body in got.lock().unwrap().iter() {
        assert!(
            body["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("plansync: ")),
            "{body}"
        );
        assert!(!body.to_string().contains("secret"), "{body}");
    }
    let _ = stop.send(true);
    notifier.await.unwrap();
    env.stop().await;
}
