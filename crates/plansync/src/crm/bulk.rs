//! Bulk API 2.0 ingest for large update and delete batches: create a job (`operation:
//! update` or `delete`), upload
//! the CSV, mark it `UploadComplete`, poll its state, then read `successfulResults` and
//! `failedResults` back into one result per input record.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use reqwest::Method;

use crate::crm::client::CrmClient;
use crate::crm::error::{CrmError, RecordError};
use crate::crm::http::{Body, Call};
use crate::crm::stats::CallKind;
use crate::crm::wire::{CreateJob, JobInfo};
use crate::crm::write::{Operation, RecordResult, RecordUpdate};

/// How Bulk API 2.0 spells "set this field to null" in a CSV cell.
const CSV_NULL: &str = "#N/A";

impl CrmClient {
    /// Updates through one Bulk API 2.0 job per object type. Results are in input order; a
    /// row the job did not process, or a job that failed as a whole, fails its records.
    pub async fn bulk_update(&self, updates: &[RecordUpdate]) -> Vec<RecordResult> {
        self.bulk(updates, Operation::Update).await
    }

    /// `op` through one Bulk API 2.0 job per object type (a delete uploads the ids alone).
    pub(crate) async fn bulk(&self, updates: &[RecordUpdate], op: Operation) -> Vec<RecordResult> {
        let mut results: Vec<Option<RecordResult>> = vec![None; updates.len()];
        let mut by_object: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, u) in updates.iter().enumerate() {
            if u.id.is_empty() || u.object.is_empty() {
                results[i] = Some(Err(RecordError::new(
                    "INVALID_INPUT",
                    "a record update needs an object type and an id",
                )));
                continue;
            }
            match by_object.iter_mut().find(|(o, _)| *o == u.object) {
                Some((_, v)) => v.push(i),
                None => by_object.push((&u.object, vec![i])),
            }
        }
        for (object, indexes) in by_object {
            match self.bulk_job(object, updates, &indexes, op).await {
                Ok(per_record) => {
                    for (i, r) in indexes.iter().zip(per_record) {
                        results[*i] = Some(r);
                    }
                }
                Err(e) => {
                    let one = RecordError::from_call(&e);
                    for i in indexes {
                        results[i] = Some(Err(one.clone()));
                    }
                }
            }
        }
        let results: Vec<RecordResult> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(RecordError::new("NOT_ATTEMPTED", "not sent"))))
            .collect();
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.call_stats().records(ok, results.len() as u64 - ok);
        results
    }

    async fn bulk_job(
        &self,
        object: &str,
        updates: &[RecordUpdate],
        indexes: &[usize],
        op: Operation,
    ) -> Result<Vec<RecordResult>, CrmError> {
        let csv = to_csv(updates, indexes)?;
        let prefix = self.data_prefix();
        let create = serde_json::to_vec(&CreateJob {
            object,
            operation: op.name(),
            content_type: "CSV",
            line_ending: "LF",
        })
        .map_err(|e| CrmError::Decode {
            what: "bulk job creation",
            detail: e.to_string(),
        })?;
        let jobs = format!("{prefix}/jobs/ingest");
        let reply = self
            .send(&Call {
                method: Method::POST,
                path: &jobs,
                query: &[],
                body: Body::Json(create),
                kind: CallKind::BulkCreate,
                write: true,
                idempotent: false,
            })
            .await?;
        let job: JobInfo = decode(&reply.body, "bulk job creation")?;
        let job_path = job_path(&jobs, &job.id)?;
        let upload_path = upload_path(&job_path, job.content_url.as_deref());
        self.send(&Call {
            method: Method::PUT,
            path: &upload_path,
            query: &[],
            body: Body::Csv(csv),
            kind: CallKind::BulkUpload,
            write: true,
            idempotent: true,
        })
        .await?;
        self.send(&Call {
            method: Method::PATCH,
            path: &job_path,
            query: &[],
            body: Body::Json(br#"{"state":"UploadComplete"}"#.to_vec()),
            kind: CallKind::BulkClose,
            write: true,
            idempotent: true,
        })
        .await?;
        let state = self.wait_for_job(&job_path, &job.id).await?;
        let mut pending: HashMap<&str, VecDeque<usize>> = HashMap::new();
        for (pos, &i) in indexes.iter().enumerate() {
            pending
                .entry(updates[i].id.as_str())
                .or_default()
                .push_back(pos);
        }
        let mut out: Vec<Option<RecordResult>> = vec![None; indexes.len()];
        for (resource, success) in [("successfulResults", true), ("failedResults", false)] {
            let reply = self
                .send(&Call {
                    method: Method::GET,
                    path: &format!("{job_path}/{resource}/"),
                    query: &[],
                    body: Body::Empty,
                    kind: CallKind::BulkResults,
                    write: false,
                    idempotent: true,
                })
                .await?;
            for row in read_results(&reply.body, success)? {
                let Some(pos) = pending.get_mut(row.id.as_str()).and_then(|q| q.pop_front()) else {
                    continue;
                };
                out[pos] = Some(row.outcome);
            }
        }
        Ok(out
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(RecordError::new(
                        "NOT_PROCESSED",
                        format!("bulk job {} did not process this record", state.id),
                    ))
                })
            })
            .collect())
    }
}

