//! The bulk API under a model: files (chunked upload with `-1` + complete, gzip chunks,
//! download), import, export and process definitions, tasks, and failure dumps.

use std::io::Read;

use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::actions::{self, OUTPUT_CHUNK};
use super::model::{FileData, ImportTarget, ModelData, ModelSlot};
use super::server::model_lock;
use super::tasks::new_task_id;
use super::wire::{self, Req, envelope, model_schema, paged};

pub fn owns(first: &str) -> bool {
    matches!(
        first,
        "files" | "imports" | "exports" | "processes" | "actions"
    )
}

pub fn handle(req: &Req, slot: &ModelSlot, rest: &[&str]) -> Response {
    let m = &req.method;
    let get = *m == Method::GET;
    let post = *m == Method::POST;
    let put = *m == Method::PUT;
    let delete = *m == Method::DELETE;
    match rest {
        ["files"] if get => files(req, slot),
        ["files", f] if get => download(req, slot, f, None),
        ["files", f] if post => set_chunk_count(req, slot, f),
        ["files", f] if put => upload_chunk(req, slot, f, None),
        ["files", f] if delete => delete_file(req, slot, f),
        ["files", f, "chunks"] if get => chunk_list(req, slot, f),
        ["files", f, "chunks", n] if get => download(req, slot, f, Some(n)),
        ["files", f, "chunks", n] if put => upload_chunk(req, slot, f, Some(n)),
        ["files", f, "complete"] if post => complete(req, slot, f),
        ["imports" | "exports" | "processes" | "actions"] if get => definitions(req, slot, rest[0]),
        [kind @ ("imports" | "exports" | "processes"), id] if get => {
            definition(req, slot, kind, id)
        }
        [kind, id, "tasks"] if post => start_task(req, slot, kind, id),
        [_, id, "tasks"] if get => task_list(req, slot, id),
        [_, id, "tasks", t] if get => task(req, slot, id, t, false),
        [_, id, "tasks", t] if delete => task(req, slot, id, t, true),
        ["imports", id, "tasks", t, "dump"] if get => dump(req, slot, t, id, id, None),
        ["imports", id, "tasks", t, "dump", "chunks"] if get => {
            dump(req, slot, t, id, id, Some(None))
        }
        ["imports", id, "tasks", t, "dump", "chunks", n] if get => {
            dump(req, slot, t, id, id, Some(Some(n)))
        }
        ["processes", p, "tasks", t, "dumps", o] if get => dump(req, slot, t, p, o, None),
        ["processes", p, "tasks", t, "dumps", o, "chunks"] if get => {
            dump(req, slot, t, p, o, Some(None))
        }
        ["processes", p, "tasks", t, "dumps", o, "chunks", n] if get => {
            dump(req, slot, t, p, o, Some(Some(n)))
        }
        ["files", ..] | [_] | [_, _] | [_, _, "tasks", ..] => wire::method_not_allowed(&req.path),
        _ => wire::not_found(&req.path),
    }
}

fn file_json(f: &FileData) -> Value {
    json!({
        "id": f.id.to_string(),
        "name": f.name,
        "chunkCount": f.chunk_count,
        "delimiter": "\"",
        "encoding": "UTF-8",
        "firstDataRow": 2,
        "format": "txt",
        "headerRow": 1,
        "separator": ",",
    })
}

fn parse_id(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

fn files(req: &Req, slot: &ModelSlot) -> Response {
    let all = model_lock(&slot.data)
        .files
        .values()
        .map(file_json)
        .collect();
    paged(req, model_schema(req, slot, "file"), "files", all)
}

fn set_chunk_count(req: &Req, slot: &ModelSlot, f: &str) -> Response {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return wire::bad_request("Invalid request body", &req.path),
    };
    let Some(count) = body
        .get("chunkCount")
        .and_then(Value::as_i64)
        .filter(|c| *c >= -1)
    else {
        return wire::bad_request("chunkCount must be -1 or a number of chunks", &req.path);
    };
    let mut md = model_lock(&slot.data);
    let id = match parse_id(f).filter(|id| md.files.contains_key(id)) {
        Some(id) => id,
        None => {
            // Anaplan creates a private file named after the unknown ID, with an ID of its own.
            let id = md.next_private_file;
            md.next_private_file += 1;
            md.files.insert(id, FileData::new(id, f.to_string()));
            id
        }
    };
    let Some(file) = md.files.get_mut(&id) else {
        return wire::not_found(&req.path);
    };
    file.chunks.clear();
    file.chunk_count = count;
    let v = file_json(file);
    envelope(model_schema(req, slot, "file"), None, vec![("file", v)])
}

