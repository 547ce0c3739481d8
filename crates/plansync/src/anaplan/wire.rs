//! The JSON the Anaplan APIs send back, written from the public reference (not shared with the
//! simulator, so a misspelt field cannot hide on both sides), and the pure functions that
//! turn a response body into these types or a typed error.
//!
//! Parsing is lenient where real tenants and clients differ (ids as strings or numbers, counts
//! as integers or floats, unknown fields ignored, empty collections whose key is dropped) and
//! strict where a wrong guess would lose data (a body that is not JSON, a missing key).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::secret::Secret;

use super::error::AnaplanError;
use crate::secret::excerpt;

/// `meta.paging` of a paged listing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paging {
    #[serde(default, deserialize_with = "opt_count")]
    pub current_page_size: Option<u64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub total_size: Option<u64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub paging: Option<Paging>,
}

/// An import, export, process or action of a model (bulk API), as its listing gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Imports only: the file (a 113… id) to upload before running the import.
    #[serde(default, deserialize_with = "opt_id")]
    pub import_data_source_id: Option<String>,
    /// Imports only: `MODULE_DATA`, `HIERARCHY_DATA`, ….
    #[serde(default)]
    pub import_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub active: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub active_state: Option<String>,
    #[serde(default)]
    pub current_workspace_id: Option<String>,
}

/// A module, list, view or other object known by id and name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Named {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "opt_id")]
    pub module_id: Option<String>,
    #[serde(default)]
    pub module_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListItem {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    pub parent_id: Option<String>,
    /// Present with `includeAll=true`; values as text.
    #[serde(default, deserialize_with = "text_map")]
    pub properties: BTreeMap<String, String>,
}

/// `metadata` of `GET /models/{m}/lists/{l}`: only what the client uses (the list's size).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMetadata {
    #[serde(default, deserialize_with = "opt_id")]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    /// Required: a guessed size could send a list over the read limit down the plain read.
    #[serde(deserialize_with = "count")]
    pub item_count: u64,
}

/// One per-cell or per-item failure as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireFailure {
    #[serde(deserialize_with = "count")]
    pub request_index: u64,
    #[serde(default)]
    pub failure_type: String,
    #[serde(default)]
    pub failure_message_details: String,
}

/// The answer to `POST /models/{m}/modules/{mod}/data`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CellWriteResponse {
    #[serde(default, deserialize_with = "opt_count")]
    pub number_of_cells_changed: Option<u64>,
    #[serde(default)]
    pub failures: Vec<WireFailure>,
}

/// The answer to list item add, update and delete.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListWriteResponse {
    #[serde(default, deserialize_with = "opt_count")]
    pub added: Option<u64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub updated: Option<u64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub ignored: Option<u64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub deleted: Option<u64>,
    /// One documented example nests the delete count here.
    #[serde(default)]
    pub result: Option<DeleteResult>,
    #[serde(default)]
    pub failures: Vec<WireFailure>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    #[serde(default, deserialize_with = "opt_count")]
    pub number_of_items_deleted: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    NotStarted,
    InProgress,
    Complete,
    Cancelling,
    Cancelled,
    /// A state this client does not know; treated as still running.
    Other(String),
}

impl TaskState {
    fn from_wire(s: &str) -> TaskState {
        match s {
            "NOT_STARTED" => TaskState::NotStarted,
            "IN_PROGRESS" => TaskState::InProgress,
            "COMPLETE" => TaskState::Complete,
            "CANCELLING" => TaskState::Cancelling,
            "CANCELLED" => TaskState::Cancelled,
            other => TaskState::Other(other.to_string()),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, TaskState::Complete | TaskState::Cancelled)
    }
}

