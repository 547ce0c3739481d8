//! The CRM simulator driven by code it did not write: simple-salesforce (PyPI, pinned in
//! `.ci/requirements.txt`, run with `PLANSYNC_TEST_PYTHON`), unchanged but for one adapter
//! that sends its https:// URLs as plain HTTP to the loopback simulator. Query, create, get,
//! update, upsert by external id, delete, queryAll of a deleted row, describe, limits and a
//! collections call; then the simulator's own state is checked.

use crate::support::*;
use plansync_sim::crm::CrmSimConfig;
use serde_json::Value as Json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_salesforce_does_its_everyday_calls_against_the_simulator() {
    let crm = crm_sim(CrmSimConfig::default()).await;
    let seen = crm_script(&crm, "third_party_crm.py").await;

    let ids = seen["query_ids"].as_array().unwrap();
    assert_eq!(seen["query_total"].as_u64(), Some(ids.len() as u64));
    assert!(ids.len() >= 3, "{seen}");
    assert_eq!(seen["created"], true);
    assert_eq!(seen["get_name"], "From simple-salesforce");
    assert_eq!(seen["update_status"], 204, "{seen}");
    assert_eq!(seen["upsert_created"], 201, "{seen}");
    assert!(
        matches!(seen["upsert_again"].as_u64(), Some(200 | 204)),
        "{seen}"
    );
    assert_eq!(seen["by_external_id"], 99.0);
    assert_eq!(seen["delete_status"], 204);
    assert_eq!(seen["query_all_deleted"], serde_json::json!([true]));
    let fields: Vec<&str> = seen["describe_fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert!(
        fields.contains(&"Amount") && fields.contains(&"External_Id__c"),
        "{fields:?}"
    );
    assert!(
        seen["global_objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "Opportunity"),
        "{seen}"
    );
    assert!(seen["daily_api"]["Max"].as_u64() > Some(0), "{seen}");
    assert!(seen["daily_api"]["Remaining"].as_u64() < seen["daily_api"]["Max"].as_u64());
    assert_eq!(seen["collection"], serde_json::json!([true]));

    // The simulator holds what the client did.
    let first = ids[0].as_str().unwrap();
    assert_eq!(crm.record(first).unwrap()["Amount"].as_f64(), Some(777.0));
    let (used, _) = crm.api_usage();
    assert!(used > 10, "the calls were counted: {used}");
}
