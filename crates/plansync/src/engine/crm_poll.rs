//! The CRM watermark poller: catches every change the CDC stream missed by reading the
//! pairing's object ordered by `(SystemModstamp, Id)` from a stored cursor.
//!
//! Why a cursor *and* a lookback *and* a dedupe set:
//! - The query filters on `SystemModstamp >=` (never `>`) and orders by `(SystemModstamp, Id)`,
//!   so records that share the watermark's millisecond but sort after it are read, never
//!   skipped. The watermark's Id records where a poll stopped; it is not part of the filter,
//!   because SOQL orders Ids by its own text collation and a tie-break computed here could
//!   disagree with it.
//! - `SystemModstamp` is stamped when a transaction writes, but the row becomes visible when it
//!   commits; a long transaction can therefore surface a record *older* than a watermark we
//!   already passed. Each poll re-reads `lookback` before the cursor to catch those.
//! - Re-reading would report the same records again, so the pairs `(Id, SystemModstamp)`
//!   already reported inside the lookback window are kept in [`RecentSeen`] and skipped,
//!   with a fingerprint of what was reported: `SystemModstamp` has millisecond resolution, so
//!   a record changed twice within one millisecond (a delete and its undelete, two quick
//!   edits) shows a new state under a stamp already reported, and is reported again.
//!
//! Deletes: the poll uses `queryAll` and selects `IsDeleted`, so a deletion the stream missed
//! still reaches the engine as [`ChangeKind::Delete`]; what a deletion means (flag the item,
//! delete it, ignore it) is the pairing's lifecycle rule, decided downstream, not here. The
//! initial read (no cursor) asks for live records only: a record deleted before plansync ever
//! saw it has nothing to propagate.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value as Json;

use crate::crm::{BulkQueryPager, CrmClient, CrmError, QueryPager, Record};
use crate::model::{Change, ChangeKind, FieldChange, Position, RecordKey, Side, Source};
use crate::rules::Pairing;

/// Why a poll failed as a whole. Bad individual records are not errors: they are listed in
/// [`PollOutcome::problems`].
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The CRM refused or failed the query (after the client's own retries and re-auth).
    #[error("CRM poll of {object}: {source}")]
    Crm {
        object: String,
        #[source]
        source: CrmError,
    },
    /// The stored checkpoint is not a CRM watermark (a replay id was stored by mistake).
    #[error("the poll cursor must be a CRM watermark, found {0:?}")]
    NotAWatermark(Position),
}

impl PollError {
    /// Whether another attempt cannot succeed until a person fixes something.
    pub fn is_permanent(&self) -> bool {
        match self {
            PollError::Crm { source, .. } => source.is_permanent(),
            PollError::NotAWatermark(_) => true,
        }
    }
}

/// The `(Id, SystemModstamp)` pairs already reported inside the lookback window.
///
/// Kept in memory only: after a restart it is empty, so the first poll after a restart may
/// report again records inside the lookback window that were reported before the crash. The
/// engine tolerates that: a reported value equal to the stored base is a no-op, so a repeat
/// costs a comparison, never a write. Memory is bounded by the number of records changed within
/// one lookback window (plus, after the initial read, the records sharing its last moments).
#[derive(Debug, Default, Clone)]
pub struct RecentSeen {
    /// Record id → the newest `SystemModstamp` reported for it, and the fingerprint of what
    /// was reported then ([`fingerprint`]). One entry per record: a newer stamp replaces the
    /// older, which can never be returned again.
    by_id: HashMap<String, (DateTime<Utc>, u64)>,
    /// Off for a one-off full read (the first run's): one paged query returns each record
    /// once, and keeping a million ids would only cost memory.
    off: bool,
}

impl RecentSeen {
    pub fn new() -> Self {
        RecentSeen::default()
    }

    /// A set that remembers nothing: every row is reported.
    pub fn off() -> Self {
        RecentSeen {
            off: true,
            ..RecentSeen::default()
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Forgets everything, as a restart does.
    pub fn clear(&mut self) {
        self.by_id.clear();
    }

    /// True when this record was already reported at a later stamp, or at this stamp with
    /// the same content.
    pub fn contains(&self, id: &str, at: DateTime<Utc>, content: u64) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|&(seen, fp)| seen > at || (seen == at && fp == content))
    }

