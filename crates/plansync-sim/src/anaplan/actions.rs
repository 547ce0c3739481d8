//! What bulk actions do to a model: imports apply an uploaded CSV to a list or a module,
//! exports write a module to their file as CSV, processes run their actions in order.
//!
//! Import columns are matched by header name (case-insensitive), since the simulator has no
//! import mappings:
//! - HIERARCHY_DATA (a list): `Name` (or the list's name), `Code`, and property names. A row
//!   updates the item with that code (or, without a code, that name) or adds a new one; a row
//!   with a code but no name adds an item named after its code. `Parent` and unknown columns
//!   are ignored.
//! - MODULE_DATA (a module): the key column is `Code` if present, else the column named after
//!   the list, else the first column; it holds item codes (an item name also matches). Every
//!   other column named after a stored line item is written; a blank value clears the cell.
//!
//! A row that fails goes to the failure dump: `_Status_`, the original columns, `_Line_` and
//! `_Error_1_`. The task is `successful` when no row failed. Completely blank rows are ignored.

use super::model::{ActionRef, ExportDef, ImportTarget, Input, ItemInput, ModelData};
use super::tasks::{Detail, TaskResult};

/// Export files and dumps are served in chunks of this size (Anaplan's are 10 MB or less).
pub const OUTPUT_CHUNK: usize = 10 * 1024 * 1024;

/// Runs the import, export or process with this ID.
pub fn run(md: &mut ModelData, action: u64, task_id: &str) -> TaskResult {
    if let Some(i) = md.imports.iter().position(|x| x.id == action) {
        return run_import(md, i, task_id);
    }
    if let Some(e) = md.exports.iter().position(|x| x.id == action) {
        return run_export(md, e);
    }
    if let Some(p) = md.processes.iter().position(|x| x.id == action) {
        let (id, name, steps) = {
            let p = &md.processes[p];
            (p.id, p.name.clone(), p.actions.clone())
        };
        let mut nested = Vec::new();
        for step in steps {
            let r = match step {
                ActionRef::Import(i) => run_import(md, i, task_id),
                ActionRef::Export(e) => run_export(md, e),
            };
            let stop = !r.successful && r.details.iter().any(|d| d.kind == "importFailed");
            nested.push(r);
            if stop {
                break;
            }
        }
        return TaskResult {
            successful: nested.iter().all(|r| r.successful),
            failure_dump: nested.iter().any(|r| r.failure_dump),
            object_id: id,
            object_name: name,
            details: Vec::new(),
            nested,
        };
    }
    TaskResult {
        successful: false,
        failure_dump: false,
        object_id: action,
        object_name: String::new(),
        details: vec![Detail {
            text: "Unknown action".into(),
            kind: "actionFailed",
            values: Vec::new(),
        }],
        nested: Vec::new(),
    }
}

/// Counts of an import, for `details`.
#[derive(Default, Debug, PartialEq)]
pub struct Counts {
    pub created: usize,
    pub updated: usize,
    pub failed: usize,
    pub ignored: usize,
}

/// CSV rows of a file: the header, then (1-based line number, fields) for each data row.
pub fn read_csv(bytes: &[u8]) -> (Vec<String>, Vec<(usize, Vec<String>)>) {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut header = Vec::new();
    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut first = true;
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            // A malformed tail (e.g. an unterminated quote) ends the file, as a truncated upload.
            Err(_) => break,
        }
        let line = record.position().map_or(0, |p| p.line() as usize);
        let fields: Vec<String> = record
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        if first {
            header = fields
                .into_iter()
                .map(|h| h.trim_start_matches('\u{feff}').to_string())
                .collect();
            first = false;
        } else {
            rows.push((line, fields));
        }
    }
    (header, rows)
}

fn failed_import(id: u64, name: &str, why: String) -> TaskResult {
    TaskResult {
        successful: false,
        failure_dump: false,
        object_id: id,
        object_name: name.to_string(),
        details: vec![Detail {
            text: why,
            kind: "importFailed",
            values: Vec::new(),
        }],
        nested: Vec::new(),
    }
}

