//! plansync as a library: start both simulators, run the engine on them in-process, make one
//! change as a sales rep would, and watch it arrive in Anaplan. Run with:
//!
//! ```text
//! cargo run --example sync_one_change
//! ```
//!
//! Against real systems, build the clients from a `plansync::config::Config` instead (see
//! `src/cli/run.rs`), and everything else stays the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plansync::anaplan::{AnaplanClient, AnaplanConfig, AuthMethod};
use plansync::crm::cdc::Transport;
use plansync::crm::{AuthConfig, CrmClient, CrmConfig};
use plansync::engine::run::{EngineHandle, EngineOptions, Sinks, StreamOptions};
use plansync::engine::sink::anaplan::{AnaplanSink, AnaplanSinkSettings};
use plansync::engine::sink::crm::CrmSink;
use plansync::secret::Secret;
use plansync_sim::anaplan::{self as asim, AnaplanSim, SimConfig};
use plansync_sim::crm::{self as csim, CrmSimConfig};
use tokio::net::TcpListener;

const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The two systems, on loopback ports.
    let crm_sim = csim::start(
        CrmSimConfig::default(),
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let anaplan_sim = AnaplanSim::start(
        SimConfig::default(),
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;

    // The clients plansync uses for real tenants, pointed at them.
    let mut crm_config = CrmConfig::new(
        crm_sim.instance_url(),
        "62.0",
        AuthConfig::ClientCredentials {
            client_id: csim::DEFAULT_CLIENT_ID.into(),
            client_secret: Secret::new(csim::DEFAULT_CLIENT_SECRET),
        },
    );
    crm_config.call_client_id = "plansync-example".into();
    let crm = CrmClient::new(crm_config)?;
    let anaplan = AnaplanClient::new(AnaplanConfig::new(
        anaplan_sim.auth_url(),
        anaplan_sim.api_url(),
        AuthMethod::Basic {
            user: asim::DEFAULT_USER.into(),
            password: Secret::new(asim::DEFAULT_PASSWORD),
        },
    ))?;

    // The engine, with the repository's rules and a throwaway store.
    let rules = plansync::rules::load(&["rules".into()])
        .map_err(|e| format!("run from the repository root: {} rule problem(s)", e.len()))?;
    let store = std::env::temp_dir().join(format!("plansync-example-{}.db", std::process::id()));
    let mut options = EngineOptions::new(&store);
    options.stream = Some(StreamOptions {
        api_version: "62.0".into(),
        channels: vec!["/data/OpportunityChangeEvent".into()],
        transport: Transport::WebSocket,
        client_id: "plansync-example".into(),
    });
    let sinks = Sinks {
        anaplan: Box::new(AnaplanSink::new(
            anaplan.clone(),
            AnaplanSinkSettings::default(),
        )),
        crm: Box::new(CrmSink::new(crm.clone())),
    };
    let (_rules_tx, rules_rx) = tokio::sync::watch::channel(Arc::new(rules));
    let engine = EngineHandle::start(options, rules_rx, crm.clone(), anaplan, sinks).await?;
    // Changes committed before the subscription are the pollers' to find; wait for it.
    while !engine.stream_connected() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A rep changes a deal's amount; the stream carries it; the engine writes the cell.
    let deal = crm
        .query("SELECT Id FROM Opportunity WHERE StageName = 'Negotiation'")
        .await?
        .records
        .first()
        .and_then(|r| r.get("Id")?.as_str().map(str::to_string))
        .ok_or("no deal in negotiation")?;
    let started = Instant::now();
    crm_sim.user_edit(
        "Opportunity",
        &deal,
        serde_json::json!({ "Amount": 131000 }),
        None,
    )?;
    loop {
        let cell = anaplan_sim
            .cells(MODEL, "OPP01 Opportunity Data")
            .and_then(|c| c.get(&deal)?.get("Amount").map(|v| v.to_string()));
        if cell.as_deref() == Some("131000") {
            println!(
                "Amount of {deal} reached Anaplan {} ms after the commit",
                started.elapsed().as_millis()
            );
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the change did not arrive within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.shutdown().await?;
    let _ = std::fs::remove_file(&store);
    Ok(())
}