impl CrmClient {
    /// Polls a Bulk API 2.0 job (ingest or query) at `job_path` until it is `JobComplete`.
    /// The first look comes soon and the wait doubles up to `bulk_poll_interval`: a small
    /// job is read as soon as it is done, a large one costs few state calls. A job that
    /// failed, was aborted or outlived `bulk_timeout` is an error (the last is aborted first,
    /// so it stops costing the org).
    pub(crate) async fn wait_for_job(
        &self,
        job_path: &str,
        job_id: &str,
    ) -> Result<JobInfo, CrmError> {
        let started = Instant::now();
        let mut wait = FIRST_JOB_LOOK.min(self.config().bulk_poll_interval);
        loop {
            tokio::time::sleep(wait).await;
            let reply = self
                .send(&Call {
                    method: Method::GET,
                    path: job_path,
                    query: &[],
                    body: Body::Empty,
                    kind: CallKind::BulkPoll,
                    write: false,
                    idempotent: true,
                })
                .await?;
            let info: JobInfo = decode(&reply.body, "bulk job state")?;
            match info.state.as_str() {
                "JobComplete" => return Ok(info),
                "Failed" | "Aborted" => {
                    return Err(CrmError::BulkJob {
                        job_id: job_id.to_string(),
                        state: info.state,
                        message: info.error_message.unwrap_or_default(),
                    });
                }
                _ if started.elapsed() >= self.config().bulk_timeout => {
                    let aborted = self
                        .send(&Call {
                            method: Method::PATCH,
                            path: job_path,
                            query: &[],
                            body: Body::Json(br#"{"state":"Aborted"}"#.to_vec()),
                            kind: CallKind::BulkClose,
                            write: false,
                            idempotent: true,
                        })
                        .await;
                    if let Err(e) = aborted {
                        tracing::warn!(event = "crm_bulk_abort_failed", job_id, error = %e, "a bulk job that took too long could not be aborted; it may still run in the org");
                    }
                    return Err(CrmError::BulkJob {
                        job_id: job_id.to_string(),
                        state: info.state,
                        message: "did not finish in time".into(),
                    });
                }
                _ => wait = (wait * 2).min(self.config().bulk_poll_interval),
            }
        }
    }
}

/// The first look at a new bulk job's state.
const FIRST_JOB_LOOK: std::time::Duration = std::time::Duration::from_millis(50);

/// The path of the job the CRM created. Its id goes into every later URL (with the bearer
/// token), so it must be an id (`750…`, letters and digits), not a path of its own.
pub(crate) fn job_path(jobs: &str, id: &str) -> Result<String, CrmError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CrmError::Decode {
            what: "bulk job creation",
            detail: format!(
                "job id `{}` is not an id",
                crate::secret::excerpt(id.as_bytes())
            ),
        });
    }
    Ok(format!("{jobs}/{id}"))
}

