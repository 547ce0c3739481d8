//! `GET /services/data/vXX.X/sobjects/{object}/describe`: an object's field metadata, for the
//! preflight (`plansync check`) to tell whether the fields the rules name exist, have a type
//! their values fit, and can be written.
//!
//! The wire shape is this module's own (the simulator has its own), and only the keys the
//! checks need are read; a key Salesforce leaves out takes its documented default.

use reqwest::Method;
use serde::Deserialize;

use crate::crm::client::CrmClient;
use crate::crm::error::CrmError;
use crate::crm::http::{Body, Call};
use crate::crm::stats::CallKind;
use crate::secret::excerpt;

/// What the CRM says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDescription {
    pub name: String,
    pub label: String,
    pub createable: bool,
    pub updateable: bool,
    pub fields: Vec<FieldDescription>,
}

impl ObjectDescription {
    /// The field named `name` (API names are case-insensitive, as in SOQL).
    pub fn field(&self, name: &str) -> Option<&FieldDescription> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
}

/// One field of a describe answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: String,
    pub label: String,
    /// Salesforce's type name as sent: `string`, `double`, `currency`, `picklist`, ….
    pub field_type: String,
    /// Characters, for text types.
    pub length: u32,
    /// Digits in all and after the point, for number types.
    pub precision: u32,
    pub scale: u32,
    pub nillable: bool,
    pub createable: bool,
    pub updateable: bool,
    /// A formula or roll-up: computed by the org, never written.
    pub calculated: bool,
    pub picklist_values: Vec<PicklistValue>,
    pub reference_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PicklistValue {
    pub value: String,
    pub label: String,
    pub active: bool,
}

#[derive(Deserialize)]
struct WireObject {
    name: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    createable: bool,
    #[serde(default)]
    updateable: bool,
    #[serde(default)]
    fields: Vec<WireField>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireField {
    name: String,
    #[serde(default)]
    label: String,
    #[serde(rename = "type")]
    field_type: String,
    #[serde(default)]
    length: u32,
    #[serde(default)]
    precision: u32,
    #[serde(default)]
    scale: u32,
    #[serde(default)]
    nillable: bool,
    #[serde(default)]
    createable: bool,
    #[serde(default)]
    updateable: bool,
    #[serde(default)]
    calculated: bool,
    // `null` for fields that are not picklists on some API versions, hence Option.
    #[serde(default)]
    picklist_values: Option<Vec<WirePicklistValue>>,
    #[serde(default)]
    reference_to: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct WirePicklistValue {
    value: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

impl CrmClient {
    /// Describes `object` (`Opportunity`, `Territory__c`). An object the CRM does not have, or
    /// that the integration user cannot see, is `CrmError::Api` with status 404 and code
    /// `NOT_FOUND`.
    pub async fn describe(&self, object: &str) -> Result<ObjectDescription, CrmError> {
        // The name goes into the path: only an API name may, never a `/` or `..`.
        if object.is_empty()
            || !object
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(CrmError::Config(format!(
                "`{object}` is not an sObject API name"
            )));
        }
        let path = format!("{}/sobjects/{object}/describe", self.data_prefix());
        let reply = self
            .send(&Call {
                method: Method::GET,
                path: &path,
                query: &[],
                body: Body::Empty,
                kind: CallKind::Other,
                write: false,
                idempotent: true,
            })
            .await?;
        parse(&reply.body)
    }
}

/// The describe parser as one function for `fuzz/fuzz_targets/crm_describe.rs` and the
/// stable replay of its corpus: any body is an answer or a `Decode` error, never a panic,
/// and a parsed answer finds each of its fields by name.
pub fn fuzz_describe(data: &[u8]) {
    match parse(data) {
        Ok(d) => {
            for f in &d.fields {
                assert!(d.field(&f.name).is_some(), "{}", f.name);
            }
        }
        Err(e) => assert!(matches!(e, CrmError::Decode { .. }), "{e}"),
    }
}

fn parse(body: &[u8]) -> Result<ObjectDescription, CrmError> {
    let wire: WireObject = serde_json::from_slice(body).map_err(|e| CrmError::Decode {
        what: "sObject describe",
        detail: format!("{e}; body starts: {}", excerpt(body)),
    })?;
    Ok(ObjectDescription {
        name: wire.name,
        label: wire.label,
        createable: wire.createable,
        updateable: wire.updateable,
        fields: wire
            .fields
            .into_iter()
            .map(|f| FieldDescription {
                name: f.name,
                label: f.label,
                field_type: f.field_type,
                length: f.length,
                precision: f.precision,
                scale: f.scale,
                nillable: f.nillable,
                createable: f.createable,
                updateable: f.updateable,
                calculated: f.calculated,
                picklist_values: f
                    .picklist_values
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| PicklistValue {
                        label: p.label.unwrap_or_else(|| p.value.clone()),
                        value: p.value,
                        active: p.active,
                    })
                    .collect(),
                reference_to: f.reference_to.unwrap_or_default(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_salesforce_describe_answer() {
        // Trimmed from the REST API guide's Account describe example; extra keys are ignored.
        let body = br#"{"name":"Account","label":"Account","createable":true,"updateable":true,
          "keyPrefix":"001","fields":[
            {"name":"Id","label":"Account ID","type":"id","length":18,"precision":0,"scale":0,
             "nillable":false,"createable":false,"updateable":false,"calculated":false,
             "picklistValues":[],"referenceTo":[]},
            {"name":"Rating","label":"Account Rating","type":"picklist","length":255,
             "nillable":true,"createable":true,"updateable":true,
             "picklistValues":[{"active":true,"defaultValue":false,"label":"Hot","validFor":null,"value":"Hot"},
                               {"active":false,"defaultValue":false,"label":null,"validFor":null,"value":"Cold"}],
             "referenceTo":null}]}"#;
        let d = parse(body).expect("parses");
        assert_eq!(d.name, "Account");
        assert!(d.updateable);
        let rating = d.field("rating").expect("case-insensitive");
        assert_eq!(rating.field_type, "picklist");
        assert_eq!(rating.picklist_values.len(), 2);
        assert_eq!(rating.picklist_values[1].label, "Cold");
        assert!(!rating.picklist_values[1].active);
        assert!(rating.reference_to.is_empty());
        assert!(!d.field("Id").expect("id").updateable);
        assert!(matches!(parse(b"<html>"), Err(CrmError::Decode { .. })));
    }
}
