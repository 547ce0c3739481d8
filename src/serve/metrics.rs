//! `/metrics`: one [`Observation`] in the OpenMetrics text format, written by the Prometheus
//! project's own Rust client (`prometheus-client`) rather than by hand, so the escaping,
//! the `_total` suffixes and the `# EOF` are the format's. A fresh registry per scrape: the
//! engine keeps its own counters, and this only says them.
//!
//! Every name starts `plansync_`. Counters are totals since the process started; gauges are
//! as the store and the clients say now.

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use plansync::engine::observe::Observation;
use plansync::store::OutboxState;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// A counter family registered under `name`.
fn counters(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauges(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

pub fn encode(seen: &Observation) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("plansync");
    let counter = |name: &str| seen.counters.get(name).copied().unwrap_or(0);

    let changes = counters(&mut registry, "changes", "Changes taken in, by source");
    for source in ["stream", "crm_poll", "anaplan_poll", "reconcile"] {
        changes
            .get_or_create(&labels(&[("source", source)]))
            .inc_by(counter(&format!("changes.{source}")));
    }
    let decisions = counters(
        &mut registry,
        "decisions",
        "Field decisions committed, by action",
    );
    for (name, n) in &seen.counters {
        if let Some(action) = name.strip_prefix("decisions.") {
            decisions
                .get_or_create(&labels(&[("action", action)]))
                .inc_by(*n);
        }
    }
    let writes = counters(
        &mut registry,
        "writes_acknowledged",
        "Writes the other system acknowledged, by side",
    );
    for side in ["crm", "anaplan"] {
        writes
            .get_or_create(&labels(&[("side", side)]))
            .inc_by(counter(&format!("writes.acked.{side}")));
    }
    let calls = counters(
        &mut registry,
        "write_calls",
        "API calls the writers made, by side and API",
    );
    for (name, n) in &seen.counters {
        if let Some(rest) = name.strip_prefix("calls.")
            && let Some((side, api)) = rest.split_once('.')
        {
            calls
                .get_or_create(&labels(&[("side", side), ("api", api)]))
                .inc_by(*n);
        }
    }
    let remote = counters(
        &mut registry,
        "remote_calls",
        "Calls made to each system by its client (reads, writes, authentication, retries)",
    );
    let throttled = counters(
        &mut registry,
        "remote_throttled",
        "Calls a system answered 429 (too many requests)",
    );
    let retries = counters(&mut registry, "remote_retries", "Calls sent again");
    for side in ["crm", "anaplan"] {
        let l = labels(&[("side", side)]);
        remote
            .get_or_create(&l)
            .inc_by(counter(&format!("{side}.calls")));
        retries
            .get_or_create(&l)
            .inc_by(counter(&format!("{side}.retries")));
    }
    throttled
        .get_or_create(&labels(&[("side", "anaplan")]))
        .inc_by(counter("anaplan.rate_limited"));
    let raised = counters(
        &mut registry,
        "exceptions_raised",
        "Exceptions recorded by this process",
    );
    raised
        .get_or_create(&Vec::new())
        .inc_by(counter("exceptions.raised"));

    let open = gauges(&mut registry, "exceptions_open", "Open exceptions, by kind");
    for e in &seen.status.open_exceptions {
        open.get_or_create(&labels(&[("kind", e.kind.as_str())]))
            .set(saturating(e.count));
    }
    let outbox = gauges(
        &mut registry,
        "outbox_writes",
        "Writes in the outbox, by side and state",
    );
    let oldest = gauges(
        &mut registry,
        "outbox_oldest_age_seconds",
        "Age of the oldest write still waiting, by side",
    );
    for side in ["crm", "anaplan"] {
        oldest.get_or_create(&labels(&[("side", side)])).set(0);
    }
    for d in &seen.status.outbox {
        let side = d.target.as_str();
        outbox
            .get_or_create(&labels(&[("side", side), ("state", d.state.as_str())]))
            .set(saturating(d.count));
        if matches!(d.state, OutboxState::Pending | OutboxState::InFlight)
            && let Some(age) = d.oldest_age_seconds
        {
            let g = oldest.get_or_create(&labels(&[("side", side)]));
            g.set(g.get().max(age));
        }
    }
    let lag = gauges(
        &mut registry,
        "source_lag_seconds",
        "How far behind each source's durable position is",
    );
    for s in &seen.status.sources {
        lag.get_or_create(&labels(&[("source", &s.source)]))
            .set(s.lag_seconds);
    }
    let stream = gauges(
        &mut registry,
        "stream_connected",
        "1 while the CDC stream is connected (absent without a stream)",
    );
    if let Some(connected) = seen.stream {
        stream.get_or_create(&Vec::new()).set(i64::from(connected));
    }
    let reachable = gauges(
        &mut registry,
        "side_reachable",
        "1 while the system answers its client",
    );
    reachable
        .get_or_create(&labels(&[("side", "crm")]))
        .set(i64::from(seen.crm_reachable));
    reachable
        .get_or_create(&labels(&[("side", "anaplan")]))
        .set(i64::from(seen.anaplan_reachable));
    let refused = gauges(
        &mut registry,
        "auth_refused",
        "1 while the system refuses plansync's credentials",
    );
    refused
        .get_or_create(&labels(&[("side", "crm")]))
        .set(i64::from(seen.crm_auth_refused));
    refused
        .get_or_create(&labels(&[("side", "anaplan")]))
        .set(i64::from(seen.anaplan_auth_refused));
    let api = gauges(
        &mut registry,
        "crm_api_daily",
        "The CRM org's daily API calls (all its integrations): max and remaining, once known",
    );
    if let Some(&max) = seen.counters.get("crm.api_max") {
        let used = counter("crm.api_used");
        api.get_or_create(&labels(&[("of", "max")]))
            .set(saturating(max));
        api.get_or_create(&labels(&[("of", "remaining")]))
            .set(saturating(max.saturating_sub(used)));
    }
    let first_run = gauges(
        &mut registry,
        "first_run_complete",
        "1 once the first reconciliation has completed",
    );
    first_run
        .get_or_create(&Vec::new())
        .set(i64::from(seen.first_run_done));
    let phase = gauges(
        &mut registry,
        "first_run_phase",
        "1 for what a first run in progress is doing",
    );
    if let (false, Some(p)) = (seen.first_run_done, &seen.status.first_run.phase) {
        phase.get_or_create(&labels(&[("phase", p)])).set(1);
    }

    let mut out = String::new();
    text::encode(&mut out, &registry)?;
    Ok(out)
}

fn saturating(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
