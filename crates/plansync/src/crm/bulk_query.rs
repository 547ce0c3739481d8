//! Bulk API 2.0 query, for reads too large for REST pages of 2,000 rows: create a query job,
//! wait for it, then read its CSV results one page (`maxRecords`) at a time, following
//! `Sforce-Locator` until it says `null`, and delete the job. A million rows cost a handful
//! of calls instead of five hundred.
//!
//! Memory is bounded by one results page: a page's CSV is kept as bytes and handed out
//! `batch` rows at a time, as [`Record`]s shaped like REST's (a null as JSON null, every other
//! value as text, `Owner.Name` nested as `{"Owner":{"Name":…}}`). Text values are what the
//! rules engine reads anyway (`Value::from_text`); a caller that needs JSON types must not
//! read through here.
//!
//! Rows come in no particular order: Bulk API 2.0 documents `ORDER BY` as unsupported, so
//! the query must not have one and a caller must not assume one.

use reqwest::Method;
use serde_json::{Map, Value};

use crate::crm::bulk::{decode, job_path};
use crate::crm::client::CrmClient;
use crate::crm::error::CrmError;
use crate::crm::http::{Body, Call};
use crate::crm::query::Record;
use crate::crm::stats::CallKind;
use crate::crm::wire::{CreateQueryJob, JobInfo};

/// Reads a Bulk API 2.0 query `batch` rows at a time.
pub struct BulkQueryPager {
    client: CrmClient,
    soql: String,
    include_deleted: bool,
    batch: usize,
    /// `jobs/query/<id>` and the id, once the job is created.
    job: Option<(String, String)>,
    next: Locator,
    page: Option<CsvPage>,
    total: Option<u64>,
}

pub(crate) enum Locator {
    First,
    At(String),
    Done,
}

/// One results page: its CSV, read row by row.
pub(crate) struct CsvPage {
    reader: csv::Reader<std::io::Cursor<Vec<u8>>>,
    /// Each column's path: `["Amount"]`, or `["Owner", "Name"]` for a parent's field.
    columns: Vec<Vec<String>>,
}

impl CrmClient {
    /// A Bulk API 2.0 pager over `soql` (no `ORDER BY`); `include_deleted` uses `queryAll`.
    /// Nothing is sent before the first [`BulkQueryPager::next_page`].
    pub fn bulk_query_pages(
        &self,
        soql: &str,
        include_deleted: bool,
        batch: usize,
    ) -> BulkQueryPager {
        BulkQueryPager {
            client: self.clone(),
            soql: soql.to_string(),
            include_deleted,
            batch: batch.max(1),
            job: None,
            next: Locator::First,
            page: None,
            total: None,
        }
    }
}

impl BulkQueryPager {
    /// Up to `batch` more rows, or `None` when every row has been read (the job is then
    /// deleted).
    pub async fn next_page(&mut self) -> Result<Option<Vec<Record>>, CrmError> {
        loop {
            if let Some(page) = &mut self.page {
                let rows = page.take(self.batch)?;
                if !rows.is_empty() {
                    return Ok(Some(rows));
                }
                self.page = None;
            }
            match &self.next {
                Locator::Done => {
                    self.delete_job().await;
                    return Ok(None);
                }
                Locator::First if self.job.is_none() => self.start().await?,
                _ => {}
            }
            self.fetch().await?;
        }
    }

    /// The rows the job matched, once it is complete.
    pub fn total_size(&self) -> Option<u64> {
        self.total
    }

    async fn start(&mut self) -> Result<(), CrmError> {
        let jobs = format!("{}/jobs/query", self.client.data_prefix());
        let create = serde_json::to_vec(&CreateQueryJob {
            operation: if self.include_deleted {
                "queryAll"
            } else {
                "query"
            },
            query: &self.soql,
            content_type: "CSV",
            column_delimiter: "COMMA",
            line_ending: "LF",
        })
        .map_err(|e| CrmError::Decode {
            what: "bulk query job creation",
            detail: e.to_string(),
        })?;
        let reply = self
            .client
            .send(&Call {
                method: Method::POST,
                path: &jobs,
                query: &[],
                body: Body::Json(create),
                kind: CallKind::BulkCreate,
                write: false,
                idempotent: false,
            })
            .await?;
        let job: JobInfo = decode(&reply.body, "bulk query job creation")?;
        let path = job_path(&jobs, &job.id)?;
        self.job = Some((path.clone(), job.id.clone()));
        let done = self.client.wait_for_job(&path, &job.id).await?;
        self.total = done.records_processed;
        Ok(())
    }

    async fn fetch(&mut self) -> Result<(), CrmError> {
        let Some((path, _)) = &self.job else {
            return Ok(());
        };
        let results = format!("{path}/results");
        let max = self.client.config().bulk_query_page.to_string();
        let mut query: Vec<(&str, &str)> = vec![("maxRecords", max.as_str())];
        if let Locator::At(l) = &self.next {
            query.push(("locator", l.as_str()));
        }
        let reply = self
            .client
            .send(&Call {
                method: Method::GET,
                path: &results,
                query: &query,
                body: Body::Empty,
                kind: CallKind::BulkResults,
                write: false,
                idempotent: true,
            })
            .await?;
        let locator = reply
            .headers
            .get("Sforce-Locator")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        self.next = next_locator(locator)?;
        self.page = Some(CsvPage::new(reply.body)?);
        Ok(())
    }

