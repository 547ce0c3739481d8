//! Large-volume reads: the production client's read requests (`plansync::anaplan::large_read`)
//! against the simulator's (`plansync_sim::anaplan`), over real loopback sockets. Outcomes are
//! checked against the simulator's own model and its count of live read requests.

use crate::support::anaplan_sim;
use std::collections::BTreeMap;
use std::time::Duration;

use plansync::anaplan::{
    AnaplanClient, AnaplanConfig, AnaplanError, AuthMethod, CellValue, CellWrite, DimRef, ItemRef,
    LineItemRef, ListItemWrite, RetryPolicy, ViewData,
};
use plansync::model::Decimal;
use plansync::secret::Secret;
use plansync_sim::anaplan::{self as sim, Faults, SimConfig, SimHandle};

const WS: &str = "8a81b09d5e8c6f27015e8d4f1a2b3c4d";
const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";
const OPP: &str = "OPP01 Opportunity Data";
const OPPS: &str = "Opportunities";
const LONG: Duration = Duration::from_secs(60);

/// A simulator whose reads are limited to 100 cells, with pages of at most 300 bytes.
fn small_limits() -> SimConfig {
    SimConfig {
        max_read: 100,
        read_page_bytes: 300,
        read_request_step: Duration::from_millis(150),
        ..SimConfig::default()
    }
}

fn client(sim: &SimHandle) -> AnaplanClient {
    let mut c = AnaplanConfig::new(
        sim.auth_url(),
        sim.api_url(),
        AuthMethod::Basic {
            user: sim::DEFAULT_USER.into(),
            password: Secret::new(sim::DEFAULT_PASSWORD),
        },
    );
    c.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_elapsed: Duration::from_secs(30),
    };
    c.task_poll_interval = Duration::from_millis(40);
    c.task_timeout = Duration::from_secs(20);
    AnaplanClient::new(c).unwrap()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LONG, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LONG:?}"))
}

/// Adds `n` opportunities (OPP-1000…) with an amount each: 4 + n items × 8 line items.
async fn grow(c: &AnaplanClient, module: &str, list: &str, n: u32) {
    let items: Vec<ListItemWrite> = (0..n)
        .map(|i| ListItemWrite {
            code: format!("006{:012}BBB", i),
            name: Some(format!("OPP-{}", 1000 + i)),
            properties: BTreeMap::from([("Opportunity Name".into(), format!("Deal, {i}"))]),
            ..ListItemWrite::default()
        })
        .collect();
    let added = c.add_list_items(MODEL, list, &items).await.unwrap();
    assert_eq!(added.added, u64::from(n));
    let cells: Vec<CellWrite> = (0..n)
        .map(|i| CellWrite {
            line_item: LineItemRef::Name("Amount".into()),
            dimensions: vec![(
                DimRef::Name(OPPS.into()),
                ItemRef::Code(format!("006{:012}BBB", i)),
            )],
            value: CellValue::Number(Decimal::parse(&format!("{}.5", i * 10), 1).unwrap()),
        })
        .collect();
    let written = c.write_cells(MODEL, module, &cells).await.unwrap();
    assert!(written.failures.is_empty(), "{:?}", written.failures);
}

/// Every page of a view read request, joined, with the number of pages.
async fn read_all(c: &AnaplanClient, view: &str) -> (ViewData, usize) {
    let mut pages = c.read_view_pages(WS, MODEL, view).await.unwrap();
    let mut all = ViewData::default();
    let mut n = 0;
    while let Some(page) = pages.next_page().await.unwrap() {
        if n > 0 {
            assert_eq!(page.columns, all.columns, "every page has the same columns");
        }
        all.columns = page.columns;
        all.rows.extend(page.rows);
        n += 1;
    }
    assert_eq!(pages.page_count(), Some(n));
    pages.finish().await.unwrap();
    (all, n)
}

