//! plansync's integration tests, in one binary: each module is the tests of one part (the
//! simulators, the clients against them, the engine end to end, the command line), and
//! `support` is what they share (both simulators on loopback sockets, the engine in-process,
//! readers of both systems and the store). One binary links the crates once, where a binary
//! per file linked them thirty times.

mod support;

mod anaplan_client_faults;
mod anaplan_e2e;
mod anaplan_large_read;
mod anaplan_poll;
mod boundaries;
mod cli_bench;
mod cli_check;
mod cli_demo;
mod cli_exceptions;
mod cli_rules;
mod cli_sim;
mod cli_status;
mod config_file;
mod crm_bulk_read;
mod crm_client_faults;
mod crm_e2e;
mod crm_poll;
mod decide_properties;
mod engine_crash;
mod engine_e2e;
mod engine_failures;
mod engine_model;
mod engine_trust;
mod fuzz_corpus;
mod newcomer;
mod notify;
mod observe;
mod readme;
mod secrets;
mod sim_anaplan;
mod sim_crm;
mod sim_crm_bulk_ingest;
mod sim_crm_bulk_query;
mod sim_crm_describe;
mod sim_crm_routes;
mod sim_crm_upsert;
mod sim_crm_wake;
mod sink_anaplan;
mod sink_crm;
mod store_review;
mod storm;
mod third_party;
mod third_party_anaplan;
mod third_party_cdc;
