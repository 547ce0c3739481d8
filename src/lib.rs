//! plansync keeps a Salesforce-style CRM and an Anaplan model in step, field by field, under
//! ownership rules written by an admin. See `ARCHITECTURE.md` for the map of the code.

pub mod anaplan;
pub mod bench;
pub mod config;
pub mod crm;
pub mod demo;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod preflight;
pub mod review;
pub mod rules;
pub mod secret;
pub mod sim;
pub mod store;
