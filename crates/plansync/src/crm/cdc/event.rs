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
        self.clone().into_changes(pairing)
    }

    /// [`CdcEvent::to_changes`], moving the fields into the last change instead of copying
    /// them (a CREATE carries every field of the record).
    pub fn into_changes(self, pairing: &str) -> Vec<Change> {
        let position = self.replay().to_position();
        let mut ids = self.record_ids;
        let Some(last) = ids.pop() else {
            return Vec::new();
        };
        let change = |crm_id: String, fields: Vec<FieldChange>| Change {
            side: Side::Crm,
            record: RecordKey {
                pairing: pairing.to_string(),
                crm_id,
            },
            kind: self.change_type,
            fields,
            committed_at: self.commit_timestamp,
            source: Source::Stream,
            ours: self.ours,
            position: position.clone(),
        };
        let mut changes: Vec<Change> = ids
            .into_iter()
            .map(|id| change(id, self.fields.clone()))
            .collect();
        changes.push(change(last, self.fields));
        changes
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

/// Records changed but the event carries no values (`GAP_*`): re-read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub entity: String,
    pub record_ids: Vec<String>,
    pub change_type: String,
    pub replay: Replay,
}

/// Changes to `entity` were not sent one by one (`GAP_OVERFLOW`, or a wildcard record id):
/// re-read the whole object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow {
    pub entity: String,
    pub replay: Replay,
}

/// An event that could not be used, with what could be read of it, so that the engine can
/// re-read what it was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventProblem {
    pub kind: ProblemKind,
    pub replay_id: Option<i64>,
    pub entity: Option<String>,
    pub record_ids: Vec<String>,
    pub reason: String,
}

/// The outcome of reading one data message. The listener hands each on as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Event(CdcEvent),
    Gap(Gap),
    Overflow(Overflow),
    Problem(EventProblem),
}

impl Parsed {
    /// The replay id the message carried, when it could be read.
    pub fn replay_id(&self) -> Option<i64> {
        match self {
            Parsed::Event(e) => Some(e.replay_id),
            Parsed::Gap(g) => Some(g.replay.replay_id),
            Parsed::Overflow(o) => Some(o.replay.replay_id),
            Parsed::Problem(p) => p.replay_id,
        }
    }
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

/// The same message read in one pass.
#[derive(Deserialize)]
struct WholeData<'a> {
    event: EventMeta,
    #[serde(borrow)]
    payload: Payload<'a>,
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
    Parsed::Problem(EventProblem {
        kind,
        replay_id,
        entity,
        record_ids,
        reason: reason.into(),
    })
}

