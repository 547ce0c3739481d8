//! Notifications: a webhook (JSON with a `text` field, as Slack's incoming webhooks take it,
//! plus the same facts as data under `plansync`) hears of what needs a person: new
//! `write_failed` exceptions, a system refusing plansync's credentials, a stream down longer
//! than a threshold, and a write waiting longer than one.
//!
//! Every condition is said once when it starts, again at most every `repeat_after` while it
//! lasts (with what accumulated), and once when it clears: an outage is a message, not
//! thousands. What is said comes from the engine's [`Observation`] (the store's status and
//! the clients' state), checked every few seconds; a webhook that cannot be reached is
//! retried at the next check, and logged once per outage.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::watch;

use crate::engine::observe::{Observation, Observer};
use crate::model::{ExceptionKind, Side};
use crate::outage::{Loudness, Outage};
use crate::secret::Secret;
use crate::store::OutboxState;

/// How often the conditions are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// `[notify]`.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// The webhook's URL: a secret (Slack's carries its token), from `*_env` or `*_file`.
    pub webhook: Secret,
    /// A stream down this long is said.
    pub stream_down_after: Duration,
    /// A write waiting this long (per side) is said.
    pub outbox_older_than: Duration,
    /// A condition that lasts is said again at most this often.
    pub repeat_after: Duration,
}

impl NotifySettings {
    pub const DEFAULT_STREAM_DOWN_AFTER: Duration = Duration::from_secs(600);
    pub const DEFAULT_OUTBOX_OLDER_THAN: Duration = Duration::from_secs(1800);
    pub const DEFAULT_REPEAT_AFTER: Duration = Duration::from_secs(900);
}

/// One message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The condition: `write_failed`, `auth_refused:crm`, `stream_down`, `outbox_old:anaplan`.
    pub condition: String,
    /// `firing` (started, or still true) or `resolved`.
    pub state: &'static str,
    pub text: String,
}

impl Notice {
    /// The webhook's body.
    pub fn body(&self, at: DateTime<Utc>) -> serde_json::Value {
        json!({
            "text": self.text,
            "plansync": {
                "condition": self.condition,
                "state": self.state,
                "at": at.to_rfc3339(),
            },
        })
    }
}

#[derive(Debug, Default)]
struct Condition {
    active: bool,
    last_sent: Option<DateTime<Utc>>,
}

/// The conditions' memory between checks: what was said, when.
#[derive(Debug)]
pub struct Watch {
    stream_down_after: chrono::TimeDelta,
    outbox_older_than: i64,
    repeat_after: chrono::TimeDelta,
    conditions: BTreeMap<String, Condition>,
    /// Open `write_failed` exceptions at the last check (`None` before the first: those
    /// already open when plansync started are not new).
    write_failed_open: Option<u64>,
    /// New ones not yet said.
    write_failed_new: u64,
}

