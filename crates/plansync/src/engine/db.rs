//! The engine's own store connections outside the shards (sources reading checkpoints and
//! the shadow, sinks reading the outbox), used from async tasks: each call runs on the
//! blocking pool, so a slow SQLite call never stalls the runtime's worker threads.

use std::sync::{Arc, Mutex};

use crate::store::{Store, StoreError};

#[derive(Clone)]
pub struct Db {
    /// One connection; the mutex serialises the calls of the tasks that share it. Nothing
    /// awaits while holding it: a call is a plain synchronous closure.
    store: Arc<Mutex<Store>>,
}

impl Db {
    pub fn new(store: Store) -> Db {
        Db {
            store: Arc::new(Mutex::new(store)),
        }
    }

    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another call poisons the lock but leaves the connection usable.
            let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("a store call did not finish: {e}")))?
    }
}