impl<'de> Deserialize<'de> for TaskState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(TaskState::from_wire(&s))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(deserialize_with = "id")]
    pub task_id: String,
    pub task_state: TaskState,
    #[serde(default)]
    pub creation_time: Option<i64>,
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(default)]
    pub current_step: Option<String>,
    #[serde(default)]
    pub result: Option<TaskResult>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    #[serde(default)]
    pub successful: bool,
    #[serde(default)]
    pub failure_dump_available: bool,
    #[serde(default, deserialize_with = "opt_id")]
    pub object_id: Option<String>,
    #[serde(default)]
    pub object_name: Option<String>,
    #[serde(default)]
    pub details: Vec<TaskDetail>,
    #[serde(default)]
    pub nested_results: Vec<TaskResult>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDetail {
    #[serde(default)]
    pub local_message_text: Option<String>,
    #[serde(default)]
    pub occurrences: Option<i64>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "text_vec")]
    pub values: Vec<String>,
}

impl TaskDetail {
    /// A counter from `values`, which alternate key and value (`successRowCount`, `"90"`, …).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.values
            .chunks(2)
            .find(|pair| pair.first().map(String::as_str) == Some(key))
            .and_then(|pair| pair.get(1))
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub chunk_count: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Chunk {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// `tokenInfo` of the auth service. The token goes straight into a `Secret`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    #[serde(deserialize_with = "secret")]
    pub token_value: Secret,
    /// Epoch milliseconds.
    #[serde(default, deserialize_with = "opt_count")]
    pub expires_at: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub status_message: Option<String>,
    #[serde(default)]
    pub token_info: Option<TokenInfo>,
}

// ---------------------------------------------------------------------------------------------
// Parsing a body.

/// Parses a JSON body as `T`, or says precisely why it is not one.
pub fn parse_json<T: DeserializeOwned>(
    what: &'static str,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<T, AnaplanError> {
    let fail = |detail: String| decode_as(what, status, content_type, detail, excerpt(body));
    json_body(content_type, body)
        .map_err(|e| fail(e.map_or_else(|| "expected a JSON body".to_string(), |e| e.to_string())))
}

/// `body` as JSON, or why not: `None` for a content type that is not JSON (an HTML error
/// page from a proxy says 200 as often as not: checked before parsing), else serde's error.
fn json_body<T: DeserializeOwned>(
    content_type: &str,
    body: &[u8],
) -> Result<T, Option<serde_json::Error>> {
    if !content_type.is_empty() && !content_type.to_ascii_lowercase().contains("json") {
        return Err(None);
    }
    serde_json::from_slice(body).map_err(Some)
}

/// A page of a paged listing: the objects under `key` and the paging block.
pub fn parse_page<T: DeserializeOwned>(
    what: &'static str,
    key: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<(Vec<T>, Option<Paging>), AnaplanError> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        parse_json(what, status, content_type, body)?;
    let paging = match object.remove("meta") {
        Some(meta) => {
            serde_json::from_value::<Meta>(meta)
                .map_err(|e| decode(what, status, content_type, body, format!("meta: {e}")))?
                .paging
        }
        None => None,
    };
    let items = match object.remove(key) {
        // Empty collections drop their key.
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| decode(what, status, content_type, body, format!("{key}: {e}")))?,
    };
    Ok((items, paging))
}

/// `{"task":{…}}`.
pub fn parse_task(status: u16, content_type: &str, body: &[u8]) -> Result<Task, AnaplanError> {
    #[derive(Deserialize)]
    struct Envelope {
        task: Task,
    }
    parse_json::<Envelope>("task", status, content_type, body).map(|e| e.task)
}