/// Where to upload a job's CSV. `contentUrl` is relative
/// (`services/data/v59.0/jobs/ingest/<id>/batches`); anything that is not a plain path under
/// `services/` on this instance (a query, a fragment, `..`) is ignored in favour of the
/// documented one.
pub(crate) fn upload_path(job_path: &str, content_url: Option<&str>) -> String {
    let plain = |u: &str| {
        u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
            && !u
                .split('/')
                .any(|segment| segment == ".." || segment == ".")
    };
    match content_url {
        Some(u) if u.starts_with("services/") && plain(u) => format!("/{u}"),
        Some(u) if u.starts_with("/services/") && plain(u) => u.to_string(),
        _ => format!("{job_path}/batches"),
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &'static str,
) -> Result<T, CrmError> {
    serde_json::from_slice(body).map_err(|e| CrmError::Decode {
        what,
        detail: e.to_string(),
    })
}

/// The upload: `Id` then every field any record sets, sorted; a field a record does not set
/// is left empty (Bulk API leaves it unchanged), JSON null becomes `#N/A` (set to null).
fn to_csv(updates: &[RecordUpdate], indexes: &[usize]) -> Result<Vec<u8>, CrmError> {
    let columns: BTreeSet<&str> = indexes
        .iter()
        .flat_map(|&i| updates[i].fields.keys().map(String::as_str))
        .filter(|f| !f.eq_ignore_ascii_case("id"))
        .collect();
    let csv_error = |e: csv::Error| CrmError::Decode {
        what: "bulk upload",
        detail: e.to_string(),
    };
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    writer
        .write_record(std::iter::once("Id").chain(columns.iter().copied()))
        .map_err(csv_error)?;
    for &i in indexes {
        let u = &updates[i];
        let mut row: Vec<String> = Vec::with_capacity(columns.len() + 1);
        row.push(u.id.clone());
        for column in &columns {
            row.push(match u.fields.get(*column) {
                None => String::new(),
                Some(serde_json::Value::Null) => CSV_NULL.to_string(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            });
        }
        writer.write_record(&row).map_err(csv_error)?;
    }
    writer.into_inner().map_err(|e| CrmError::Decode {
        what: "bulk upload",
        detail: e.to_string(),
    })
}

pub(crate) struct ResultRow {
    pub id: String,
    pub outcome: RecordResult,
}

/// Reads a result file: `sf__Id,sf__Created,…` (successful) or `sf__Id,sf__Error,…` (failed),
/// followed by the uploaded columns. Rows are matched on the uploaded `Id`, falling back to
/// `sf__Id`.
pub(crate) fn read_results(body: &[u8], success: bool) -> Result<Vec<ResultRow>, CrmError> {
    let bad = |detail: String| CrmError::Decode {
        what: "bulk results",
        detail,
    };
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(body);
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let find = |name: &str| headers.iter().position(|h| h == name);
    let id_col = find("Id").or_else(|| find("sf__Id"));
    let error_col = find("sf__Error");
    let Some(id_col) = id_col else {
        if headers.is_empty() || body.is_empty() {
            return Ok(Vec::new());
        }
        return Err(bad("no `Id` or `sf__Id` column".into()));
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let id = record.get(id_col).unwrap_or_default().to_string();
        let outcome = if success {
            Ok(record
                .get(find("sf__Id").unwrap_or(id_col))
                .unwrap_or(&id)
                .to_string())
        } else {
            let text = error_col.and_then(|c| record.get(c)).unwrap_or_default();
            // `REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --`
            let (code, message) = text.split_once(':').unwrap_or(("", text));
            let code = Some(code.trim())
                .filter(|c| !c.is_empty())
                .unwrap_or("UNKNOWN_ERROR");
            Err(RecordError::new(code, message.trim()))
        };
        rows.push(ResultRow { id, outcome });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_marks_nulls_and_leaves_unset_fields_empty() {
        let mut a = serde_json::Map::new();
        a.insert("Industry".into(), serde_json::json!("Energy"));
        a.insert("Amount".into(), serde_json::json!(12.5));
        let mut b = serde_json::Map::new();
        b.insert("Industry".into(), serde_json::Value::Null);
        b.insert("Name".into(), serde_json::json!("A, \"quoted\""));
        let updates = vec![
            RecordUpdate {
                object: "Account".into(),
                id: "001A".into(),
                fields: a,
            },
            RecordUpdate {
                object: "Account".into(),
                id: "001B".into(),
                fields: b,
            },
        ];
        let csv = String::from_utf8(to_csv(&updates, &[0, 1]).unwrap()).unwrap();
        assert_eq!(
            csv,
            "Id,Amount,Industry,Name\n001A,12.5,Energy,\n001B,,#N/A,\"A, \"\"quoted\"\"\"\n"
        );
    }

    #[test]
    fn result_files_map_to_ids() {
        let ok = read_results(
            b"sf__Id,sf__Created,Id,Industry\n001A,false,001A,Energy\n",
            true,
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].id, "001A");
        assert_eq!(ok[0].outcome, Ok("001A".to_string()));
        let failed = read_results(
            b"\"sf__Id\",\"sf__Error\",Id,Industry\n,INVALID_FIELD:No such field: [Foo]:Foo --,001B,x\n",
            false,
        )
        .unwrap();
        assert_eq!(failed[0].id, "001B");
        let e = failed[0].outcome.clone().unwrap_err();
        assert_eq!(e.status_code, "INVALID_FIELD");
        assert!(read_results(b"", true).unwrap().is_empty());
        assert!(read_results(b"a,b\n1,2\n", true).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// What we upload, answered as a result file the way Bulk API 2.0 does (its columns
            /// first, then ours), reads back one row per record with the record's id, whatever
            /// commas, quotes and line breaks the values hold.
            #[test]
            fn result_files_of_our_uploads_round_trip(
                values in prop::collection::vec("[a-zA-Z0-9 ,\"\r\n:é]{0,16}", 1..8),
                success in any::<bool>(),
            ) {
                let updates: Vec<RecordUpdate> = values
                    .iter()
                    .enumerate()
                    .map(|(n, v)| RecordUpdate {
                        object: "Account".into(),
                        id: format!("001{n:015}"),
                        fields: [("Name".to_string(), serde_json::json!(v))].into_iter().collect(),
                    })
                    .collect();
                let indexes: Vec<usize> = (0..updates.len()).collect();
                let upload = to_csv(&updates, &indexes).unwrap();
                let mut reader = csv::ReaderBuilder::new().from_reader(&upload[..]);
                let mut writer = csv::Writer::from_writer(Vec::new());
                let ours: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
                let theirs = if success { ["sf__Id", "sf__Created"] } else { ["sf__Id", "sf__Error"] };
                writer.write_record(theirs.iter().copied().chain(ours.iter().map(String::as_str))).unwrap();
                for record in reader.records() {
                    let record = record.unwrap();
                    let first = if success { record[0].to_string() } else { String::new() };
                    let second = if success { "false" } else { "INVALID_FIELD:bad, \"really\":Name --" };
                    writer
                        .write_record([first.as_str(), second].into_iter().chain(record.iter()))
                        .unwrap();
                }
                let answer = writer.into_inner().unwrap();
                let rows = read_results(&answer, success).unwrap();
                prop_assert_eq!(rows.len(), updates.len());
                for (row, update) in rows.iter().zip(&updates) {
                    prop_assert_eq!(&row.id, &update.id);
                    match &row.outcome {
                        Ok(id) => prop_assert_eq!(id, &update.id),
                        Err(e) => {
                            prop_assert!(!success);
                            prop_assert_eq!(e.status_code.as_str(), "INVALID_FIELD");
                        }
                    }
                }
            }

            /// Any bytes as a result file: no panic, never more rows than line ends.
            #[test]
            fn arbitrary_result_files_never_panic(body in prop::collection::vec(any::<u8>(), 0..200), success in any::<bool>()) {
                if let Ok(rows) = read_results(&body, success) {
                    let line_ends = body.iter().filter(|b| matches!(b, b'\n' | b'\r')).count();
                    prop_assert!(rows.len() <= line_ends);
                }
            }
        }
    }
}
