//! How loud a failure to reach a remote system is. The clients retry connection failures and
//! server errors on their own, often for minutes; a line per retry would flood the log, and
//! none at the default level left an unreachable system invisible while the engine waited.
//! So the first failure of an outage is a WARN, the outage is an ERROR at most every
//! [`ERROR_EVERY`] while it lasts, and the first success after it an INFO saying how long it
//! lasted. The state belongs to the remote (one per client, shared by its clones and by every
//! call), not to one call.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// While an outage lasts, at most one ERROR line this often.
pub const ERROR_EVERY: Duration = Duration::from_secs(30);

/// How loud one failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loudness {
    /// The first failure of an outage.
    Warn,
    /// The outage persists, and no ERROR was logged for it in the last [`ERROR_EVERY`].
    Error,
    /// Already reported: a DEBUG line.
    Quiet,
}

#[derive(Debug, Clone, Copy)]
struct Down {
    since: Instant,
    last_loud: Instant,
}

/// One remote's outage, if it is in one.
#[derive(Debug, Default)]
pub struct Outage {
    down: Mutex<Option<Down>>,
}

impl Outage {
    /// A failure to reach the remote, at `now`: how loud to log it.
    pub fn failed(&self, now: Instant) -> Loudness {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match down.as_mut() {
            None => {
                *down = Some(Down {
                    since: now,
                    last_loud: now,
                });
                Loudness::Warn
            }
            Some(d) if now.duration_since(d.last_loud) >= ERROR_EVERY => {
                d.last_loud = now;
                Loudness::Error
            }
            Some(_) => Loudness::Quiet,
        }
    }

    /// How long the outage has lasted at `now` (zero when there is none).
    pub fn lasted(&self, now: Instant) -> Duration {
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        down.map_or(Duration::ZERO, |d| now.duration_since(d.since))
    }

    /// Whether the remote is in an outage now (its last call failed to reach it).
    pub fn is_down(&self) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The remote answered: the outage, if there was one, is over; how long it lasted.
    pub fn recovered(&self, now: Instant) -> Option<Duration> {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        down.take().map(|d| now.duration_since(d.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_warns_once_then_errors_at_most_every_thirty_seconds() {
        let o = Outage::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(o.failed(at(0)), Loudness::Warn);
        assert_eq!(o.failed(at(1)), Loudness::Quiet);
        assert_eq!(o.failed(at(29)), Loudness::Quiet);
        assert_eq!(o.failed(at(30)), Loudness::Error);
        assert_eq!(o.failed(at(31)), Loudness::Quiet);
        assert_eq!(o.failed(at(61)), Loudness::Error);
        assert_eq!(o.lasted(at(70)), Duration::from_secs(70));
        assert_eq!(o.recovered(at(75)), Some(Duration::from_secs(75)));
        assert_eq!(o.recovered(at(76)), None);
        // A new outage starts over with a warning.
        assert_eq!(o.failed(at(80)), Loudness::Warn);
    }
}
