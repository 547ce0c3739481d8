//! The seed: what the simulated tenant holds when it starts, read from TOML or built in code.
//!
//! # Format
//!
//! ```toml
//! customer_guid = "5f0c2a9e7d3b4c61a8e2f4b6c8d0e1f2"   # optional, 32 lowercase hex
//!
//! [[workspace]]
//! id = "8a81b09d5e8c6f27015e8d4f1a2b3c4d"             # 32 lowercase hex
//! name = "RevOps Planning"
//! size_allowance = 10737418240                        # optional, bytes
//!
//! [[model]]
//! id = "75A40874E6B64FA3AE0743278996850F"             # 32 UPPERCASE hex
//! name = "Revenue Plan"
//! workspace = "8a81b09d5e8c6f27015e8d4f1a2b3c4d"
//!
//! [[list]]                        # `model = "<id>"` is optional on every entry below:
//! name = "Opportunities"          # it defaults to the first model
//! properties = [{ name = "Opportunity Name", format = "text" }]   # text | number | boolean
//! items = [{ code = "006…", name = "OPP-0001", properties = { "Opportunity Name" = "Acme" } }]
//!
//! [[module]]
//! name = "OPP01 Opportunity Data"
//! applies_to = "Opportunities"    # the list that dimensions every line item
//! line_items = [
//!   { name = "Amount", format = "number" },               # number | text | boolean | date
//!   { name = "Stage", format = "list", list = "Stages" }, # list: values are item names
//!   { name = "Weighted Amount", format = "number", formula = "Amount * Probability / 100" },
//! ]
//! views = [{ name = "Forecast Review", line_items = ["Amount"] }]   # saved views, optional
//! [module.rows]                   # cells, by item code then line item name
//! "006…" = { Amount = 125000, Stage = "Proposal", "Close Date" = "2026-12-18" }
//!
//! [[import]]                      # HIERARCHY_DATA targets a list, MODULE_DATA a module;
//! name = "OPP01 from opportunities.csv"   # `file` names the 113… source file to upload
//! type = "MODULE_DATA"
//! target = "OPP01 Opportunity Data"
//! file = "opportunities.csv"
//!
//! [[export]]                      # always TABULAR_MULTI_COLUMN CSV of the module
//! name = "OPP01 Opportunity Data.csv"
//! module = "OPP01 Opportunity Data"
//!
//! [[process]]                     # runs its imports and exports in order
//! name = "Load Opportunities"
//! actions = ["OPP01 from opportunities.csv"]
//! ```
//!
//! Dates are strings `YYYY-MM-DD`. A formula is arithmetic (`+ - * /`, parentheses, numbers)
//! over the names of number line items of the same module; such a line item is calculated and
//! refuses writes. Identifiers (list, module, line item, import, file, export and process IDs)
//! are assigned in seed order, so the same seed always gives the same IDs.
//!
//! For large tenants (a million items), build a `Seed` in code with [`Seed::add_item`] and
//! [`Seed::set_cell`] rather than writing TOML.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The default seed, matching the project's rule files and holding the CRM simulator's default
/// records, coded by the ids it gives them.
pub const DEFAULT_SEED_TOML: &str = include_str!("default_seed.toml");

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read seed file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("seed file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("seed: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub customer_guid: Option<String>,
    #[serde(default)]
    pub workspace: Vec<SeedWorkspace>,
    #[serde(default)]
    pub model: Vec<SeedModel>,
    #[serde(default)]
    pub list: Vec<SeedList>,
    #[serde(default)]
    pub module: Vec<SeedModule>,
    #[serde(default)]
    pub import: Vec<SeedImport>,
    #[serde(default)]
    pub export: Vec<SeedExport>,
    #[serde(default)]
    pub process: Vec<SeedProcess>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedWorkspace {
    pub id: String,
    pub name: String,
    #[serde(default = "default_size_allowance")]
    pub size_allowance: u64,
}

fn default_size_allowance() -> u64 {
    10 * 1024 * 1024 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedModel {
    pub id: String,
    pub name: String,
    pub workspace: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedList {
    #[serde(default)]
    pub model: Option<String>,
    pub name: String,
    #[serde(default)]
    pub properties: Vec<SeedProperty>,
    #[serde(default)]
    pub items: Vec<SeedItem>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProperty {
    pub name: String,
    #[serde(default = "default_text")]
    pub format: String,
}

fn default_text() -> String {
    "text".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedItem {
    #[serde(default)]
    pub code: Option<String>,
    pub name: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedModule {
    #[serde(default)]
    pub model: Option<String>,
    pub name: String,
    pub applies_to: String,
    #[serde(default)]
    pub line_items: Vec<SeedLineItem>,
    #[serde(default)]
    pub views: Vec<SeedView>,
    /// Cells: item code → line item name → value.
    #[serde(default)]
    pub rows: BTreeMap<String, BTreeMap<String, SeedValue>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedLineItem {
    pub name: String,
    /// `number`, `text`, `boolean`, `date` or `list`.
    pub format: String,
    /// For `format = "list"`: the list whose item names are the values.
    #[serde(default)]
    pub list: Option<String>,
    /// Makes the line item calculated (read-only).
    #[serde(default)]
    pub formula: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedView {
    pub name: String,
    pub line_items: Vec<String>,
}

/// A cell value in a seed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SeedValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedImport {
    #[serde(default)]
    pub model: Option<String>,
    pub name: String,
    /// `MODULE_DATA` or `HIERARCHY_DATA`.
    #[serde(rename = "type")]
    pub import_type: String,
    /// A module (MODULE_DATA) or a list (HIERARCHY_DATA).
    pub target: String,
    /// The name of the source file (a 113… file in the model).
    pub file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedExport {
    #[serde(default)]
    pub model: Option<String>,
    pub name: String,
    pub module: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProcess {
    #[serde(default)]
    pub model: Option<String>,
    pub name: String,
    /// Import or export names, run in this order.
    pub actions: Vec<String>,
}

impl Seed {
    /// The built-in seed (see `default_seed.toml`).
    pub fn default_seed() -> Seed {
        // The default seed is part of the binary and covered by a unit test, so a parse
        // failure here is a bug in the shipped file, not bad outside input.
        Seed::from_toml_str(DEFAULT_SEED_TOML, "default_seed.toml").unwrap_or_default()
    }

    pub fn from_toml_str(text: &str, origin: &str) -> Result<Seed, SeedError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let at = e.span().map(|span| {
                let before = text.get(..span.start).unwrap_or("");
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            SeedError::Parse {
                path: origin.to_string(),
                message: format!("{}{}", at.unwrap_or_default(), e.message().trim()),
            }
        })
    }

    pub fn from_file(path: &Path) -> Result<Seed, SeedError> {
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Seed::from_toml_str(&text, &path.display().to_string())
    }

    /// Appends an item to a list (of the first model). For building large seeds in code.
    pub fn add_item(&mut self, list: &str, code: &str, name: &str) -> Result<(), SeedError> {
        let l = self
            .list
            .iter_mut()
            .find(|l| l.name == list)
            .ok_or_else(|| SeedError::Invalid(format!("no list named {list:?}")))?;
        l.items.push(SeedItem {
            code: Some(code.to_string()),
            name: name.to_string(),
            properties: BTreeMap::new(),
        });
        Ok(())
    }

    /// Sets a cell of a module (of the first model) by item code and line item name.
    pub fn set_cell(
        &mut self,
        module: &str,
        code: &str,
        line_item: &str,
        value: SeedValue,
    ) -> Result<(), SeedError> {
        let m = self
            .module
            .iter_mut()
            .find(|m| m.name == module)
            .ok_or_else(|| SeedError::Invalid(format!("no module named {module:?}")))?;
        m.rows
            .entry(code.to_string())
            .or_default()
            .insert(line_item.to_string(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_seed_parses_and_matches_the_rule_files() {
        let seed = Seed::from_toml_str(DEFAULT_SEED_TOML, "default").unwrap();
        assert_eq!(seed.workspace[0].id, "8a81b09d5e8c6f27015e8d4f1a2b3c4d");
        assert_eq!(seed.model[0].id, "75A40874E6B64FA3AE0743278996850F");
        let opp = seed
            .module
            .iter()
            .find(|m| m.name == "OPP01 Opportunity Data")
            .unwrap();
        for li in [
            "Amount",
            "Stage",
            "Close Date",
            "Forecast Override",
            "Probability",
            "Approved",
            "CRM Deleted",
        ] {
            assert!(opp.line_items.iter().any(|l| l.name == li), "{li}");
        }
        assert!(opp.line_items.iter().any(|l| l.formula.is_some()));
        let ter = seed
            .module
            .iter()
            .find(|m| m.name == "TER01 Territory Quotas")
            .unwrap();
        assert_eq!(ter.applies_to, "Territories");
        assert_eq!(
            opp.rows["0065g0000000004AAA"]["Approved"],
            SeedValue::Bool(true)
        );
        assert_eq!(
            opp.rows["0065g0000000003AAA"]["Amount"],
            SeedValue::Float(32000.5)
        );
    }

    #[test]
    fn unknown_keys_and_bad_syntax_are_reported_with_the_origin() {
        let err =
            Seed::from_toml_str("[[list]]\nname = \"x\"\ncolour = 1\n", "s.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("seed file s.toml: line 3, column 1: "),
            "{msg}"
        );
        assert!(msg.contains("colour"), "{msg}");
        assert!(Seed::from_toml_str("[[list]\n", "s.toml").is_err());
    }

    #[test]
    fn builder_adds_items_and_cells() {
        let mut seed = Seed::default_seed();
        seed.add_item("Opportunities", "X1", "X one").unwrap();
        seed.set_cell("OPP01 Opportunity Data", "X1", "Amount", SeedValue::Int(5))
            .unwrap();
        assert!(seed.add_item("Nope", "a", "b").is_err());
        let opp = &seed.module[0];
        assert_eq!(opp.rows["X1"]["Amount"], SeedValue::Int(5));
    }
}
