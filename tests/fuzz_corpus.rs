//! Replays the saved fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz bodies on
//! stable, so every input that once found a bug stays a regression test.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        body(&data);
        count += 1;
    }
    assert!(count > 0, "no corpus under {}", dir.display());
}

#[test]
fn rules_compile_corpus() {
    replay("rules_compile", plansync::fuzzing::rules_compile);
}

#[test]
fn value_parse_corpus() {
    replay("value_parse", plansync::fuzzing::value_parse);
}

#[test]
fn anaplan_responses_corpus() {
    replay("anaplan_responses", plansync::anaplan::fuzz::fuzz_responses);
}

#[test]
fn cdc_frame_corpus() {
    replay("cdc_frame", plansync::crm::cdc::fuzz_cdc);
}

#[test]
fn config_parse_corpus() {
    replay("config_parse", plansync::config::config_parse);
}

#[test]
fn crm_describe_corpus() {
    replay("crm_describe", plansync::crm::describe::fuzz_describe);
}

#[test]
fn crm_responses_corpus() {
    replay("crm_responses", plansync::crm::fuzz::fuzz_responses);
}

#[test]
fn sim_soql_corpus() {
    replay("sim_soql", plansync_sim::fuzzing::sim_soql);
}

#[test]
fn sim_bayeux_corpus() {
    replay("sim_bayeux", plansync_sim::fuzzing::sim_bayeux);
}
