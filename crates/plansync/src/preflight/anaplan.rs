//! The Anaplan half of the preflight: the login, then for each pairing its workspace, model,
//! list, module, line items, list properties and flags, and the imports `engine.bulk_imports`
//! names. Only listings and metadata reads: no cell, item or task is touched.

use std::collections::{BTreeMap, HashMap};

use super::{Check, Limits, Report, quoted};
use crate::anaplan::{AnaplanClient, AnaplanError, TaskKind};
use crate::config::Config;
use crate::engine::anaplan_target;
use crate::rules::ruleset::AnaplanField;
use crate::rules::{Pairing, RuleSet};

/// Where a pairing's model was found: (workspace id, model id), for the import checks.
type Located = HashMap<String, (String, String)>;

pub(super) async fn check(config: &Config, rules: &RuleSet, limits: Limits) -> Report {
    let mut report = Report::default();
    let mut client_config = config.anaplan_client_config();
    client_config.request_timeout = limits.request_timeout;
    client_config.retry.max_elapsed = limits.retry_budget;
    let config_file = config.path.display();
    let client = match AnaplanClient::new(client_config) {
        Ok(c) => c,
        Err(e) => {
            report.push(Check::fail(
                "anaplan.login",
                e.to_string(),
                format!("correct [anaplan] in {config_file}"),
            ));
            return report;
        }
    };
    if let Err(e) = client.authenticate().await {
        report.push(login_failure(&e, config));
        report.push(Check::not_run(
            "anaplan.models",
            "not checked: the Anaplan login failed",
            "fix the login, then check again",
        ));
        return report;
    }
    report.push(Check::pass(
        "anaplan.login",
        format!("signed in at {}", config.anaplan.auth_url),
    ));
    let workspaces = client.list_workspaces().await;
    let mut located = Located::new();
    for pairing in &rules.pairings {
        if let Some(at) = pairing_checks(&client, pairing, &workspaces, &mut report).await {
            located.insert(pairing.name.clone(), at);
        }
    }
    imports(&client, config, rules, &located, &mut report).await;
    report
}

fn login_failure(e: &AnaplanError, config: &Config) -> Check {
    let file = config.path.display();
    match e {
        AnaplanError::AuthRefused { .. } | AnaplanError::Unauthorized { .. } => Check::fail(
            "anaplan.login",
            e.to_string(),
            format!(
                "check the user and the password, certificate or token that [anaplan.auth] in {file} names"
            ),
        ),
        AnaplanError::Credentials(_) | AnaplanError::Config(_) | AnaplanError::LegacyApi { .. } => {
            Check::fail(
                "anaplan.login",
                e.to_string(),
                format!("correct [anaplan] in {file}"),
            )
        }
        _ => Check::not_run(
            "anaplan.login",
            e.to_string(),
            format!(
                "check that {} is reachable from here, then check again",
                config.anaplan.auth_url
            ),
        ),
    }
}

/// A failed call as a check: a name Anaplan does not know, or access it refuses, is a fail
/// (`fix` says what to correct); anything else (no answer, a 5xx past the retries) means the
/// check could not be made.
fn from_error(name: String, e: &AnaplanError, fix: String) -> Check {
    match e {
        AnaplanError::NotFound { .. } | AnaplanError::Ambiguous { .. } => {
            Check::fail(name, e.to_string(), fix)
        }
        AnaplanError::Status {
            status: 403 | 404, ..
        }
        | AnaplanError::Unauthorized { .. } => Check::fail(
            name,
            e.to_string(),
            "give the Anaplan integration user access to the workspace and model".to_string(),
        ),
        _ => Check::not_run(
            name,
            e.to_string(),
            "check that Anaplan answers, then check again".to_string(),
        ),
    }
}

/// Which entry of a listing a rule file's name or id matched.
enum Found {
    /// By id: its name.
    Id(String),
    /// Only by name: its id, which the rule file must give instead (the engine puts the
    /// workspace and model into request paths as written).
    Name(String),
    Missing,
}

fn find<'a>(entries: impl Iterator<Item = (&'a str, &'a str)> + Clone, wanted: &str) -> Found {
    if let Some((_, name)) = entries.clone().find(|(id, _)| *id == wanted) {
        return Found::Id(name.to_string());
    }
    match entries
        .into_iter()
        .find(|(_, name)| name.trim() == wanted.trim())
    {
        Some((id, _)) => Found::Name(id.to_string()),
        None => Found::Missing,
    }
}

