//! The sync engine: the sources that feed it changes (the CRM watermark poller so far), and
//! later the router, the shards and the scheduler that runs the pollers.

pub mod crm_poll;
