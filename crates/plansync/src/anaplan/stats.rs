//! Counters of the calls a client made, for the benchmark and for operators: how much of the
//! tenant's budget a sync spends, and how often the tenant pushed back.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a call was for. Every attempt (retries included) is counted under its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Auth,
    Read,
    Write,
    Bulk,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Authenticate and refresh calls.
    pub auth: u64,
    /// Transactional reads (listings, views, list items).
    pub reads: u64,
    /// Transactional writes (cells, list items).
    pub writes: u64,
    /// Bulk calls (files, chunks, tasks, dumps).
    pub bulk: u64,
    /// Attempts that repeated an earlier one (after a transient failure or a refused token).
    pub retries: u64,
    /// 429 answers received.
    pub throttled: u64,
}

impl CallStats {
    /// Every HTTP request sent.
    pub fn total(&self) -> u64 {
        self.auth + self.reads + self.writes + self.bulk
    }
}

/// Relaxed atomics: each counter is independent and only ever read as a whole snapshot.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    auth: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    bulk: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
}

impl Stats {
    pub fn call(&self, kind: CallKind) {
        let counter = match kind {
            CallKind::Auth => &self.auth,
            CallKind::Read => &self.reads,
            CallKind::Write => &self.writes,
            CallKind::Bulk => &self.bulk,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CallStats {
        CallStats {
            auth: self.auth.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            bulk: self.bulk.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }
}
