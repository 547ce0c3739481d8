//! Building a tenant from a seed: one step per part of the seed (tenant, workspaces, models,
//! lists, modules, views, imports, exports, processes), each checking its own cross references.
//!
//! The steps run in seed order and stop at the first error, so a seed with several mistakes
//! always reports the same one. IDs are handed out in seed order too (see the module doc of
//! `seed.rs`), which is why every step appends and never sorts.

use std::sync::Mutex;

use tokio::sync::Notify;

use super::cells::{Column, Format, Input};
use super::definitions::{ActionRef, ExportDef, ImportDef, ImportTarget, ProcessDef};
use super::files::FileData;
use super::lists::{ItemInput, List, PropFormat, Property};
use super::modules::{LineItem, Module, View};
use super::tenant::{ModelData, ModelSlot, Tenant, Workspace, empty_model};
use super::{
    EXPORT_PREFIX, FILE_PREFIX, IMPORT_PREFIX, LINE_ITEM_PREFIX, LIST_PREFIX, MODULE_PREFIX,
    PROCESS_PREFIX,
};
use crate::anaplan::formula;
use crate::anaplan::seed::{
    Seed, SeedError, SeedExport, SeedImport, SeedList, SeedModule, SeedProcess, SeedValue,
};

/// The customer GUID of a seed that names none.
const DEFAULT_CUSTOMER_GUID: &str = "5f0c2a9e7d3b4c61a8e2f4b6c8d0e1f2";

/// A model while it is being built: its slot's fields, before the data goes behind a lock.
struct Draft {
    id: String,
    name: String,
    workspace: usize,
    data: ModelData,
}

/// Builds the tenant a seed describes, checking every cross reference.
pub fn build(seed: &Seed) -> Result<Tenant, SeedError> {
    let customer_guid = customer_guid(seed)?;
    let workspaces = workspaces(seed)?;
    let mut models = models(seed, &workspaces)?;
    for l in &seed.list {
        let md = pick(&mut models, &l.model, &format!("list {:?}", l.name))?;
        add_list(md, l)?;
    }
    for m in &seed.module {
        let md = pick(&mut models, &m.model, &format!("module {:?}", m.name))?;
        add_module(md, m)?;
    }
    add_views(seed, &mut models)?;
    for imp in &seed.import {
        let md = pick(&mut models, &imp.model, &format!("import {:?}", imp.name))?;
        add_import(md, imp)?;
    }
    for ex in &seed.export {
        let md = pick(&mut models, &ex.model, &format!("export {:?}", ex.name))?;
        add_export(md, ex)?;
    }
    for p in &seed.process {
        let md = pick(&mut models, &p.model, &format!("process {:?}", p.name))?;
        add_process(md, p)?;
    }
    Ok(Tenant {
        customer_guid,
        workspaces,
        models: models
            .into_iter()
            .map(|d| ModelSlot {
                id: d.id,
                name: d.name,
                workspace: d.workspace,
                data: Mutex::new(d.data),
                wake: Notify::new(),
            })
            .collect(),
    })
}

fn invalid(msg: String) -> SeedError {
    SeedError::Invalid(msg)
}

/// Whether `s` is 32 hex digits, all letters in the one case Anaplan uses for that kind of ID.
fn is_hex(s: &str, upper: bool) -> bool {
    s.len() == 32
        && s.bytes().all(|b| {
            b.is_ascii_digit()
                || if upper {
                    (b'A'..=b'F').contains(&b)
                } else {
                    (b'a'..=b'f').contains(&b)
                }
        })
}

fn customer_guid(seed: &Seed) -> Result<String, SeedError> {
    let guid = seed
        .customer_guid
        .clone()
        .unwrap_or_else(|| DEFAULT_CUSTOMER_GUID.to_string());
    if !is_hex(&guid, false) {
        return Err(invalid(
            "customer_guid must be 32 lowercase hex digits".into(),
        ));
    }
    Ok(guid)
}

fn workspaces(seed: &Seed) -> Result<Vec<Workspace>, SeedError> {
    let mut out = Vec::with_capacity(seed.workspace.len());
    for w in &seed.workspace {
        if !is_hex(&w.id, false) {
            return Err(invalid(format!(
                "workspace id {:?} must be 32 lowercase hex digits",
                w.id
            )));
        }
        out.push(Workspace {
            id: w.id.clone(),
            name: w.name.clone(),
            size_allowance: w.size_allowance,
        });
    }
    Ok(out)
}

