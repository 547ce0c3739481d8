//! The CDC stream's health, as the engine last recorded it (in `engine_state`), so that
//! `plansync status` in another process can tell a quiet channel (the session is alive,
//! nothing changed) from a stale one (the session is down, or has shown no sign of life).

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

use super::codec::ts;
use super::{Store, StoreError};

const CONNECTED_SINCE: &str = "stream.connected_since";
const DOWN_SINCE: &str = "stream.down_since";
const ALIVE_AT: &str = "stream.alive_at";
const RECONNECTS: &str = "stream.reconnects";
const LAST_ERROR: &str = "stream.last_error";
const LAST_ERROR_AT: &str = "stream.last_error_at";

/// A session that showed no sign of life for this long is not taken as current, whatever it
/// last said: the server holds a `/meta/connect` for at most about two minutes.
pub const STREAM_SIGN_OF_LIFE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamHealth {
    /// Set while the session is up (as last recorded).
    pub connected_since: Option<DateTime<Utc>>,
    /// Set while it is down.
    pub down_since: Option<DateTime<Utc>>,
    /// The last handshake or `/meta/connect` answer.
    pub alive_at: Option<DateTime<Utc>>,
    /// Sessions opened again since the engine started.
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

impl StreamHealth {
    /// Whether the session is up and showed a sign of life within [`STREAM_SIGN_OF_LIFE`]
    /// of `now`: its channels are then current up to `alive_at`.
    pub fn live(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (self.connected_since, self.alive_at) {
            (Some(_), Some(alive)) if now - alive <= STREAM_SIGN_OF_LIFE => Some(alive),
            _ => None,
        }
    }
}

impl Store {
    /// The engine is starting its stream: reconnects count from here.
    pub fn record_stream_starting(&mut self, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.set_stream(
            at,
            &[
                (RECONNECTS, Some("0".to_string())),
                (CONNECTED_SINCE, None),
                (DOWN_SINCE, None),
            ],
        )
    }

    /// Handshake done, channels subscribed.
    pub fn record_stream_connected(&mut self, at: DateTime<Utc>) -> Result<(), StoreError> {
        let reconnects = match self.state_value(RECONNECTS)? {
            Some(n) => {
                n.parse::<u64>().unwrap_or(0) + u64::from(self.state_value(DOWN_SINCE)?.is_some())
            }
            None => 0,
        };
        self.set_stream(
            at,
            &[
                (CONNECTED_SINCE, Some(ts(at))),
                (ALIVE_AT, Some(ts(at))),
                (DOWN_SINCE, None),
                (RECONNECTS, Some(reconnects.to_string())),
            ],
        )
    }

    /// A `/meta/connect` was answered.
    pub fn record_stream_alive(&mut self, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.set_stream(at, &[(ALIVE_AT, Some(ts(at)))])
    }

    /// The session ended (or the engine stopped): `why`, for `status`.
    pub fn record_stream_down(&mut self, at: DateTime<Utc>, why: &str) -> Result<(), StoreError> {
        let down_since = self.state_value(DOWN_SINCE)?.unwrap_or_else(|| ts(at));
        self.set_stream(
            at,
            &[
                (CONNECTED_SINCE, None),
                (DOWN_SINCE, Some(down_since)),
                (LAST_ERROR, Some(why.to_string())),
                (LAST_ERROR_AT, Some(ts(at))),
            ],
        )
    }

    /// What was recorded, `None` when no stream ever ran on this store.
    pub fn stream_health(&self) -> Result<Option<StreamHealth>, StoreError> {
        let time = |name: &str| self.state_time(name);
        let Some(reconnects) = self.state_value(RECONNECTS)? else {
            return Ok(None);
        };
        Ok(Some(StreamHealth {
            connected_since: time(CONNECTED_SINCE)?,
            down_since: time(DOWN_SINCE)?,
            alive_at: time(ALIVE_AT)?,
            reconnects: reconnects.parse().unwrap_or(0),
            last_error: self.state_value(LAST_ERROR)?,
            last_error_at: time(LAST_ERROR_AT)?,
        }))
    }

    /// Sets (`Some`) or clears (`None`) each value, in one transaction.
    fn set_stream(
        &mut self,
        at: DateTime<Utc>,
        values: &[(&str, Option<String>)],
    ) -> Result<(), StoreError> {
        self.ensure_writable()?;
        let _turn = super::take_turn(&self.write_gate);
        let tx = self.conn.transaction()?;
        for (name, value) in values {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO engine_state (name, value, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    params![name, v, ts(at)],
                )?,
                None => tx.execute("DELETE FROM engine_state WHERE name = ?1", [name])?,
            };
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_session_is_live_only_while_up_and_recently_heard_from() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("s.db")).unwrap();
        assert_eq!(store.stream_health().unwrap(), None);
        let t = |m: i64| {
            Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap() + chrono::TimeDelta::minutes(m)
        };
        store.record_stream_starting(t(0)).unwrap();
        store.record_stream_connected(t(0)).unwrap();
        store.record_stream_alive(t(2)).unwrap();
        let h = store.stream_health().unwrap().unwrap();
        assert_eq!(h.reconnects, 0);
        assert_eq!(h.live(t(4)), Some(t(2)));
        assert_eq!(h.live(t(8)), None, "no sign of life for 6 minutes");
        store.record_stream_down(t(9), "connection reset").unwrap();
        store
            .record_stream_down(t(10), "handshake refused")
            .unwrap();
        let h = store.stream_health().unwrap().unwrap();
        assert_eq!(h.live(t(10)), None);
        assert_eq!(h.down_since, Some(t(9)), "down since the first failure");
        assert_eq!(h.last_error.as_deref(), Some("handshake refused"));
        store.record_stream_connected(t(11)).unwrap();
        let h = store.stream_health().unwrap().unwrap();
        assert_eq!(
            (h.reconnects, h.down_since, h.connected_since),
            (1, None, Some(t(11)))
        );
    }
}
