//! CDC event payloads → plansync changes.
//!
//! A `data` message on a change-event channel carries `event.replayId` and a `payload` made
//! of the `ChangeEventHeader` and the record's fields. Parsing goes straight from the frame's
//! bytes into typed structs (field values are the only `serde_json::Value`s built), because
//! the stream can bring hundreds of thousands of events a second at quarter-end.
//!
//! Compound fields are flattened to the names the rules use (`BillingAddress.City` →
//! `BillingCity`, `Name.LastName` → `LastName`, `Loc__c.Latitude` → `Loc__Latitude__s`);
//! `changedFields` and `nulledFields` select what an UPDATE changed; gap and overflow events
//! become requests to re-read records or objects; anything malformed becomes a `Problem`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::model::{Change, ChangeKind, FieldChange, Position, RecordKey, Side, Source};

/// A place in a channel's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub channel: String,
    pub replay_id: i64,
}

impl Replay {
    pub fn to_position(&self) -> Position {
        Position::Replay {
            channel: self.channel.clone(),
            replay_id: self.replay_id.to_string(),
        }
    }
}

/// One change event, as received (one per event, however many records it names).
#[derive(Debug, Clone, PartialEq)]
pub struct CdcEvent {
    pub channel: String,
    pub replay_id: i64,
    /// The object's API name (`Account`, `Territory__c`).
    pub entity: String,
    pub change_type: ChangeKind,
    /// Usually one id; several for a merged event (the same change to each).
    pub record_ids: Vec<String>,
    pub commit_timestamp: DateTime<Utc>,
    pub commit_user: Option<String>,
    pub transaction_key: Option<String>,
    pub sequence_number: Option<i64>,
    /// `changeOrigin`, e.g. `com/salesforce/api/rest/59.0;client=plansync`.
    pub origin: Option<String>,
    /// The origin names our client id: the change was made by one of our writes.
    pub ours: bool,
    /// The fields changed (UPDATE) or set (CREATE, UNDELETE), flattened; none for DELETE.
    pub fields: Vec<FieldChange>,
    /// Large text fields that arrived as a diff: their new value must be re-read.
    pub diff_fields: Vec<String>,
}

impl CdcEvent {
    pub fn replay(&self) -> Replay {
        Replay {
            channel: self.channel.clone(),
            replay_id: self.replay_id,
        }
    }

    /// One change per record id, for the engine, under `pairing`.
    pub fn to_changes(&self, pairing: &str) -> Vec<Change> {
        let position = self.replay().to_position();
        self.record_ids
            .iter()
            .map(|id| Change {
                side: Side::Crm,
                record: RecordKey {
                    pairing: pairing.to_string(),
                    crm_id: id.clone(),
                },
                kind: self.change_type,
                fields: self.fields.clone(),
                committed_at: self.commit_timestamp,
                source: Source::Stream,
                ours: self.ours,
                position: position.clone(),
            })
            .collect()
    }

    /// This event as a Bayeux data message (compact, flattened field names, header fields in
    /// a fixed order): what the parser reads back into an equal event.
    pub fn to_message_json(&self) -> String {
        let s = |v: &str| serde_json::Value::from(v).to_string();
        let opt = |v: &Option<String>| v.as_deref().map_or("null".to_string(), s);
        let mut out = String::with_capacity(256);
        out.push_str(&format!(
            "{{\"channel\":{},\"data\":{{\"schema\":\"plansync\",\"event\":{{\"replayId\":{}}},\"payload\":{{\"ChangeEventHeader\":{{",
            s(&self.channel),
            self.replay_id
        ));
        let ids: Vec<String> = self.record_ids.iter().map(|i| s(i)).collect();
        out.push_str(&format!(
            "\"entityName\":{},\"recordIds\":[{}],\"changeType\":{},\"changeOrigin\":{},\"transactionKey\":{},\"sequenceNumber\":{},\"commitTimestamp\":{},\"commitUser\":{}",
            s(&self.entity),
            ids.join(","),
            s(change_type_name(self.change_type)),
            opt(&self.origin),
            opt(&self.transaction_key),
            self.sequence_number.map_or("null".to_string(), |n| n.to_string()),
            self.commit_timestamp.timestamp_millis(),
            opt(&self.commit_user),
        ));
        if self.change_type == ChangeKind::Update {
            let names: Vec<String> = self
                .fields
                .iter()
                .map(|f| s(&f.field))
                .chain(self.diff_fields.iter().map(|f| s(f)))
                .collect();
            out.push_str(&format!(",\"changedFields\":[{}]", names.join(",")));
        }
        out.push('}');
        for f in &self.fields {
            out.push_str(&format!(",{}:{}", s(&f.field), f.value));
        }
        for d in &self.diff_fields {
            out.push_str(&format!(",{}:{{\"diff\":\"\"}}", s(d)));
        }
        out.push_str("}}}");
        out
    }
}