/// `{"metadata":{…}}` of a list.
pub fn parse_list_metadata(
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<ListMetadata, AnaplanError> {
    #[derive(Deserialize)]
    struct Envelope {
        metadata: ListMetadata,
    }
    parse_json::<Envelope>("list metadata", status, content_type, body).map(|e| e.metadata)
}

/// The property names in `{"metadata":{"properties":[{"name":…},…]}}` of a list. Kept apart
/// from [`parse_list_metadata`] (and lenient: a property without a name is skipped) so that an
/// unexpected property shape can fail a preflight check, never a poll's item count.
pub fn parse_list_properties(
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<Vec<String>, AnaplanError> {
    #[derive(Deserialize)]
    struct Envelope {
        metadata: Properties,
    }
    #[derive(Deserialize)]
    struct Properties {
        #[serde(default)]
        properties: Vec<serde_json::Value>,
    }
    parse_json::<Envelope>("list metadata", status, content_type, body).map(|e| {
        e.metadata
            .properties
            .iter()
            .filter_map(|p| p.get("name").and_then(|n| n.as_str()).map(str::to_string))
            .collect()
    })
}

/// `{"file":{…}}`.
pub fn parse_file(status: u16, content_type: &str, body: &[u8]) -> Result<FileInfo, AnaplanError> {
    #[derive(Deserialize)]
    struct Envelope {
        file: FileInfo,
    }
    parse_json::<Envelope>("file", status, content_type, body).map(|e| e.file)
}

pub fn parse_cell_write(
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<CellWriteResponse, AnaplanError> {
    parse_json("cell write", status, content_type, body)
}

pub fn parse_list_write(
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<ListWriteResponse, AnaplanError> {
    parse_json("list item write", status, content_type, body)
}

pub fn parse_auth(status: u16, content_type: &str, body: &[u8]) -> Result<TokenInfo, AnaplanError> {
    // Unlike every other answer, no part of this body reaches the error, nor serde's message
    // (it quotes values): an answer that could not be read may still carry the token.
    let fail = |detail: String| {
        decode_as(
            "authentication",
            status,
            content_type,
            detail,
            "(not kept: it may carry the token)".to_string(),
        )
    };
    let r: AuthResponse = json_body(content_type, body).map_err(|e| {
        fail(e.map_or_else(
            || "expected a JSON body".to_string(),
            |e| crate::secret::json_error_shape(&e),
        ))
    })?;
    r.token_info.ok_or_else(|| {
        fail(format!(
            "no tokenInfo (status {:?}: {:?})",
            crate::secret::redact(&r.status.unwrap_or_default()),
            crate::secret::redact(&r.status_message.unwrap_or_default())
        ))
    })
}

fn decode(
    what: &'static str,
    status: u16,
    content_type: &str,
    body: &[u8],
    detail: String,
) -> AnaplanError {
    decode_as(what, status, content_type, detail, excerpt(body))
}

/// The one shape of an answer that could not be read, with what is kept of its body.
fn decode_as(
    what: &'static str,
    status: u16,
    content_type: &str,
    detail: String,
    body: String,
) -> AnaplanError {
    AnaplanError::Decode {
        what,
        status,
        content_type: if content_type.is_empty() {
            "(none)".to_string()
        } else {
            content_type.to_string()
        },
        detail,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Lenient field readers.

/// An id: a JSON string, or a number (some clients and old tenants send numeric ids).
fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected an id, found {other}"
        ))),
    }
}

pub(crate) fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "expected an id, found {other}"
        ))),
    }
}

/// A non-negative count: an integer, an integral float (the schema says `number`), or digits.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    opt_count(d)?.ok_or_else(|| serde::de::Error::custom("expected a count, found null"))
}

pub(crate) fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    let bad = || serde::de::Error::custom(format!("expected a count, found {v}"));
    match &v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else {
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Ok(Some(f as u64)),
                    _ => Err(bad()),
                }
            }
        }
        serde_json::Value::String(s) => s.trim().parse().map(Some).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Text of a scalar: strings as they are, numbers and booleans printed, null empty.
