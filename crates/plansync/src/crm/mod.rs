//! The production CRM client: OAuth (client credentials, JWT bearer), SOQL queries with
//! pagination or Bulk API 2.0 query jobs, sObject describe, sObject Collections and Bulk API
//! 2.0 writes, and the change-data-capture listener (Bayeux over WebSocket or long-polling).
//!
//! Everything goes through one send path (`http.rs`): authentication header, the
//! `Sforce-Call-Options` tag on writes, error classification, re-authentication on an expired
//! session and retry with backoff on transient faults. Wire types are this module's own
//! (`wire.rs`); nothing here imports from `crate::sim`.

pub mod auth;
pub mod bulk;
pub mod bulk_query;
pub mod cdc;
mod client;
pub mod config;
pub mod describe;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
mod http;
pub mod limits;
pub mod query;
pub mod stats;
mod wire;
pub mod write;

pub use bulk_query::BulkQueryPager;
pub use client::{AccessToken, CrmClient};
pub use config::{AuthConfig, CrmConfig, RetryPolicy};
pub use describe::{FieldDescription, ObjectDescription, PicklistValue};
pub use error::{CrmError, RecordError};
pub use limits::{Allocation, OrgLimits};
pub use query::{QueryPager, QueryResult, Record};
pub use stats::{CallKind, CallStats, StatsSnapshot};
pub use write::{RecordDelete, RecordResult, RecordUpdate, WriteOptions};