/// Reads the `data` of a message on `channel`. Never fails: trouble is a `Parsed::Problem`.
pub fn parse_data(channel: &str, data: &str, ctx: &ParseContext<'_>) -> Parsed {
    let (replay_id, payload) = match envelope(data) {
        Ok(parts) => parts,
        Err(problem) => return *problem,
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
        return Parsed::Overflow(Overflow {
            entity,
            replay: replay(),
        });
    }
    let kind = match header.change_type.as_ref() {
        "CREATE" => ChangeKind::Create,
        "UPDATE" => ChangeKind::Update,
        "DELETE" => ChangeKind::Delete,
        "UNDELETE" => ChangeKind::Undelete,
        gap if gap.starts_with("GAP_") => {
            return Parsed::Gap(Gap {
                entity,
                record_ids: header.record_ids,
                change_type: gap.to_string(),
                replay: replay(),
            });
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

/// The replay id and the payload of a data message. A well-formed message is read in one
/// pass; only a bad one is read again, envelope first, to say which part is wrong (and with
/// the replay id when the envelope is fine).
fn envelope(data: &str) -> Result<(i64, Payload<'_>), Box<Parsed>> {
    if let Ok(whole) = serde_json::from_str::<WholeData<'_>>(data) {
        return Ok((whole.event.replay_id, whole.payload));
    }
    let data: Data<'_> = serde_json::from_str(data).map_err(|e| {
        Box::new(problem(
            ProblemKind::Malformed,
            None,
            None,
            Vec::new(),
            format!("event envelope: {e}"),
        ))
    })?;
    let replay_id = data.event.replay_id;
    let payload: Payload<'_> = serde_json::from_str(data.payload.get()).map_err(|e| {
        let kind = if e.classify() == serde_json::error::Category::Data {
            ProblemKind::BadType
        } else {
            ProblemKind::Malformed
        };
        Box::new(problem(
            kind,
            Some(replay_id),
            None,
            Vec::new(),
            format!("event payload: {e}"),
        ))
    })?;
    Ok((replay_id, payload))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CH: &str = "/data/AccountChangeEvent";

    fn ctx() -> ParseContext<'static> {
        ParseContext {
            our_client_id: "plansync",
            known_fields: None,
        }
    }

    fn data(header: serde_json::Value, body: serde_json::Value) -> String {
        let mut payload = body.as_object().cloned().unwrap_or_default();
        payload.insert("ChangeEventHeader".into(), header);
        json!({"schema": "s", "event": {"replayId": 7}, "payload": payload}).to_string()
    }

    fn header(change_type: &str, ids: &[&str]) -> serde_json::Value {
        json!({
            "entityName": "Account", "recordIds": ids, "changeType": change_type,
            "changeOrigin": "com/salesforce/api/rest/59.0;client=someone",
            "transactionKey": "tk", "sequenceNumber": 1, "commitTimestamp": 1735689600000i64,
            "commitNumber": 1, "commitUser": "005A", "changedFields": []
        })
    }

    fn event(parsed: Parsed) -> CdcEvent {
        match parsed {
            Parsed::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The event's fields, sorted: the test inputs are built with `json!`, whose maps sort
    /// their keys, so arrival order is not what the test text shows.
    fn fields(e: &CdcEvent) -> Vec<(String, serde_json::Value)> {
        let mut v: Vec<_> = e
            .fields
            .iter()
            .map(|f| (f.field.clone(), f.value.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn sorted(mut v: Vec<(String, serde_json::Value)>) -> Vec<(String, serde_json::Value)> {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn create_carries_all_fields_flattened() {
        let body = json!({
            "Name": "Acme",
            "BillingAddress": {"Street": "1 Rue X", "City": "Lyon", "Country": "FR"},
            "OwnerId": "005B"
        });
        let e = event(parse_data(
            CH,
            &data(header("CREATE", &["001A"]), body),
            &ctx(),
        ));
        assert_eq!(e.change_type, ChangeKind::Create);
        assert_eq!(
            fields(&e),
            sorted(vec![
                ("Name".into(), json!("Acme")),
                ("BillingStreet".into(), json!("1 Rue X")),
                ("BillingCity".into(), json!("Lyon")),
                ("BillingCountry".into(), json!("FR")),
                ("OwnerId".into(), json!("005B")),
            ])
        );
        assert_eq!(e.commit_timestamp.timestamp_millis(), 1735689600000);
        assert!(!e.ours);
        let changes = e.to_changes("account");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].record.crm_id, "001A");
        assert_eq!(changes[0].source, Source::Stream);
        assert_eq!(
            changes[0].position,
            Position::Replay {
                channel: CH.into(),
                replay_id: "7".into()
            }
        );
    }

    #[test]
    fn update_uses_changed_fields_and_nulls() {
        let mut h = header("UPDATE", &["001A"]);
        h["changedFields"] = json!(["Industry", "BillingAddress.City", "LastModifiedDate"]);
        h["changeOrigin"] = json!("com/salesforce/api/rest/59.0;client=plansync");
        let body = json!({
            "Industry": null,
            "BillingAddress": {"City": "Lyon", "Street": null},
            "Phone": null,
            "LastModifiedDate": "2025-01-01T00:00:00.000Z"
        });
        let e = event(parse_data(CH, &data(h, body), &ctx()));
        assert!(e.ours);
        assert_eq!(
            fields(&e),
            sorted(vec![
                ("Industry".into(), json!(null)),
                ("BillingCity".into(), json!("Lyon")),
                ("LastModifiedDate".into(), json!("2025-01-01T00:00:00.000Z")),
            ])
        );
    }

    #[test]
    fn nulled_fields_appear_as_null() {
        let mut h = header("UPDATE", &["001A"]);
        h["changedFields"] = json!(["Name.LastName", "Description"]);
        h["nulledFields"] = json!(["Description", "Name.FirstName"]);
        let body = json!({"Name": {"LastName": "Ng", "FirstName": null}});
        let e = event(parse_data(CH, &data(h, body), &ctx()));
        assert_eq!(
            fields(&e),
            sorted(vec![
                ("LastName".into(), json!("Ng")),
                ("FirstName".into(), json!(null)),
                ("Description".into(), json!(null)),
            ])
        );
    }

    #[test]
    fn update_without_changed_fields_takes_the_body() {
        let mut h = header("UPDATE", &["001A"]);
        h.as_object_mut().unwrap().remove("changedFields");
        let e = event(parse_data(
            CH,
            &data(h, json!({"Industry": "Energy"})),
            &ctx(),
        ));
        assert_eq!(fields(&e), vec![("Industry".into(), json!("Energy"))]);
    }

    #[test]
    fn delete_and_undelete() {
        let e = event(parse_data(
            CH,
            &data(header("DELETE", &["001A"]), json!({"Name": "ignored"})),
            &ctx(),
        ));
        assert_eq!(e.change_type, ChangeKind::Delete);
        assert!(e.fields.is_empty());
        let e = event(parse_data(
            CH,
            &data(header("UNDELETE", &["001A"]), json!({"Name": "Back"})),
            &ctx(),
        ));
        assert_eq!(e.change_type, ChangeKind::Undelete);
        assert_eq!(fields(&e), vec![("Name".into(), json!("Back"))]);
    }

    #[test]
    fn merged_event_is_one_change_per_record() {
        let mut h = header("UPDATE", &["001A", "001B", "001C"]);
        h["changedFields"] = json!(["Industry"]);
        let e = event(parse_data(
            CH,
            &data(h, json!({"Industry": "Retail"})),
            &ctx(),
        ));
        let changes = e.to_changes("account");
        let ids: Vec<_> = changes.iter().map(|c| c.record.crm_id.as_str()).collect();
        assert_eq!(ids, ["001A", "001B", "001C"]);
        assert!(changes.iter().all(|c| c.fields == e.fields));
    }

    #[test]
    fn gaps_and_overflow_ask_for_rereads() {
        match parse_data(
            CH,
            &data(header("GAP_UPDATE", &["001A"]), json!({})),
            &ctx(),
        ) {
            Parsed::Gap(Gap {
                entity,
                record_ids,
                change_type,
                replay,
            }) => {
                assert_eq!(entity, "Account");
                assert_eq!(record_ids, ["001A"]);
                assert_eq!(change_type, "GAP_UPDATE");
                assert_eq!(replay.replay_id, 7);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_data(CH, &data(header("GAP_OVERFLOW", &[]), json!({})), &ctx()),
            Parsed::Overflow(Overflow { entity, .. }) if entity == "Account"
        ));
        assert!(matches!(
            parse_data(CH, &data(header("UPDATE", &["001*"]), json!({})), &ctx()),
            Parsed::Overflow(_)
        ));
    }

    #[test]
    fn bad_input_is_a_problem_with_what_is_known() {
        let kind_of = |p: Parsed| match p {
            Parsed::Problem(EventProblem {
                kind, replay_id, ..
            }) => (kind, replay_id),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind_of(parse_data(CH, "{", &ctx())).0,
            ProblemKind::Malformed
        );
        assert_eq!(
            kind_of(parse_data(
                CH,
                r#"{"event":{"replayId":"x"},"payload":{}}"#,
                &ctx()
            ))
            .0,
            ProblemKind::Malformed
        );
        assert_eq!(
            kind_of(parse_data(
                CH,
                r#"{"event":{"replayId":3},"payload":{}}"#,
                &ctx()
            )),
            (ProblemKind::Malformed, Some(3))
        );
        let mut h = header("UPDATE", &["001A"]);
        h["commitTimestamp"] = json!("yesterday");
        assert_eq!(
            kind_of(parse_data(CH, &data(h, json!({})), &ctx())),
            (ProblemKind::BadType, Some(7))
        );
        assert_eq!(
            kind_of(parse_data(
                CH,
                &data(header("CREATE", &["001A"]), json!({"Name": [1]})),
                &ctx()
            ))
            .0,
            ProblemKind::BadType
        );
        assert_eq!(
            kind_of(parse_data(
                CH,
                &data(
                    header("CREATE", &["001A"]),
                    json!({"BillingAddress": {"City": {"x": 1}}})
                ),
                &ctx()
            ))
            .0,
            ProblemKind::BadType
        );
        assert_eq!(
            kind_of(parse_data(
                CH,
                &data(header("SNAPSHOT", &["001A"]), json!({})),
                &ctx()
            ))
            .0,
            ProblemKind::UnknownChangeType
        );
        assert_eq!(
            kind_of(parse_data(
                CH,
                &data(header("UPDATE", &[]), json!({})),
                &ctx()
            ))
            .0,
            ProblemKind::Malformed
        );
    }

    #[test]
    fn known_fields_gate_objects_and_fields() {
        let known = HashMap::from([(
            "Account".to_string(),
            HashSet::from(["Name".to_string(), "BillingCity".to_string()]),
        )]);
        let strict = ParseContext {
            our_client_id: "plansync",
            known_fields: Some(&known),
        };
        let ok = parse_data(
            CH,
            &data(
                header("CREATE", &["001A"]),
                json!({"Name": "A", "BillingAddress": {"City": "B"}}),
            ),
            &strict,
        );
        assert!(matches!(ok, Parsed::Event(_)), "{ok:?}");
        match parse_data(
            CH,
            &data(header("CREATE", &["001A"]), json!({"Secret__c": 1})),
            &strict,
        ) {
            Parsed::Problem(EventProblem {
                kind,
                entity,
                record_ids,
                ..
            }) => {
                assert_eq!(kind, ProblemKind::UnknownField);
                assert_eq!(entity.as_deref(), Some("Account"));
                assert_eq!(record_ids, ["001A"]);
            }
            other => panic!("{other:?}"),
        }
        let mut h = header("CREATE", &["a01A"]);
        h["entityName"] = json!("Territory__c");
        assert!(matches!(
            parse_data(CH, &data(h, json!({})), &strict),
            Parsed::Problem(EventProblem {
                kind: ProblemKind::UnknownObject,
                ..
            })
        ));
    }

    #[test]
    fn compound_names_follow_the_sobject_names() {
        assert_eq!(flat_name("BillingAddress", "City"), "BillingCity");
        assert_eq!(
            flat_name("MailingAddress", "PostalCode"),
            "MailingPostalCode"
        );
        assert_eq!(flat_name("Address", "Street"), "Street");
        assert_eq!(flat_name("Name", "FirstName"), "FirstName");
        assert_eq!(flat_name("Site__c", "Latitude"), "Site__Latitude__s");
        assert!(origin_is_ours(
            "com/salesforce/api/rest/59.0;client=plansync",
            "plansync"
        ));
        assert!(!origin_is_ours(
            "com/salesforce/api/rest/59.0;client=plansync2",
            "plansync"
        ));
        assert!(!origin_is_ours("com/salesforce/api/rest/59.0", "plansync"));
        assert!(!origin_is_ours("client=", ""));
    }

    #[test]
    fn large_text_diffs_are_named_for_a_reread() {
        let mut h = header("UPDATE", &["001A"]);
        h["changedFields"] = json!(["Description", "Industry"]);
        let body = json!({"Description": {"diff": "--- \n+++ abc\n@@"}, "Industry": "X"});
        let e = event(parse_data(CH, &data(h, body), &ctx()));
        assert_eq!(e.diff_fields, ["Description"]);
        assert_eq!(fields(&e), vec![("Industry".into(), json!("X"))]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn scalar() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                "[a-zA-Z0-9 ,.\"\\\\é]{0,12}".prop_map(serde_json::Value::from),
            ]
        }

        fn json_ish() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_string()),
                Just("1".to_string()),
                Just("\"CREATE\"".to_string()),
                Just("\"UPDATE\"".to_string()),
                Just("\"GAP_OVERFLOW\"".to_string()),
                "[a-z\\[\\]{}:,\"0-9-]{0,8}",
            ];
            leaf.prop_recursive(4, 40, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5)
                        .prop_map(|v| format!("[{}]", v.join(","))),
                    prop::collection::vec(
                        (
                            prop::sample::select(vec![
                                "channel",
                                "data",
                                "event",
                                "replayId",
                                "payload",
                                "ChangeEventHeader",
                                "entityName",
                                "recordIds",
                                "changeType",
                                "commitTimestamp",
                                "changedFields",
                                "nulledFields",
                                "BillingAddress",
                                "Name",
                                "diff",
                                "successful",
                                "advice",
                            ]),
                            inner
                        ),
                        0..6
                    )
                    .prop_map(|kv| format!(
                        "{{{}}}",
                        kv.iter()
                            .map(|(k, v)| format!("\"{k}\":{v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    )),
                ]
            })
        }

        proptest! {
            #[test]
            fn arbitrary_input_never_panics(frame in json_ish(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                crate::crm::cdc::fuzz_cdc(frame.as_bytes());
                crate::crm::cdc::fuzz_cdc(&bytes);
                let _ = parse_data(CH, &frame, &ctx());
                let wrapped = format!("[{{\"channel\":\"{CH}\",\"data\":{frame}}}]");
                crate::crm::cdc::fuzz_cdc(wrapped.as_bytes());
            }

            #[test]
            fn a_generated_event_parses_to_its_changes(
                kind in prop::sample::select(vec!["CREATE", "UPDATE", "DELETE", "UNDELETE"]),
                ids in prop::collection::vec("[0-9A-Za-z]{15,18}", 1..4),
                plain in prop::collection::btree_map("[A-Z][a-z]{1,6}(__c)?", scalar(), 0..6),
                city in proptest::option::of(scalar()),
                replay_id in 0i64..i64::MAX,
                ms in 0i64..4_000_000_000_000,
                ours in any::<bool>(),
            ) {
                let mut body = serde_json::Map::new();
                let mut expected: Vec<(String, serde_json::Value)> = Vec::new();
                for (k, v) in &plain {
                    body.insert(k.clone(), v.clone());
                    expected.push((k.clone(), v.clone()));
                }
                // A serde_json map is sorted; compounds sort after "B".
                let mut changed: Vec<String> = plain.keys().cloned().collect();
                if let Some(c) = &city {
                    body.insert("BillingAddress".into(), json!({"City": c}));
                    changed.push("BillingAddress.City".into());
                    expected.clear();
                    for (k, v) in &body {
                        if k == "BillingAddress" {
                            expected.push(("BillingCity".into(), c.clone()));
                        } else {
                            expected.push((k.clone(), v.clone()));
                        }
                    }
                }
                let client = if ours { "plansync" } else { "other" };
                let h = json!({
                    "entityName": "Account", "recordIds": ids, "changeType": kind,
                    "changeOrigin": format!("com/salesforce/api/rest/59.0;client={client}"),
                    "commitTimestamp": ms, "commitUser": "005A", "changedFields": changed,
                });
                let mut payload = body.clone();
                payload.insert("ChangeEventHeader".into(), h);
                let text = json!({"event": {"replayId": replay_id}, "payload": payload}).to_string();
                let e = event(parse_data(CH, &text, &ctx()));
                if kind == "DELETE" {
                    expected.clear();
                }
                prop_assert_eq!(fields(&e), sorted(expected));
                prop_assert_eq!(e.ours, ours);
                let changes = e.to_changes("p");
                prop_assert_eq!(changes.len(), ids.len());
                for (c, id) in changes.iter().zip(&ids) {
                    prop_assert_eq!(&c.record.crm_id, id);
                    prop_assert_eq!(c.committed_at.timestamp_millis(), ms);
                    prop_assert_eq!(&c.position, &Position::Replay { channel: CH.into(), replay_id: replay_id.to_string() });
                }
                // And back through our own encoding.
                let again_text = format!("[{}]", e.to_message_json());
                crate::crm::cdc::fuzz_cdc(again_text.as_bytes());
            }
        }
    }
}
