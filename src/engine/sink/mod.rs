//! The sinks: one per remote side, each turning a batch of [`super::write::WriteRequest`]s
//! into as few API calls as the batch allows, and answering one outcome per request.

pub mod anaplan;
pub mod crm;