/// Empty models, each in a workspace of the seed.
fn models(seed: &Seed, workspaces: &[Workspace]) -> Result<Vec<Draft>, SeedError> {
    let mut out = Vec::with_capacity(seed.model.len());
    for m in &seed.model {
        if !is_hex(&m.id, true) {
            return Err(invalid(format!(
                "model id {:?} must be 32 UPPERCASE hex digits",
                m.id
            )));
        }
        let workspace = workspaces
            .iter()
            .position(|w| w.id == m.workspace)
            .ok_or_else(|| {
                invalid(format!(
                    "model {:?}: no workspace {:?}",
                    m.name, m.workspace
                ))
            })?;
        out.push(Draft {
            id: m.id.clone(),
            name: m.name.clone(),
            workspace,
            data: empty_model(),
        });
    }
    Ok(out)
}

/// The model an entry names (`what` says which entry, for the error), or the first model.
/// The drafts mirror the seed's models one for one, in order, so they answer for them.
fn pick<'m>(
    models: &'m mut [Draft],
    model: &Option<String>,
    what: &str,
) -> Result<&'m mut ModelData, SeedError> {
    let index = match model {
        None if !models.is_empty() => 0,
        None => return Err(invalid(format!("{what}: the seed has no model"))),
        Some(id) => models
            .iter()
            .position(|d| &d.id == id)
            .ok_or_else(|| invalid(format!("{what}: no model {id:?}")))?,
    };
    Ok(&mut models[index].data)
}

/// A list, its properties and its items.
fn add_list(md: &mut ModelData, l: &SeedList) -> Result<(), SeedError> {
    if md.list_by_name(&l.name).is_some() {
        return Err(invalid(format!("list {:?} is defined twice", l.name)));
    }
    let ordinal = md.lists.len() as u64;
    let mut props = Vec::with_capacity(l.properties.len());
    for p in &l.properties {
        let format = match p.format.as_str() {
            "text" => PropFormat::Text,
            "number" => PropFormat::Number,
            "boolean" => PropFormat::Boolean,
            other => {
                return Err(invalid(format!(
                    "list {:?}: property {:?} has unknown format {other:?}",
                    l.name, p.name
                )));
            }
        };
        props.push(Property {
            name: p.name.clone(),
            format,
        });
    }
    let mut list = List::new(LIST_PREFIX + ordinal, l.name.clone(), props, ordinal);
    for it in &l.items {
        let input = ItemInput {
            id: None,
            name: Some(&it.name),
            code: it.code.as_deref(),
            properties: it
                .properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect(),
        };
        list.add(&input)
            .map_err(|(_, why)| invalid(format!("list {:?}: item {:?}: {why}", l.name, it.name)))?;
    }
    md.lists.push(list);
    Ok(())
}

/// A module: its line items, their formulas, then its cells.
fn add_module(md: &mut ModelData, m: &SeedModule) -> Result<(), SeedError> {
    if md.find_module(&m.name).is_some() {
        return Err(invalid(format!("module {:?} is defined twice", m.name)));
    }
    let list = md
        .list_by_name(&m.applies_to)
        .ok_or_else(|| invalid(format!("module {:?}: no list {:?}", m.name, m.applies_to)))?;
    let module_index = md.modules.len();
    let line_items = add_line_items(md, m, module_index)?;
    resolve_formulas(md, m, &line_items)?;
    md.modules.push(Module {
        id: MODULE_PREFIX + module_index as u64,
        name: m.name.clone(),
        list,
        line_items,
    });
    add_cells(md, m, module_index, list)
}

/// The format a seed line item names; a list format needs a list of the model.
fn line_item_format(
    md: &ModelData,
    name: &str,
    format: &str,
    list: Option<&str>,
) -> Result<Format, SeedError> {
    match (format, list) {
        ("number", _) => Ok(Format::Number),
        ("text", _) => Ok(Format::Text),
        ("boolean", _) => Ok(Format::Boolean),
        ("date", _) => Ok(Format::Date),
        ("list", Some(ln)) => md
            .list_by_name(ln)
            .map(Format::List)
            .ok_or_else(|| invalid(format!("line item {name:?}: no list {ln:?}"))),
        ("list", None) => Err(invalid(format!(
            "line item {name:?}: format list needs `list`"
        ))),
        (other, _) => Err(invalid(format!(
            "line item {name:?}: unknown format {other:?}"
        ))),
    }
}

