//! Local simulators of the two remote systems plansync syncs, served over real sockets: an
//! Anaplan tenant (Integration API v2, bulk and transactional; authentication) and a
//! Salesforce-style org (REST, sObject Collections, Bulk API 2.0, OAuth, CDC over CometD).
//!
//! Each simulator is written from the public API reference with its own wire types. This
//! crate depends on no plansync crate, so nothing is shared with the clients in
//! `plansync::anaplan` and `plansync::crm`, and a wrong path or field name cannot hide on both
//! sides at once: the compiler keeps that wall.
//!
//! Both simulators have test hooks under `/__sim/` (user edits, injected faults, request
//! logs). Over HTTP every hook request must carry the simulator's token in the `X-Sim-Token`
//! header ([`hooks_token`]): random per start unless configured, printed by the CLI next to
//! the URL, readable from the handles (`CrmSimHandle::hooks_token`, `SimHandle::hooks_token`).
//! Without it a hook answers 401, with a wrong one 403.

pub mod anaplan;
pub mod crm;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks_token;
mod secret;

pub use secret::Secret;