/// The most a chunk may hold once decompressed: Anaplan's upload chunks are 1 to 50 MB
/// (reference `anaplan-api.md`, §5 "Upload" and §6 "Payload limits"; read here as MiB, the
/// more lenient reading). Raw chunks are bounded by the request limit (`server::MAX_BODY`);
/// a gzip chunk is bounded here, as it is decompressed, since a few kilobytes of gzip can
/// inflate to gigabytes.
pub const MAX_CHUNK_BYTES: usize = 50 * 1024 * 1024;

enum Gunzip {
    Data(Vec<u8>),
    Invalid,
    TooLarge,
}

fn gunzip(bytes: &[u8]) -> Gunzip {
    // One byte past the limit tells "exactly at the limit" from "over it" without reading
    // (or allocating) any further.
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(MAX_CHUNK_BYTES));
    let read = flate2::read::GzDecoder::new(bytes)
        .take(MAX_CHUNK_BYTES as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Err(_) => Gunzip::Invalid,
        Ok(_) if out.len() > MAX_CHUNK_BYTES => Gunzip::TooLarge,
        Ok(_) => Gunzip::Data(out),
    }
}

fn upload_chunk(req: &Req, slot: &ModelSlot, f: &str, n: Option<&str>) -> Response {
    let index = match n {
        None => None,
        Some(n) => match n.parse::<u32>() {
            Ok(i) => Some(i),
            Err(_) => return wire::bad_request("Invalid chunk number", &req.path),
        },
    };
    let gzip = req
        .header(header::CONTENT_TYPE)
        .is_some_and(|c| c.contains("gzip"));
    // Decompressed before taking the model lock: it can take a while for 50 MB.
    let data = if gzip {
        match gunzip(&req.body) {
            Gunzip::Data(d) => d,
            Gunzip::Invalid => {
                return wire::bad_request("The chunk is not valid gzip data", &req.path);
            }
            // The answer the simulator gives a request body over its limit.
            Gunzip::TooLarge => {
                return wire::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The chunk is larger than 50 MB once decompressed; upload it in smaller chunks",
                    &req.path,
                );
            }
        }
    } else {
        req.body.to_vec()
    };
    let mut md = model_lock(&slot.data);
    let Some(file) = parse_id(f).and_then(|id| md.files.get_mut(&id)) else {
        return wire::not_found(&req.path);
    };
    match index {
        // PUT on the file itself: the whole file as one chunk.
        None => {
            file.chunks.clear();
            file.chunks.insert(0, data);
            file.chunk_count = 1;
        }
        Some(i) => {
            if file.chunk_count >= 0 && i64::from(i) >= file.chunk_count {
                return wire::bad_request(
                    "Chunk number out of range of the chunk count",
                    &req.path,
                );
            }
            file.chunks.insert(i, data);
        }
    }
    wire::no_content()
}

fn complete(req: &Req, slot: &ModelSlot, f: &str) -> Response {
    let mut md = model_lock(&slot.data);
    let Some(file) = parse_id(f).and_then(|id| md.files.get_mut(&id)) else {
        return wire::not_found(&req.path);
    };
    file.chunk_count = file.chunks.len() as i64;
    let v = file_json(file);
    envelope(model_schema(req, slot, "file"), None, vec![("file", v)])
}

fn chunk_list(req: &Req, slot: &ModelSlot, f: &str) -> Response {
    let md = model_lock(&slot.data);
    let Some(file) = parse_id(f).and_then(|id| md.files.get(&id)) else {
        return wire::not_found(&req.path);
    };
    let all = file
        .chunks
        .keys()
        .map(|k| json!({"id": k.to_string(), "name": format!("Chunk {k}")}))
        .collect();
    paged(req, model_schema(req, slot, "chunk"), "chunks", all)
}

fn download(req: &Req, slot: &ModelSlot, f: &str, n: Option<&str>) -> Response {
    let md = model_lock(&slot.data);
    let Some(file) = parse_id(f).and_then(|id| md.files.get(&id)) else {
        return wire::not_found(&req.path);
    };
    let body = match n {
        None if file.chunks.is_empty() => return wire::not_found(&req.path),
        None => file.content(),
        Some(n) => match n.parse::<u32>().ok().and_then(|i| file.chunks.get(&i)) {
            Some(c) => c.clone(),
            None => return wire::not_found(&req.path),
        },
    };
    wire::bytes(StatusCode::OK, "application/octet-stream", body)
}