#[tokio::test]
async fn a_view_over_the_limit_is_read_in_pages_and_matches_the_model() {
    let sim = anaplan_sim(small_limits()).await;
    let c = client(&sim);
    let module = c.module_id(MODEL, OPP).await.unwrap();
    let list = c.list_id(MODEL, OPPS).await.unwrap();
    grow(&c, &module, &list, 30).await;

    // 34 items × 8 line items is over the simulator's 100 cells: the plain read is refused.
    let refused = c.read_view_json(MODEL, &module, &[]).await.unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
    assert!(
        refused.to_string().contains("more than 100 cells"),
        "{refused}"
    );

    let (view, pages) = within("the paged read", read_all(&c, &module)).await;
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(sim.read_requests(), 0, "finish deleted the request");
    let columns = view.column_index();
    assert_eq!(columns.len(), 8);
    let rows = view.row_index();
    assert_eq!(rows.len(), 34);
    // Every cell agrees with the simulator's model, by item name → code.
    let items = sim.list_items(MODEL, OPPS).unwrap();
    let cells = sim.cells(MODEL, OPP).unwrap();
    for item in &items {
        let code = item.code.clone().unwrap();
        let row = rows[item.name.as_str()];
        let amount = &row[columns["Amount"]];
        match cells[&code].get("Amount") {
            Some(v) => assert_eq!(amount, &v.to_string(), "{code}"),
            None => assert!(amount.is_empty() || amount == "0", "{code}: {amount}"),
        }
    }
    assert_eq!(rows["OPP-1003"][columns["Amount"]], "30.5");
    assert_eq!(rows["OPP-0001"][columns["Stage"]], "Proposal");
    // The calls went through the client's counters: a create, status polls, pages, a delete.
    assert!(c.stats().reads >= 2 + pages as u64);
}

