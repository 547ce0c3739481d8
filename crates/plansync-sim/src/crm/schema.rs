//! Object and field definitions of the simulated org: typed fields, the system fields every
//! object has, and compound address fields whose parts are stored flat.

use std::collections::HashMap;

/// A field's data type, as the describe call would name it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    Id,
    String,
    Double,
    Currency,
    Percent,
    Boolean,
    Date,
    DateTime,
    /// A restricted picklist: only these values are accepted.
    Picklist(Vec<String>),
    /// A lookup to records of these objects.
    Reference(Vec<String>),
    /// A compound address; its parts are ordinary string fields naming it as `compound`.
    Address,
}

impl FieldType {
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::String => "string",
            FieldType::Double => "double",
            FieldType::Currency => "currency",
            FieldType::Percent => "percent",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
            FieldType::Picklist(_) => "picklist",
            FieldType::Reference(_) => "reference",
            FieldType::Address => "address",
        }
    }

    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            FieldType::Double | FieldType::Currency | FieldType::Percent
        )
    }
}

/// Fields every object carries, computed from the record's bookkeeping rather than stored as
/// values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemField {
    Id,
    IsDeleted,
    CreatedDate,
    CreatedById,
    LastModifiedDate,
    LastModifiedById,
    SystemModstamp,
    OwnerId,
}

/// Where a field's value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    System(SystemField),
    /// Index into the record's value slots.
    Slot(usize),
    /// A compound field: read from its parts.
    Compound,
}

#[derive(Debug, Clone)]
pub struct FieldDef {
    pub name: String,
    pub ty: FieldType,
    pub storage: Storage,
    pub required: bool,
    /// Whether API writes may set it (system fields may not).
    pub updateable: bool,
    /// For a part of a compound field: the compound's name and the part's name in events
    /// (`BillingAddress`, `City`) and in REST (`city`).
    pub compound: Option<(String, String)>,
    /// An external id: upserts may match records by it (`sobjects/{object}/{field}/{value}`).
    pub external_id: bool,
    /// No two live records may hold the same non-empty value (`DUPLICATE_VALUE`).
    pub unique: bool,
}

#[derive(Debug, Clone)]
pub struct ObjectDef {
    pub name: String,
    pub key_prefix: String,
    pub fields: Vec<FieldDef>,
    /// Lower-cased field name → index in `fields` (SOQL and REST are case-insensitive).
    by_name: HashMap<String, usize>,
    pub slots: usize,
    /// The CDC channel of this object, e.g. `/data/OpportunityChangeEvent`.
    pub channel: String,
    /// A stable schema id for its change events.
    pub schema_id: String,
}

/// What a seed file (or code) declares for an object's own fields.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub name: String,
    pub ty: FieldType,
    pub required: bool,
    /// False for a field API writes may not set (a formula, a roll-up): the seed may still
    /// give it values, as the org computes them.
    pub updateable: bool,
    pub compound: Option<(String, String)>,
    pub external_id: bool,
    pub unique: bool,
}

impl ObjectDef {
    /// Builds the full definition: `Id`, the declared fields, then the system fields.
    pub fn new(name: &str, key_prefix: &str, specs: &[FieldSpec], has_owner: bool) -> ObjectDef {
        let mut fields = vec![system("Id", FieldType::Id, SystemField::Id)];
        let mut slots = 0;
        for spec in specs {
            let storage = if spec.ty == FieldType::Address {
                Storage::Compound
            } else {
                slots += 1;
                Storage::Slot(slots - 1)
            };
            fields.push(FieldDef {
                name: spec.name.clone(),
                ty: spec.ty.clone(),
                storage,
                required: spec.required,
                updateable: spec.updateable && storage != Storage::Compound,
                compound: spec.compound.clone(),
                external_id: spec.external_id,
                unique: spec.unique,
            });
        }
        let user = || FieldType::Reference(vec!["User".into()]);
        if has_owner {
            fields.push(FieldDef {
                updateable: true,
                ..system("OwnerId", user(), SystemField::OwnerId)
            });
        }
        fields.push(system(
            "IsDeleted",
            FieldType::Boolean,
            SystemField::IsDeleted,
        ));
        fields.push(system(
            "CreatedDate",
            FieldType::DateTime,
            SystemField::CreatedDate,
        ));
        fields.push(system("CreatedById", user(), SystemField::CreatedById));
        fields.push(system(
            "LastModifiedDate",
            FieldType::DateTime,
            SystemField::LastModifiedDate,
        ));
        fields.push(system(
            "LastModifiedById",
            user(),
            SystemField::LastModifiedById,
        ));
        fields.push(system(
            "SystemModstamp",
            FieldType::DateTime,
            SystemField::SystemModstamp,
        ));
        let by_name = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.to_ascii_lowercase(), i))
            .collect();
        let channel = match name.strip_suffix("__c") {
            Some(base) => format!("/data/{base}__ChangeEvent"),
            None => format!("/data/{name}ChangeEvent"),
        };
        let schema_id = schema_id_for(name, &fields);
        ObjectDef {
            name: name.to_string(),
            key_prefix: key_prefix.to_string(),
            fields,
            by_name,
            slots,
            channel,
            schema_id,
        }
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.field_index(name).and_then(|i| self.fields.get(i))
    }

    /// The parts of a compound field, in declaration order.
    pub fn parts_of<'a>(&'a self, compound: &'a str) -> impl Iterator<Item = &'a FieldDef> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.compound.as_ref().is_some_and(|(c, _)| c == compound))
    }
}

fn system(name: &str, ty: FieldType, which: SystemField) -> FieldDef {
    FieldDef {
        name: name.into(),
        ty,
        storage: Storage::System(which),
        required: false,
        updateable: false,
        compound: None,
        external_id: false,
        unique: false,
    }
}

/// A 22-character id that changes whenever the object's fields change, like Salesforce's.
fn schema_id_for(name: &str, fields: &[FieldDef]) -> String {
    let mut text = name.to_string();
    for f in fields {
        text.push('|');
        text.push_str(&f.name);
        text.push(':');
        text.push_str(f.ty.name());
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    use base64::Engine;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    encoded.chars().take(22).collect()
}