fn delete_file(req: &Req, slot: &ModelSlot, f: &str) -> Response {
    let mut md = model_lock(&slot.data);
    let Some(id) = parse_id(f).filter(|id| md.files.contains_key(id)) else {
        return wire::not_found(&req.path);
    };
    let is_source =
        md.imports.iter().any(|i| i.file == id) || md.exports.iter().any(|e| e.id == id);
    if is_source {
        // Only the private content goes; the data source object stays.
        if let Some(file) = md.files.get_mut(&id) {
            file.chunks.clear();
            file.chunk_count = 0;
        }
    } else {
        md.files.remove(&id);
    }
    wire::no_content()
}

fn import_headers(md: &ModelData, target: ImportTarget) -> Vec<String> {
    match target {
        ImportTarget::List(l) => {
            let list = &md.lists[l];
            let mut h = vec!["Name".to_string(), "Code".to_string()];
            h.extend(list.properties.iter().map(|p| p.name.clone()));
            h
        }
        ImportTarget::Module(m) => {
            let module = &md.modules[m];
            let mut h = vec![md.lists[module.list].name.clone()];
            h.extend(
                module
                    .line_items
                    .iter()
                    .filter(|&&li| md.line_items[li].formula.is_none())
                    .map(|&li| md.line_items[li].name.clone()),
            );
            h
        }
    }
}

fn definitions(req: &Req, slot: &ModelSlot, kind: &str) -> Response {
    let md = model_lock(&slot.data);
    let (key, all): (&str, Vec<Value>) = match kind {
        "imports" => (
            "imports",
            md.imports
                .iter()
                .map(|i| {
                    json!({
                        "id": i.id.to_string(),
                        "name": i.name,
                        "code": "",
                        "importDataSourceId": i.file.to_string(),
                        "importType": match i.target { ImportTarget::List(_) => "HIERARCHY_DATA", ImportTarget::Module(_) => "MODULE_DATA" },
                    })
                })
                .collect(),
        ),
        "exports" => (
            "exports",
            md.exports
                .iter()
                .map(|e| {
                    json!({
                        "id": e.id.to_string(),
                        "name": e.name,
                        "code": "",
                        "exportType": "TABULAR_MULTI_COLUMN",
                        "exportFormat": "text/csv",
                        "encoding": "UTF-8",
                        "layout": "TABULAR_MULTI_COLUMN",
                    })
                })
                .collect(),
        ),
        "processes" => (
            "processes",
            md.processes
                .iter()
                .map(|p| json!({"id": p.id.to_string(), "name": p.name, "code": ""}))
                .collect(),
        ),
        // No actions (deletes, optimizer) are simulated.
        _ => ("actions", Vec::new()),
    };
    let kind_schema = &key[..key.len() - 1];
    let kind_schema = if key == "processes" {
        "process"
    } else {
        kind_schema
    };
    drop(md);
    paged(req, model_schema(req, slot, kind_schema), key, all)
}

fn definition(req: &Req, slot: &ModelSlot, kind: &str, id: &str) -> Response {
    let md = model_lock(&slot.data);
    let id = parse_id(id).unwrap_or(0);
    let found = match kind {
        "imports" => md.imports.iter().find(|i| i.id == id).map(|i| {
            let headers = import_headers(&md, i.target);
            (
                "importMetadata",
                json!({
                    "name": i.name,
                    "type": "FILE",
                    "source": {
                        "textEncoding": "UTF-8",
                        "columnSeparator": ",",
                        "textDelimiter": "\"",
                        "headerRow": 1,
                        "firstDataRow": 2,
                        "decimalSeparator": ".",
                        "columnCount": headers.len(),
                        "headerNames": headers,
                    },
                }),
            )
        }),
        "exports" => md.exports.iter().find(|e| e.id == id).map(|e| {
            let (headers, _, rows) = actions::export_csv(&md, e);
            let module = &md.modules[e.module];
            let mut types = vec!["ENTITY", "TEXT"];
            types.extend(module.line_items.iter().map(|&li| md.line_items[li].format.data_type()));
            (
                "exportMetadata",
                json!({
                    "columnCount": headers.len(),
                    "dataTypes": types,
                    "delimiter": "\"",
                    "encoding": "UTF-8",
                    "exportFormat": "text/csv",
                    "headerNames": headers,
                    "listNames": [md.lists[module.list].name],
                    "rowCount": rows,
                    "separator": ",",
                    "layout": "TABULAR_MULTI_COLUMN",
                }),
            )
        }),
        _ => md.processes.iter().find(|p| p.id == id).map(|p| {
            let acts: Vec<Value> = p
                .actions
                .iter()
                .map(|a| match *a {
                    super::model::ActionRef::Import(i) => json!({"id": md.imports[i].id.to_string(), "name": md.imports[i].name, "actionType": "IMPORT"}),
                    super::model::ActionRef::Export(e) => json!({"id": md.exports[e].id.to_string(), "name": md.exports[e].name, "actionType": "EXPORT"}),
                })
                .collect();
            ("processMetadata", json!({"name": p.name, "actions": acts}))
        }),
    };
    match found {
        Some((key, v)) => envelope(model_schema(req, slot, kind), None, vec![(key, v)]),
        None => wire::not_found(&req.path),
    }
}