#[tokio::test]
async fn a_view_within_the_limit_reads_the_same_both_ways() {
    let sim = anaplan_sim(SimConfig {
        read_request_step: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    let module = c.module_id(MODEL, OPP).await.unwrap();
    let plain = c.read_view_json(MODEL, &module, &[]).await.unwrap();
    let (paged, pages) = within("the paged read", read_all(&c, &module)).await;
    assert_eq!(pages, 1);
    assert_eq!(paged.columns, plain.columns);
    assert_eq!(paged.rows, plain.rows);
}

#[tokio::test]
async fn a_list_is_read_in_pages_with_codes_and_properties() {
    let sim = anaplan_sim(small_limits()).await;
    let c = client(&sim);
    let module = c.module_id(MODEL, OPP).await.unwrap();
    let list = c.list_id(MODEL, OPPS).await.unwrap();
    grow(&c, &module, &list, 12).await;
    let expected = c.list_items(MODEL, &list).await.unwrap();
    let mut pages = c.read_list_pages(WS, MODEL, &list).await.unwrap();
    let mut got = Vec::new();
    let mut n = 0;
    while let Some(items) = within("a list page", pages.next_page()).await.unwrap() {
        got.extend(items);
        n += 1;
    }
    assert!(n >= 2, "{n} pages");
    assert_eq!(sim.read_requests(), 1);
    pages.finish().await.unwrap();
    assert_eq!(sim.read_requests(), 0);
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!((&g.id, &g.name, &g.code), (&e.id, &e.name, &e.code));
        assert_eq!(g.properties, e.properties);
    }
    assert_eq!(got[4].properties["Opportunity Name"], "Deal, 0");
}

#[tokio::test]
async fn an_expired_request_is_an_error_and_a_deleted_one_too() {
    let sim = anaplan_sim(SimConfig {
        read_page_bytes: 200,
        read_request_step: Duration::ZERO,
        read_request_ttl: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    let module = c.module_id(MODEL, OPP).await.unwrap();
    let mut pages = c.read_view_pages(WS, MODEL, &module).await.unwrap();
    assert!(pages.next_page().await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.read_requests(), 0, "expired");
    // The status the client holds says more pages; fetching one finds the request gone.
    // It is a read-request failure, which a caller retries with a new request, not a
    // refusal of a wrong name: the 404 is kept in the words.
    let gone = pages.next_page().await.unwrap_err();
    assert!(
        matches!(gone, plansync::anaplan::AnaplanError::ReadRequest { .. }),
        "{gone}"
    );
    assert!(!gone.is_permanent(), "{gone}");
    assert!(gone.to_string().contains("HTTP 404"), "{gone}");

    // A request deleted behind the client's back: the pages are gone too.
    let mut pages = c.read_view_pages(WS, MODEL, &module).await.unwrap();
    let id = pages.request_id().to_string();
    let raw = reqwest::Client::new();
    let token = raw_token(&raw, &sim).await;
    let url = format!(
        "{}/workspaces/{WS}/models/{MODEL}/views/{module}/readRequests/{id}",
        sim.api_url()
    );
    // A page number past the last is refused with a reason.
    let resp = raw
        .get(format!("{url}/pages/99"))
        .header("Authorization", format!("AnaplanAuthToken {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Page 99 is not available")
    );
    let resp = raw
        .delete(&url)
        .header("Authorization", format!("AnaplanAuthToken {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let err = pages.next_page().await.unwrap_err();
    assert!(
        matches!(&err, AnaplanError::ReadRequest { detail, .. } if detail.contains("cancelled")),
        "{err}"
    );

    // After finish, the handle refuses more pages with its own error.
    let mut pages = c.read_view_pages(WS, MODEL, &module).await.unwrap();
    while pages.next_page().await.unwrap().is_some() {}
    let count = pages.page_count().unwrap();
    assert!(count >= 2, "{count}");
    pages.finish().await.unwrap();
    assert_eq!(sim.read_requests(), 0);
}

async fn raw_token(raw: &reqwest::Client, sim: &SimHandle) -> String {
    let body: serde_json::Value = raw
        .post(format!("{}/token/authenticate", sim.auth_url()))
        .basic_auth(sim::DEFAULT_USER, Some(sim::DEFAULT_PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["tokenInfo"]["tokenValue"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_dropped_handle_deletes_its_request_and_faults_are_retried() {
    let sim = anaplan_sim(small_limits()).await;
    let c = client(&sim);
    let module = c.module_id(MODEL, OPP).await.unwrap();
    let list = c.list_id(MODEL, OPPS).await.unwrap();
    grow(&c, &module, &list, 20).await;

    let mut pages = c.read_view_pages(WS, MODEL, &module).await.unwrap();
    assert!(pages.next_page().await.unwrap().is_some());
    assert_eq!(sim.read_requests(), 1);
    drop(pages);
    within("the background delete", async {
        while sim.read_requests() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Expired tokens and transient 503s mid-read: the client's refresh and retry carry it.
    let mut pages = c.read_view_pages(WS, MODEL, &module).await.unwrap();
    let mut rows = 0;
    let mut n = 0;
    while let Some(page) = within("a page", pages.next_page()).await.unwrap() {
        rows += page.rows.len();
        n += 1;
        if n == 1 {
            sim.expire_tokens();
        }
        if n == 2 {
            sim.set_faults(Faults {
                fail_next: 2,
                include_auth: false,
                ..Faults::default()
            });
        }
    }
    pages.finish().await.unwrap();
    assert_eq!(rows, 24);
    let stats = c.stats();
    assert!(stats.retries >= 3, "{stats:?}");
    assert!(stats.auth >= 2, "{stats:?}");
}

#[test]
fn the_error_names_the_request() {
    let e = AnaplanError::ReadRequest {
        object: "view 102000000001".into(),
        request_id: "0A06".into(),
        detail: "the read request was cancelled".into(),
    };
    assert_eq!(
        e.to_string(),
        "Anaplan read request 0A06 of view 102000000001: the read request was cancelled"
    );
}

#[tokio::test]
async fn item_by_item_and_row_by_row_reads_give_what_whole_pages_give() {
    let sim = anaplan_sim(small_limits()).await;
    let c = client(&sim);
    let module = c.module_id(MODEL, OPP).await.unwrap();
    let list = c.list_id(MODEL, OPPS).await.unwrap();
    grow(&c, &module, &list, 12).await;

    let (whole, pages) = within("the paged read", read_all(&c, &module)).await;
    let mut each = c.read_view_pages(WS, MODEL, &module).await.unwrap();
    let mut rows = Vec::new();
    let mut n = 0;
    while let Some(shape) = within(
        "a view page",
        each.next_page_each(|shape, row| {
            assert_eq!(shape.columns, whole.columns);
            rows.push(row);
        }),
    )
    .await
    .unwrap()
    {
        assert_eq!(shape.columns, whole.columns);
        assert!(shape.rows.is_empty());
        n += 1;
    }
    each.finish().await.unwrap();
    assert_eq!((rows, n), (whole.rows, pages));

    let expected = c.list_items(MODEL, &list).await.unwrap();
    let mut each = c.read_list_pages(WS, MODEL, &list).await.unwrap();
    let mut items = Vec::new();
    let mut counts = Vec::new();
    while let Some(count) = within("a list page", each.next_page_each(|i| items.push(i)))
        .await
        .unwrap()
    {
        counts.push(count);
    }
    each.finish().await.unwrap();
    assert!(counts.len() >= 2, "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), expected.len());
    let key =
        |i: &plansync::anaplan::ListItem| (i.name.clone(), i.code.clone(), i.properties.clone());
    assert_eq!(
        items.iter().map(key).collect::<Vec<_>>(),
        expected.iter().map(key).collect::<Vec<_>>()
    );
    assert_eq!(sim.read_requests(), 0);
}
