//! Bulk API 2.0 query jobs on the CRM simulator, over raw HTTP, at their edges: a job must be
//! seen complete before its results are read, locators and `maxRecords` are checked, the API
//! version must be the job's, CRLF and other delimiters are honoured, what Bulk API 2.0 does
//! not support (`OFFSET`, compound fields) is refused at creation, a running job cannot be
//! deleted, and `limits` counts the jobs.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use plansync_sim::crm::CrmSimConfig;

use crate::sim_crm_routes::{Env, start};

const V: &str = "/services/data/v59.0";

async fn create(env: &Env, body: Value) -> (StatusCode, Value) {
    let (s, b, _) = env
        .call(Method::POST, &format!("{V}/jobs/query"), Some(body))
        .await;
    (s, b)
}

/// GET of a results page: status, `Sforce-Locator`, `Sforce-NumberOfRecords`, body text.
async fn results(env: &Env, path: &str) -> (StatusCode, Option<String>, Option<String>, String) {
    let resp = env
        .http
        .get(format!("{}{path}", env.url))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("send");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (locator, count) = (header("sforce-locator"), header("sforce-numberofrecords"));
    (
        resp.status(),
        locator,
        count,
        resp.text().await.expect("body"),
    )
}

#[tokio::test]
async fn a_query_job_is_read_once_complete_page_by_page() {
    let env = start(CrmSimConfig::default()).await;
    let (status, job) = create(
        &env,
        json!({"operation": "query", "query": "SELECT Id, Name, Amount, CloseDate, SystemModstamp FROM Opportunity ORDER BY Name", "lineEnding": "CRLF", "columnDelimiter": "SEMICOLON"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["state"], "UploadComplete");
    assert_eq!(job["operation"], "query");
    assert_eq!(job["object"], "Opportunity");
    let id = job["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("750"), "{id}");
    let results_path = format!("{V}/jobs/query/{id}/results");

    // Not seen complete yet: no results.
    let (status, ..) = results(&env, &results_path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, info) = env.get(&format!("{V}/jobs/query/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["jobType"], "V2Query");
    let (_, info) = env.get(&format!("{V}/jobs/query/{id}")).await;
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], 4);

    let (status, locator, count, body) =
        results(&env, &format!("{results_path}?maxRecords=3")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(count.as_deref(), Some("3"));
    let locator = locator.expect("a locator");
    assert_ne!(locator, "null");
    let mut lines = body.split("\r\n");
    assert_eq!(
        lines.next(),
        Some("Id;Name;Amount;CloseDate;SystemModstamp")
    );
    let first = lines.next().unwrap();
    assert!(first.ends_with('Z'), "datetimes in UTC with Z: {first}");
    assert!(
        first.contains(";125000;") || first.contains(";125000.0;"),
        "{first}"
    );
    let (status, last, count, body) = results(
        &env,
        &format!("{results_path}?maxRecords=3&locator={locator}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(count.as_deref(), Some("1"));
    assert_eq!(last.as_deref(), Some("null"));
    // A locator can be read again while the job exists.
    let (status, again, ..) = results(
        &env,
        &format!("{results_path}?maxRecords=3&locator={locator}"),
    )
    .await;
    assert_eq!((status, again.as_deref()), (StatusCode::OK, Some("null")));

    // Junk locators, zero records, another API version.
    for bad in ["?locator=%21%21", "?maxRecords=0", "?maxRecords=many"] {
        let (status, _, _, body) = results(&env, &format!("{results_path}{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, ..) = results(
        &env,
        &format!("/services/data/v60.0/jobs/query/{id}/results"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, list) = env.get(&format!("{V}/jobs/query")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["records"].as_array().map(Vec::len), Some(1));
    let (_, limits) = env.get(&format!("{V}/limits")).await;
    assert_eq!(limits["DailyBulkV2QueryJobs"]["Remaining"], 9_999);

    let (status, _, _) = env
        .call(Method::DELETE, &format!("{V}/jobs/query/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, ..) = results(&env, &results_path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn what_bulk_query_does_not_support_is_refused_at_creation() {
    let env = start(CrmSimConfig::default()).await;
    for (body, code) in [
        (
            json!({"operation": "query", "query": "SELECT Id FROM Opportunity LIMIT 2 OFFSET 1"}),
            "INVALIDJOB",
        ),
        (
            json!({"operation": "query", "query": "SELECT Id, BillingAddress FROM Account"}),
            "INVALIDJOB",
        ),
        (
            json!({"operation": "query", "query": "SELECT Nope__c FROM Opportunity"}),
            "INVALID_FIELD",
        ),
        (
            json!({"operation": "insert", "query": "SELECT Id FROM Opportunity"}),
            "INVALIDJOB",
        ),
        (json!({"operation": "query"}), "INVALIDJOB"),
        (
            json!({"operation": "query", "query": "SELECT Id FROM Opportunity", "columnDelimiter": "SPACE"}),
            "INVALIDJOB",
        ),
    ] {
        let (status, answer) = create(&env, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer[0]["errorCode"], code, "{body}: {answer}");
    }
    // A job not yet complete cannot be deleted; it can be aborted.
    let (_, job) = create(
        &env,
        json!({"operation": "query", "query": "SELECT Id FROM Opportunity"}),
    )
    .await;
    let path = format!("{V}/jobs/query/{}", job["id"].as_str().unwrap());
    let (status, _, _) = env.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, aborted, _) = env
        .call(Method::PATCH, &path, Some(json!({"state": "Aborted"})))
        .await;
    assert_eq!(
        (status, aborted["state"].as_str()),
        (StatusCode::OK, Some("Aborted"))
    );
    let (status, _, _) = env.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}
