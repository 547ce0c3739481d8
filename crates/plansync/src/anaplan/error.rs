//! The one error type of the Anaplan client.
//!
//! Every failure says what was being done and carries what a person needs to act on it: the
//! HTTP status and the first part of the body (bounded, so an HTML error page or a huge dump
//! never floods a log). Nothing here holds a secret: bodies are kept only as
//! [`crate::secret::excerpt`]s (token-shaped values blanked), and an authentication answer
//! that could not be read keeps no body at all (it may carry the token).

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AnaplanError {
    /// The configuration cannot work (bad URL, impossible limits).
    #[error("Anaplan client configuration: {0}")]
    Config(String),

    /// The configured API base names the retired 1/3 API.
    #[error(
        "the Anaplan API base {url} is the retired 1/3 API; use the 2/0 API instead (for example https://api.anaplan.com/2/0)"
    )]
    LegacyApi { url: String },

    /// The certificate or private key for certificate authentication cannot be used.
    #[error("Anaplan certificate authentication: {0}")]
    Credentials(String),

    /// The auth service refused to issue or refresh a token.
    #[error("Anaplan authentication failed with HTTP {status}: {body}")]
    AuthRefused { status: u16, body: String },

    /// An API call was refused with 401 even after one fresh authentication (or with a static
    /// token, which cannot be renewed).
    #[error("Anaplan refused the token for {method} {path} with HTTP {status}: {body}")]
    Unauthorized {
        method: String,
        path: String,
        status: u16,
        body: String,
    },

    /// A non-retryable HTTP status (400, 403, 404, …).
    #[error("Anaplan answered {method} {path} with HTTP {status}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },

    /// A successful status whose body is not what the API documents (wrong content type,
    /// truncated or unexpected JSON, an HTML page).
    #[error(
        "unexpected Anaplan response for {what} (HTTP {status}, content type {content_type}): {detail}; body starts: {body}"
    )]
    Decode {
        what: &'static str,
        status: u16,
        content_type: String,
        detail: String,
        body: String,
    },

    /// A failure dump that is not the CSV shape the API documents.
    #[error("unexpected Anaplan failure dump: {detail}; body starts: {body}")]
    DumpShape { detail: String, body: String },

    /// The retry budget ran out.
    #[error("gave up on {method} {path} after {attempts} attempts over {elapsed:?}: {last}")]
    GaveUp {
        method: String,
        path: String,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },

    /// The request could not be sent or its answer could not be read, and it was not retried
    /// (retrying a non-idempotent call whose effect is unknown could apply it twice).
    #[error("Anaplan request {method} {path} failed: {detail}")]
    Transport {
        method: String,
        path: String,
        detail: String,
    },

    /// An answer larger than plansync reads in one response (a broken or hostile server).
    #[error(
        "Anaplan's answer to {method} {path} is larger than {limit}, the most plansync reads in one response; it was not read further (check the api_url points at Anaplan)"
    )]
    TooLarge {
        method: String,
        path: String,
        limit: String,
    },

    /// A name from a rule file matched nothing in the model.
    #[error("no {kind} named {name:?} in model {model}")]
    NotFound {
        kind: &'static str,
        name: String,
        model: String,
    },

    /// A name from a rule file matched more than one object.
    #[error("{count} {kind}s are named {name:?} in model {model}; use the id instead")]
    Ambiguous {
        kind: &'static str,
        name: String,
        model: String,
        count: usize,
    },

    /// One input item is larger than a whole request may be.
    #[error("item {index} alone is {bytes} bytes, over the {limit}-byte request limit")]
    ItemTooLarge {
        index: usize,
        bytes: usize,
        limit: usize,
    },

    /// An input value cannot be sent as the API requires.
    #[error("input item {index}: {detail}")]
    InvalidInput { index: usize, detail: String },

    /// Creating a file with an unknown id makes Anaplan create a new private file with another
    /// id: the upload would never reach the import's data source.
    #[error(
        "Anaplan has no file {requested} in this model (it offered a new file {created}); upload to the file id an import names"
    )]
    UnknownFile { requested: String, created: String },

    /// A large-volume read request failed, was cancelled or deleted, or its next page did not
    /// become available in time.
    #[error("Anaplan read request {request_id} of {object}: {detail}")]
    ReadRequest {
        object: String,
        request_id: String,
        detail: String,
    },

    /// A task ended cancelled, or did not end in time.
    #[error("Anaplan task {task_id} on {object}: {detail}")]
    Task {
        object: String,
        task_id: String,
        detail: String,
    },
}

impl AnaplanError {
    /// The HTTP status this error came with, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            AnaplanError::AuthRefused { status, .. }
            | AnaplanError::Unauthorized { status, .. }
            | AnaplanError::Status { status, .. }
            | AnaplanError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether waiting cannot help: the configuration, the credentials or a name in a rule
    /// file is wrong, or Anaplan refused the call as such (a 4xx other than those the client
    /// already retries). A person must fix something; everything else (the network, 5xx,
    /// a read request that expired, an answer that could not be read) may pass.
    pub fn is_permanent(&self) -> bool {
        match self {
            AnaplanError::Config(_)
            | AnaplanError::LegacyApi { .. }
            | AnaplanError::Credentials(_)
            | AnaplanError::Unauthorized { .. }
            | AnaplanError::NotFound { .. }
            | AnaplanError::Ambiguous { .. }
            | AnaplanError::UnknownFile { .. }
            | AnaplanError::ItemTooLarge { .. }
            | AnaplanError::InvalidInput { .. } => true,
            AnaplanError::AuthRefused { status, .. } | AnaplanError::Status { status, .. } => {
                (400..500).contains(status) && *status != 429 && !self.is_over_read_limit()
            }
            _ => false,
        }
    }

    /// Whether Anaplan refused a plain read for its size (400 "… has more than 1,000,000
    /// cells/items"): a read request reads it in pages.
    pub fn is_over_read_limit(&self) -> bool {
        matches!(self, AnaplanError::Status { status: 400, body, .. } if body.contains("more than"))
    }
}