fn run_import(md: &mut ModelData, index: usize, task_id: &str) -> TaskResult {
    let Some(def) = md.imports.get(index) else {
        return failed_import(0, "", "Unknown import".into());
    };
    let (id, name, target, file) = (def.id, def.name.clone(), def.target, def.file);
    let content = match md.files.get(&file) {
        Some(f) if !f.chunks.is_empty() => f.content(),
        _ => return failed_import(id, &name, "The import data source file has no data".into()),
    };
    let (header, rows) = read_csv(&content);
    let mut dump = Dump::new(&header);
    let outcome = match target {
        ImportTarget::List(l) => import_list(md, l, &header, &rows, &mut dump),
        ImportTarget::Module(m) => import_module(md, m, &header, &rows, &mut dump),
    };
    let (target_name, counts) = match outcome {
        Ok(x) => x,
        Err(why) => return failed_import(id, &name, why),
    };
    if counts.created + counts.updated > 0 {
        md.touch();
    }
    let has_dump = counts.failed > 0;
    md.tasks.dumps.retain(|(_, imp), _| *imp != id);
    if has_dump {
        md.tasks
            .dumps
            .insert((task_id.to_string(), id), dump.finish());
    }
    TaskResult {
        successful: !has_dump,
        failure_dump: has_dump,
        object_id: id,
        object_name: name,
        details: vec![rows_detail(&target_name, &counts)],
        nested: Vec::new(),
    }
}

/// The `hierarchyRowsProcessed` detail, with Anaplan's alternating key/value `values`.
pub fn rows_detail(target: &str, c: &Counts) -> Detail {
    let success = c.created + c.updated;
    let total = success + c.failed + c.ignored;
    let pairs: [(&str, String); 16] = [
        ("hierarchyName", target.to_string()),
        ("successRowCount", success.to_string()),
        ("successCreateCount", c.created.to_string()),
        ("successUpdateCount", c.updated.to_string()),
        ("warningsRowCount", "0".into()),
        ("warningsCreateCount", "0".into()),
        ("warningsUpdateCount", "0".into()),
        ("failedCount", c.failed.to_string()),
        ("ignoredCount", c.ignored.to_string()),
        ("totalRowCount", total.to_string()),
        ("totalCreateCount", c.created.to_string()),
        ("totalUpdateCount", c.updated.to_string()),
        ("invalidCount", c.failed.to_string()),
        ("updatedCount", c.updated.to_string()),
        ("renamedCount", "0".into()),
        ("createdCount", c.created.to_string()),
    ];
    let mut text = format!(
        "{target}: {success} ({}/{}) rows successful, {} ignored ",
        c.created, c.updated, c.ignored
    );
    if c.failed > 0 {
        text.push_str(&format!("{} failed", c.failed));
    }
    Detail {
        text,
        kind: "hierarchyRowsProcessed",
        values: pairs
            .into_iter()
            .flat_map(|(k, v)| [k.to_string(), v])
            .collect(),
    }
}

/// The failure dump being written.
pub struct Dump {
    w: csv::Writer<Vec<u8>>,
}

impl Dump {
    fn new(header: &[String]) -> Dump {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut h: Vec<&str> = vec!["_Status_"];
        h.extend(header.iter().map(String::as_str));
        h.extend(["_Line_", "_Error_1_"]);
        // Writing to a Vec cannot fail.
        let _ = w.write_record(&h);
        Dump { w }
    }

    fn row(&mut self, fields: &[String], line: usize, error: &str) {
        let line = line.to_string();
        let mut r: Vec<&str> = vec!["E"];
        r.extend(fields.iter().map(String::as_str));
        r.push(&line);
        r.push(error);
        let _ = self.w.write_record(&r);
    }

    fn finish(self) -> Vec<u8> {
        self.w.into_inner().unwrap_or_default()
    }
}

fn col(header: &[String], name: &str) -> Option<usize> {
    header
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case(name))
}

fn blank(fields: &[String]) -> bool {
    fields.iter().all(|f| f.trim().is_empty())
}

type Rows = [(usize, Vec<String>)];

fn import_list(
    md: &mut ModelData,
    l: usize,
    header: &[String],
    rows: &Rows,
    dump: &mut Dump,
) -> Result<(String, Counts), String> {
    let Some(list) = md.lists.get(l) else {
        return Err("Unknown list".into());
    };
    let list_name = list.name.clone();
    let name_col = col(header, "Name").or_else(|| col(header, &list_name));
    let code_col = col(header, "Code");
    if name_col.is_none() && code_col.is_none() {
        return Err(format!(
            "No column of the file is mapped to the name or code of {list_name}"
        ));
    }
    let prop_cols: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| list.property(h.trim()).is_some())
        .map(|(i, h)| (i, h.trim().to_string()))
        .collect();
    let mut counts = Counts::default();
    let mut added = Vec::new();
    for (line, fields) in rows {
        if blank(fields) {
            counts.ignored += 1;
            continue;
        }
        let get = |c: Option<usize>| c.and_then(|c| fields.get(c)).map(|s| s.trim());
        let code = get(code_col).filter(|c| !c.is_empty());
        let name = get(name_col).filter(|n| !n.is_empty()).or(code);
        let input = ItemInput {
            id: None,
            name,
            code,
            properties: prop_cols
                .iter()
                .map(|(c, p)| {
                    (
                        p.as_str(),
                        fields
                            .get(*c)
                            .map(|s| s.trim().to_string())
                            .unwrap_or_default(),
                    )
                })
                .collect(),
        };
        let list = &mut md.lists[l];
        let existing = match code {
            Some(c) => list.by_code(c),
            None => name.and_then(|n| list.by_name(n)),
        };
        let outcome = match existing {
            Some(i) => {
                let upd = ItemInput {
                    id: Some(""),
                    code: None,
                    ..input
                };
                list.update(i, &upd).map(|_| false)
            }
            None => list.add(&input).map(|i| {
                added.push(i);
                true
            }),
        };
        match outcome {
            Ok(true) => counts.created += 1,
            Ok(false) => counts.updated += 1,
            Err((_, why)) => {
                counts.failed += 1;
                dump.row(fields, *line, &why);
            }
        }
    }
    Ok((list_name, counts))
}

