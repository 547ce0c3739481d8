//! The CRM's JSON shapes as this client reads and writes them, written from the public REST
//! reference. The simulator has its own; sharing none keeps a wrong field name from hiding on
//! both sides.

use serde::{Deserialize, Serialize};

/// `POST /services/oauth2/token` success. Other fields (`id`, `signature`, `scope`, ...) vary
/// by flow and are not needed.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    pub instance_url: String,
    #[serde(default)]
    pub token_type: Option<String>,
}

/// `400 {"error":"invalid_grant","error_description":"…"}` from the token endpoint.
#[derive(Deserialize)]
pub(crate) struct TokenError {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_description: String,
}

/// One element of a REST error body: `[{"message","errorCode","fields"}]`.
#[derive(Deserialize)]
pub(crate) struct ApiErrorItem {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "errorCode", default)]
    pub error_code: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

/// One page of a SOQL query.
#[derive(Deserialize)]
pub(crate) struct QueryPage {
    #[serde(rename = "totalSize", default)]
    pub total_size: u64,
    pub done: bool,
    #[serde(rename = "nextRecordsUrl", default)]
    pub next_records_url: Option<String>,
    #[serde(default)]
    pub records: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// `PATCH composite/sobjects` body.
#[derive(Serialize)]
pub(crate) struct CollectionRequest<'a> {
    #[serde(rename = "allOrNone")]
    pub all_or_none: bool,
    pub records: Vec<CollectionRecord<'a>>,
}

#[derive(Serialize)]
pub(crate) struct CollectionRecord<'a> {
    pub attributes: TypeAttr<'a>,
    pub id: &'a str,
    #[serde(flatten)]
    pub fields: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
pub(crate) struct TypeAttr<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
}

/// One per-record result of a collections call, in request order.
#[derive(Deserialize)]
pub(crate) struct SaveResult {
    #[serde(default)]
    pub id: Option<String>,
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<SaveError>,
}

#[derive(Deserialize)]
pub(crate) struct SaveError {
    #[serde(rename = "statusCode", default)]
    pub status_code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

/// `POST jobs/ingest` body.
#[derive(Serialize)]
pub(crate) struct CreateJob<'a> {
    pub object: &'a str,
    pub operation: &'a str,
    #[serde(rename = "contentType")]
    pub content_type: &'a str,
    #[serde(rename = "lineEnding")]
    pub line_ending: &'a str,
}

/// A bulk ingest or query job as the CRM reports it.
#[derive(Deserialize)]
pub(crate) struct JobInfo {
    pub id: String,
    pub state: String,
    #[serde(rename = "contentUrl", default)]
    pub content_url: Option<String>,
    #[serde(rename = "errorMessage", default)]
    pub error_message: Option<String>,
    /// A query job's rows, once complete.
    #[serde(rename = "numberRecordsProcessed", default)]
    pub records_processed: Option<u64>,
}

/// `POST jobs/query` body.
#[derive(Serialize)]
pub(crate) struct CreateQueryJob<'a> {
    /// `query`, or `queryAll` for deleted and archived rows too.
    pub operation: &'a str,
    pub query: &'a str,
    #[serde(rename = "contentType")]
    pub content_type: &'a str,
    #[serde(rename = "columnDelimiter")]
    pub column_delimiter: &'a str,
    #[serde(rename = "lineEnding")]
    pub line_ending: &'a str,
}
