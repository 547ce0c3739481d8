//! The body of the `crm_responses` fuzz target: every parser of bytes from the CRM's REST
//! API (the streaming frames have `cdc_frame`, describe has `crm_describe`), run on the same
//! input. None may panic, and where an answer parses, what the client would do with it must
//! hold: a refusal keeps a code, a next page or an upload stays on this instance, a result
//! file or a query results page yields no more rows than it has lines, a locator sent back
//! is a plain token.

use std::collections::HashSet;

use super::auth::token_outcome;
use super::bulk::{decode, job_path, read_results, upload_path};
use super::bulk_query::{CsvPage, Locator, next_locator};
use super::cdc::longpoll::CookieJar;
use super::error::CrmError;
use super::http::classify;
use super::limits::parse_limits;
use super::query::parse_query_page;
use super::stats::{CallStats, parse_limit_info};
use super::wire::JobInfo;
use super::write::collection_results;

/// Where the fuzz body pretends the instance is.
const INSTANCE: &str = "https://na1.example.my.salesforce.com";
const JOBS: &str = "/services/data/v59.0/jobs/ingest";

#[doc(hidden)]
pub fn fuzz_responses(data: &[u8]) {
    token(data);
    errors(data);
    query_page(data);
    collections(data);
    bulk_job(data);
    for success in [true, false] {
        bulk_results(data, success);
    }
    bulk_query_page(data);
    if let Ok(limits) = parse_limits(data) {
        for a in limits.all.values() {
            assert!(a.used() <= a.max, "{a:?}");
        }
    }
    let text = String::from_utf8_lossy(data);
    locator(&text);
    limit_info(&text, data);
    cookies(&text);
}

