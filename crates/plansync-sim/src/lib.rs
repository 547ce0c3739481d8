//! Local simulators of the two remote systems plansync syncs, served over real sockets: an
//! Anaplan tenant (Integration API v2, bulk and transactional; authentication) and a
//! Salesforce-style org (REST, sObject Collections, Bulk API 2.0, OAuth, CDC over CometD).
//!
//! Each simulator is written from the public API reference with its own wire types. This
//! crate depends on no plansync crate, so nothing is shared with the clients in
//! `plansync::anaplan` and `plansync::crm`, and a wrong path or field name cannot hide on both
//! sides at once: the compiler keeps that wall.

pub mod anaplan;
pub mod crm;
mod secret;

pub use secret::Secret;
