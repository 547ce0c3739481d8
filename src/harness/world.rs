//! The demo's two systems: a CRM org with thousands of generated opportunities and a few
//! dozen territories, and an Anaplan model already in step with it (the same records as list
//! items, coded by CRM id, with the planners' quotas and forecast overrides), both simulators
//! on loopback ports. The Anaplan side is built from the CRM's records through the rules' own
//! value mapping, so the two start out agreeing field by field.

use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;

use super::SetupError;
use plansync::anaplan::{AnaplanClient, AnaplanConfig, AuthMethod};
use plansync::crm::{AuthConfig, CrmClient, CrmConfig};
use plansync::model::{Side, Value};
use plansync::rules::RuleSet;
use plansync::rules::ruleset::{AnaplanField, Pairing};
use plansync::secret::Secret;
use plansync_sim::anaplan::{self as asim, AnaplanSim, SeedItem, SeedValue, SimConfig, SimHandle};
use plansync_sim::crm::{self as csim, CrmSimConfig, CrmSimHandle};

pub const API_VERSION: &str = "62.0";
/// The client id our CRM writes carry, so their change events are recognised.
pub const CLIENT_ID: &str = "plansync-demo";

const ACCOUNTS: [&str; 2] = ["@acme", "@globex"];
const OPEN_STAGES: [&str; 4] = ["Prospecting", "Qualification", "Proposal", "Negotiation"];
const PRODUCTS: [&str; 6] = [
    "renewal",
    "expansion",
    "pilot",
    "platform",
    "analytics",
    "services",
];
const REGIONS: [&str; 3] = ["AMER", "EMEA", "APAC"];

/// Both systems, running.
pub struct World {
    pub crm: CrmSimHandle,
    pub anaplan: SimHandle,
    pub opportunities: Vec<String>,
    pub territories: Vec<String>,
}

/// A small deterministic generator: the demo's `--seed` picks the data and the script.
pub struct Rng(fastrand::Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(fastrand::Rng::with_seed(seed))
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n.max(1))
    }
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        self.0.i64(lo..hi.max(lo + 1))
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.0.f64() < p
    }
}

fn opportunity(seed: u64, i: usize, today: NaiveDate) -> Vec<(String, Json)> {
    let mut r = Rng::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let stage = OPEN_STAGES[r.below(OPEN_STAGES.len())];
    let probability = match stage {
        "Prospecting" => 10,
        "Qualification" => 25,
        "Proposal" => 50,
        _ => 75,
    };
    let amount = (r.between(50, 5_000) * 100) as f64;
    let close = today
        .checked_add_days(Days::new(r.between(5, 120) as u64))
        .unwrap_or(today);
    let fields = vec![
        (
            "Name".to_string(),
            json!(format!("Deal {i:05} {}", PRODUCTS[r.below(PRODUCTS.len())])),
        ),
        ("Amount".into(), json!(amount)),
        ("StageName".into(), json!(stage)),
        ("CloseDate".into(), json!(close.to_string())),
        ("Probability".into(), json!(probability)),
        ("AccountId".into(), json!(ACCOUNTS[i % ACCOUNTS.len()])),
        // Every deal carries a forecast: an Anaplan number cell is never empty (it reads 0),
        // so a deal without one would start out as a difference.
        (
            "Forecast_Override__c".into(),
            json!(if r.chance(0.4) {
                (amount * 0.9).round()
            } else {
                amount
            }),
        ),
    ];
    fields
}

fn territory(seed: u64, i: usize) -> Vec<(String, Json)> {
    let mut r = Rng::new(seed ^ 0x7E44 ^ (i as u64) << 8);
    let region = REGIONS[i % REGIONS.len()];
    let annual = (r.between(10, 90) * 100_000) as f64;
    vec![
        (
            "Name".into(),
            json!(format!("{region} district {:02}", i + 1)),
        ),
        ("Region__c".into(), json!(region)),
        ("Annual_Quota__c".into(), json!(annual)),
        ("Quarterly_Quota__c".into(), json!(annual / 4.0)),
        ("Active__c".into(), json!(true)),
    ]
}

/// A client of the CRM simulator, as the demo's reps' tools and the engine use it.
pub fn crm_client(sim: &CrmSimHandle) -> Result<CrmClient, SetupError> {
    let auth = AuthConfig::ClientCredentials {
        client_id: csim::DEFAULT_CLIENT_ID.into(),
        client_secret: Secret::new(csim::DEFAULT_CLIENT_SECRET),
    };
    let mut config = CrmConfig::new(sim.instance_url(), API_VERSION, auth);
    config.call_client_id = CLIENT_ID.into();
    CrmClient::new(config).map_err(|e| SetupError(format!("CRM client: {e}")))
}