/// A check of a workspace or model id from a listing.
fn listing_check(name: String, what: &str, wanted: &str, found: Found, file: &str) -> Check {
    match found {
        Found::Id(label) => Check::pass(name, format!("{what} {wanted} ({label})")),
        Found::Name(id) => Check::fail(
            name,
            format!("{what} `{wanted}` is named, not given by id"),
            format!("write {what} = \"{id}\" in {file}"),
        ),
        Found::Missing => Check::fail(
            name,
            format!("no {what} `{wanted}` is visible to the integration user"),
            format!("correct {what} in {file}, or give the user access to it"),
        ),
    }
}

/// The checks of one pairing; its (workspace, model) ids when the model was found.
async fn pairing_checks(
    client: &AnaplanClient,
    pairing: &Pairing,
    workspaces: &Result<Vec<crate::anaplan::Workspace>, AnaplanError>,
    report: &mut Report,
) -> Option<(String, String)> {
    let t = &pairing.anaplan;
    let file = pairing.path.display().to_string();
    let name = |what: &str| format!("anaplan.{}.{what}", pairing.name);
    let workspace_id = match workspaces {
        Err(e) => {
            report.push(from_error(
                name("workspace"),
                e,
                format!("correct workspace in {file}"),
            ));
            None
        }
        Ok(list) => {
            let found = find(
                list.iter().map(|w| (w.id.as_str(), w.name.as_str())),
                &t.workspace,
            );
            let id = match &found {
                Found::Id(_) => Some(t.workspace.clone()),
                Found::Name(id) => Some(id.clone()),
                Found::Missing => None,
            };
            report.push(listing_check(
                name("workspace"),
                "workspace",
                &t.workspace,
                found,
                &file,
            ));
            id
        }
    };
    // The model is looked up in its workspace, or in the whole tenant when the workspace is
    // unknown, so a wrong workspace does not hide whether the model exists.
    let models = client.list_models(workspace_id.as_deref()).await;
    let model_id = match models {
        Err(e) => {
            report.push(from_error(
                name("model"),
                &e,
                format!("correct model in {file}"),
            ));
            None
        }
        Ok(list) => {
            let found = find(
                list.iter().map(|m| (m.id.as_str(), m.name.as_str())),
                &t.model,
            );
            let ok = matches!(found, Found::Id(_));
            report.push(listing_check(
                name("model"),
                "model",
                &t.model,
                found,
                &file,
            ));
            ok.then(|| t.model.clone())
        }
    };
    let Some(model) = model_id else {
        report.push(Check::not_run(
            name("list_and_module"),
            format!("not checked: model `{}` is not usable", t.model),
            "fix the model, then check again",
        ));
        return None;
    };
    let (list, module) = match anaplan_target::resolve(client, &pairing.anaplan).await {
        Ok(target) => (Ok(target.list_id), Ok(target.module_id)),
        // Which of the two names failed: ask for each (two listings, on this path only).
        Err(_) => (
            client.list_id(&model, &t.list).await,
            client.module_id(&model, &t.module).await,
        ),
    };
    let fix = |what: &str, value: &str| {
        format!("correct {what} in {file}, or create {what} `{value}` in model {model}")
    };
    match &list {
        Ok(id) => report.push(Check::pass(
            name("list"),
            format!("list `{}` is {id}", t.list),
        )),
        Err(e) => report.push(from_error(name("list"), e, fix("list", &t.list))),
    }
    match &module {
        Ok(id) => report.push(Check::pass(
            name("module"),
            format!("module `{}` is {id}", t.module),
        )),
        Err(e) => report.push(from_error(name("module"), e, fix("module", &t.module))),
    }
    match &module {
        Ok(module_id) => line_items(client, pairing, &model, module_id, report).await,
        Err(_) => report.push(Check::not_run(
            name("line_items"),
            format!("not checked: module `{}` is not usable", t.module),
            "fix the module, then check again",
        )),
    }
    match &list {
        Ok(list_id) => properties(client, pairing, &model, list_id, report).await,
        Err(_) => report.push(Check::not_run(
            name("properties"),
            format!("not checked: list `{}` is not usable", t.list),
            "fix the list, then check again",
        )),
    }
    workspace_id.map(|ws| (ws, model))
}

/// The Anaplan names of the pairing's fields that are list properties (`true`) or line items.
fn mapped_names(pairing: &Pairing, properties: bool) -> Vec<&str> {
    pairing
        .fields
        .iter()
        .filter_map(|f| match &f.anaplan {
            AnaplanField::ListProperty(n) if properties => Some(n.as_str()),
            AnaplanField::LineItem(n) if !properties => Some(n.as_str()),
            _ => None,
        })
        .collect()
}

