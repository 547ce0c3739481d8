//! The CRM half of the preflight: the login, a describe of each mapped object (every mapped
//! field and every field a `when.record` condition reads exists, its type fits the rule's, and
//! it is updateable where the rules write it), and one subscription of each CDC channel.

use super::{Check, Limits, Report, quoted};
use crate::config::Config;
use crate::crm::cdc::probe::{ProbeError, probe_channels};
use crate::crm::{CrmClient, CrmError, FieldDescription, ObjectDescription};
use crate::model::ValueKind;
use crate::rules::ruleset::{FieldRule, Owner};
use crate::rules::{Pairing, RuleSet};

pub(super) async fn check(config: &Config, rules: &RuleSet, limits: Limits) -> Report {
    let mut report = Report::default();
    let mut client_config = config.crm_client_config();
    client_config.request_timeout = limits.request_timeout;
    client_config.retry.max_attempts = client_config.retry.max_attempts.min(3);
    let file = config.path.display();
    let client = match CrmClient::new(client_config) {
        Ok(c) => c,
        Err(e) => {
            report.push(Check::fail(
                "crm.login",
                e.to_string(),
                format!("correct [crm] in {file}"),
            ));
            return report;
        }
    };
    if let Err(e) = client.token().await {
        report.push(login_failure(&e, config));
        report.push(Check::not_run(
            "crm.objects",
            "not checked: the CRM login failed",
            "fix the login, then check again",
        ));
        return report;
    }
    report.push(Check::pass(
        "crm.login",
        format!("signed in at {}", config.crm.login_url),
    ));
    for pairing in &rules.pairings {
        object_checks(&client, pairing, &mut report).await;
    }
    channels(&client, config, rules, limits, &mut report).await;
    report
}

fn login_failure(e: &CrmError, config: &Config) -> Check {
    let file = config.path.display();
    match e {
        CrmError::Auth { .. } => Check::fail(
            "crm.login",
            e.to_string(),
            format!(
                "check the client id and the secret or key that [crm.auth] in {file} names, and that the connected app allows this flow"
            ),
        ),
        CrmError::Config(_) => Check::fail(
            "crm.login",
            e.to_string(),
            format!("correct [crm] in {file}"),
        ),
        _ => Check::not_run(
            "crm.login",
            e.to_string(),
            format!(
                "check that {} is reachable from here, then check again",
                config.crm.login_url
            ),
        ),
    }
}

async fn object_checks(client: &CrmClient, pairing: &Pairing, report: &mut Report) {
    let object = &pairing.crm_object;
    let file = pairing.path.display();
    let name = format!("crm.{object}");
    let description = match client.describe(object).await {
        Ok(d) => d,
        Err(e) => {
            report.push(match &e {
                CrmError::Api {
                    status: 404 | 403, ..
                } => Check::fail(
                    name,
                    format!("the CRM has no object `{object}` the integration user can read"),
                    format!(
                        "correct `crm` in {file}, or give the integration user read access to {object}"
                    ),
                ),
                CrmError::Config(_) => {
                    Check::fail(name, e.to_string(), format!("correct `crm` in {file}"))
                }
                _ => Check::not_run(
                    name,
                    e.to_string(),
                    "check that the CRM answers, then check again",
                ),
            });
            report.push(Check::not_run(
                format!("crm.{object}.fields"),
                format!("not checked: `{object}` could not be described"),
                "fix the object, then check again",
            ));
            return;
        }
    };
    report.push(Check::pass(
        name,
        format!("{} fields described", description.fields.len()),
    ));
    for rule in &pairing.fields {
        report.push(field_check(&description, pairing, rule));
    }
    // Fields read only for `when.record` conditions: they must exist, nothing more.
    for field in &pairing.extra_crm_fields {
        if pairing.field(field).is_some() {
            continue;
        }
        let name = format!("crm.{object}.{field}");
        report.push(match description.field(field) {
            Some(f) => Check::pass(name, format!("{}, read for `when.record`", f.field_type)),
            None => missing_field(name, object, field, &file.to_string()),
        });
    }
}

