//! The sync engine: the sources that feed it changes (the CRM watermark poller and the
//! Anaplan diff poller so far), the contract with the sinks that write, and later the router,
//! the shards and the scheduler that runs the pollers.

pub mod anaplan_poll;
pub mod anaplan_target;
pub mod counters;
pub mod crm_poll;
pub mod db;
pub mod dispatch;
pub mod observe;
pub mod router;
pub mod run;
pub mod shard;
pub mod sink;
pub mod sources;
mod start;
mod state;
pub mod write;