/// The module's line items, without formulas yet; returns their indexes in the model.
fn add_line_items(
    md: &mut ModelData,
    m: &SeedModule,
    module_index: usize,
) -> Result<Vec<usize>, SeedError> {
    let mut out = Vec::with_capacity(m.line_items.len());
    for li in &m.line_items {
        let format = line_item_format(md, &li.name, &li.format, li.list.as_deref())?;
        if m.line_items.iter().filter(|o| o.name == li.name).count() > 1 {
            return Err(invalid(format!(
                "module {:?}: line item {:?} twice",
                m.name, li.name
            )));
        }
        let idx = md.line_items.len();
        md.line_items.push(LineItem {
            id: LINE_ITEM_PREFIX + idx as u64,
            name: li.name.clone(),
            module: module_index,
            format,
            formula: None,
            formula_text: li.formula.clone(),
            column: Column::for_format(format),
        });
        out.push(idx);
    }
    Ok(out)
}

/// Parses the module's formulas; they run once every line item of the module exists, since a
/// formula may name a line item declared after it.
fn resolve_formulas(
    md: &mut ModelData,
    m: &SeedModule,
    line_items: &[usize],
) -> Result<(), SeedError> {
    for (li, &index) in m.line_items.iter().zip(line_items) {
        let Some(text) = &li.formula else { continue };
        let expr = {
            let resolve = |n: &str| {
                line_items.iter().copied().find(|&i| {
                    md.line_items[i].name == n && md.line_items[i].format == Format::Number
                })
            };
            formula::parse(text, &resolve)
                .map_err(|e| invalid(format!("line item {:?}: {e}", li.name)))?
        };
        if md.line_items[index].format != Format::Number {
            return Err(invalid(format!(
                "line item {:?}: a formula needs format number",
                li.name
            )));
        }
        md.line_items[index].formula = Some(expr);
    }
    refuse_cycles(md, line_items)
}

