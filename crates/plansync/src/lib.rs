//! plansync keeps a Salesforce-style CRM and an Anaplan model in step, field by field, under
//! ownership rules written by an admin. See `ARCHITECTURE.md` for the map of the code.
//!
//! This crate is the library: the model, the rules, the store, the configuration, the two
//! clients, the engine and review. It depends on no simulator (`plansync-sim`) and on no
//! command-line code (`plansync-cli`, the `plansync` binary).

pub mod anaplan;
pub mod backoff;
pub mod body;
pub mod config;
pub mod crm;
pub mod endpoint;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod notify;
pub mod outage;
pub mod preflight;
pub mod review;
pub mod rules;
pub mod secret;
pub mod store;