/// Passes when every name in `wanted` is among `existing` (compared trimmed, as Anaplan
/// matches names); fails naming the missing ones. `place` is "module `X`" or "list `Y`".
fn presence(
    name: String,
    wanted: &[&str],
    existing: &[&str],
    place: &str,
    noun: &str,
    file: &str,
) -> Check {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !existing.iter().any(|e| e.trim() == w.trim()))
        .collect();
    if missing.is_empty() {
        Check::pass(name, format!("{} in {place}", quoted(wanted)))
    } else {
        Check::fail(
            name,
            format!("{place} has no {noun} {}", quoted(&missing)),
            format!("add them to the {place}, or correct the names in {file}"),
        )
    }
}

/// The mapped line items, then the flags (`flags` and the lifecycle's `deleted_flag`), each a
/// line item of the module.
async fn line_items(
    client: &AnaplanClient,
    pairing: &Pairing,
    model: &str,
    module_id: &str,
    report: &mut Report,
) {
    let flags: Vec<&str> = pairing
        .flags
        .iter()
        .chain(&pairing.lifecycle.deleted_flag)
        .map(String::as_str)
        .collect();
    let name = |what: &str| format!("anaplan.{}.{what}", pairing.name);
    let items = match client.list_line_items(model, Some(module_id)).await {
        Ok(items) => items,
        Err(e) => {
            let fix = "check that the module is readable by the integration user".to_string();
            report.push(from_error(name("line_items"), &e, fix));
            return;
        }
    };
    let existing: Vec<&str> = items.iter().map(|li| li.name.as_str()).collect();
    let place = format!("module `{}`", pairing.anaplan.module);
    let file = pairing.path.display().to_string();
    for (what, wanted) in [
        ("line_items", mapped_names(pairing, false)),
        ("flags", flags),
    ] {
        if !wanted.is_empty() {
            let check = presence(name(what), &wanted, &existing, &place, "line item", &file);
            report.push(check);
        }
    }
}

async fn properties(
    client: &AnaplanClient,
    pairing: &Pairing,
    model: &str,
    list_id: &str,
    report: &mut Report,
) {
    let wanted = mapped_names(pairing, true);
    if wanted.is_empty() {
        return;
    }
    let name = format!("anaplan.{}.properties", pairing.name);
    let existing = match client.list_properties(model, list_id).await {
        Ok(p) => p,
        Err(e) => {
            let fix = "check that the list is readable by the integration user".to_string();
            report.push(from_error(name, &e, fix));
            return;
        }
    };
    let existing: Vec<&str> = existing.iter().map(String::as_str).collect();
    let place = format!("list `{}`", pairing.anaplan.list);
    let file = pairing.path.display().to_string();
    report.push(presence(
        name, &wanted, &existing, &place, "property", &file,
    ));
}

/// Each import `engine.bulk_imports` names exists in its pairing's model and loads module data.
async fn imports(
    client: &AnaplanClient,
    config: &Config,
    rules: &RuleSet,
    located: &Located,
    report: &mut Report,
) {
    let imports: &BTreeMap<String, String> = &config.engine.bulk_imports;
    let file = config.path.display();
    for (pairing, import) in imports {
        let name = format!("anaplan.{pairing}.bulk_import");
        if rules.pairing(pairing).is_none() {
            let known: Vec<&str> = rules.pairings.iter().map(|p| p.name.as_str()).collect();
            report.push(Check::fail(
                name,
                format!("engine.bulk_imports names `{pairing}`, which no rule file defines"),
                format!(
                    "key engine.bulk_imports in {file} by a rule file's stem ({})",
                    quoted(&known)
                ),
            ));
            continue;
        }
        let Some((workspace, model)) = located.get(pairing) else {
            report.push(Check::not_run(
                name,
                "not checked: the pairing's workspace or model is not usable",
                "fix the workspace and model, then check again",
            ));
            continue;
        };
        let fix = format!(
            "create import `{import}` in model {model}, or correct engine.bulk_imports.{pairing} in {file}"
        );
        report.push(
            match client
                .definition(workspace, model, TaskKind::Import, import)
                .await
            {
                Ok(def) => match def.import_type.as_deref() {
                    Some(kind) if kind != "MODULE_DATA" => Check::fail(
                        name,
                        format!("import `{import}` ({}) loads {kind}, not module data", def.id),
                        format!(
                            "name an import of the module's data (MODULE_DATA) in engine.bulk_imports.{pairing}"
                        ),
                    ),
                    _ => Check::pass(name, format!("import `{import}` is {}", def.id)),
                },
                Err(e) => from_error(name, &e, fix),
            },
        );
    }
}
