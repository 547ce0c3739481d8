//! `plansync sim anaplan`: serves the local Anaplan simulator on 127.0.0.1 until Ctrl-C.
//!
//! It prints the auth, API and admin base URLs on stdout (the first line is the base URL, so a
//! script can read it) and, next to the admin URL, the token the `/__sim/` hooks take in
//! `X-Sim-Token`; it takes the seed, users, trusted CAs and limits from flags. Faults are set
//! at run time through `/__sim/faults` (see `plansync_sim::anaplan`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use plansync_sim::Secret;
use plansync_sim::anaplan::{AnaplanSim, DEFAULT_PASSWORD, DEFAULT_USER, Seed, SimConfig};

#[derive(Args, Debug)]
pub struct SimAnaplanArgs {
    /// The port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
    /// A seed file (TOML) describing workspaces, models, lists, modules and bulk definitions;
    /// the built-in seed matches rules/opportunity.toml and rules/territory.toml.
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// A user who may log in, as EMAIL:PASSWORD (repeatable). Default: demo@plansync.local:demo.
    #[arg(long = "user", value_name = "EMAIL:PASSWORD")]
    pub users: Vec<String>,
    /// A PEM CA certificate whose certificates may log in with CA-certificate auth (repeatable).
    #[arg(long = "ca", value_name = "FILE")]
    pub cas: Vec<PathBuf>,
    /// Token lifetime in seconds (Anaplan: 2100, 35 minutes).
    #[arg(long, value_name = "SECS", default_value_t = 2100)]
    pub token_ttl: u64,
    /// Tenant rate limit in API calls per minute (0 turns it off).
    #[arg(long, value_name = "N", default_value_t = 600)]
    pub rate_per_minute: u32,
    /// How long each bulk task stays IN_PROGRESS, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub task_step_ms: u64,
    /// The most cells a view read, or items a list read, returns (Anaplan: 1,000,000); larger
    /// views and lists must be read with read requests.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub max_read: usize,
    /// How long each read request stays IN_PROGRESS, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub read_request_step_ms: u64,
    /// The token the /__sim/ hooks take in the X-Sim-Token header. Default: a random one,
    /// printed at start.
    #[arg(long, value_name = "TOKEN", env = "PLANSYNC_SIM_TOKEN", hide_env_values = true, value_parser = super::sim_token)]
    pub sim_token: Option<Secret>,
}

fn parse_user(spec: &str) -> anyhow::Result<(String, Secret)> {
    match spec.split_once(':') {
        Some((email, password)) if email.contains('@') && !password.is_empty() => {
            Ok((email.to_string(), Secret::new(password)))
        }
        // The password is not echoed back.
        _ => bail!(
            "--user {}: expected EMAIL:PASSWORD",
            spec.split(':').next().unwrap_or("")
        ),
    }
}

fn config(args: &SimAnaplanArgs) -> anyhow::Result<SimConfig> {
    let seed = match &args.seed {
        Some(path) => Seed::from_file(path)?,
        None => Seed::default_seed(),
    };
    let users = if args.users.is_empty() {
        vec![(DEFAULT_USER.to_string(), Secret::new(DEFAULT_PASSWORD))]
    } else {
        args.users
            .iter()
            .map(|u| parse_user(u))
            .collect::<anyhow::Result<_>>()?
    };
    let mut ca_certs_pem = Vec::new();
    for path in &args.cas {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --ca file {}", path.display()))?;
        ca_certs_pem.push(pem);
    }
    Ok(SimConfig {
        users,
        ca_certs_pem,
        token_ttl: Duration::from_secs(args.token_ttl.max(1)),
        rate_per_minute: args.rate_per_minute,
        seed,
        task_step: Duration::from_millis(args.task_step_ms),
        max_read: args.max_read.max(1),
        read_request_step: Duration::from_millis(args.read_request_step_ms),
        hooks_token: args.sim_token.clone(),
        ..SimConfig::default()
    })
}

pub fn run(args: SimAnaplanArgs) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    let users: Vec<String> = config.users.iter().map(|(e, _)| e.clone()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
        let sim = AnaplanSim::start(config, listener).await?;
        super::banner(&[
            sim.base_url(),
            format!("auth:  {}/token/authenticate", sim.auth_url()),
            format!("api:   {}", sim.api_url()),
            // The one place the token is shown: whoever started the simulator needs it.
            format!(
                "admin: {}/__sim/faults  ({}: {})",
                sim.base_url(),
                plansync_sim::hooks_token::HEADER,
                sim.hooks_token()
            ),
            format!("users: {}", users.join(", ")),
            "Serving the Anaplan simulator; Ctrl-C stops it.".to_string(),
        ]);
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        sim.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_specs() {
        let (e, p) = parse_user("a@b.c:pw:with:colons").unwrap();
        assert_eq!((e.as_str(), p.expose()), ("a@b.c", "pw:with:colons"));
        let err = parse_user("a@b.c").unwrap_err().to_string();
        assert_eq!(err, "--user a@b.c: expected EMAIL:PASSWORD");
        assert!(parse_user("nobody:pw").is_err());
        assert!(parse_user("a@b.c:").is_err());
    }
}