fn import_module(
    md: &mut ModelData,
    m: usize,
    header: &[String],
    rows: &Rows,
    dump: &mut Dump,
) -> Result<(String, Counts), String> {
    let Some(module) = md.modules.get(m) else {
        return Err("Unknown module".into());
    };
    let module_name = module.name.clone();
    let list = module.list;
    let list_name = md.lists[list].name.clone();
    let key_col = col(header, "Code")
        .or_else(|| col(header, &list_name))
        .unwrap_or(0);
    if header.is_empty() {
        return Err("The file has no header row".into());
    }
    let li_cols: Vec<(usize, usize)> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != key_col)
        .filter_map(|(i, h)| {
            let li = md.line_item_in(m, None, Some(h.trim()))?;
            md.line_items[li].formula.is_none().then_some((i, li))
        })
        .collect();
    let mut counts = Counts::default();
    for (line, fields) in rows {
        let key = fields.get(key_col).map(|k| k.trim()).unwrap_or("");
        if key.is_empty() {
            counts.ignored += 1;
            continue;
        }
        let l = &md.lists[list];
        let Some(item) = l.by_code(key).or_else(|| l.by_name(key)) else {
            counts.failed += 1;
            dump.row(
                fields,
                *line,
                &format!("Item not located in {list_name} list: {key}"),
            );
            continue;
        };
        let mut error = None;
        for &(c, li) in &li_cols {
            let raw = fields.get(c).map(|s| s.trim()).unwrap_or("");
            if let Err(why) = md.set_cell(li, item, Input::Str(raw)) {
                error.get_or_insert(format!("{}: {why}", md.line_items[li].name));
            }
        }
        match error {
            None => counts.updated += 1,
            Some(why) => {
                counts.failed += 1;
                dump.row(fields, *line, &why);
            }
        }
    }
    Ok((module_name, counts))
}

/// The export's CSV: the list's item names, their codes, then one column per line item.
pub fn export_csv(md: &ModelData, def: &ExportDef) -> (Vec<String>, Vec<u8>, usize) {
    let Some(module) = md.modules.get(def.module) else {
        return (Vec::new(), Vec::new(), 0);
    };
    let Some(list) = md.lists.get(module.list) else {
        return (Vec::new(), Vec::new(), 0);
    };
    let mut header = vec![list.name.clone(), "Code".to_string()];
    header.extend(
        module
            .line_items
            .iter()
            .map(|&li| md.line_items[li].name.clone()),
    );
    let mut w = csv::Writer::from_writer(Vec::with_capacity(64 * (list.len() + 1)));
    let _ = w.write_record(&header);
    let mut rows = 0;
    let mut record: Vec<String> = Vec::with_capacity(header.len());
    for (i, item) in list.iter() {
        record.clear();
        record.push(item.name.to_string());
        record.push(item.code.as_deref().unwrap_or("").to_string());
        for &li in &module.line_items {
            record.push(md.cell_text(li, i));
        }
        let _ = w.write_record(&record);
        rows += 1;
    }
    (header, w.into_inner().unwrap_or_default(), rows)
}