pub(crate) fn change_type_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Create => "CREATE",
        ChangeKind::Update => "UPDATE",
        ChangeKind::Delete => "DELETE",
        ChangeKind::Undelete => "UNDELETE",
    }
}

/// What kind of trouble a `Problem` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Not JSON, or not the shape of a Bayeux message or change event.
    Malformed,
    /// A value of the wrong type (a field that is an array, a timestamp out of range, ...).
    BadType,
    /// A data message on a channel we did not subscribe to.
    UnknownChannel,
    /// An event for an object not in `known_fields`.
    UnknownObject,
    /// An event naming a field not in `known_fields` for its object.
    UnknownField,
    /// A change type plansync does not handle (`SNAPSHOT`, ...).
    UnknownChangeType,
    /// A frame over the configured size cap was dropped unread: events may be missing, so
    /// the engine should reconcile the subscribed objects.
    FrameDropped,
}

/// The outcome of reading one data message.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Event(CdcEvent),
    /// Records changed but the event carries no values: re-read them.
    Gap {
        entity: String,
        record_ids: Vec<String>,
        change_type: String,
        replay: Replay,
    },
    /// Too many changes (or a wildcard id): re-read the whole object.
    Overflow {
        entity: String,
        replay: Replay,
    },
    Problem {
        kind: ProblemKind,
        replay_id: Option<i64>,
        entity: Option<String>,
        record_ids: Vec<String>,
        reason: String,
    },
}

/// What the parser needs to know beyond the message.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext<'a> {
    pub our_client_id: &'a str,
    /// When given, an event for an object or field not listed is a `Problem`.
    pub known_fields: Option<&'a HashMap<String, HashSet<String>>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    event: EventMeta,
    #[serde(borrow)]
    payload: &'a RawValue,
}

#[derive(Deserialize)]
struct EventMeta {
    #[serde(rename = "replayId")]
    replay_id: i64,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(rename = "entityName", borrow)]
    entity_name: Cow<'a, str>,
    #[serde(rename = "recordIds", default)]
    record_ids: Vec<String>,
    #[serde(rename = "changeType", borrow)]
    change_type: Cow<'a, str>,
    #[serde(rename = "changeOrigin", default)]
    change_origin: Option<String>,
    #[serde(rename = "transactionKey", default)]
    transaction_key: Option<String>,
    #[serde(rename = "sequenceNumber", default)]
    sequence_number: Option<i64>,
    #[serde(rename = "commitTimestamp")]
    commit_timestamp: i64,
    #[serde(rename = "commitUser", default)]
    commit_user: Option<String>,
    #[serde(rename = "changedFields", default)]
    changed_fields: Option<Vec<String>>,
    #[serde(rename = "nulledFields", default)]
    nulled_fields: Option<Vec<String>>,
}

/// The payload: the header and the fields in arrival order, read in one pass.
struct Payload<'a> {
    header: Option<Header<'a>>,
    fields: Vec<(Cow<'a, str>, serde_json::Value)>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Payload<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PayloadVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for PayloadVisitor<'a> {
            type Value = Payload<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a change event payload object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Payload<'a>, M::Error> {
                let mut header = None;
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "ChangeEventHeader" {
                        header = Some(map.next_value()?);
                    } else {
                        fields.push((key, map.next_value()?));
                    }
                }
                Ok(Payload { header, fields })
            }
        }
        d.deserialize_map(PayloadVisitor(std::marker::PhantomData))
    }
}

/// The rules' name for part `part` of compound field `compound`.
pub fn flat_name(compound: &str, part: &str) -> String {
    if compound == "Name" {
        part.to_string()
    } else if let Some(prefix) = compound.strip_suffix("Address") {
        format!("{prefix}{part}")
    } else if let Some(base) = compound.strip_suffix("__c") {
        format!("{base}__{part}__s")
    } else {
        format!("{compound}{part}")
    }
}