fn action_exists(md: &ModelData, kind: &str, id: u64) -> bool {
    match kind {
        "imports" => md.imports.iter().any(|i| i.id == id),
        "exports" => md.exports.iter().any(|e| e.id == id),
        "processes" => md.processes.iter().any(|p| p.id == id),
        _ => false,
    }
}

fn start_task(req: &Req, slot: &ModelSlot, kind: &str, id: &str) -> Response {
    if !req.body.is_empty()
        && serde_json::from_slice::<Value>(&req.body).map_or(true, |v| !v.is_object())
    {
        return wire::bad_request("Invalid request body", &req.path);
    }
    let mut md = model_lock(&slot.data);
    let Some(id) = parse_id(id).filter(|id| action_exists(&md, kind, *id)) else {
        return wire::not_found(&req.path);
    };
    let i = md.tasks.enqueue(id, new_task_id());
    let v = md.tasks.task_json(&md.tasks.tasks[i], false);
    drop(md);
    slot.wake.notify_one();
    envelope(model_schema(req, slot, "task"), None, vec![("task", v)])
}

fn task_list(req: &Req, slot: &ModelSlot, id: &str) -> Response {
    let all = {
        let md = model_lock(&slot.data);
        let id = parse_id(id).unwrap_or(0);
        md.tasks
            .for_action(id)
            .map(|t| md.tasks.task_json(t, false))
            .collect()
    };
    paged(req, model_schema(req, slot, "task"), "tasks", all)
}

fn task(req: &Req, slot: &ModelSlot, id: &str, t: &str, cancel: bool) -> Response {
    let mut md = model_lock(&slot.data);
    let id = parse_id(id).unwrap_or(0);
    let found = if cancel {
        let tid = md.tasks.cancel(id, t).map(|x| x.id.clone());
        tid.and_then(|tid| md.tasks.find(id, &tid).map(|x| md.tasks.task_json(x, true)))
    } else {
        md.tasks.find(id, t).map(|x| md.tasks.task_json(x, true))
    };
    match found {
        Some(v) => envelope(model_schema(req, slot, "task"), None, vec![("task", v)]),
        None => wire::not_found(&req.path),
    }
}

/// A failure dump: whole (`chunk = None`), its chunk list (`Some(None)`) or one chunk.
fn dump(
    req: &Req,
    slot: &ModelSlot,
    task_id: &str,
    parent: &str,
    object: &str,
    chunk: Option<Option<&str>>,
) -> Response {
    let md = model_lock(&slot.data);
    let (Some(parent), Some(object)) = (parse_id(parent), parse_id(object)) else {
        return wire::not_found(&req.path);
    };
    let Some(task) = md.tasks.find(parent, task_id) else {
        return wire::not_found(&req.path);
    };
    let Some(bytes) = md.tasks.dumps.get(&(task.id.clone(), object)) else {
        return wire::not_found(&req.path);
    };
    let pieces: Vec<&[u8]> = bytes.chunks(OUTPUT_CHUNK).collect();
    match chunk {
        None => wire::bytes(StatusCode::OK, "text/plain", bytes.clone()),
        Some(None) => {
            let all = (0..pieces.len())
                .map(|k| json!({"id": k.to_string(), "name": format!("Chunk {k}")}))
                .collect();
            drop(md);
            paged(req, model_schema(req, slot, "chunk"), "chunks", all)
        }
        Some(Some(n)) => match n.parse::<usize>().ok().and_then(|k| pieces.get(k)) {
            Some(p) => wire::bytes(StatusCode::OK, "text/plain", p.to_vec()),
            None => wire::not_found(&req.path),
        },
    }
}
