//! Routes work to shards: every message about a record goes to the shard chosen by a hash
//! of (pairing, record), so one shard sees all of a field's history in order. The channels
//! are bounded: a source that produces faster than the shards commit waits here
//! (backpressure), nothing queues without limit.

use std::hash::{BuildHasher, Hash, Hasher};

use tokio::sync::{mpsc, oneshot};

use super::shard::ShardMsg;
use crate::model::{Position, RecordKey};

/// The shards are gone (the engine is stopping); the message was not delivered.
#[derive(Debug, thiserror::Error)]
#[error("the engine is stopping: shard {0} no longer takes work")]
pub struct ShardGone(pub usize);

#[derive(Clone)]
pub struct Router {
    shards: Vec<mpsc::Sender<ShardMsg>>,
}

/// A fixed hasher, so a record maps to the same shard in every run (the per-shard
/// checkpoints depend on it only for speed of resumption, not for correctness).
#[derive(Clone, Copy, Default)]
struct FixedState;

impl BuildHasher for FixedState {
    type Hasher = std::collections::hash_map::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::collections::hash_map::DefaultHasher::new()
    }
}

impl Router {
    pub fn new(shards: Vec<mpsc::Sender<ShardMsg>>) -> Router {
        Router { shards }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard that owns `record`.
    pub fn shard_of(&self, record: &RecordKey) -> usize {
        let mut h = FixedState.build_hasher();
        record.pairing.hash(&mut h);
        record.crm_id.hash(&mut h);
        (h.finish() % self.shards.len().max(1) as u64) as usize
    }

    /// Sends a message about `record` to its shard, waiting while the shard is behind.
    pub async fn send(&self, record: &RecordKey, msg: ShardMsg) -> Result<(), ShardGone> {
        let i = self.shard_of(record);
        self.shards[i].send(msg).await.map_err(|_| ShardGone(i))
    }

    /// Tells every shard that `source` has delivered everything up to `position`.
    pub async fn mark(&self, source: &str, position: &Position) -> Result<(), ShardGone> {
        for (i, shard) in self.shards.iter().enumerate() {
            let msg = ShardMsg::Mark {
                source: source.to_string(),
                position: position.clone(),
            };
            shard.send(msg).await.map_err(|_| ShardGone(i))?;
        }
        Ok(())
    }

    /// Waits until every shard has committed everything sent to it before this call.
    pub async fn flush(&self) -> Result<(), ShardGone> {
        let mut waits = Vec::with_capacity(self.shards.len());
        for (i, shard) in self.shards.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            shard
                .send(ShardMsg::Flush(tx))
                .await
                .map_err(|_| ShardGone(i))?;
            waits.push((i, rx));
        }
        for (i, rx) in waits {
            rx.await.map_err(|_| ShardGone(i))?;
        }
        Ok(())
    }
}