/// `BillingAddress.City` → `BillingCity`; a plain name stays as it is.
fn flat_path(path: &str) -> Cow<'_, str> {
    match path.split_once('.') {
        Some((compound, part)) => Cow::Owned(flat_name(compound, part)),
        None => Cow::Borrowed(path),
    }
}

/// Whether `changeOrigin` carries `client=<ours>` exactly.
pub fn origin_is_ours(origin: &str, our_client_id: &str) -> bool {
    !our_client_id.is_empty()
        && origin
            .split(';')
            .any(|part| part.trim().strip_prefix("client=") == Some(our_client_id))
}

fn problem(
    kind: ProblemKind,
    replay_id: Option<i64>,
    entity: Option<String>,
    record_ids: Vec<String>,
    reason: impl Into<String>,
) -> Parsed {
    Parsed::Problem {
        kind,
        replay_id,
        entity,
        record_ids,
        reason: reason.into(),
    }
}

/// Reads the `data` of a message on `channel`. Never fails: trouble is a `Parsed::Problem`.
pub fn parse_data(channel: &str, data: &str, ctx: &ParseContext<'_>) -> Parsed {
    let data: Data<'_> = match serde_json::from_str(data) {
        Ok(d) => d,
        Err(e) => {
            return problem(
                ProblemKind::Malformed,
                None,
                None,
                Vec::new(),
                format!("event envelope: {e}"),
            );
        }
    };
    let replay_id = data.event.replay_id;
    let payload: Payload<'_> = match serde_json::from_str(data.payload.get()) {
        Ok(p) => p,
        Err(e) => {
            let kind = if e.classify() == serde_json::error::Category::Data {
                ProblemKind::BadType
            } else {
                ProblemKind::Malformed
            };
            return problem(
                kind,
                Some(replay_id),
                None,
                Vec::new(),
                format!("event payload: {e}"),
            );
        }
    };
    let Some(header) = payload.header else {
        return problem(
            ProblemKind::Malformed,
            Some(replay_id),
            None,
            Vec::new(),
            "event payload has no ChangeEventHeader",
        );
    };
    let entity = header.entity_name.to_string();
    let replay = || Replay {
        channel: channel.to_string(),
        replay_id,
    };
    let bad = |kind, ids: &Vec<String>, reason: String| {
        problem(
            kind,
            Some(replay_id),
            Some(entity.clone()),
            ids.clone(),
            reason,
        )
    };
    if let Some(known) = ctx.known_fields
        && !known.contains_key(&entity)
    {
        return bad(
            ProblemKind::UnknownObject,
            &header.record_ids,
            format!("event for unknown object `{entity}`"),
        );
    }
    if header.change_type == "GAP_OVERFLOW" || header.record_ids.iter().any(|id| id.ends_with('*'))
    {
        return Parsed::Overflow {
            entity,
            replay: replay(),
        };
    }
    let kind = match header.change_type.as_ref() {
        "CREATE" => ChangeKind::Create,
        "UPDATE" => ChangeKind::Update,
        "DELETE" => ChangeKind::Delete,
        "UNDELETE" => ChangeKind::Undelete,
        gap if gap.starts_with("GAP_") => {
            return Parsed::Gap {
                entity,
                record_ids: header.record_ids,
                change_type: gap.to_string(),
                replay: replay(),
            };
        }
        other => {
            return bad(
                ProblemKind::UnknownChangeType,
                &header.record_ids,
                format!("unknown change type `{other}`"),
            );
        }
    };
    if header.record_ids.is_empty() || header.record_ids.iter().any(|id| id.is_empty()) {
        return bad(
            ProblemKind::Malformed,
            &header.record_ids,
            "event names no record id".into(),
        );
    }
    let Some(commit_timestamp) = DateTime::from_timestamp_millis(header.commit_timestamp) else {
        return bad(
            ProblemKind::BadType,
            &header.record_ids,
            format!(
                "commitTimestamp {} is out of range",
                header.commit_timestamp
            ),
        );
    };

    let mut fields: Vec<FieldChange> = Vec::new();
    let mut diff_fields: Vec<String> = Vec::new();
    if kind != ChangeKind::Delete {
        // For an UPDATE that lists its changes, only listed fields count: Pub/Sub-style
        // payloads carry every field, unchanged ones as null.
        let selected: Option<HashSet<Cow<'_, str>>> = match (&header.changed_fields, kind) {
            (Some(changed), ChangeKind::Update) if !changed.is_empty() => Some(
                changed
                    .iter()
                    .chain(header.nulled_fields.iter().flatten())
                    .map(|p| flat_path(p))
                    .chain(changed.iter().map(|p| Cow::Borrowed(p.as_str())))
                    .collect(),
            ),
            _ => None,
        };
        let wanted = |name: &str, compound: Option<&str>| match &selected {
            None => true,
            Some(set) => set.contains(name) || compound.is_some_and(|c| set.contains(c)),
        };
        for (name, value) in payload.fields {
            match value {
                serde_json::Value::Array(_) => {
                    return bad(
                        ProblemKind::BadType,
                        &header.record_ids,
                        format!("field `{name}` is an array"),
                    );
                }
                serde_json::Value::Object(parts) => {
                    if parts.len() == 1
                        && let Some(diff) = parts.get("diff")
                    {
                        if !diff.is_string() {
                            return bad(
                                ProblemKind::BadType,
                                &header.record_ids,
                                format!("field `{name}` has a diff that is not text"),
                            );
                        }
                        if wanted(&name, None) {
                            fields.retain(|f| f.field != name.as_ref());
                            diff_fields.retain(|d| d != name.as_ref());
                            diff_fields.push(name.into_owned());
                        }
                        continue;
                    }
                    for (part, v) in parts {
                        if v.is_array() || v.is_object() {
                            return bad(
                                ProblemKind::BadType,
                                &header.record_ids,
                                format!("compound field part `{name}.{part}` is not a value"),
                            );
                        }
                        let flat = flat_name(&name, &part);
                        if flat == "ChangeEventHeader" {
                            return bad(
                                ProblemKind::BadType,
                                &header.record_ids,
                                format!("compound part `{name}.{part}` would shadow the header"),
                            );
                        }
                        if wanted(&flat, Some(&name)) {
                            push_field(&mut fields, &mut diff_fields, flat, v);
                        }
                    }
                }
                v => {
                    if wanted(&name, None) {
                        push_field(&mut fields, &mut diff_fields, name.into_owned(), v);
                    }
                }
            }
        }
        if kind == ChangeKind::Update {
            for nulled in header.nulled_fields.iter().flatten() {
                let flat = flat_path(nulled);
                if !fields.iter().any(|f| f.field == flat)
                    && !diff_fields.iter().any(|d| *d == flat)
                {
                    fields.push(FieldChange {
                        field: flat.into_owned(),
                        value: serde_json::Value::Null,
                    });
                }
            }
        }
    }
    if let Some(known) = ctx.known_fields.and_then(|k| k.get(&entity))
        && let Some(unknown) = fields
            .iter()
            .map(|f| f.field.as_str())
            .chain(diff_fields.iter().map(String::as_str))
            .find(|f| !known.contains(*f))
    {
        return bad(
            ProblemKind::UnknownField,
            &header.record_ids,
            format!("event names unknown field `{entity}.{unknown}`"),
        );
    }
    let ours = header
        .change_origin
        .as_deref()
        .is_some_and(|o| origin_is_ours(o, ctx.our_client_id));
    Parsed::Event(CdcEvent {
        channel: channel.to_string(),
        replay_id,
        entity,
        change_type: kind,
        record_ids: header.record_ids,
        commit_timestamp,
        commit_user: header.commit_user,
        transaction_key: header.transaction_key,
        sequence_number: header.sequence_number,
        origin: header.change_origin.filter(|o| !o.is_empty()),
        ours,
        fields,
        diff_fields,
    })
}

/// Adds a field; a name seen twice (a flat field and a compound part for the same thing,
/// or a duplicated key) keeps the last value, as a JSON object would.
fn push_field(
    fields: &mut Vec<FieldChange>,
    diff_fields: &mut Vec<String>,
    field: String,
    value: serde_json::Value,
) {
    fields.retain(|f| f.field != field);
    diff_fields.retain(|d| *d != field);
    fields.push(FieldChange { field, value });
}