    fn insert(&mut self, id: &str, at: DateTime<Utc>, content: u64) {
        if self.off {
            return;
        }
        match self.by_id.get_mut(id) {
            Some(seen) if seen.0 > at => {}
            Some(seen) => *seen = (at, content),
            None => {
                self.by_id.insert(id.to_string(), (at, content));
            }
        }
    }

    /// Drops pairs older than `bound`: the next query starts at `bound`, so they cannot come
    /// back.
    fn prune_before(&mut self, bound: DateTime<Utc>) {
        self.by_id.retain(|_, (at, _)| *at >= bound);
    }
}

/// The result of one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct PollOutcome {
    /// One change per record not reported before, in `(SystemModstamp, Id)` order.
    pub changes: Vec<Change>,
    /// The new watermark: the last record read at the greatest `SystemModstamp` (the Id breaks
    /// ties in the server's order), or the old cursor when the poll read nothing newer. Store it in the same transaction as what the changes caused.
    pub cursor: Option<Position>,
    /// Rows read, repeats inside the lookback included.
    pub records: usize,
    /// Query calls made (first page + one per `nextRecordsUrl`; auth and retries excluded;
    /// after a switch to Bulk API 2.0, one per batch of rows handed out).
    pub calls: usize,
    /// Rows that could not be turned into a change (no `Id`, no or bad `SystemModstamp`).
    pub problems: Vec<String>,
}

/// One page's worth of a poll: its new changes and the watermark after it.
#[derive(Debug, Clone, PartialEq)]
pub struct PollBatch {
    pub changes: Vec<Change>,
    /// The furthest `(SystemModstamp, Id)` read so far in this poll (or the starting cursor).
    /// `None` for the batches of a Bulk API 2.0 read but its last: its rows are unordered, so
    /// a point reached means nothing until every row is read.
    pub cursor: Option<Position>,
    pub records: usize,
    pub problems: Vec<String>,
}

/// A poll read one page at a time, so the engine can store each page's changes with the
/// watermark after it and memory stays bounded by the page size.
///
/// A full read (no cursor) of more records than the client's `bulk_query_above` switches to a
/// Bulk API 2.0 query after REST's first page has said how many there are (that page is
/// dropped: the job returns every row, and reading a row twice would only cost). Its rows
/// come unordered, which the watermark tolerates: it is the greatest stamp read, whatever the
/// order, and a full read is stored as done only once every row is read. A query job the org
/// refuses (no Bulk API 2.0 query jobs left today, no permission, a job that failed) sends
/// the read back to REST pages from the start, with a WARN: slower, never less.
pub struct CrmPoll<'a> {
    reader: Reader,
    /// The REST query, to start again from if the switch to Bulk API 2.0 is refused.
    soql: String,
    /// The unordered query a switch to Bulk API 2.0 would run; `None`: stay on REST.
    bulk: Option<(String, u64)>,
    client: CrmClient,
    /// `totalSize` of REST's first page, kept after a switch.
    probed: Option<u64>,
    pairing: &'a Pairing,
    seen: &'a mut RecentSeen,
    /// Where the next query will start: pairs older than this are pruned at the end.
    cursor: Option<(DateTime<Utc>, String)>,
    lookback: TimeDelta,
    calls: usize,
    finished: bool,
}

enum Reader {
    Rest(QueryPager),
    /// Boxed: it holds a page of CSV and a reader, and a poll is mostly REST.
    Bulk(Box<BulkQueryPager>),
}

/// The SOQL of a poll: the pairing's mapped and extra fields, from `since - lookback`, in
/// cursor order. `since = None` is the initial read of every live record.
pub fn poll_soql(pairing: &Pairing, since: Option<DateTime<Utc>>, lookback: Duration) -> String {
    format!(
        "{} ORDER BY SystemModstamp, Id",
        unordered_soql(pairing, since, lookback)
    )
}

/// [`poll_soql`] without its `ORDER BY`, for Bulk API 2.0 (which does not support one).
fn unordered_soql(pairing: &Pairing, since: Option<DateTime<Utc>>, lookback: Duration) -> String {
    let mut fields: Vec<&str> = vec!["Id", "SystemModstamp", "IsDeleted"];
    let mapped = pairing.fields.iter().map(|f| f.crm.as_str());
    for f in mapped.chain(pairing.extra_crm_fields.iter().map(String::as_str)) {
        if !fields.iter().any(|have| have.eq_ignore_ascii_case(f)) {
            fields.push(f);
        }
    }
    let filter = match since {
        None => "IsDeleted = false".to_string(),
        Some(at) => format!(
            "SystemModstamp >= {}",
            soql_datetime(at - to_delta(lookback))
        ),
    };
    format!(
        "SELECT {} FROM {} WHERE {filter}",
        fields.join(", "),
        pairing.crm_object
    )
}

