//! SOQL queries: `query` (live rows) and `queryAll` (also deleted and archived rows), page by
//! page through `nextRecordsUrl` until `done`. Records come back as JSON maps without their
//! `attributes`.

use reqwest::Method;

use crate::crm::client::CrmClient;
use crate::crm::error::CrmError;
use crate::crm::http::{Body, Call};
use crate::crm::stats::CallKind;
use crate::crm::wire::QueryPage;

/// One row: field API name → JSON value (relationship fields stay nested maps).
pub type Record = serde_json::Map<String, serde_json::Value>;

/// Every row of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub total_size: u64,
    pub records: Vec<Record>,
}

/// Reads a query one page at a time, so a caller can process a large result with memory
/// bounded by the page size.
pub struct QueryPager {
    client: CrmClient,
    soql: String,
    include_deleted: bool,
    /// `None` before the first page; then the next page's path, or `Done`.
    next: NextPage,
    total_size: Option<u64>,
}

enum NextPage {
    First,
    At(String),
    Done,
}

impl CrmClient {
    /// Every live row matching `soql`.
    pub async fn query(&self, soql: &str) -> Result<QueryResult, CrmError> {
        self.query_pages(soql, false).collect().await
    }

    /// Every row matching `soql`, deleted and archived ones included (`IsDeleted = true`).
    pub async fn query_all(&self, soql: &str) -> Result<QueryResult, CrmError> {
        self.query_pages(soql, true).collect().await
    }

    /// A pager over `soql`; `include_deleted` uses `queryAll`.
    pub fn query_pages(&self, soql: &str, include_deleted: bool) -> QueryPager {
        QueryPager {
            client: self.clone(),
            soql: soql.to_string(),
            include_deleted,
            next: NextPage::First,
            total_size: None,
        }
    }
}

impl QueryPager {
    /// The next page of rows, or `None` when the query is exhausted.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Record>>, CrmError> {
        let prefix = self.client.data_prefix();
        let reply = match &self.next {
            NextPage::Done => return Ok(None),
            NextPage::First => {
                let resource = if self.include_deleted {
                    "queryAll"
                } else {
                    "query"
                };
                let path = format!("{prefix}/{resource}");
                self.client
                    .send(&Call {
                        method: Method::GET,
                        path: &path,
                        query: &[("q", self.soql.as_str())],
                        body: Body::Empty,
                        kind: CallKind::Query,
                        write: false,
                        idempotent: true,
                    })
                    .await?
            }
            NextPage::At(path) => {
                self.client
                    .send(&Call {
                        method: Method::GET,
                        path,
                        query: &[],
                        body: Body::Empty,
                        kind: CallKind::QueryMore,
                        write: false,
                        idempotent: true,
                    })
                    .await?
            }
        };
        let page = parse_query_page(&reply.body)?;
        self.total_size.get_or_insert(page.total_size);
        self.next = match page.next_path {
            Some(path) => NextPage::At(path),
            None => NextPage::Done,
        };
        Ok(Some(page.records))
    }

    /// The reported `totalSize`, once the first page has been read.
    pub fn total_size(&self) -> Option<u64> {
        self.total_size
    }

    /// Reads every remaining page.
    pub async fn collect(mut self) -> Result<QueryResult, CrmError> {
        let mut records = Vec::new();
        while let Some(page) = self.next_page().await? {
            records.extend(page);
        }
        Ok(QueryResult {
            total_size: self.total_size.unwrap_or(records.len() as u64),
            records,
        })
    }
}

/// One page of a query answer, as the pager uses it.
pub(crate) struct ParsedPage {
    pub total_size: u64,
    /// Where the next page is, `None` when the query is `done`.
    pub next_path: Option<String>,
    /// The rows, without their `attributes`.
    pub records: Vec<Record>,
}

/// Reads one page of `query`/`queryAll`: `{"totalSize","done","nextRecordsUrl","records"}`.
/// A page that is not `done` must say where the next one is, on this instance.
pub(crate) fn parse_query_page(body: &[u8]) -> Result<ParsedPage, CrmError> {
    let page: QueryPage = serde_json::from_slice(body).map_err(|e| CrmError::Decode {
        what: "query",
        detail: e.to_string(),
    })?;
    let next_path = if page.done {
        None
    } else {
        match page.next_records_url.as_deref() {
            Some(url) => Some(next_path(url)?),
            None => {
                return Err(CrmError::Decode {
                    what: "query",
                    detail: "`done` is false but there is no `nextRecordsUrl`".into(),
                });
            }
        }
    };
    let mut records = page.records;
    for record in &mut records {
        record.remove("attributes");
    }
    Ok(ParsedPage {
        total_size: page.total_size,
        next_path,
        records,
    })
}

/// `nextRecordsUrl` is relative to the instance. An absolute URL is accepted only for our own
/// instance: the bearer token must never be sent to another host.
fn next_path(url: &str) -> Result<String, CrmError> {
    if url.starts_with('/') && !url.starts_with("//") {
        return Ok(url.to_string());
    }
    Err(CrmError::Decode {
        what: "query",
        detail: format!("`nextRecordsUrl` `{url}` is not a path on this instance"),
    })
}
