//! Seed files: the objects, users and records an org starts with.
//!
//! A seed is TOML:
//!
//! ```toml
//! [org]
//! id = "00D5g000004PLSY"        # 15- or 18-character org id
//! name = "Demo Org"
//!
//! [[user]]                      # users become User (005) records
//! key = "integration"           # how records and tests refer to the user
//! username = "integration@example.com"
//! name = "Integration User"
//! run_as = true                 # the user client-credentials tokens act as (default: first)
//!
//! [[object]]
//! name = "Opportunity"          # custom objects end in __c
//! key_prefix = "006"            # 3-character id prefix
//! owner = true                  # has OwnerId (default true)
//! fields = [
//!   { name = "Name", type = "string", required = true },
//!   { name = "StageName", type = "picklist", values = ["Prospecting", "Closed Won"] },
//!   { name = "AccountId", type = "reference", to = ["Account"] },
//!   # a compound address: parts are stored as BillingStreet, BillingCity, ...
//!   { name = "BillingAddress", type = "address", parts = ["Street", "City", "Country"] },
//! ]
//!
//! [[record]]
//! object = "Opportunity"
//! key = "big-deal"              # optional; other records refer to it as "@big-deal"
//! owner = "integration"         # a user key (default: the first user)
//! fields = { Name = "Big deal", StageName = "Prospecting", CloseDate = 2027-01-29, AccountId = "@acme" }
//! ```
//!
//! A field with `updateable = false` (a formula, a roll-up) refuses API writes; the seed may
//! still give it values. A `string` or `double` field with `external_id = true` is an external
//! id upserts can match records by (`PATCH sobjects/{object}/{field}/{value}`); with
//! `unique = true` no two live records may share a value (writes get `DUPLICATE_VALUE`;
//! without it, an upsert matching several records gets the 300 / `DUPLICATE_EXTERNAL_ID`).
//!
//! Field types: `string`, `double`, `currency`, `percent`, `boolean`, `date`, `datetime`,
//! `picklist` (restricted to `values`), `reference` (to objects in `to`), `address`.
//! Every object also gets `Id`, `IsDeleted`, `CreatedDate`, `CreatedById`, `LastModifiedDate`,
//! `LastModifiedById`, `SystemModstamp` (and `OwnerId` unless `owner = false`).
//!
//! Large orgs are built in code: [`Seed::generate`] adds `count` records from a closure without
//! any per-record seed entry, and the org stores them compactly.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::schema::{FieldSpec, FieldType};

/// The default org, matching the project's `rules/opportunity.toml` and `rules/territory.toml`;
/// its records are the Anaplan simulator's default items (see that seed's header).
pub const DEFAULT_SEED: &str = include_str!("default_seed.toml");

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("seed file is not valid TOML for a seed: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("seed: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct SeedUser {
    pub key: String,
    pub username: String,
    pub name: String,
    pub run_as: bool,
}

#[derive(Debug, Clone)]
pub struct SeedObject {
    pub name: String,
    pub key_prefix: String,
    pub owner: bool,
    pub fields: Vec<FieldSpec>,
}

#[derive(Debug, Clone)]
pub struct SeedRecord {
    pub object: String,
    pub key: Option<String>,
    /// A user key.
    pub owner: Option<String>,
    /// Field values as JSON; a string `"@key"` refers to another seed record.
    pub fields: Vec<(String, Value)>,
}

/// Makes the field values of generated record `i`.
pub type RecordGenerator = Arc<dyn Fn(usize) -> Vec<(String, Value)> + Send + Sync>;

#[derive(Clone)]
pub struct Generated {
    pub object: String,
    pub count: usize,
    pub make: RecordGenerator,
}

/// Everything an org starts with.
#[derive(Clone)]
pub struct Seed {
    pub org_id: String,
    pub org_name: String,
    pub users: Vec<SeedUser>,
    pub objects: Vec<SeedObject>,
    pub records: Vec<SeedRecord>,
    pub generated: Vec<Generated>,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("org_id", &self.org_id)
            .field("users", &self.users.len())
            .field("objects", &self.objects.len())
            .field("records", &self.records.len())
            .field(
                "generated",
                &self.generated.iter().map(|g| g.count).sum::<usize>(),
            )
            .finish()
    }
}

