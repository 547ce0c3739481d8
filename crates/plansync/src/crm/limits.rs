//! `GET …/limits`: the org's allocations for the day. `Sforce-Limit-Info` already reports
//! the daily API calls on every answer; reading the resource too, at start and on a schedule,
//! keeps the figure fresh while plansync makes no other call, and adds what the header does
//! not say (the Bulk API 2.0 query jobs left).

use std::collections::BTreeMap;

use reqwest::Method;

use crate::crm::client::CrmClient;
use crate::crm::error::CrmError;
use crate::crm::http::{Body, Call};
use crate::crm::stats::CallKind;

/// One allocation: at most `max` a day, `remaining` left now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub max: u64,
    pub remaining: u64,
}

impl Allocation {
    /// How many are used; a server reporting more left than the maximum has used none.
    pub fn used(&self) -> u64 {
        self.max.saturating_sub(self.remaining)
    }
}

/// The allocations the org reported, by name (`DailyApiRequests`, `DailyBulkV2QueryJobs`,
/// …); entries not shaped `{"Max": n, "Remaining": n}` are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgLimits {
    pub all: BTreeMap<String, Allocation>,
}

impl OrgLimits {
    pub fn daily_api_requests(&self) -> Option<Allocation> {
        self.all.get("DailyApiRequests").copied()
    }

    pub fn daily_bulk_query_jobs(&self) -> Option<Allocation> {
        self.all.get("DailyBulkV2QueryJobs").copied()
    }
}

impl CrmClient {
    /// Reads the org's limits; the daily API calls go into the stats, as the header's do.
    pub async fn limits(&self) -> Result<OrgLimits, CrmError> {
        let path = format!("{}/limits", self.data_prefix());
        let reply = self
            .send(&Call {
                method: Method::GET,
                path: &path,
                query: &[],
                body: Body::Empty,
                kind: CallKind::Other,
                write: false,
                idempotent: true,
            })
            .await?;
        let limits = parse_limits(&reply.body)?;
        if let Some(api) = limits.daily_api_requests() {
            self.call_stats().api_usage(api.used(), api.max);
        }
        Ok(limits)
    }
}

/// The `limits` body: a JSON object of allocations.
pub(crate) fn parse_limits(body: &[u8]) -> Result<OrgLimits, CrmError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| CrmError::Decode {
        what: "limits",
        detail: e.to_string(),
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(CrmError::Decode {
            what: "limits",
            detail: "the answer is not a JSON object".into(),
        });
    };
    let all = map
        .into_iter()
        .filter_map(|(name, v)| {
            let max = v.get("Max")?.as_u64()?;
            let remaining = v.get("Remaining")?.as_u64()?;
            Some((name, Allocation { max, remaining }))
        })
        .collect();
    Ok(OrgLimits { all })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_read_and_odd_entries_left_out() {
        let limits = parse_limits(
            br#"{"DailyApiRequests":{"Max":15000,"Remaining":14990},
                 "DailyBulkV2QueryJobs":{"Max":10000,"Remaining":9998},
                 "Odd":{"Max":"lots"},"Flat":3,
                 "Over":{"Max":5,"Remaining":9}}"#,
        )
        .unwrap();
        assert_eq!(
            limits.daily_api_requests(),
            Some(Allocation {
                max: 15_000,
                remaining: 14_990
            })
        );
        assert_eq!(limits.daily_api_requests().map(|a| a.used()), Some(10));
        assert_eq!(limits.daily_bulk_query_jobs().map(|a| a.used()), Some(2));
        assert_eq!(limits.all.len(), 3);
        assert_eq!(limits.all["Over"].used(), 0);
        assert!(parse_limits(b"[1]").is_err());
        assert!(parse_limits(b"<html>").is_err());
    }
}