fn scalar_text(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => Some(String::new()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn text_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let values = Vec::<serde_json::Value>::deserialize(d)?;
    values
        .into_iter()
        .map(|v| {
            let shown = v.to_string();
            scalar_text(v)
                .ok_or_else(|| serde::de::Error::custom(format!("expected text, found {shown}")))
        })
        .collect()
}

fn text_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let values = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?;
    Ok(values
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => v.to_string(),
                scalar => scalar_text(scalar).unwrap_or_default(),
            };
            (k, text)
        })
        .collect())
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = "application/json";

    #[test]
    fn page_with_paging_and_numeric_ids() {
        let body = br#"{"meta":{"paging":{"currentPageSize":2,"totalSize":5,"offset":0},"schema":"x"},
            "status":{"code":200,"message":"Success"},
            "modules":[{"id":"102000000001","name":"Revenue"},{"id":102000000002,"name":"Costs","extra":1}]}"#;
        let (modules, paging) = parse_page::<Named>("modules", "modules", 200, JSON, body).unwrap();
        assert_eq!(modules.len(), 2);
        assert_eq!(modules[1].id, "102000000002");
        let p = paging.unwrap();
        assert_eq!(
            (p.current_page_size, p.total_size, p.offset),
            (Some(2), Some(5), Some(0))
        );
    }

    #[test]
    fn page_whose_empty_collection_dropped_its_key() {
        let body = br#"{"meta":{"paging":{"currentPageSize":0,"totalSize":0,"offset":0}},"status":{"code":200}}"#;
        let (lists, _) = parse_page::<Named>("lists", "lists", 200, JSON, body).unwrap();
        assert!(lists.is_empty());
    }

    #[test]
    fn cell_write_with_failures_and_float_counts() {
        let body = br#"{"meta":{},"status":{"code":200},"numberOfCellsChanged":2.0,
            "failures":[{"requestIndex":1,"failureType":"cellIsCalculated","failureMessageDetails":"calc"}]}"#;
        let r = parse_cell_write(200, JSON, body).unwrap();
        assert_eq!(r.number_of_cells_changed, Some(2));
        assert_eq!(r.failures[0].request_index, 1);
        assert_eq!(r.failures[0].failure_type, "cellIsCalculated");
        let r = parse_cell_write(200, JSON, br#"{"numberOfCellsChanged":3}"#).unwrap();
        assert!(r.failures.is_empty());
    }

    #[test]
    fn list_metadata_item_count_as_documented_and_lenient() {
        let body = br#"{"meta":{"schema":"x"},"status":{"code":200,"message":"Success"},
            "metadata":{"id":"101000000001","name":"Opportunities","properties":[],
            "hasSelectiveAccess":false,"parent":"","managedBy":"","numberedList":false,
            "useTopLevelAsPageDefault":false,"itemCount":1000005,"nextItemIndex":1000006,
            "workflowEnabled":false,"permittedItems":999999999,"usedInAppliesTo":"",
            "productionData":false}}"#;
        let m = parse_list_metadata(200, JSON, body).unwrap();
        assert_eq!(m.item_count, 1_000_005);
        assert_eq!(m.id.as_deref(), Some("101000000001"));
        let m = parse_list_metadata(200, JSON, br#"{"metadata":{"id":1,"itemCount":"7"}}"#);
        assert_eq!(m.unwrap().item_count, 7);
        let m = parse_list_metadata(200, JSON, br#"{"metadata":{"itemCount":3.0}}"#);
        assert_eq!(m.unwrap().item_count, 3);
        // Without a count the size is unknown: an error, never a guess of 0.
        assert!(parse_list_metadata(200, JSON, br#"{"metadata":{"id":"1"}}"#).is_err());
        assert!(parse_list_metadata(200, JSON, br#"{"metadata":{"itemCount":-1}}"#).is_err());
        assert!(parse_list_metadata(200, JSON, br#"{"lists":[]}"#).is_err());
        let props = parse_list_properties(
            200,
            JSON,
            br#"{"metadata":{"itemCount":2,"properties":[{"name":"Display Name","format":"TEXT"},{"format":"NUMBER"}]}}"#,
        )
        .unwrap();
        assert_eq!(props, ["Display Name"]);
        assert_eq!(
            parse_list_properties(200, JSON, br#"{"metadata":{"id":"1"}}"#).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn list_write_both_delete_shapes() {
        let r = parse_list_write(200, JSON, br#"{"deleted":4}"#).unwrap();
        assert_eq!(r.deleted, Some(4));
        let r = parse_list_write(200, JSON, br#"{"result":{"numberOfItemsDeleted":4}}"#).unwrap();
        assert_eq!(r.result.unwrap().number_of_items_deleted, Some(4));
        let r = parse_list_write(
            200,
            JSON,
            br#"{"added":1,"ignored":1,"total":2,"failures":[{"requestIndex":1,"failureType":"INCORRECT_FORMAT","failureMessageDetails":"bad"}]}"#,
        )
        .unwrap();
        assert_eq!((r.added, r.ignored, r.total), (Some(1), Some(1), Some(2)));
    }

    #[test]
    fn task_with_nested_results_and_detail_values() {
        let body = br#"{"task":{"type":"taskInformation","taskId":"1B1D84DDD53847BAA621810B593C3FC1",
            "taskState":"COMPLETE","creationTime":1571258347545,"progress":1.0,"currentStep":"Complete.",
            "result":{"successful":false,"failureDumpAvailable":true,"objectId":"112000000009",
              "details":[{"localMessageText":"x","occurrences":0,"type":"hierarchyRowsProcessed",
                "values":["successRowCount","90","failedCount","5"]}],
              "nestedResults":[{"successful":true,"failureDumpAvailable":false,"objectId":112000000010}]}}}"#;
        let t = parse_task(200, JSON, body).unwrap();
        assert_eq!(t.task_state, TaskState::Complete);
        let r = t.result.unwrap();
        assert!(r.failure_dump_available && !r.successful);
        assert_eq!(r.details[0].value("failedCount"), Some("5"));
        assert_eq!(r.details[0].value("nope"), None);
        assert_eq!(
            r.nested_results[0].object_id.as_deref(),
            Some("112000000010")
        );
        let t = parse_task(
            200,
            JSON,
            br#"{"task":{"taskId":"a","taskState":"PAUSED"}}"#,
        )
        .unwrap();
        assert_eq!(t.task_state, TaskState::Other("PAUSED".into()));
        assert!(!t.task_state.is_terminal());
    }

    #[test]
    fn auth_response_keeps_the_token_secret() {
        let body = br#"{"meta":{"validationUrl":"v"},"status":"SUCCESS","statusMessage":"Login successful",
            "tokenInfo":{"tokenId":"id","tokenValue":"SECRET-TOKEN","expiresAt":1700000000000,"refreshTokenId":"r"},"refreshToken":"new"}"#;
        let t = parse_auth(201, JSON, body).unwrap();
        assert_eq!(t.token_value.expose(), "SECRET-TOKEN");
        assert_eq!(t.expires_at, Some(1_700_000_000_000));
        assert!(!format!("{t:?}").contains("SECRET-TOKEN"));
        let err = parse_auth(200, JSON, br#"{"status":"FAILURE_BAD_CREDENTIAL"}"#).unwrap_err();
        assert!(err.to_string().contains("FAILURE_BAD_CREDENTIAL"), "{err}");
    }

    #[test]
    fn html_truncated_and_wrong_shapes_are_typed_errors() {
        let html = b"<html><body><h1>502 Bad Gateway</h1></body></html>";
        let err = parse_cell_write(200, "text/html; charset=utf-8", html).unwrap_err();
        match &err {
            AnaplanError::Decode {
                status,
                body,
                content_type,
                ..
            } => {
                assert_eq!(*status, 200);
                assert!(body.contains("502 Bad Gateway"));
                assert!(content_type.starts_with("text/html"));
            }
            other => panic!("{other:?}"),
        }
        let err = parse_task(200, JSON, br#"{"task":{"taskId":"a","taskSt"#).unwrap_err();
        assert!(matches!(err, AnaplanError::Decode { .. }));
        let err = parse_task(200, JSON, br#"{"tasks":[]}"#).unwrap_err();
        assert!(err.to_string().contains("task"), "{err}");
        let err =
            parse_cell_write(200, JSON, br#"{"failures":[{"requestIndex":-1}]}"#).unwrap_err();
        assert!(matches!(err, AnaplanError::Decode { .. }));
        assert!(parse_page::<Named>("m", "modules", 200, JSON, b"[1,2]").is_err());
        assert!(
            parse_page::<Named>("m", "modules", 200, JSON, br#"{"modules":{"id":1}}"#).is_err()
        );
    }
}