impl Default for Seed {
    fn default() -> Self {
        Seed::default_org()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeed {
    org: RawOrg,
    #[serde(default)]
    user: Vec<RawUser>,
    #[serde(default)]
    object: Vec<RawObject>,
    #[serde(default)]
    record: Vec<RawRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrg {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    key: String,
    username: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    run_as: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObject {
    name: String,
    key_prefix: String,
    #[serde(default = "yes")]
    owner: bool,
    #[serde(default)]
    fields: Vec<RawField>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    required: bool,
    #[serde(default = "yes")]
    updateable: bool,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    parts: Vec<String>,
    #[serde(default)]
    external_id: bool,
    #[serde(default)]
    unique: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    object: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    fields: toml::Table,
}

impl Seed {
    /// The built-in default org.
    pub fn default_org() -> Seed {
        match Seed::from_toml(DEFAULT_SEED) {
            Ok(seed) => seed,
            // The default seed is compiled in and covered by a unit test.
            Err(err) => panic!("built-in seed is invalid: {err}"),
        }
    }

    /// Parses a seed file (format in the module docs).
    pub fn from_toml(text: &str) -> Result<Seed, SeedError> {
        let raw: RawSeed = toml::from_str(text)?;
        let mut objects = Vec::new();
        for o in raw.object {
            if o.key_prefix.len() != 3 || !o.key_prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(SeedError::Invalid(format!(
                    "object {}: key_prefix must be 3 letters or digits",
                    o.name
                )));
            }
            let mut fields = Vec::new();
            for f in o.fields {
                let ty = match f.ty.as_str() {
                    "string" | "text" | "textarea" => FieldType::String,
                    "double" | "number" => FieldType::Double,
                    "currency" => FieldType::Currency,
                    "percent" => FieldType::Percent,
                    "boolean" => FieldType::Boolean,
                    "date" => FieldType::Date,
                    "datetime" => FieldType::DateTime,
                    "picklist" if !f.values.is_empty() => FieldType::Picklist(f.values.clone()),
                    "reference" if !f.to.is_empty() => FieldType::Reference(f.to.clone()),
                    "address" if !f.parts.is_empty() => FieldType::Address,
                    other => {
                        return Err(SeedError::Invalid(format!(
                            "{}.{}: unknown type {other:?} (picklists need values, references need to, addresses need parts)",
                            o.name, f.name
                        )));
                    }
                };
                if ty == FieldType::Address {
                    let stem = f
                        .name
                        .strip_suffix("Address")
                        .unwrap_or(&f.name)
                        .to_string();
                    for part in &f.parts {
                        fields.push(FieldSpec {
                            name: format!("{stem}{part}"),
                            ty: FieldType::String,
                            required: false,
                            updateable: f.updateable,
                            compound: Some((f.name.clone(), part.clone())),
                            external_id: false,
                            unique: false,
                        });
                    }
                }
                // Salesforce lets text, number and e-mail fields be external ids.
                if f.external_id && !matches!(ty, FieldType::String | FieldType::Double) {
                    return Err(SeedError::Invalid(format!(
                        "{}.{}: only string and double fields can be external ids",
                        o.name, f.name
                    )));
                }
                fields.push(FieldSpec {
                    name: f.name,
                    ty,
                    required: f.required,
                    updateable: f.updateable,
                    compound: None,
                    external_id: f.external_id,
                    unique: f.unique,
                });
            }
            objects.push(SeedObject {
                name: o.name,
                key_prefix: o.key_prefix,
                owner: o.owner,
                fields,
            });
        }
        let users = raw
            .user
            .into_iter()
            .map(|u| SeedUser {
                name: u.name.unwrap_or_else(|| u.username.clone()),
                key: u.key,
                username: u.username,
                run_as: u.run_as,
            })
            .collect::<Vec<_>>();
        if users.is_empty() {
            return Err(SeedError::Invalid(
                "a seed needs at least one [[user]]".into(),
            ));
        }
        let records = raw
            .record
            .into_iter()
            .map(|r| SeedRecord {
                object: r.object,
                key: r.key,
                owner: r.owner,
                fields: r
                    .fields
                    .into_iter()
                    .map(|(k, v)| (k, toml_to_json(v)))
                    .collect(),
            })
            .collect();
        Ok(Seed {
            org_id: raw.org.id,
            org_name: raw.org.name.unwrap_or_else(|| "Simulated Org".into()),
            users,
            objects,
            records,
            generated: Vec::new(),
        })
    }

    /// Adds `count` records of `object`, made by `make(i)` for `i` in `0..count`, created when
    /// the org starts (no change events). References may use `"@key"` of seed records.
    pub fn generate(
        &mut self,
        object: &str,
        count: usize,
        make: impl Fn(usize) -> Vec<(String, Value)> + Send + Sync + 'static,
    ) -> &mut Self {
        self.generated.push(Generated {
            object: object.to_string(),
            count,
            make: Arc::new(make),
        });
        self
    }

    /// Usernames known to the org (JWT `sub` must be one of them).
    pub fn usernames(&self) -> Vec<String> {
        self.users.iter().map(|u| u.username.clone()).collect()
    }

    /// Seed records by key, for checks in tests.
    pub fn keys(&self) -> HashMap<String, String> {
        self.records
            .iter()
            .filter_map(|r| r.key.clone().map(|k| (k, r.object.clone())))
            .collect()
    }
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_seed_has_the_rule_files_objects() {
        let seed = Seed::from_toml(DEFAULT_SEED).expect("default seed parses");
        let names: Vec<_> = seed.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["Account", "Opportunity", "Territory__c"]);
        let opp = &seed.objects[1];
        for f in [
            "Name",
            "Amount",
            "StageName",
            "CloseDate",
            "Forecast_Override__c",
            "Probability",
            "AccountId",
        ] {
            assert!(opp.fields.iter().any(|s| s.name == f), "{f}");
        }
        assert!(seed.users.iter().any(|u| u.run_as));
    }

    #[test]
    fn bad_seeds_are_refused() {
        assert!(Seed::from_toml("[org]\nid='x'\n").is_err());
        let bad_type = "[org]\nid='00D5g000004PLSY'\n[[user]]\nkey='a'\nusername='a@b'\n[[object]]\nname='X__c'\nkey_prefix='a01'\nfields=[{name='F', type='blob'}]\n";
        assert!(matches!(
            Seed::from_toml(bad_type),
            Err(SeedError::Invalid(_))
        ));
    }
}