/// A client of the Anaplan simulator (the engine's, or a planner's).
pub fn anaplan_client(sim: &SimHandle) -> Result<AnaplanClient, SetupError> {
    let auth = AuthMethod::Basic {
        user: asim::DEFAULT_USER.into(),
        password: Secret::new(asim::DEFAULT_PASSWORD),
    };
    let mut config = AnaplanConfig::new(sim.auth_url(), sim.api_url(), auth);
    config.request_timeout = Duration::from_secs(60);
    // The simulated tenant runs an import in well under a second; polling its task every
    // 5 s, as against a real tenant, would only add latency.
    config.task_poll_interval = Duration::from_millis(200);
    AnaplanClient::new(config).map_err(|e| SetupError(format!("Anaplan client: {e}")))
}

/// Starts both simulators: the CRM first (it assigns the ids), then Anaplan seeded from it.
pub async fn start(rules: &RuleSet, records: usize, seed: u64) -> Result<World, SetupError> {
    let today = Utc::now().date_naive();
    let mut crm_seed = csim::Seed::default_org();
    crm_seed.generate("Opportunity", records, move |i| opportunity(seed, i, today));
    let territories = (records / 100).clamp(6, 60);
    crm_seed.generate("Territory__c", territories, move |i| territory(seed, i));
    let listener = bind().await?;
    let crm = csim::start(
        CrmSimConfig {
            seed: crm_seed,
            ..CrmSimConfig::default()
        },
        listener,
    )
    .await
    .map_err(|e| SetupError(format!("CRM simulator: {e}")))?;

    let client = crm_client(&crm)?;
    let mut anaplan_seed = asim::Seed::default_seed();
    let mut ids = Vec::new();
    for pairing in &rules.pairings {
        // The default model already holds the default org's records; every item is built
        // again below from what the CRM answers, so none is there twice.
        clear_pairing(&mut anaplan_seed, pairing);
        let fields: Vec<&str> = pairing.fields.iter().map(|f| f.crm.as_str()).collect();
        let soql = format!(
            "SELECT Id, {} FROM {} ORDER BY Id",
            fields.join(", "),
            pairing.crm_object
        );
        let rows = client
            .query(&soql)
            .await
            .map_err(|e| SetupError(format!("reading the CRM seed: {e}")))?;
        let mut of_pairing = Vec::new();
        for row in rows.records {
            let Some(id) = row.get("Id").and_then(Json::as_str).map(str::to_string) else {
                continue;
            };
            seed_item(&mut anaplan_seed, pairing, &id, &row)?;
            of_pairing.push(id);
        }
        ids.push((pairing.crm_object.clone(), of_pairing));
    }
    let listener = bind().await?;
    let anaplan = AnaplanSim::start(
        SimConfig {
            seed: anaplan_seed,
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .map_err(|e| SetupError(format!("Anaplan simulator: {e}")))?;
    let take = |object: &str| {
        ids.iter()
            .find(|(o, _)| o == object)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    Ok(World {
        crm,
        anaplan,
        opportunities: take("Opportunity"),
        territories: take("Territory__c"),
    })
}

async fn bind() -> Result<TcpListener, SetupError> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| SetupError(format!("binding a loopback port: {e}")))
}

/// Empties the pairing's list and its module's rows in `seed`.
fn clear_pairing(seed: &mut asim::Seed, pairing: &Pairing) {
    for list in seed
        .list
        .iter_mut()
        .filter(|l| l.name == pairing.anaplan.list)
    {
        list.items.clear();
    }
    for module in seed
        .module
        .iter_mut()
        .filter(|m| m.name == pairing.anaplan.module)
    {
        module.rows.clear();
    }
}

/// One CRM record as an Anaplan list item with its cells, through the rule's mapping.
fn seed_item(
    seed: &mut asim::Seed,
    pairing: &Pairing,
    id: &str,
    row: &serde_json::Map<String, Json>,
) -> Result<(), SetupError> {
    let invalid = |e: asim::SeedError| SetupError(format!("Anaplan seed: {e}"));
    let list = seed
        .list
        .iter_mut()
        .find(|l| l.name == pairing.anaplan.list)
        .ok_or_else(|| SetupError(format!("no list {}", pairing.anaplan.list)))?;
    let mut item = SeedItem {
        code: Some(id.to_string()),
        name: id.to_string(),
        properties: Default::default(),
    };
    let mut cells = Vec::new();
    for rule in &pairing.fields {
        let raw = row.get(&rule.crm).cloned().unwrap_or(Json::Null);
        let Ok(value) = rule.normalise(Side::Crm, &raw) else {
            continue;
        };
        let value = rule.to_side(Side::Anaplan, &value);
        match &rule.anaplan {
            AnaplanField::ListProperty(name) => {
                item.properties
                    .insert(name.clone(), value.to_text().unwrap_or_default());
            }
            AnaplanField::LineItem(name) => {
                let cell = match value {
                    Value::Null => continue,
                    Value::Bool(b) => SeedValue::Bool(b),
                    Value::Number(d) => SeedValue::Float(d.to_f64()),
                    other => SeedValue::Text(other.to_text().unwrap_or_default()),
                };
                cells.push((name.clone(), cell));
            }
        }
    }
    list.items.push(item);
    for (line_item, value) in cells {
        seed.set_cell(&pairing.anaplan.module, id, &line_item, value)
            .map_err(invalid)?;
    }
    Ok(())
}
