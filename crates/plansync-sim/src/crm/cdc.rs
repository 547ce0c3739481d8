//! Change events: building the CometD `data` of each change once, at commit, and keeping them in
//! commit order with increasing, non-contiguous replay ids for the retention window.
//!
//! Every delivery of an event shares the same serialised `data` (`Arc<str>`): a subscriber's
//! message is just `{"channel":…,"data":<shared text>}`, so streaming a hundred thousand changes
//! costs one serialisation each, whatever the number of subscribers.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Map, Value, json};

/// One retained change event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub replay_id: u64,
    /// Index of the entity's table (for per-object channels).
    pub entity: usize,
    /// Commit time, epoch ms; moved back by the admin "age" hook.
    pub at_ms: i64,
    /// The serialised `data` object: schema, payload, event.replayId.
    pub data: Arc<str>,
}

/// The ChangeEventHeader of one event.
pub struct Header<'a> {
    pub entity_name: &'a str,
    pub record_ids: Vec<String>,
    pub change_type: &'a str,
    pub change_origin: &'a str,
    pub transaction_key: &'a str,
    pub sequence_number: u32,
    pub commit_timestamp: i64,
    pub commit_number: u64,
    pub commit_user: &'a str,
    pub changed_fields: Vec<String>,
}

/// Serialises an event's `data` object.
pub fn event_data(
    schema: &str,
    header: Header<'_>,
    body: Map<String, Value>,
    replay_id: u64,
) -> String {
    let mut payload = Map::with_capacity(body.len() + 1);
    payload.insert(
        "ChangeEventHeader".into(),
        json!({
            "entityName": header.entity_name,
            "recordIds": header.record_ids,
            "changeType": header.change_type,
            "changeOrigin": header.change_origin,
            "transactionKey": header.transaction_key,
            "sequenceNumber": header.sequence_number,
            "commitTimestamp": header.commit_timestamp,
            "commitNumber": header.commit_number,
            "commitUser": header.commit_user,
            "changedFields": header.changed_fields,
        }),
    );
    payload.extend(body);
    let data = json!({
        "schema": schema,
        "payload": Value::Object(payload),
        "event": {"replayId": replay_id},
    });
    data.to_string()
}

/// The retained events, oldest first, and the replay-id counter.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<StoredEvent>,
    last_replay: u64,
    /// Replay ids up to this one are gone; a subscriber resuming from an id below it has lost
    /// events and is refused.
    floor: u64,
    pub retention_ms: i64,
}

impl EventLog {
    pub fn new(retention_ms: i64) -> Self {
        // Start somewhere arbitrary: replay ids are opaque and clients must not assume 1.
        let start = 10_000 + fastrand::u64(0..1_000);
        EventLog {
            events: VecDeque::new(),
            last_replay: start,
            floor: start,
            retention_ms,
        }
    }

    /// Allocates the next replay id: increasing, with gaps, like Salesforce's.
    pub fn next_replay_id(&mut self) -> u64 {
        self.last_replay += 1 + fastrand::u64(0..3);
        self.last_replay
    }

    pub fn push(&mut self, event: StoredEvent) {
        self.events.push_back(event);
    }

    pub fn last_replay_id(&self) -> u64 {
        self.last_replay
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Drops events older than the retention window.
    pub fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        while self.events.front().is_some_and(|e| e.at_ms < cutoff) {
            if let Some(e) = self.events.pop_front() {
                self.floor = e.replay_id;
            }
        }
    }

    /// Drops every event with a replay id up to `replay_id` (all of them with `None`).
    pub fn purge(&mut self, up_to: Option<u64>) {
        let limit = up_to.unwrap_or(u64::MAX);
        while self.events.front().is_some_and(|e| e.replay_id <= limit) {
            if let Some(e) = self.events.pop_front() {
                self.floor = e.replay_id;
            }
        }
        if up_to.is_none() {
            self.floor = self.last_replay;
        }
    }

    /// Makes every retained event look `by_ms` older (to test retention without waiting).
    pub fn age(&mut self, by_ms: i64) {
        for e in &mut self.events {
            e.at_ms = e.at_ms.saturating_sub(by_ms);
        }
    }

    /// Whether a subscriber may resume after `replay_id` without having lost events.
    pub fn can_resume_after(&self, replay_id: u64) -> bool {
        replay_id >= self.floor && replay_id <= self.last_replay
    }

    /// The replay id just before the oldest retained event (for `-2`).
    pub fn before_oldest(&self) -> u64 {
        self.events
            .front()
            .map_or(self.last_replay, |e| e.replay_id.saturating_sub(1))
    }

    /// Up to `max` events after `after`, of `entity` (all entities with `None`).
    pub fn after(&self, after: u64, entity: Option<usize>, max: usize) -> Vec<StoredEvent> {
        let start = self.events.partition_point(|e| e.replay_id <= after);
        self.events
            .range(start..)
            .filter(|e| entity.is_none_or(|x| x == e.entity))
            .take(max)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(log: &mut EventLog, at: i64) -> u64 {
        let id = log.next_replay_id();
        log.push(StoredEvent {
            replay_id: id,
            entity: 0,
            at_ms: at,
            data: Arc::from("{}"),
        });
        id
    }

    #[test]
    fn replay_ids_increase_and_expired_ones_cannot_resume() {
        let mut log = EventLog::new(1_000);
        let a = ev(&mut log, 0);
        let b = ev(&mut log, 500);
        let c = ev(&mut log, 2_000);
        assert!(a < b && b < c);
        assert_eq!(log.after(a, None, 10).len(), 2);
        assert!(log.can_resume_after(a));
        log.expire(2_100);
        assert_eq!(log.len(), 1);
        assert!(!log.can_resume_after(a));
        assert!(log.can_resume_after(b));
        assert_eq!(log.after(log.before_oldest(), None, 10).len(), 1);
        log.purge(None);
        assert!(log.can_resume_after(c));
        assert!(!log.can_resume_after(b));
    }
}