/// The token endpoint's answer: a token, or a refusal that names its error. The token never
/// shows in an error about the answer that carried it.
fn token(data: &[u8]) {
    match token_outcome(200, data) {
        Ok(_) => {}
        Err(e) => {
            assert!(matches!(e, CrmError::Decode { .. }), "{e}");
            // Salesforce tokens carry a `!`; no fixed wording of ours does.
            let wire: Option<serde_json::Value> = serde_json::from_slice(data).ok();
            let field = |name: &str| {
                wire.as_ref()
                    .and_then(|v| v.get(name))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            if let Some(secret) = field("access_token").filter(|t| t.contains('!')) {
                let kind = field("token_type").unwrap_or_default();
                assert!(
                    kind.contains(&secret) || !e.to_string().contains(&secret),
                    "the token leaks into {e}"
                );
            }
        }
    }
    for status in [400, 401] {
        match token_outcome(status, data) {
            Err(CrmError::Auth {
                status: s, error, ..
            }) => {
                assert_eq!(s, status);
                assert!(!error.trim().is_empty(), "a refusal without an error");
            }
            other => panic!("{status} read as {other:?}"),
        }
    }
    assert!(token_outcome(503, data).unwrap_err().is_transient());
}

/// An error answer means one thing, always the same, with a code.
fn errors(data: &[u8]) {
    for status in [400, 401, 403, 404, 500, 503] {
        let e = classify(status, data);
        let again = classify(status, data);
        assert_eq!(e.to_string(), again.to_string());
        assert_eq!(e.code(), again.code());
        assert_eq!(e.is_transient(), again.is_transient());
        assert!(e.code().is_some_and(|c| !c.trim().is_empty()), "{e}");
        match &e {
            CrmError::Api { status: s, .. } => {
                assert_eq!(*s, status);
                if status >= 500 {
                    assert!(e.is_transient(), "{e}");
                }
            }
            CrmError::RequestLimit { .. } => assert!(!e.is_transient()),
            other => panic!("{status} classified as {other:?}"),
        }
    }
}

/// A query page: rows without `attributes`, and a next page on this instance only.
fn query_page(data: &[u8]) {
    let Ok(page) = parse_query_page(data) else {
        return;
    };
    for record in &page.records {
        assert!(!record.contains_key("attributes"));
    }
    if let Some(next) = &page.next_path {
        stays_on_instance(next);
    }
    // The page as the client understood it reads back the same.
    let again = serde_json::json!({
        "totalSize": page.total_size,
        "done": page.next_path.is_none(),
        "nextRecordsUrl": page.next_path,
        "records": page.records,
    });
    let again = parse_query_page(again.to_string().as_bytes()).expect("own encoding parses");
    assert_eq!(again.total_size, page.total_size);
    assert_eq!(again.next_path, page.next_path);
    assert_eq!(again.records.len(), page.records.len());
}

/// A collections answer: exactly one result per record sent, a failure always with a code.
fn collections(data: &[u8]) {
    let sent = ["001A", "001B", "001C", "001D"];
    for n in 0..=sent.len() {
        let Ok(results) = collection_results(data, &sent[..n]) else {
            continue;
        };
        assert_eq!(results.len(), n);
        for r in &results {
            if let Err(e) = r {
                assert!(!e.status_code.trim().is_empty(), "{e:?}");
            }
        }
    }
}

/// A bulk job's info: its id makes a path under the jobs resource, and the upload goes to a
/// path under `/services/` on this instance.
fn bulk_job(data: &[u8]) {
    let Ok(job) = decode::<JobInfo>(data, "bulk job state") else {
        return;
    };
    let Ok(path) = job_path(JOBS, &job.id) else {
        return;
    };
    let url = stays_on_instance(&path);
    assert!(url.path().starts_with(&format!("{JOBS}/")), "{url}");
    let upload = upload_path(&path, job.content_url.as_deref());
    let url = stays_on_instance(&upload);
    assert!(url.path().starts_with("/services/"), "{url}");
    assert!(url.query().is_none() && url.fragment().is_none(), "{url}");
}

/// A result file: never more rows than line ends, successes as successes, failures with a code.
fn bulk_results(data: &[u8], success: bool) {
    let Ok(rows) = read_results(data, success) else {
        return;
    };
    let line_ends = data.iter().filter(|b| matches!(b, b'\n' | b'\r')).count();
    assert!(
        rows.len() <= line_ends,
        "{} rows, {line_ends} line ends",
        rows.len()
    );
    for row in &rows {
        match &row.outcome {
            Ok(_) => assert!(success),
            Err(e) => {
                assert!(!success);
                assert!(!e.status_code.trim().is_empty(), "{e:?}");
            }
        }
    }
}

/// A Bulk API 2.0 query results page: never more rows than line ends, however it is taken
/// in batches (the batch size comes from the input's first byte).
fn bulk_query_page(data: &[u8]) {
    let Ok(mut page) = CsvPage::new(data.to_vec()) else {
        return;
    };
    let line_ends = data.iter().filter(|b| matches!(b, b'\n' | b'\r')).count();
    let mut rows = 0;
    let batch = usize::from(data.first().copied().unwrap_or(1)).max(1);
    while let Ok(taken) = page.take(batch) {
        if taken.is_empty() {
            break;
        }
        rows += taken.len();
        assert!(rows <= line_ends, "{rows} rows, {line_ends} line ends");
    }
}

/// `Sforce-Locator`: a locator sent back is a plain token, at most 1 KiB.
fn locator(text: &str) {
    for line in text.lines() {
        if let Ok(Locator::At(l)) = next_locator(Some(line.trim())) {
            assert!(
                l.len() <= 1024 && l.bytes().all(|b| b.is_ascii_graphic()),
                "{l}"
            );
        }
    }
}

/// `Sforce-Limit-Info`: what parses reads back the same from its own spelling, a leading
/// `api-usage=a/b` wins over whatever follows, and the stats keep what was read.
fn limit_info(text: &str, data: &[u8]) {
    for line in text.lines() {
        let parsed = parse_limit_info(line);
        if let Some((used, max)) = parsed {
            assert_eq!(
                parse_limit_info(&format!("api-usage={used}/{max}")),
                Some((used, max))
            );
        }
        let stats = CallStats::new();
        stats.limit_info(line);
        assert_eq!(stats.snapshot().api_usage, parsed);
    }
    let mut numbers = [0u8; 16];
    let n = data.len().min(16);
    numbers[..n].copy_from_slice(&data[..n]);
    let used = u64::from_le_bytes(numbers[..8].try_into().unwrap_or_default());
    let max = u64::from_le_bytes(numbers[8..].try_into().unwrap_or_default());
    let first_line = text.lines().next().unwrap_or_default();
    assert_eq!(
        parse_limit_info(&format!("api-usage={used}/{max}; {first_line}")),
        Some((used, max))
    );
}

/// `Set-Cookie` of the long-polling transport: the jar sends back one `name=value` per name.
fn cookies(text: &str) {
    let mut jar = CookieJar::default();
    for line in text.lines() {
        jar.store(line);
    }
    let Some(header) = jar.header() else {
        return;
    };
    let mut names = HashSet::new();
    for pair in header.split("; ") {
        let (name, value) = pair.split_once('=').expect("name=value");
        assert!(!name.is_empty() && !value.is_empty(), "{header}");
        assert!(names.insert(name), "{name} twice in {header}");
    }
}

/// `path` is where the client would send the bearer token: it must stay on the instance.
fn stays_on_instance(path: &str) -> reqwest::Url {
    let url =
        reqwest::Url::parse(&format!("{INSTANCE}{path}")).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        url.host_str(),
        Some("na1.example.my.salesforce.com"),
        "{path}"
    );
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                .join("fuzz/corpus/crm_responses")
                .join(name),
        )
        .unwrap()
    }

    /// The saved corpus replays on stable too, so every input that once broke a parser stays
    /// a regression test.
    #[test]
    fn corpus_replays_without_panics() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("fuzz/corpus/crm_responses");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            fuzz_responses(&data);
            count += 1;
        }
        assert!(count >= 10, "{count} corpus files");
    }

    #[test]
    fn the_corpus_is_realistic_the_parsers_accept_it() {
        let (token, instance) = token_outcome(200, &read("token_client_credentials.json")).unwrap();
        assert!(token.expose().contains('!'));
        assert!(instance.starts_with("https://"));
        let e = token_outcome(400, &read("token_invalid_grant.json")).unwrap_err();
        assert!(matches!(&e, CrmError::Auth { error, .. } if error == "invalid_grant"));
        let page = parse_query_page(&read("query_page_more.json")).unwrap();
        assert_eq!(page.records.len(), 2);
        assert!(page.next_path.unwrap().starts_with("/services/data/"));
        let results =
            collection_results(&read("collections_one_failed.json"), &["a", "b"]).unwrap();
        assert!(results[0].is_ok());
        assert_eq!(
            results[1].as_ref().unwrap_err().status_code,
            "REQUIRED_FIELD_MISSING"
        );
        let job: JobInfo = decode(&read("bulk_job_info.json"), "bulk job state").unwrap();
        assert_eq!(job.state, "JobComplete");
        let rows = read_results(&read("bulk_failed_results.csv"), false).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].id, "001B");
        let rows = read_results(&read("bulk_successful_results.csv"), true).unwrap();
        assert_eq!(rows.len(), 2);
        let e = classify(400, &read("error_array.json"));
        assert_eq!(e.code(), Some("INVALID_FIELD"));
        assert!(parse_query_page(&read("truncated_query.json")).is_err());
        let mut page = CsvPage::new(read("bulk_query_results.csv")).unwrap();
        let rows = page.take(100).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2]["Amount"], serde_json::Value::Null);
        let header = String::from_utf8(read("limit_info_header.txt")).unwrap();
        assert_eq!(parse_limit_info(header.trim()), Some((25, 15000)));
    }

    #[test]
    fn the_properties_catch_what_they_guard() {
        // A next page on another host, an upload outside `/services/`: rejected before use.
        assert!(
            parse_query_page(br#"{"done":false,"nextRecordsUrl":"https://evil.example/x"}"#)
                .is_err()
        );
        assert_eq!(
            upload_path("/j", Some("services/../../sobjects/Account")),
            "/j/batches"
        );
        assert_eq!(upload_path("/j", Some("/services/x?y=1")), "/j/batches");
        assert!(job_path(JOBS, "../../sobjects").is_err());
        assert!(job_path(JOBS, "").is_err());
        assert_eq!(
            job_path(JOBS, "750R0000000zlh9IAA").unwrap(),
            format!("{JOBS}/750R0000000zlh9IAA")
        );
        // Codes are never empty.
        let results =
            collection_results(br#"[{"success":false,"errors":[{"message":"x"}]}]"#, &["a"])
                .unwrap();
        assert_eq!(
            results[0].as_ref().unwrap_err().status_code,
            "UNKNOWN_ERROR"
        );
        let rows = read_results(b"sf__Id,sf__Error,Id\n,:no code,001A\n", false).unwrap();
        assert_eq!(
            rows[0].outcome.as_ref().unwrap_err().status_code,
            "UNKNOWN_ERROR"
        );
    }
}