/// Whether a failed Bulk API 2.0 query is worth reading through REST instead: the org
/// refused or failed the job itself. Not a fault that passes (the caller retries), and not
/// one REST would meet too (credentials, configuration, the day's API calls).
fn bulk_refused(e: &CrmError) -> bool {
    !e.is_transient()
        && !matches!(
            e,
            CrmError::Auth { .. } | CrmError::Config(_) | CrmError::RequestLimit { .. }
        )
}

/// Rows handed to the engine at a time from a Bulk API 2.0 results page, as REST's pages.
const BULK_BATCH: usize = 2_000;

/// `2026-11-23T10:00:00.000Z`: a SOQL datetime literal (unquoted).
fn soql_datetime(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn to_delta(d: Duration) -> TimeDelta {
    // Longer than chrono can hold means "from the beginning"; a century is plenty.
    TimeDelta::from_std(d).unwrap_or(TimeDelta::days(36_500))
}

/// Reads `SystemModstamp` as REST prints it (`2026-11-23T10:00:00.000+0000`) or as RFC 3339.
fn parse_modstamp(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"]
        .iter()
        .find_map(|fmt| DateTime::parse_from_str(raw, fmt).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn watermark(since: Option<&Position>) -> Result<Option<(DateTime<Utc>, String)>, PollError> {
    match since {
        None => Ok(None),
        Some(Position::Watermark { at, id }) => Ok(Some((*at, id.clone()))),
        Some(other) => Err(PollError::NotAWatermark(other.clone())),
    }
}

impl<'a> CrmPoll<'a> {
    /// Starts a poll; nothing is sent until the first [`CrmPoll::next_batch`].
    pub fn start(
        client: &CrmClient,
        pairing: &'a Pairing,
        since: Option<&Position>,
        lookback: Duration,
        seen: &'a mut RecentSeen,
    ) -> Result<CrmPoll<'a>, PollError> {
        let cursor = watermark(since)?;
        let since_at = cursor.as_ref().map(|(at, _)| *at);
        let soql = poll_soql(pairing, since_at, lookback);
        let above = client.config().bulk_query_above;
        let bulk = (since_at.is_none() && above > 0)
            .then(|| (unordered_soql(pairing, None, lookback), above));
        Ok(CrmPoll {
            reader: Reader::Rest(client.query_pages(&soql, true)),
            soql,
            bulk,
            client: client.clone(),
            probed: None,
            pairing,
            seen,
            cursor,
            lookback: to_delta(lookback),
            calls: 0,
            finished: false,
        })
    }

    /// Query calls made so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// How many records the query matches, once its first page is read.
    pub fn total(&self) -> Option<u64> {
        match &self.reader {
            Reader::Rest(pager) => pager.total_size(),
            Reader::Bulk(pager) => pager.total_size().or(self.probed),
        }
    }

    /// Whether the read went through a Bulk API 2.0 query job.
    pub fn through_bulk(&self) -> bool {
        matches!(self.reader, Reader::Bulk(_))
    }

    /// The next rows from whichever API reads them, switching to Bulk API 2.0 after REST's
    /// first page when that page says the read is large.
    async fn next_rows(&mut self) -> Result<Option<Vec<Record>>, CrmError> {
        let rest = match &mut self.reader {
            Reader::Bulk(pager) => return pager.next_page().await,
            Reader::Rest(pager) => pager.next_page().await?,
        };
        let total = self.total();
        match self.bulk.take() {
            Some((soql, above)) if total.is_some_and(|t| t > above) => {
                tracing::info!(target: "plansync::engine", event = "crm_bulk_query", object = %self.pairing.crm_object, records = total, above, "a full CRM read this large goes through a Bulk API 2.0 query job");
                self.probed = total;
                let mut pager = Box::new(self.client.bulk_query_pages(&soql, false, BULK_BATCH));
                match pager.next_page().await {
                    Ok(rows) => {
                        self.reader = Reader::Bulk(pager);
                        Ok(rows)
                    }
                    Err(e) if bulk_refused(&e) => {
                        tracing::warn!(target: "plansync::engine", event = "crm_bulk_query_refused", object = %self.pairing.crm_object, error = %e, "the CRM refused the Bulk API 2.0 query job; the read goes on through REST pages, from the start");
                        let mut rest = self.client.query_pages(&self.soql, true);
                        let rows = rest.next_page().await;
                        self.reader = Reader::Rest(rest);
                        rows
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Ok(rest),
        }
    }

    fn position(&self) -> Option<Position> {
        self.cursor.as_ref().map(|(at, id)| Position::Watermark {
            at: *at,
            id: id.clone(),
        })
    }

    /// The next page's new changes, or `None` once the query is exhausted (the dedupe set is
    /// pruned then).
    pub async fn next_batch(&mut self) -> Result<Option<PollBatch>, PollError> {
        if self.finished {
            return Ok(None);
        }
        let page = self.next_rows().await.map_err(|source| PollError::Crm {
            object: self.pairing.crm_object.clone(),
            source,
        })?;
        let Some(rows) = page else {
            self.finished = true;
            if let Some((at, _)) = &self.cursor {
                self.seen.prune_before(*at - self.lookback);
            }
            // Unordered rows give a watermark only once all are read: here, in a last batch
            // of no rows.
            if self.through_bulk() {
                return Ok(Some(PollBatch {
                    changes: Vec::new(),
                    cursor: self.position(),
                    records: 0,
                    problems: Vec::new(),
                }));
            }
            return Ok(None);
        };
        self.calls += 1;
        let mut batch = PollBatch {
            changes: Vec::new(),
            cursor: None,
            records: rows.len(),
            problems: Vec::new(),
        };
        for row in &rows {
            match to_change(self.pairing, self.seen, &mut self.cursor, row) {
                Ok(Some(change)) => batch.changes.push(change),
                Ok(None) => {}
                Err(problem) => batch.problems.push(problem),
            }
        }
        if !self.through_bulk() {
            batch.cursor = self.position();
        }
        Ok(Some(batch))
    }
}

/// What a poll reports of a record, as one number: equal rows give equal numbers (within one
/// process: `RecentSeen` is never stored).
fn fingerprint(deleted: bool, fields: &[FieldChange]) -> u64 {
    let mut h = DefaultHasher::new();
    deleted.hash(&mut h);
    for f in fields {
        f.field.hash(&mut h);
        hash_json(&f.value, &mut h);
    }
    h.finish()
}

/// `serde_json::Value` has no `Hash`; its parts do.
fn hash_json(value: &Json, h: &mut DefaultHasher) {
    match value {
        Json::Null => 0u8.hash(h),
        Json::Bool(b) => (1u8, b).hash(h),
        Json::Number(n) => (2u8, n.to_string()).hash(h),
        Json::String(t) => (3u8, t).hash(h),
        Json::Array(items) => {
            (4u8, items.len()).hash(h);
            items.iter().for_each(|v| hash_json(v, h));
        }
        Json::Object(map) => {
            (5u8, map.len()).hash(h);
            for (k, v) in map {
                k.hash(h);
                hash_json(v, h);
            }
        }
    }
}

/// One row as a change: moves `cursor` to it if it is later, `Ok(None)` when `seen` says it
/// was already reported, `Err` (a problem to report) when it has no usable `Id` or stamp.
fn to_change(
    pairing: &Pairing,
    seen: &mut RecentSeen,
    cursor: &mut Option<(DateTime<Utc>, String)>,
    row: &Record,
) -> Result<Option<Change>, String> {
    let object = &pairing.crm_object;
    let id = match row.get("Id") {
        Some(Json::String(id)) if !id.is_empty() => id.as_str(),
        _ => return Err(format!("{object} row without an Id: skipped")),
    };
    let at = match row.get("SystemModstamp") {
        Some(Json::String(raw)) => parse_modstamp(raw)
            .ok_or_else(|| format!("{object} {id}: unreadable SystemModstamp `{raw}`"))?,
        _ => return Err(format!("{object} {id}: no SystemModstamp: skipped")),
    };
    // Rows come in the server's `(SystemModstamp, Id)` order, so the last row at the greatest
    // stamp is the furthest point read. Ids are never compared here: SOQL sorts text its own
    // way (case-insensitively), and correctness rests on `>=` plus the dedupe, not on where
    // an Id falls.
    if cursor.as_ref().is_none_or(|(c_at, _)| at >= *c_at) {
        *cursor = Some((at, id.to_string()));
    }
    // JSON from REST, text from a Bulk API 2.0 CSV.
    let deleted = match row.get("IsDeleted") {
        Some(Json::Bool(b)) => *b,
        Some(Json::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    let fields = if deleted {
        // Like a CDC delete event: the record is gone, its last values are not news.
        Vec::new()
    } else {
        pairing
            .fields
            .iter()
            .map(|f| f.crm.as_str())
            .chain(pairing.extra_crm_fields.iter().map(String::as_str))
            .filter_map(|name| {
                row.get(name).map(|value| FieldChange {
                    field: name.to_string(),
                    value: value.clone(),
                })
            })
            .collect()
    };
    // A one-off full read remembers nothing: no fingerprint to compute.
    let content = if seen.off {
        0
    } else {
        fingerprint(deleted, &fields)
    };
    if seen.contains(id, at, content) {
        return Ok(None);
    }
    seen.insert(id, at, content);
    Ok(Some(Change {
        side: Side::Crm,
        record: RecordKey {
            pairing: pairing.name.clone(),
            crm_id: id.to_string(),
        },
        // A poll sees only the current state: a create and an update look the same (the
        // engine's record map tells them apart), and so does an undelete.
        kind: if deleted {
            ChangeKind::Delete
        } else {
            ChangeKind::Update
        },
        fields,
        committed_at: at,
        source: Source::Poll,
        // A query does not say who wrote; the echo check compares values instead.
        ours: false,
        position: Position::Watermark {
            at,
            id: id.to_string(),
        },
    }))
}

/// Polls `pairing`'s object once from `since` (the initial read of every live record when
/// `None`), re-reading `lookback` before it and skipping what `seen` says was already
/// reported. Pages are processed one at a time; the returned changes are those of every page.
/// See [`CrmPoll`] to store page by page instead.
pub async fn poll_once(
    client: &CrmClient,
    pairing: &Pairing,
    since: Option<&Position>,
    lookback: Duration,
    seen: &mut RecentSeen,
) -> Result<PollOutcome, PollError> {
    let mut poll = CrmPoll::start(client, pairing, since, lookback, seen)?;
    let mut outcome = PollOutcome {
        changes: Vec::new(),
        cursor: since.cloned(),
        records: 0,
        calls: 0,
        problems: Vec::new(),
    };
    while let Some(batch) = poll.next_batch().await? {
        outcome.changes.extend(batch.changes);
        outcome.records += batch.records;
        outcome.problems.extend(batch.problems);
        if batch.cursor.is_some() {
            outcome.cursor = batch.cursor;
        }
    }
    outcome.calls = poll.calls();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn modstamps_parse_in_rest_and_rfc3339_forms() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .single()
            .map(|t| t + TimeDelta::milliseconds(123));
        assert_eq!(parse_modstamp("2026-11-23T10:00:00.123+0000"), t);
        assert_eq!(parse_modstamp("2026-11-23T10:00:00.123Z"), t);
        assert_eq!(parse_modstamp("yesterday"), None);
        assert_eq!(
            t.map(soql_datetime).as_deref(),
            Some("2026-11-23T10:00:00.123Z")
        );
    }

    #[test]
    fn seen_pairs_are_pruned_behind_the_window() {
        let t0 = Utc
            .timestamp_millis_opt(1_000_000)
            .single()
            .unwrap_or_default();
        let mut seen = RecentSeen::new();
        seen.insert("a", t0, 7);
        seen.insert("b", t0 + TimeDelta::seconds(10), 7);
        assert!(seen.contains("a", t0, 7));
        assert!(!seen.contains("a", t0 + TimeDelta::milliseconds(1), 7));
        seen.prune_before(t0 + TimeDelta::seconds(1));
        assert!(!seen.contains("a", t0, 7));
        assert!(seen.contains("b", t0 + TimeDelta::seconds(10), 7));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn a_set_that_is_off_remembers_nothing() {
        let t0 = Utc
            .timestamp_millis_opt(1_000_000)
            .single()
            .unwrap_or_default();
        let mut seen = RecentSeen::off();
        seen.insert("a", t0, 7);
        assert!(!seen.contains("a", t0, 7));
        assert!(seen.is_empty());
    }

    fn opportunity() -> Pairing {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("rules/opportunity.toml");
        crate::rules::load_file(&path).expect("the example rule file compiles")
    }

    fn row(v: Json) -> Record {
        match v {
            Json::Object(m) => m,
            _ => Record::new(),
        }
    }

    /// `SystemModstamp` has millisecond resolution: a re-read of the same row is skipped, but
    /// a record that changed again within the millisecond it was reported at is reported.
    #[test]
    fn a_new_state_under_a_stamp_already_reported_is_reported_again() {
        let pairing = opportunity();
        let mut seen = RecentSeen::new();
        let mut cursor = None;
        let at = "2026-11-23T10:00:00.000+0000";
        let deal = |deleted: bool, amount: f64, stamp: &str| {
            row(serde_json::json!({
                "Id": "006D", "SystemModstamp": stamp, "IsDeleted": deleted,
                "Name": "Deal", "Amount": amount
            }))
        };
        let mut reported =
            |r: &Record| to_change(&pairing, &mut seen, &mut cursor, r).expect("a good row");
        let first = reported(&deal(false, 10.5, at)).expect("new");
        assert_eq!(first.kind, ChangeKind::Update);
        assert!(
            reported(&deal(false, 10.5, at)).is_none(),
            "the same row again"
        );
        let gone = reported(&deal(true, 10.5, at)).expect("deleted within the millisecond");
        assert_eq!(gone.kind, ChangeKind::Delete);
        let back = reported(&deal(false, 10.5, at)).expect("undeleted within it too");
        assert_eq!(back.kind, ChangeKind::Update);
        let edited = reported(&deal(false, 11.0, at)).expect("edited within it");
        assert!(
            edited
                .fields
                .iter()
                .any(|f| f.value == serde_json::json!(11.0))
        );
        let later = "2026-11-23T10:00:00.001+0000";
        assert!(reported(&deal(false, 12.0, later)).is_some());
        assert!(
            reported(&deal(false, 11.0, at)).is_none(),
            "an older stamp never comes back"
        );
    }

    #[test]
    fn rows_without_id_or_readable_stamp_are_problems_not_changes() {
        let pairing = opportunity();
        let mut seen = RecentSeen::new();
        let mut cursor = None;
        let bad = [
            serde_json::json!({"SystemModstamp": "2026-11-23T10:00:00.000+0000", "Name": "x"}),
            serde_json::json!({"Id": "", "SystemModstamp": "2026-11-23T10:00:00.000+0000"}),
            serde_json::json!({"Id": "006A", "Name": "no stamp"}),
            serde_json::json!({"Id": "006B", "SystemModstamp": "last tuesday"}),
            serde_json::json!({"Id": "006C", "SystemModstamp": 12}),
        ];
        for r in bad {
            let problem = to_change(&pairing, &mut seen, &mut cursor, &row(r.clone()));
            assert!(problem.is_err(), "{r} should be a problem");
        }
        assert!(cursor.is_none() && seen.is_empty());

        let good = row(serde_json::json!({
            "Id": "006D", "SystemModstamp": "2026-11-23T10:00:00.000+0000",
            "IsDeleted": false, "Name": "Deal", "Amount": 10.5, "Unmapped__c": "x"
        }));
        let change = to_change(&pairing, &mut seen, &mut cursor, &good)
            .expect("a good row")
            .expect("not seen before");
        assert_eq!(change.kind, ChangeKind::Update);
        let names: Vec<_> = change.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            names,
            ["Name", "Amount"],
            "mapped fields present in the row, only"
        );
        assert_eq!(
            to_change(&pairing, &mut seen, &mut cursor, &good),
            Ok(None),
            "the same (Id, SystemModstamp) is reported once"
        );
    }

    #[test]
    fn soql_selects_mapped_and_extra_fields_from_the_lookback() {
        let mut pairing = opportunity();
        pairing.extra_crm_fields.push("AccountId".into());
        let at = Utc
            .timestamp_millis_opt(1_795_000_000_123)
            .single()
            .unwrap_or_default();
        let soql = poll_soql(&pairing, Some(at), Duration::from_secs(60));
        assert_eq!(
            soql,
            format!(
                "SELECT Id, SystemModstamp, IsDeleted, Name, Amount, StageName, CloseDate, \
                 Forecast_Override__c, Probability, AccountId FROM Opportunity \
                 WHERE SystemModstamp >= {} ORDER BY SystemModstamp, Id",
                soql_datetime(at - TimeDelta::seconds(60))
            )
        );
        assert!(
            poll_soql(&pairing, None, Duration::ZERO).contains("WHERE IsDeleted = false ORDER BY")
        );
    }
}
