//! The engine's running counters: what `plansync status`, the demo's summary and the logs
//! report. Plain atomics, updated by the tasks as they go and read at any time; stored in
//! the `metrics` table now and then so another process can read them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::Side;

#[derive(Debug, Default)]
pub struct Counters {
    pub changes_stream: AtomicU64,
    pub changes_crm_poll: AtomicU64,
    pub changes_anaplan_poll: AtomicU64,
    pub changes_reconcile: AtomicU64,
    /// Changes the shards have decided and committed, from every source.
    pub changes_decided: AtomicU64,
    /// The size of what the first run is reading now (the CRM query's `totalSize`), 0 while
    /// not known: its progress lines estimate the time left from it.
    pub first_run_total: AtomicU64,
    /// Fields the first reconciliation found already agreeing (not audited one by one).
    pub reconcile_agreed: AtomicU64,
    pub acked_anaplan: AtomicU64,
    pub acked_crm: AtomicU64,
    pub exceptions: AtomicU64,
    pub writes_queued: AtomicU64,
    /// API calls by side and kind (`anaplan.cells`, `crm.collections`, …), as the sinks
    /// report them.
    calls: Mutex<BTreeMap<String, u64>>,
    /// Decisions committed, by action (`write_anaplan`, `hold`, …).
    decisions: Mutex<BTreeMap<&'static str, u64>>,
    /// The clients' own totals (`anaplan.calls`, `anaplan.rate_limited`, `crm.calls`, …).
    remote: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    pub fn record_calls(&self, side: Side, calls: &[(&'static str, u64)]) {
        if calls.is_empty() {
            return;
        }
        // Held only to add a few numbers; nothing awaits under it.
        let mut map = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, n) in calls {
            *map.entry(format!("{side}.{kind}")).or_default() += n;
        }
    }

    pub fn record_decisions(&self, decisions: &BTreeMap<&'static str, usize>) {
        if decisions.is_empty() {
            return;
        }
        // Held only to add a few numbers; nothing awaits under it.
        let mut map = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        for (action, n) in decisions {
            *map.entry(action).or_default() += *n as u64;
        }
    }

    pub fn record_acks(&self, side: Side, n: u64) {
        match side {
            Side::Anaplan => self.acked_anaplan.fetch_add(n, Ordering::Relaxed),
            Side::Crm => self.acked_crm.fetch_add(n, Ordering::Relaxed),
        };
    }

    pub fn set_remote(&self, name: &'static str, value: u64) {
        // Held only to set a number; nothing awaits under it.
        let mut map = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(name, value);
    }

    /// Every counter by its `metrics` name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.insert("changes.stream".into(), get(&self.changes_stream));
        out.insert("changes.crm_poll".into(), get(&self.changes_crm_poll));
        out.insert(
            "changes.anaplan_poll".into(),
            get(&self.changes_anaplan_poll),
        );
        out.insert("changes.reconcile".into(), get(&self.changes_reconcile));
        out.insert("reconcile.agreed".into(), get(&self.reconcile_agreed));
        out.insert("writes.acked.anaplan".into(), get(&self.acked_anaplan));
        out.insert("writes.acked.crm".into(), get(&self.acked_crm));
        out.insert("writes.queued".into(), get(&self.writes_queued));
        out.insert("exceptions.raised".into(), get(&self.exceptions));
        out.insert("changes.decided".into(), get(&self.changes_decided));
        let decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        for (action, n) in decisions.iter() {
            out.insert(format!("decisions.{action}"), *n);
        }
        drop(decisions);
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in calls.iter() {
            out.insert(format!("calls.{k}"), *v);
        }
        drop(calls);
        let remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in remote.iter() {
            out.insert((*k).to_string(), *v);
        }
        out
    }
}
