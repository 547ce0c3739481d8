//! `plansync sim crm`: serves a simulated Salesforce-style org (OAuth, REST, Bulk API 2.0 and
//! CDC streaming) on one loopback port until Ctrl-C. It prints the instance URL on the first
//! line of stdout and, on the second, the token the `/__sim/` hooks take in `X-Sim-Token`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use plansync_sim::Secret;
use plansync_sim::crm::{self, CrmSimConfig, Seed};

#[derive(Args, Debug, Clone)]
pub struct SimCrmArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8091)]
    pub port: u16,
    /// Seed file (TOML) with the org's objects, users and records; the built-in demo org
    /// otherwise.
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// A connected app's consumer key and secret, ID:SECRET (repeatable). Default:
    /// plansync-demo:demo-secret.
    #[arg(long = "client", value_name = "ID:SECRET", value_parser = parse_client)]
    pub clients: Vec<(String, Secret)>,
    /// Public key (SPKI PEM) or certificate (PEM) that JWT bearer assertions are signed with
    /// (repeatable).
    #[arg(long = "jwt-key", value_name = "FILE")]
    pub jwt_keys: Vec<PathBuf>,
    /// Access token lifetime in seconds.
    #[arg(long, default_value_t = 7200)]
    pub token_ttl: u64,
    /// How long change events are kept for replay, in hours.
    #[arg(long, default_value_t = 72)]
    pub retention_hours: u64,
    /// API requests allowed per 24 hours.
    #[arg(long, default_value_t = 100_000)]
    pub daily_limit: u64,
    /// The token the /__sim/ hooks take in the X-Sim-Token header. Default: a random one,
    /// printed at start.
    #[arg(long, value_name = "TOKEN", env = "PLANSYNC_SIM_TOKEN", hide_env_values = true, value_parser = super::sim_token)]
    pub sim_token: Option<Secret>,
}

fn parse_client(s: &str) -> Result<(String, Secret), String> {
    match s.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok((id.to_string(), Secret::new(secret)))
        }
        _ => Err("expected ID:SECRET".into()),
    }
}

fn config(args: &SimCrmArgs) -> anyhow::Result<CrmSimConfig> {
    let mut config = CrmSimConfig::default();
    if let Some(path) = &args.seed {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading seed {}", path.display()))?;
        config.seed = Seed::from_toml(&text).with_context(|| format!("seed {}", path.display()))?;
    }
    if !args.clients.is_empty() {
        config.clients = args.clients.clone();
    }
    for path in &args.jwt_keys {
        config.jwt_public_keys_pem.push(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading JWT key {}", path.display()))?,
        );
    }
    config.token_ttl = Duration::from_secs(args.token_ttl);
    config.retention = Duration::from_secs(args.retention_hours.saturating_mul(3600));
    config.daily_limit = args.daily_limit;
    config.hooks_token = args.sim_token.clone();
    Ok(config)
}

pub fn run(args: SimCrmArgs) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    let client_ids: Vec<String> = config.clients.iter().map(|(id, _)| id.clone()).collect();
    let usernames = config.seed.usernames();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
        let handle = crm::start(config, listener).await?;
        super::banner(&[
            handle.instance_url().to_string(),
            // The one place the token is shown: whoever started the simulator needs it.
            format!(
                "admin: {}/__sim/  ({}: {})",
                handle.instance_url(),
                plansync_sim::hooks_token::HEADER,
                handle.hooks_token()
            ),
        ]);
        eprintln!(
            "CRM simulator for org {} ({}); clients: {}; users: {}. Ctrl-C stops it.",
            handle.org_name(),
            handle.org_id(),
            client_ids.join(", "),
            usernames.join(", ")
        );
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        handle.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
