//! Errors of the CRM client: one variant per way a call can fail, so callers can tell a
//! transient fault (already retried) from a refusal that needs a person.

/// Why a call to the CRM failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The configuration cannot work (bad URL, unreadable private key, ...).
    #[error("CRM client configuration: {0}")]
    Config(String),
    /// The token endpoint refused us (`invalid_grant`, `invalid_client`, ...).
    #[error("CRM authentication failed ({status}): {error}: {description}")]
    Auth {
        status: u16,
        error: String,
        description: String,
    },
    /// The org's rolling 24-hour API budget is spent. Not retried: waiting minutes will not help.
    #[error("CRM API request limit exceeded: {message}")]
    RequestLimit { message: String },
    /// The CRM answered with an error body (`[{"errorCode", "message", "fields"}]`).
    #[error("CRM refused the request ({status} {code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        fields: Vec<String>,
    },
    /// The connection failed or timed out (after the configured retries).
    #[error("CRM transport error: {0}")]
    Transport(String),
    /// A response we could not understand.
    #[error("unexpected CRM response to {what}: {detail}")]
    Decode { what: &'static str, detail: String },
    /// A bulk ingest job ended in `Failed` or `Aborted`, or never finished.
    #[error("bulk job {job_id} ended {state}: {message}")]
    BulkJob {
        job_id: String,
        state: String,
        message: String,
    },
}

impl CrmError {
    /// True for faults worth another attempt with backoff: connection errors, 5xx, row locks.
    pub fn is_transient(&self) -> bool {
        match self {
            CrmError::Transport(_) => true,
            CrmError::Api { status, code, .. } => *status >= 500 || code == "UNABLE_TO_LOCK_ROW",
            _ => false,
        }
    }

    /// Whether waiting cannot help: the configuration or the credentials are wrong, or the
    /// CRM refused the request as such (an unknown object or field, no access). A person
    /// must fix something. The daily API limit is not permanent: it recovers by itself.
    pub fn is_permanent(&self) -> bool {
        match self {
            CrmError::Config(_) | CrmError::Auth { .. } => true,
            CrmError::Api { status, .. } => (400..500).contains(status) && !self.is_transient(),
            _ => false,
        }
    }

    /// The CRM's error code, when there is one (`INVALID_FIELD`, `REQUEST_LIMIT_EXCEEDED`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            CrmError::Api { code, .. } => Some(code),
            CrmError::RequestLimit { .. } => Some("REQUEST_LIMIT_EXCEEDED"),
            _ => None,
        }
    }
}

/// Why one record of a batch write was not written. The others in the batch are unaffected
/// (unless `allOrNone` was asked for).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordError {
    /// The CRM's status code (`REQUIRED_FIELD_MISSING`, `ALL_OR_NONE_OPERATION_ROLLED_BACK`),
    /// or one of ours for a call that failed as a whole: `AUTH_FAILED` (no token could be
    /// had), `CALL_FAILED`, `NOT_ATTEMPTED`, `NOT_PROCESSED` (a bulk row in neither result
    /// file).
    pub status_code: String,
    pub message: String,
    pub fields: Vec<String>,
    /// Whether sending the same write again later may succeed (row lock, transport, 5xx,
    /// rolled back because another record failed).
    pub retryable: bool,
}

impl RecordError {
    pub(crate) fn from_call(err: &CrmError) -> RecordError {
        RecordError {
            status_code: match (err.code(), err) {
                (Some(code), _) => code.to_string(),
                (None, CrmError::Auth { .. }) => "AUTH_FAILED".to_string(),
                (None, _) => "CALL_FAILED".to_string(),
            },
            message: err.to_string(),
            fields: Vec::new(),
            retryable: err.is_transient(),
        }
    }

    pub(crate) fn new(status_code: &str, message: impl Into<String>) -> RecordError {
        let retryable = matches!(
            status_code,
            "UNABLE_TO_LOCK_ROW" | "ALL_OR_NONE_OPERATION_ROLLED_BACK" | "NOT_ATTEMPTED"
        );
        RecordError {
            status_code: status_code.to_string(),
            message: message.into(),
            fields: Vec::new(),
            retryable,
        }
    }
}