fn missing_field(name: String, object: &str, field: &str, file: &str) -> Check {
    Check::fail(
        name,
        format!("`{object}` has no field `{field}` the integration user can see"),
        format!(
            "correct the field in {file}, or create it / grant the integration user field-level access"
        ),
    )
}

/// Whether the rules can make plansync write `rule`'s field to the CRM, under the field's own
/// policy or any `when` override (an override can hold at some moment, so any counts).
///
/// - owner `anaplan`: Anaplan's changes are written to the CRM; with `revert`, a CRM edit is
///   also written back there.
/// - owner `shared`: either side's change goes to the other, and a conflict's winner is written
///   to the loser's side, which may be the CRM.
/// - owner `crm`: a CRM change goes to Anaplan only, and a planner's edit is rejected, or with
///   `revert` put back *in Anaplan* (a revert writes the owner's value to the side that
///   changed it), so nothing is written to the CRM, whatever `on_violation` says.
///
/// Not counted: a person resolving an exception with a value for a CRM-owned field; that is
/// their choice, and a read-only field refuses it as a `write_failed` exception.
fn written_to_crm(rule: &FieldRule) -> bool {
    std::iter::once(&rule.policy)
        .chain(rule.overrides.iter().map(|o| &o.policy))
        .any(|p| matches!(p.owner, Owner::Anaplan | Owner::Shared))
}

/// The longest text a policy that writes to the CRM lets through: `Some(None)` when one of
/// them sets no limit, `None` when no policy writes to the CRM.
fn longest_written(rule: &FieldRule) -> Option<Option<u32>> {
    std::iter::once(&rule.policy)
        .chain(rule.overrides.iter().map(|o| &o.policy))
        .filter(|p| matches!(p.owner, Owner::Anaplan | Owner::Shared))
        .map(|p| p.validation.max_length)
        .reduce(|a, b| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        })
}

/// The Salesforce types a rule's values can be read from and written to.
fn compatible_types(kind: ValueKind) -> &'static [&'static str] {
    match kind {
        ValueKind::Text => &[
            "string",
            "textarea",
            "email",
            "phone",
            "url",
            "picklist",
            "combobox",
            "id",
            "reference",
            "encryptedstring",
        ],
        ValueKind::Number { .. } => &["double", "currency", "percent", "int", "long"],
        ValueKind::Boolean => &["boolean"],
        // A datetime would lose its time of day (and a time zone) on the way through.
        ValueKind::Date => &["date"],
        ValueKind::Picklist => &["picklist", "combobox", "string", "textarea"],
    }
}

fn field_check(description: &ObjectDescription, pairing: &Pairing, rule: &FieldRule) -> Check {
    let object = &pairing.crm_object;
    let file = pairing.path.display().to_string();
    let name = format!("crm.{object}.{}", rule.crm);
    let Some(f) = description.field(&rule.crm) else {
        return missing_field(name, object, &rule.crm, &file);
    };
    let fits = compatible_types(rule.kind);
    if !fits.contains(&f.field_type.as_str()) {
        return Check::fail(
            name,
            format!(
                "`{}` is a {} field, which a rule of type {} cannot hold",
                f.name,
                f.field_type,
                rule.kind.tag()
            ),
            format!(
                "map a field of type {} in {file}, or correct the rule's type",
                fits.join("/")
            ),
        );
    }
    if !written_to_crm(rule) {
        return Check::pass(
            name,
            format!("{}, never written to the CRM (owner crm)", f.field_type),
        );
    }
    if !f.updateable {
        let why = if f.calculated { " (a formula)" } else { "" };
        return Check::fail(
            name,
            format!(
                "`{}` is not updateable{why}, but the rules write it to the CRM (owner anaplan or shared)",
                f.name
            ),
            format!(
                "make the field editable for the integration user, or make it owner = \"crm\" in {file}"
            ),
        );
    }
    if let Some(problem) = written_value_problem(f, rule, &file) {
        return Check::fail(name, problem.0, problem.1);
    }
    Check::pass(name, format!("{}, updateable", f.field_type))
}