/// A formula that refers back to itself, directly or through others, has no value: Anaplan
/// refuses it as a circular reference, and evaluating it would never end (the first read of
/// such a cell overflowed the simulator's stack). Checked once, as the seed is built.
fn refuse_cycles(md: &ModelData, line_items: &[usize]) -> Result<(), SeedError> {
    // 0: not visited, 1: on the path being followed, 2: known to end.
    let mut state: std::collections::HashMap<usize, u8> = std::collections::HashMap::new();
    // Line items known to end: the longest chain of line items their value reads through.
    let mut chain: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for &start in line_items {
        let mut path: Vec<usize> = Vec::new();
        // (line item, its references not followed yet)
        let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
        if state.get(&start).copied().unwrap_or(0) != 0 {
            continue;
        }
        let refs_of = |i: usize| {
            let mut out = Vec::new();
            if let Some(f) = md.line_items.get(i).and_then(|li| li.formula.as_ref()) {
                f.refs(&mut out);
            }
            out
        };
        state.insert(start, 1);
        path.push(start);
        stack.push((start, refs_of(start)));
        while let Some((_, pending)) = stack.last_mut() {
            let Some(next) = pending.pop() else {
                if let Some((done, _)) = stack.pop() {
                    // Evaluating a cell follows its references recursively: bound the
                    // longest chain (its references are all done by now).
                    let longest = refs_of(done)
                        .iter()
                        .map(|r| chain.get(r).copied().unwrap_or(0))
                        .max()
                        .unwrap_or(0)
                        + 1;
                    if longest > formula::MAX_REFERENCE_CHAIN {
                        return Err(invalid(format!(
                            "line item {:?}: its formula reaches through more than {} line items",
                            md.line_items[done].name,
                            formula::MAX_REFERENCE_CHAIN
                        )));
                    }
                    chain.insert(done, longest);
                    state.insert(done, 2);
                    path.pop();
                }
                continue;
            };
            match state.get(&next).copied().unwrap_or(0) {
                0 => {
                    state.insert(next, 1);
                    path.push(next);
                    stack.push((next, refs_of(next)));
                }
                1 => {
                    let from = path.iter().position(|&i| i == next).unwrap_or(0);
                    let names: Vec<String> = path[from..]
                        .iter()
                        .chain(std::iter::once(&next))
                        .map(|&i| format!("{:?}", md.line_items[i].name))
                        .collect();
                    return Err(invalid(format!(
                        "line item {:?}: circular formula ({})",
                        md.line_items[next].name,
                        names.join(" → ")
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The module's seeded cells: item (by code, else name) → line item → value.
fn add_cells(
    md: &mut ModelData,
    m: &SeedModule,
    module_index: usize,
    list: usize,
) -> Result<(), SeedError> {
    for (code, row) in &m.rows {
        let item = md.lists[list]
            .by_code(code)
            .or_else(|| md.lists[list].by_name(code))
            .ok_or_else(|| invalid(format!("module {:?}: no item {code:?}", m.name)))?;
        for (li_name, v) in row {
            let li = md
                .line_item_in(module_index, None, Some(li_name))
                .ok_or_else(|| invalid(format!("module {:?}: no line item {li_name:?}", m.name)))?;
            if md.line_items[li].formula.is_some() {
                return Err(invalid(format!("line item {li_name:?} is calculated")));
            }
            let input = match v {
                SeedValue::Bool(b) => Input::Bool(*b),
                SeedValue::Int(n) => Input::Num(*n as f64),
                SeedValue::Float(f) => Input::Num(*f),
                SeedValue::Text(t) => Input::Str(t),
            };
            md.set_cell(li, item, input)
                .map_err(|e| invalid(format!("module {:?}, {code}, {li_name}: {e}", m.name)))?;
        }
    }
    Ok(())
}

/// Default views share their module's ID; saved views come after all modules of the model, so
/// they are added once every module of the seed exists.
fn add_views(seed: &Seed, models: &mut [Draft]) -> Result<(), SeedError> {
    for d in models.iter_mut() {
        let md = &mut d.data;
        for (k, module) in md.modules.iter().enumerate() {
            md.views.push(View {
                id: module.id,
                name: module.name.clone(),
                module: k,
                line_items: module.line_items.clone(),
            });
        }
    }
    for m in &seed.module {
        let md = pick(models, &m.model, "view")?;
        let module = md.find_module(&m.name).unwrap_or(0);
        for v in &m.views {
            let mut lis = Vec::with_capacity(v.line_items.len());
            for n in &v.line_items {
                lis.push(
                    md.line_item_in(module, None, Some(n))
                        .ok_or_else(|| invalid(format!("view {:?}: no line item {n:?}", v.name)))?,
                );
            }
            let id = MODULE_PREFIX + md.views.len() as u64;
            md.views.push(View {
                id,
                name: v.name.clone(),
                module,
                line_items: lis,
            });
        }
    }
    Ok(())
}

/// An import into a list or a module, and its source file (shared by name between imports).
fn add_import(md: &mut ModelData, imp: &SeedImport) -> Result<(), SeedError> {
    let target = match imp.import_type.as_str() {
        "HIERARCHY_DATA" => {
            ImportTarget::List(md.list_by_name(&imp.target).ok_or_else(|| {
                invalid(format!("import {:?}: no list {:?}", imp.name, imp.target))
            })?)
        }
        "MODULE_DATA" => ImportTarget::Module(md.find_module(&imp.target).ok_or_else(|| {
            invalid(format!("import {:?}: no module {:?}", imp.name, imp.target))
        })?),
        other => {
            return Err(invalid(format!(
                "import {:?}: unsupported type {other:?}",
                imp.name
            )));
        }
    };
    let file = match md.files.values().find(|f| f.name == imp.file) {
        Some(f) => f.id,
        None => {
            let id = FILE_PREFIX + md.files.len() as u64;
            md.files.insert(id, FileData::new(id, imp.file.clone()));
            id
        }
    };
    let id = IMPORT_PREFIX + md.imports.len() as u64;
    md.imports.push(ImportDef {
        id,
        name: imp.name.clone(),
        target,
        file,
    });
    Ok(())
}

/// An export of a module, and the file its output lands in (same ID as the export).
fn add_export(md: &mut ModelData, ex: &SeedExport) -> Result<(), SeedError> {
    let module = md
        .find_module(&ex.module)
        .ok_or_else(|| invalid(format!("export {:?}: no module {:?}", ex.name, ex.module)))?;
    let id = EXPORT_PREFIX + md.exports.len() as u64;
    md.exports.push(ExportDef {
        id,
        name: ex.name.clone(),
        module,
    });
    md.files.insert(id, FileData::new(id, ex.name.clone()));
    Ok(())
}

/// A process: imports and exports of the model, by name, run in order.
fn add_process(md: &mut ModelData, p: &SeedProcess) -> Result<(), SeedError> {
    let mut actions = Vec::with_capacity(p.actions.len());
    for a in &p.actions {
        let r = if let Some(i) = md.imports.iter().position(|x| &x.name == a) {
            ActionRef::Import(i)
        } else if let Some(e) = md.exports.iter().position(|x| &x.name == a) {
            ActionRef::Export(e)
        } else {
            return Err(invalid(format!(
                "process {:?}: no import or export {a:?}",
                p.name
            )));
        };
        actions.push(r);
    }
    let id = PROCESS_PREFIX + md.processes.len() as u64;
    md.processes.push(ProcessDef {
        id,
        name: p.name.clone(),
        actions,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anaplan::model::CellValue;

    #[test]
    fn default_seed_builds_with_ids_and_cells() {
        let t = build(&Seed::default_seed()).unwrap();
        let md = t.models[0].data.lock().unwrap();
        let opp = md.list_by_name("Opportunities").unwrap();
        assert_eq!(md.lists[opp].id, LIST_PREFIX + opp as u64);
        let module = md.find_module("OPP01 Opportunity Data").unwrap();
        let cells = md.module_cells(module);
        let row = &cells["0065g0000000002AAA"];
        assert_eq!(row["Amount"], CellValue::Number(480000.0));
        assert_eq!(row["Stage"], CellValue::Item("Negotiation".into()));
        assert_eq!(row["Weighted Amount"], CellValue::Number(336000.0));
        assert_eq!(row.get("Approved"), None, "a cell never set holds nothing");
        assert_eq!(
            cells["0065g0000000004AAA"]["Approved"],
            CellValue::Boolean(true)
        );
        assert_eq!(md.imports.len(), 6);
        assert!(md.files.contains_key(&md.imports[0].file));
        assert_eq!(md.views.len(), 3);
    }

    /// Each step reports its own part of the seed, with the messages seeds have always had.
    #[test]
    fn each_part_reports_its_own_error() {
        // How to break the default seed, and the message that says so.
        type Case = (fn(&mut Seed), &'static str);
        let cases: Vec<Case> = vec![
            (
                |s| s.model.clear(),
                "list \"Stages\": the seed has no model",
            ),
            (
                |s| s.workspace[0].id = "ABC".into(),
                "workspace id \"ABC\" must be 32 lowercase hex digits",
            ),
            (
                |s| s.model[0].workspace = "nope".into(),
                "model \"Revenue Plan\": no workspace \"nope\"",
            ),
            (
                |s| s.list[1].model = Some("nope".into()),
                "list \"Regions\": no model \"nope\"",
            ),
            (
                |s| s.module[1].applies_to = "nope".into(),
                "module \"TER01 Territory Quotas\": no list \"nope\"",
            ),
            (
                |s| s.module[0].views[0].line_items.push("Nope".into()),
                "view \"OPP01 Forecast Review\": no line item \"Nope\"",
            ),
            (
                |s| s.import[0].import_type = "X".into(),
                "import \"Stages from stages_list.csv\": unsupported type \"X\"",
            ),
            (
                |s| s.export[1].module = "nope".into(),
                "export \"TER01 Territory Quotas.csv\": no module \"nope\"",
            ),
            (
                |s| s.process[0].actions.push("nope".into()),
                "process \"Load Opportunities\": no import or export \"nope\"",
            ),
            (
                |s| {
                    let li = &mut s.module[0].line_items;
                    let amount = li.iter_mut().find(|l| l.name == "Amount");
                    if let Some(amount) = amount {
                        amount.formula = Some("Weighted Amount * 2".into());
                    }
                },
                "line item \"Amount\": circular formula (\"Amount\" → \"Weighted Amount\" → \"Amount\")",
            ),
        ];
        for (break_it, want) in cases {
            let mut seed = Seed::default_seed();
            break_it(&mut seed);
            match build(&seed) {
                Err(SeedError::Invalid(got)) => assert_eq!(got, want),
                Err(other) => panic!("{want}: got {other}"),
                Ok(_) => panic!("{want}: the seed built"),
            }
        }
    }
}
