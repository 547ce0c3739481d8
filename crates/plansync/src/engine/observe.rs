//! What a running engine says about itself, for `/readyz` and `/metrics`: one snapshot of
//! its counters, the store's status report (positions and lag, the outbox, open exceptions,
//! the first run), the stream and whether each side answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use tokio::sync::watch;

use super::counters::Counters;
use super::db::Db;
use super::run::EngineError;
use crate::anaplan::AnaplanClient;
use crate::crm::CrmClient;
use crate::store::StatusReport;

/// What [`Observer::observe`] reads; made by [`super::run::EngineHandle::observer`].
#[derive(Clone)]
pub struct Observer {
    pub(super) counters: Arc<Counters>,
    pub(super) db: Db,
    pub(super) stream_connected: Arc<AtomicBool>,
    pub(super) streaming: bool,
    pub(super) ready: watch::Receiver<bool>,
    pub(super) crm: CrmClient,
    pub(super) anaplan: AnaplanClient,
}

impl Observer {
    /// Counters, the store's status, the stream and each side's reachability, at once.
    pub async fn observe(&self) -> Result<Observation, EngineError> {
        let status = self.db.call(|s| s.status(Utc::now())).await?;
        super::run::remote_stats(&self.counters, &self.crm, &self.anaplan);
        Ok(Observation {
            counters: self.counters.snapshot(),
            first_run_done: *self.ready.borrow() || status.first_run.completed_at.is_some(),
            status,
            stream: self
                .streaming
                .then(|| self.stream_connected.load(Ordering::SeqCst)),
            crm_reachable: self.crm.reachable(),
            anaplan_reachable: self.anaplan.reachable(),
            crm_auth_refused: self.crm.auth_refused(),
            anaplan_auth_refused: self.anaplan.auth_refused(),
        })
    }
}

/// One look at a running engine.
#[derive(Debug, Clone)]
pub struct Observation {
    /// [`super::run::EngineHandle::counters`]: totals since this process started.
    pub counters: BTreeMap<String, u64>,
    /// What `plansync status` reads from the store.
    pub status: StatusReport,
    /// `None` when the engine runs without the CDC stream (`--no-stream`); else whether it is
    /// connected now.
    pub stream: Option<bool>,
    /// Whether each side answered the last call that tried to reach it.
    pub crm_reachable: bool,
    pub anaplan_reachable: bool,
    /// Whether each side refused plansync's credentials at its last sign-in.
    pub crm_auth_refused: bool,
    pub anaplan_auth_refused: bool,
    /// The first run completed (in this process or an earlier one).
    pub first_run_done: bool,
}

/// Why the engine is not ready, or how it is degraded: for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Each check by name: `ok`, or what is wrong.
    pub checks: BTreeMap<&'static str, String>,
}

impl Observation {
    /// Ready: the first run is done and both sides answer. A stream that is down leaves it
    /// ready but `degraded`: the CRM poller then runs at its shortened interval (the policy
    /// `schedule.crm_poll_while_stream_down`), so changes still flow, later.
    pub fn readiness(&self) -> Readiness {
        let mut checks = BTreeMap::new();
        let mut ready = true;
        let mut check = |name, ok: bool, problem: &str, gate: bool| {
            checks.insert(
                name,
                if ok {
                    "ok".to_string()
                } else {
                    problem.to_string()
                },
            );
            if gate && !ok {
                ready = false;
            }
        };
        check(
            "first_run",
            self.first_run_done,
            match &self.status.first_run.phase {
                Some(_) => "in progress",
                None => "not done",
            },
            true,
        );
        let side = |reachable: bool, refused: bool| match (reachable, refused) {
            (_, true) => (false, "authentication refused"),
            (false, false) => (false, "unreachable"),
            (true, false) => (true, ""),
        };
        let (ok, problem) = side(self.crm_reachable, self.crm_auth_refused);
        check("crm", ok, problem, true);
        let (ok, problem) = side(self.anaplan_reachable, self.anaplan_auth_refused);
        check("anaplan", ok, problem, true);
        match self.stream {
            None => {
                checks.insert("stream", "off (polling only)".to_string());
            }
            Some(connected) => check(
                "stream",
                connected,
                "degraded: down, the CRM poller runs at its shortened interval",
                false,
            ),
        }
        Readiness { ready, checks }
    }
}