    /// A finished job's results take the org's file storage until it deletes them (days
    /// later); deleting them at once is good manners. A failure changes nothing that was
    /// read, so it is only logged.
    async fn delete_job(&mut self) {
        let Some((path, id)) = self.job.take() else {
            return;
        };
        let deleted = self
            .client
            .send(&Call {
                method: Method::DELETE,
                path: &path,
                query: &[],
                body: Body::Empty,
                kind: CallKind::Other,
                write: false,
                idempotent: true,
            })
            .await;
        if let Err(e) = deleted {
            tracing::warn!(event = "crm_bulk_query_cleanup", job_id = %id, error = %e, "a finished bulk query job could not be deleted; the org deletes it within days");
        }
    }
}

/// `Sforce-Locator`: the next page's locator, or the text `null` after the last page. A
/// missing header after a page is read as the last page; a locator that is not a plain token
/// is refused, as it goes back to the CRM in a URL.
pub(crate) fn next_locator(header: Option<&str>) -> Result<Locator, CrmError> {
    match header {
        None | Some("" | "null") => Ok(Locator::Done),
        Some(l) if l.len() <= 1024 && l.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Locator::At(l.to_string()))
        }
        Some(l) => Err(CrmError::Decode {
            what: "bulk query results",
            detail: format!(
                "`Sforce-Locator` `{}` is not a locator",
                crate::secret::excerpt(l.as_bytes())
            ),
        }),
    }
}

impl CsvPage {
    pub(crate) fn new(body: Vec<u8>) -> Result<CsvPage, CrmError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(std::io::Cursor::new(body));
        let columns = reader
            .headers()
            .map_err(bad_csv)?
            .iter()
            .map(|h| h.split('.').map(str::to_string).collect())
            .collect();
        Ok(CsvPage { reader, columns })
    }

    /// Up to `n` rows; none when the page is read.
    pub(crate) fn take(&mut self, n: usize) -> Result<Vec<Record>, CrmError> {
        let mut out = Vec::with_capacity(n.min(4096));
        let mut row = csv::StringRecord::new();
        while out.len() < n && self.reader.read_record(&mut row).map_err(bad_csv)? {
            let mut record = Map::new();
            for (path, cell) in self.columns.iter().zip(row.iter()) {
                let value = if cell.is_empty() {
                    Value::Null
                } else {
                    Value::String(cell.to_string())
                };
                insert(&mut record, path, value);
            }
            out.push(record);
        }
        Ok(out)
    }
}

/// Puts `value` at `path`, making the parents' maps on the way. CSV cannot tell a missing
/// parent from a parent whose field is null, so both read as a map holding a null, where
/// REST would show a null parent.
fn insert(record: &mut Record, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            record.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = record
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(child) = entry {
                insert(child, rest, value);
            }
        }
    }
}

fn bad_csv(e: csv::Error) -> CrmError {
    CrmError::Decode {
        what: "bulk query results",
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(body: &str) -> CsvPage {
        CsvPage::new(body.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn rows_come_as_records_with_nulls_and_parents() {
        let mut p = page("Id,Amount,Owner.Name,Note\n006A,12.5,Ana,\"a, \"\"b\"\"\"\n006B,,,\n");
        let rows = p.take(10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["Amount"], "12.5");
        assert_eq!(rows[0]["Owner"]["Name"], "Ana");
        assert_eq!(rows[0]["Note"], "a, \"b\"");
        assert_eq!(rows[1]["Amount"], Value::Null);
        assert!(p.take(10).unwrap().is_empty());
    }

    #[test]
    fn a_page_is_handed_out_in_batches() {
        let mut p = page("Id\n1\n2\n3\n");
        assert_eq!(p.take(2).unwrap().len(), 2);
        assert_eq!(p.take(2).unwrap().len(), 1);
        assert!(p.take(2).unwrap().is_empty());
    }

    #[test]
    fn a_ragged_row_is_an_error_not_a_short_record() {
        let mut p = page("Id,Amount\n006A\n");
        assert!(p.take(10).is_err());
    }

    #[test]
    fn locators() {
        assert!(matches!(next_locator(Some("null")), Ok(Locator::Done)));
        assert!(matches!(next_locator(None), Ok(Locator::Done)));
        assert!(matches!(next_locator(Some("MTAwMDA")), Ok(Locator::At(l)) if l == "MTAwMDA"));
        assert!(next_locator(Some("a b")).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes as a results page: no panic, never more rows than line ends.
            #[test]
            fn arbitrary_pages_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
                let line_ends = body.iter().filter(|b| matches!(b, b'\n' | b'\r')).count();
                if let Ok(mut p) = CsvPage::new(body)
                    && let Ok(rows) = p.take(1_000)
                {
                    prop_assert!(rows.len() <= line_ends);
                }
            }

            /// Values written as CSV by a CSV writer read back as the same text, in order.
            #[test]
            fn written_rows_read_back(values in prop::collection::vec("[a-zA-Z0-9 ,\"\r\né]{1,12}", 1..20)) {
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record(["Id", "Name"]).unwrap();
                for (i, v) in values.iter().enumerate() {
                    w.write_record([i.to_string().as_str(), v.as_str()]).unwrap();
                }
                let mut p = CsvPage::new(w.into_inner().unwrap()).unwrap();
                let rows = p.take(usize::MAX).unwrap();
                prop_assert_eq!(rows.len(), values.len());
                for (row, v) in rows.iter().zip(&values) {
                    prop_assert_eq!(row["Name"].as_str(), Some(v.as_str()));
                }
            }
        }
    }
}