/// What the CRM would refuse or change in a value the rules write: more decimals than the field
/// keeps, text longer than it holds, a picklist value it does not offer. `(detail, fix)`.
fn written_value_problem(
    f: &FieldDescription,
    rule: &FieldRule,
    file: &str,
) -> Option<(String, String)> {
    if let ValueKind::Number { scale } = rule.kind
        && matches!(f.field_type.as_str(), "double" | "currency" | "percent")
        && f.precision > 0
        && u32::from(scale) > f.scale
    {
        return Some((
            format!(
                "`{}` keeps {} decimals, the rule {scale}: the CRM would round what plansync writes",
                f.name, f.scale
            ),
            format!(
                "set scale = {} for {} in {file}, or widen the field",
                f.scale, rule.crm
            ),
        ));
    }
    if rule.kind == ValueKind::Text
        && f.length > 0
        && let Some(over) = longest_written(rule).filter(|&n| n.is_none_or(|n| n > f.length))
    {
        let what = match over {
            Some(n) => format!("the rules let values of up to {n} through"),
            None => "the rules set no max_length".to_string(),
        };
        return Some((
            format!(
                "`{}` holds at most {} characters, but {what}: a longer value from Anaplan would fail its write",
                f.name, f.length
            ),
            format!(
                "set max_length = {} for {} in {file} (a longer value is then held for review)",
                f.length, rule.crm
            ),
        ));
    }
    let offered = &f.picklist_values;
    if let Some(pick) = &rule.picklist
        && f.field_type == "picklist"
        && !offered.is_empty()
    {
        let missing: Vec<&str> = pick
            .values
            .iter()
            .filter(|v| !offered.iter().any(|o| o.active && &o.value == *v))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Some((
                format!(
                    "`{}` offers no active value {}, which the rules may write",
                    f.name,
                    quoted(&missing)
                ),
                format!(
                    "add the values to the CRM picklist, or remove them from {}'s values",
                    rule.id
                ),
            ));
        }
    }
    None
}

/// Each CDC channel the engine would subscribe, subscribed once from the tip.
async fn channels(
    client: &CrmClient,
    config: &Config,
    rules: &RuleSet,
    limits: Limits,
    report: &mut Report,
) {
    let mut channels = config.cdc_channels(rules.pairings.iter().map(|p| p.crm_object.as_str()));
    let mut seen = std::collections::HashSet::new();
    channels.retain(|c| seen.insert(c.clone()));
    if channels.is_empty() {
        return;
    }
    let file = config.path.display();
    let probed = probe_channels(
        client,
        &config.crm.api_version,
        config.crm.streaming,
        &channels,
        limits.streaming_timeout,
    )
    .await;
    let answers = match probed {
        Ok(a) => a,
        Err(e) => {
            report.push(match &e {
                ProbeError::Unauthorized | ProbeError::Handshake(_) | ProbeError::Connect(_) => {
                    Check::fail(
                        "crm.cdc",
                        e.to_string(),
                        "give the integration user the Streaming API and View All Data (or View All on the objects) permissions",
                    )
                }
                _ => Check::not_run(
                    "crm.cdc",
                    e.to_string(),
                    format!(
                        "check that the CRM's streaming endpoint answers (and [crm] streaming in {file}), then check again"
                    ),
                ),
            });
            return;
        }
    };
    for answer in answers {
        let name = format!("crm.cdc:{}", answer.channel);
        report.push(match answer.refused {
            None => Check::pass(name, "subscribed from the tip, then disconnected"),
            Some(error) => Check::fail(
                name,
                format!("subscribing to {} was refused: {error}", answer.channel),
                format!(
                    "select the object for Change Data Capture in Setup, or correct [crm] channels in {file}"
                ),
            ),
        });
    }
}