impl Watch {
    pub fn new(settings: &NotifySettings) -> Watch {
        let delta = |d: Duration| chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX);
        Watch {
            stream_down_after: delta(settings.stream_down_after),
            outbox_older_than: i64::try_from(settings.outbox_older_than.as_secs())
                .unwrap_or(i64::MAX),
            repeat_after: delta(settings.repeat_after),
            conditions: BTreeMap::new(),
            write_failed_open: None,
            write_failed_new: 0,
        }
    }

    /// What to send after looking at `seen` at `now`. A notice that could not be delivered
    /// is given back with [`Watch::undelivered`], so it is tried again.
    pub fn check(&mut self, seen: &Observation, now: DateTime<Utc>) -> Vec<Notice> {
        let mut out = Vec::new();

        let open = seen
            .status
            .open_exceptions
            .iter()
            .find(|e| e.kind == ExceptionKind::WriteFailed)
            .map_or(0, |e| e.count);
        if let Some(before) = self.write_failed_open {
            self.write_failed_new += open.saturating_sub(before);
        }
        self.write_failed_open = Some(open);
        let new = self.write_failed_new;
        if new > 0 && self.due("write_failed", now) {
            out.push(Notice {
                condition: "write_failed".into(),
                state: "firing",
                text: format!(
                    "plansync: {new} write(s) failed for good ({open} write_failed exception(s) open); see `plansync exceptions list --kind write_failed`"
                ),
            });
            self.write_failed_new = 0;
            self.sent("write_failed", now);
        }

        for (side, refused) in [
            (Side::Crm, seen.crm_auth_refused),
            (Side::Anaplan, seen.anaplan_auth_refused),
        ] {
            let name = side_name(side);
            self.edge(
                &mut out,
                &format!("auth_refused:{}", side.as_str()),
                refused,
                now,
                || format!("plansync: {name} refuses plansync's credentials; nothing is read from or written to it until they are fixed"),
                || format!("plansync: {name} accepts plansync's credentials again"),
            );
        }

        if seen.stream.is_some() {
            let down_since = seen.status.stream.as_ref().and_then(|h| h.down_since);
            let down_long = down_since.is_some_and(|since| now - since >= self.stream_down_after);
            self.edge(
                &mut out,
                "stream_down",
                down_long,
                now,
                || {
                    let since = down_since.map_or_else(String::new, |s| {
                        format!(" since {}", s.format("%Y-%m-%d %H:%M:%SZ"))
                    });
                    let why = seen
                        .status
                        .stream
                        .as_ref()
                        .and_then(|h| h.last_error.clone())
                        .unwrap_or_default();
                    format!("plansync: the CRM change stream is down{since} ({why}); the CRM poller fills in, later")
                },
                || "plansync: the CRM change stream is connected again".to_string(),
            );
        }

        for side in [Side::Crm, Side::Anaplan] {
            let oldest = seen
                .status
                .outbox
                .iter()
                .filter(|d| {
                    d.target == side
                        && matches!(d.state, OutboxState::Pending | OutboxState::InFlight)
                })
                .filter_map(|d| d.oldest_age_seconds)
                .max();
            let name = side_name(side);
            self.edge(
                &mut out,
                &format!("outbox_old:{}", side.as_str()),
                oldest.is_some_and(|age| age >= self.outbox_older_than),
                now,
                || {
                    format!(
                        "plansync: a write to {name} has waited {}s; see `plansync status`",
                        oldest.unwrap_or_default()
                    )
                },
                || format!("plansync: writes to {name} flow again"),
            );
        }
        out
    }

    /// A notice that did not reach the webhook: said again at the next check.
    pub fn undelivered(&mut self, notice: &Notice) {
        if let Some(c) = self.conditions.get_mut(&notice.condition) {
            c.last_sent = None;
            if notice.state == "resolved" {
                // Still to be said as resolved.
                c.active = true;
            }
        }
        if notice.condition == "write_failed" {
            // The count is not known any more; one is at least not lost.
            self.write_failed_new = self.write_failed_new.max(1);
        }
    }

    fn due(&self, name: &str, now: DateTime<Utc>) -> bool {
        self.conditions
            .get(name)
            .and_then(|c| c.last_sent)
            .is_none_or(|at| now - at >= self.repeat_after)
    }

    fn sent(&mut self, name: &str, now: DateTime<Utc>) {
        self.conditions
            .entry(name.to_string())
            .or_default()
            .last_sent = Some(now);
    }

    /// A condition said when it starts, again while it lasts (at most every
    /// `repeat_after`), and once when it clears.
    fn edge(
        &mut self,
        out: &mut Vec<Notice>,
        name: &str,
        now_true: bool,
        now: DateTime<Utc>,
        firing: impl FnOnce() -> String,
        resolved: impl FnOnce() -> String,
    ) {
        let due = self.due(name, now);
        let c = self.conditions.entry(name.to_string()).or_default();
        match (c.active, now_true) {
            (_, true) if !c.active || due => {
                c.active = true;
                c.last_sent = Some(now);
                out.push(Notice {
                    condition: name.to_string(),
                    state: "firing",
                    text: firing(),
                });
            }
            (true, false) => {
                c.active = false;
                c.last_sent = None;
                out.push(Notice {
                    condition: name.to_string(),
                    state: "resolved",
                    text: resolved(),
                });
            }
            _ => {}
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Crm => "the CRM",
        Side::Anaplan => "Anaplan",
    }
}

/// Checks every [`CHECK_EVERY`] and posts what [`Watch::check`] says, until `shutdown`.
pub async fn run(
    observer: Observer,
    settings: NotifySettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watch = Watch::new(&settings);
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target: "plansync::notify", event = "notify_failed", error = %e, "notifications cannot start");
            return;
        }
    };
    let outage = Outage::default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let Ok(seen) = observer.observe().await else {
            continue;
        };
        let now = Utc::now();
        for notice in watch.check(&seen, now) {
            let sent = http
                .post(settings.webhook.expose())
                .json(&notice.body(now))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            match sent {
                Ok(_) => {
                    if let Some(down) = outage.recovered(std::time::Instant::now()) {
                        tracing::info!(target: "plansync::notify", event = "webhook_reachable", down_ms = down.as_millis() as u64, "the webhook takes notifications again");
                    }
                    tracing::info!(target: "plansync::notify", event = "notified", condition = %notice.condition, state = notice.state, "notification sent");
                }
                Err(e) => {
                    // The URL is a secret: reqwest's message without it.
                    let error = e.without_url().to_string();
                    match outage.failed(std::time::Instant::now()) {
                        Loudness::Warn | Loudness::Error => {
                            tracing::warn!(target: "plansync::notify", event = "webhook_unreachable", %error, condition = %notice.condition, "a notification could not be sent; it is tried again")
                        }
                        Loudness::Quiet => {
                            tracing::debug!(target: "plansync::notify", event = "webhook_unreachable", %error, "a notification could not be sent")
                        }
                    }
                    watch.undelivered(&notice);
                }
            }
        }
    }
}