fn run_export(md: &mut ModelData, index: usize) -> TaskResult {
    let Some(def) = md.exports.get(index) else {
        return failed_import(0, "", "Unknown export".into());
    };
    let (id, name) = (def.id, def.name.clone());
    let (_, csv, rows) = export_csv(md, def);
    let file = md
        .files
        .entry(id)
        .or_insert_with(|| super::model::FileData::new(id, name.clone()));
    file.set_content(&csv, OUTPUT_CHUNK);
    TaskResult {
        successful: true,
        failure_dump: false,
        object_id: id,
        object_name: name.clone(),
        details: vec![Detail {
            text: format!("{name}: {rows} rows exported"),
            kind: "exportSucceeded",
            values: vec!["rowCount".into(), rows.to_string()],
        }],
        nested: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anaplan::model::{self, CellValue};
    use crate::anaplan::seed::Seed;

    #[test]
    fn csv_reading_handles_quotes_bom_and_ragged_rows() {
        let (h, rows) = read_csv(b"\xef\xbb\xbfCode,Name\n\"a,1\",\"x \"\"y\"\"\"\nb\n\n");
        assert_eq!(h, vec!["Code", "Name"]);
        assert_eq!(rows[0].1, vec!["a,1", "x \"y\""]);
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[1].1, vec!["b"]);
    }

    #[test]
    fn module_import_applies_rows_and_dumps_failures() {
        let t = model::build(&Seed::default_seed()).unwrap();
        let mut md = t.models[0].data.lock().unwrap();
        let imp = md
            .imports
            .iter()
            .position(|i| i.name.starts_with("OPP01"))
            .unwrap();
        let file = md.imports[imp].file;
        let id = md.imports[imp].id;
        let csv = "Opportunities,Amount,Stage,Weighted Amount\n\
                   0065g0000000001AAA,999,Won,1\n\
                   NOPE,1,Won,1\n\
                   0065g0000000003AAA,abc,Won,1\n\
                   ,,,\n";
        md.files
            .get_mut(&file)
            .unwrap()
            .set_content(csv.as_bytes(), 7);
        let r = run(&mut md, id, "T1");
        assert!(!r.successful);
        assert!(r.failure_dump);
        let v = &r.details[0].values;
        let get = |k: &str| v[v.iter().position(|x| x == k).unwrap() + 1].clone();
        assert_eq!(get("successRowCount"), "1");
        assert_eq!(get("failedCount"), "2");
        assert_eq!(get("ignoredCount"), "1");
        let m = md.find_module("OPP01 Opportunity Data").unwrap();
        let cells = md.module_cells(m);
        assert_eq!(
            cells["0065g0000000001AAA"]["Amount"],
            CellValue::Number(999.0)
        );
        let dump = String::from_utf8(md.tasks.dumps[&("T1".to_string(), id)].clone()).unwrap();
        let mut lines = dump.lines();
        assert_eq!(
            lines.next().unwrap(),
            "_Status_,Opportunities,Amount,Stage,Weighted Amount,_Line_,_Error_1_"
        );
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("E,NOPE,1,Won,1,3,Item not located")
        );
        assert!(
            lines
                .next()
                .unwrap()
                .contains(",4,\"Amount: \"\"abc\"\" is not a valid number")
        );
    }

    #[test]
    fn list_import_adds_and_updates_by_code() {
        let t = model::build(&Seed::default_seed()).unwrap();
        let mut md = t.models[0].data.lock().unwrap();
        let imp = md
            .imports
            .iter()
            .position(|i| i.name.starts_with("Opportunities from"))
            .unwrap();
        let (file, id) = (md.imports[imp].file, md.imports[imp].id);
        let csv = "Name,Code,Opportunity Name\nOPP-0001,0065g0000000001AAA,Renamed\nNEW,NEWCODE,Fresh\nOPP-0002,OTHER,dup name\n";
        md.files
            .get_mut(&file)
            .unwrap()
            .set_content(csv.as_bytes(), 1000);
        let r = run(&mut md, id, "T2");
        let v = &r.details[0].values;
        let get = |k: &str| v[v.iter().position(|x| x == k).unwrap() + 1].clone();
        assert_eq!(get("successCreateCount"), "1");
        assert_eq!(get("successUpdateCount"), "1");
        assert_eq!(get("failedCount"), "1");
        let l = md.list_by_name("Opportunities").unwrap();
        let snap = md.lists[l].snapshot();
        let one = snap
            .iter()
            .find(|i| i.code.as_deref() == Some("0065g0000000001AAA"))
            .unwrap();
        assert_eq!(one.properties["Opportunity Name"], "Renamed");
        assert!(
            snap.iter()
                .any(|i| i.code.as_deref() == Some("NEWCODE") && i.name == "NEW")
        );
    }

    #[test]
    fn export_writes_names_codes_and_cells() {
        let t = model::build(&Seed::default_seed()).unwrap();
        let md = t.models[0].data.lock().unwrap();
        let (header, csv, rows) = export_csv(&md, &md.exports[0]);
        assert_eq!(header[0], "Opportunities");
        assert_eq!(header[1], "Code");
        assert_eq!(rows, 4);
        let text = String::from_utf8(csv).unwrap();
        assert!(text.contains("OPP-0002,0065g0000000002AAA,480000,Negotiation,2027-01-22,450000,70,false,false,336000"), "{text}");
        assert!(
            text.contains(
                "OPP-0004,0065g0000000004AAA,910000,Won,2026-11-30,0,100,true,false,910000"
            ),
            "{text}"
        );
    }
}
