//! Measures CDC event parsing: `plansync::crm::cdc::event::parse_data` on the `data` of a
//! Bayeux message, then `CdcEvent::into_changes`, which together turn a streamed change event
//! into the engine's `Change`s. Events are Opportunity change events as the CRM sends them
//! over CometD: an UPDATE carrying its 5 changed fields (`changedFields` in the header, one a
//! `nulledFields` entry), the same UPDATE made by plansync itself (our echo), and a CREATE
//! carrying every field of the record (24). 100 distinct events per group (different record
//! ids, replay ids and values); the parser is given the known fields of the object, as the
//! engine's listener is, so unknown fields are checked too.
//!
//! Every event is checked once before measuring. Target: at least 200,000 events a second on
//! one core for the UPDATE (the bulk of a quarter-end stream).
//!
//! ```text
//! cargo bench --bench cdc_parse -- --warm-up-time 1 --measurement-time 5
//! ```

use std::collections::{HashMap, HashSet};
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plansync::crm::cdc::event::{ParseContext, Parsed, parse_data};
use plansync::model::ChangeKind;

const CHANNEL: &str = "/data/OpportunityChangeEvent";
const EVENTS: usize = 100;

/// Every field of an Opportunity a CREATE carries (flattened names).
const ALL_FIELDS: [&str; 24] = [
    "Name",
    "AccountId",
    "Amount",
    "StageName",
    "CloseDate",
    "Probability",
    "ExpectedRevenue",
    "Type",
    "LeadSource",
    "ForecastCategory",
    "ForecastCategoryName",
    "IsPrivate",
    "IsClosed",
    "IsWon",
    "OwnerId",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "Forecast_Override__c",
    "Pricebook2Id",
    "Description",
    "NextStep",
    "FiscalYear",
];

fn record_id(i: usize) -> String {
    format!("0065g0000{i:05}QAAU")
}

fn header(i: usize, change_type: &str, origin: &str, changed: &str, nulled: &str) -> String {
    format!(
        r#""ChangeEventHeader":{{"entityName":"Opportunity","recordIds":["{id}"],"changeType":"{change_type}","changeOrigin":"{origin}","transactionKey":"0002a1b4-{i:04x}-6c1e-9f3e-2f0c9b8d7e{i:02x}","sequenceNumber":1,"commitTimestamp":{ts},"commitNumber":{cn},"commitUser":"0055g00000ABCDeAAF","nulledFields":[{nulled}],"diffFields":[],"changedFields":[{changed}]}}"#,
        id = record_id(i),
        ts = 1_801_000_000_000u64 + i as u64 * 17,
        cn = 11_200_000_000u64 + i as u64,
    )
}

fn data(i: usize, payload: String) -> String {
    format!(
        r#"{{"schema":"xPnNbM2s7e0lPjxFQhK0Gw","payload":{{{payload}}},"event":{{"replayId":{}}}}}"#,
        4_567_000 + i
    )
}

/// An UPDATE of 5 fields: four with values, one nulled.
fn update(i: usize, ours: bool) -> String {
    let origin = if ours {
        "com/salesforce/api/rest/62.0;client=plansync"
    } else {
        "com/salesforce/api/soap/62.0;client=SfdcInternalAPI/"
    };
    let h = header(
        i,
        "UPDATE",
        origin,
        r#""Amount","StageName","Probability","LastModifiedDate","NextStep""#,
        r#""NextStep""#,
    );
    data(
        i,
        format!(
            r#"{h},"Amount":{amount}.5,"StageName":"Negotiation","Probability":{p},"LastModifiedDate":"2027-01-27T15:{m:02}:{s:02}.000Z""#,
            amount = 100_000 + i * 250,
            p = 40 + i % 50,
            m = i % 60,
            s = (i * 7) % 60,
        ),
    )
}

/// A CREATE carrying every field.
fn create(i: usize) -> String {
    let h = header(
        i,
        "CREATE",
        "com/salesforce/api/soap/62.0;client=SfdcInternalAPI/",
        "",
        "",
    );
    data(
        i,
        format!(
            r#"{h},"Name":"Acme Corp - {i} seats","AccountId":"0015g0000{i:05}XAAQ","Amount":{amount}.00,"StageName":"Prospecting","CloseDate":"2027-03-31","Probability":10,"ExpectedRevenue":{er}.00,"Type":"New Business","LeadSource":"Partner Referral","ForecastCategory":"Pipeline","ForecastCategoryName":"Pipeline","IsPrivate":false,"IsClosed":false,"IsWon":false,"OwnerId":"0055g00000ABCDeAAF","CreatedDate":"2027-01-27T15:00:00.000Z","CreatedById":"0055g00000ABCDeAAF","LastModifiedDate":"2027-01-27T15:00:00.000Z","LastModifiedById":"0055g00000ABCDeAAF","Forecast_Override__c":null,"Pricebook2Id":"01s5g00000AbCdEAAV","Description":"Expansion into the EMEA subsidiaries; procurement wants a three-year term.","NextStep":"Security review","FiscalYear":2027"#,
            amount = 50_000 + i * 100,
            er = 5_000 + i * 10,
        ),
    )
}

fn known_fields() -> HashMap<String, HashSet<String>> {
    let fields = ALL_FIELDS.iter().map(|f| f.to_string()).collect();
    HashMap::from([("Opportunity".to_string(), fields)])
}

/// Parses and turns into changes; the number of changed fields keeps the work observable.
fn parse(data: &str, ctx: &ParseContext<'_>) -> usize {
    match parse_data(CHANNEL, data, ctx) {
        Parsed::Event(e) => {
            let changes = e.into_changes("opportunity");
            let n = changes.iter().map(|c| c.fields.len()).sum();
            black_box(changes);
            n
        }
        other => {
            black_box(other);
            0
        }
    }
}

fn check(events: &[String], ctx: &ParseContext<'_>, kind: ChangeKind, fields: usize, ours: bool) {
    for (i, raw) in events.iter().enumerate() {
        match parse_data(CHANNEL, raw, ctx) {
            Parsed::Event(e) => {
                assert_eq!(e.change_type, kind, "event {i}");
                assert_eq!(e.fields.len(), fields, "event {i}: {:?}", e.fields);
                assert_eq!(e.ours, ours, "event {i}");
                assert_eq!(e.record_ids, vec![record_id(i)]);
                assert_eq!(e.to_changes("opportunity").len(), 1);
            }
            other => panic!("event {i} did not parse: {other:?}\n{raw}"),
        }
    }
}

fn bench(c: &mut Criterion) {
    let known = known_fields();
    let ctx = ParseContext {
        our_client_id: "plansync",
        known_fields: Some(&known),
    };
    let updates: Vec<String> = (0..EVENTS).map(|i| update(i, false)).collect();
    let echoes: Vec<String> = (0..EVENTS).map(|i| update(i, true)).collect();
    let creates: Vec<String> = (0..EVENTS).map(create).collect();
    check(&updates, &ctx, ChangeKind::Update, 5, false);
    check(&echoes, &ctx, ChangeKind::Update, 5, true);
    check(&creates, &ctx, ChangeKind::Create, ALL_FIELDS.len(), false);

    let mut group = c.benchmark_group("cdc_parse");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (name, events) in [
        ("update_5_fields", &updates),
        ("update_ours", &echoes),
        ("create_24_fields", &creates),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                events
                    .iter()
                    .map(|raw| parse(black_box(raw), &ctx))
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
