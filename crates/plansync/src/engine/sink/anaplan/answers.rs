//! The answer sheet of one batch: [`Run`] holds each request's outcome as the pipeline
//! reaches it, the call counts and the items seen, and whether the tenant has been found
//! unreachable; `unreachable` and [`permanent`] sort Anaplan errors into "stop calling",
//! "the rule file and the model disagree" and "this call failed".

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::anaplan::AnaplanError;
use crate::engine::write::WriteOutcome;
use crate::model::RecordKey;

/// The answers being built for one batch.
pub(super) struct Run {
    pub(super) outcomes: Vec<Option<WriteOutcome>>,
    pub(super) items: Vec<(RecordKey, String)>,
    pub(super) calls: BTreeMap<&'static str, u64>,
    /// Set once a call failed in a way that says the tenant cannot be reached: everything not
    /// yet answered is answered `Unreachable` with this message, without more calls.
    pub(super) down: Option<String>,
}

impl Run {
    pub(super) fn set(&mut self, i: usize, outcome: WriteOutcome) {
        if let Some(slot) = self.outcomes.get_mut(i) {
            *slot = Some(outcome);
        }
    }

    pub(super) fn reject(&mut self, i: usize, message: impl Into<String>) {
        self.set(
            i,
            WriteOutcome::Rejected {
                message: message.into(),
            },
        );
    }

    pub(super) fn ack(&mut self, i: usize, at: DateTime<Utc>) {
        self.set(i, WriteOutcome::Acked { at });
    }

    pub(super) fn retry(&mut self, i: usize, message: &str) {
        self.set(
            i,
            WriteOutcome::Retry {
                message: message.to_string(),
            },
        );
    }

    /// Not sent (or not answered) because the tenant could not be reached: says nothing
    /// about the write (see [`WriteOutcome::Unreachable`]).
    pub(super) fn not_reached(&mut self, i: usize, message: &str) {
        self.set(
            i,
            WriteOutcome::Unreachable {
                message: message.to_string(),
            },
        );
    }

    pub(super) fn count(&mut self, kind: &'static str, n: u64) {
        if n > 0 {
            *self.calls.entry(kind).or_default() += n;
        }
    }

    /// Notes a whole-call failure: when the error says the tenant cannot be reached, the
    /// tenant is marked down and `which` answered `Unreachable`; otherwise `Retry` (this
    /// call failed: its writes are retried on their own backoff, and given up in the end).
    pub(super) fn failed_call(
        &mut self,
        which: impl IntoIterator<Item = usize>,
        what: &str,
        e: &AnaplanError,
    ) {
        let message = format!("{what}: {e}");
        tracing::warn!(target: "plansync::engine", event = "sink_call_failed", error = %e, "{what} failed; the writes it carried will be retried");
        let down = unreachable(e);
        for i in which {
            if down {
                self.not_reached(i, &message);
            } else {
                self.retry(i, &message);
            }
        }
        if down && self.down.is_none() {
            self.down = Some(message);
        }
    }

    pub(super) fn pending(&self, i: usize) -> bool {
        self.outcomes.get(i).is_some_and(Option::is_none)
    }
}

/// How many times a batch's refused calls are split to find the writes at fault: enough for
/// one bad value among a million (20 levels) with room to spare, and a bound on the calls a
/// refusal of everything costs.
pub(super) const MAX_SPLITS: u32 = 48;

/// Anaplan answered the call and refused it as a whole (a status, not the tenant out of
/// reach, not the credentials, not throttling): something it carried may be at fault, so
/// the call is worth sending again in halves.
pub(super) fn refused_as_a_whole(e: &AnaplanError) -> bool {
    matches!(e, AnaplanError::Status { status, .. } if *status != 429)
}

/// Whether an error means the tenant cannot be reached now (so further calls would only burn
/// the retry budget again), rather than that one call was refused.
fn unreachable(e: &AnaplanError) -> bool {
    matches!(
        e,
        AnaplanError::GaveUp { .. }
            | AnaplanError::Transport { .. }
            | AnaplanError::AuthRefused { .. }
            | AnaplanError::Unauthorized { .. }
    )
}

/// Whether a resolution error is a mismatch between the rule file and the model (which
/// retrying will not fix) rather than a failed call.
pub(super) fn permanent(e: &AnaplanError) -> bool {
    matches!(
        e,
        AnaplanError::NotFound { .. } | AnaplanError::Ambiguous { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_only_said_of_errors_about_the_tenant() {
        let gave_up = AnaplanError::GaveUp {
            method: "POST".into(),
            path: "/x".into(),
            attempts: 3,
            elapsed: std::time::Duration::from_secs(1),
            last: "503".into(),
        };
        assert!(unreachable(&gave_up));
        let refused = AnaplanError::Status {
            method: "POST".into(),
            path: "/x".into(),
            status: 400,
            body: String::new(),
        };
        assert!(!unreachable(&refused));
        assert!(permanent(&AnaplanError::NotFound {
            kind: "module",
            name: "M".into(),
            model: "X".into()
        }));
        assert!(!permanent(&gave_up));
    }
}
