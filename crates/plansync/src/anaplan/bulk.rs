//! The bulk API: chunked, gzip-compressed file upload; import, export, process and action
//! tasks, polled no more often than configured; import failure dumps parsed into row errors;
//! export files downloaded chunk by chunk.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::Method;
use tokio::time::Instant;

use super::dump::{DumpRowError, parse_dump};
use super::error::AnaplanError;
use super::http::Request;
use super::stats::CallKind;
use super::wire::{
    Chunk, Definition, FileInfo, Task, TaskResult, TaskState, parse_file, parse_page, parse_task,
};
use super::{AnaplanClient, seg};

/// The kinds of object that run as tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Import,
    Export,
    Process,
    Action,
}

impl TaskKind {
    fn collection(self) -> &'static str {
        match self {
            TaskKind::Import => "imports",
            TaskKind::Export => "exports",
            TaskKind::Process => "processes",
            TaskKind::Action => "actions",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            TaskKind::Import => "import",
            TaskKind::Export => "export",
            TaskKind::Process => "process",
            TaskKind::Action => "action",
        }
    }
}

/// How an import ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOutcome {
    pub task_id: String,
    /// Anaplan's verdict; false when any row failed.
    pub successful: bool,
    pub result: TaskResult,
    /// The rows of the failure dump, when there was one.
    pub row_errors: Vec<DumpRowError>,
}

impl ImportOutcome {
    /// A counter of the import's `hierarchyRowsProcessed` detail (e.g. `failedCount`).
    pub fn count(&self, key: &str) -> Option<u64> {
        self.result
            .details
            .iter()
            .find_map(|d| d.value(key))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// How a process ended, with the failure dump rows of each of its actions that left one.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessOutcome {
    pub task_id: String,
    pub successful: bool,
    pub result: TaskResult,
    /// (object id of the nested action, its dump rows).
    pub row_errors: Vec<(String, Vec<DumpRowError>)>,
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, AnaplanError> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 4 + 64), Compression::fast());
    enc.write_all(data)
        .and_then(|_| enc.finish())
        .map_err(|e| AnaplanError::Config(format!("compressing an upload chunk: {e}")))
}

impl AnaplanClient {
    fn model_path(&self, workspace: &str, model: &str) -> String {
        format!("/workspaces/{}/models/{}", seg(workspace), seg(model))
    }

    /// The model's imports, exports, processes or actions (paged like every listing).
    pub async fn list_definitions(
        &self,
        workspace: &str,
        model: &str,
        kind: TaskKind,
    ) -> Result<Vec<Definition>, AnaplanError> {
        let path = format!(
            "{}/{}",
            self.model_path(workspace, model),
            kind.collection()
        );
        self.get_paged(kind.collection(), &path, kind.collection(), &[])
            .await
    }

    /// The definition whose id is `name`, else the one whose name is `name` (rule and config
    /// files name imports and exports as people see them).
    pub async fn definition(
        &self,
        workspace: &str,
        model: &str,
        kind: TaskKind,
        name: &str,
    ) -> Result<Definition, AnaplanError> {
        let all = self.list_definitions(workspace, model, kind).await?;
        let id = super::transactional::pick(
            kind.noun(),
            model,
            name,
            all.iter().map(|d| (&d.id, &d.name)),
        )?;
        all.into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| AnaplanError::NotFound {
                kind: kind.noun(),
                name: name.to_string(),
                model: model.to_string(),
            })
    }

    /// Uploads `data` as the content of file `file_id` (the data source an import names):
    /// announce an unknown chunk count, send `chunk_bytes` pieces gzip-compressed, complete.
    pub async fn upload_file(
        &self,
        workspace: &str,
        model: &str,
        file_id: &str,
        data: &[u8],
    ) -> Result<FileInfo, AnaplanError> {
        let base = format!(
            "{}/files/{}",
            self.model_path(workspace, model),
            seg(file_id)
        );
        let req = Request::new(Method::POST, self.url(&base), CallKind::Bulk)
            .json(br#"{"chunkCount":-1}"#.to_vec())
            .idempotent(true);
        let r = self.call(req).await?;
        let file = parse_file(r.status, &r.content_type, &r.body)?;
        if file.id != file_id {
            return Err(AnaplanError::UnknownFile {
                requested: file_id.to_string(),
                created: file.id,
            });
        }
        for (n, piece) in data.chunks(self.inner.config.chunk_bytes).enumerate() {
            let mut req = Request::new(
                Method::PUT,
                self.url(&format!("{base}/chunks/{n}")),
                CallKind::Bulk,
            );
            req.content_type = Some("application/x-gzip");
            req.accept = None;
            req.body = Some(gzip(piece)?);
            self.call(req).await?;
        }
        let complete =
            serde_json::to_vec(&serde_json::json!({ "id": file_id })).unwrap_or_default();
        let req = Request::new(
            Method::POST,
            self.url(&format!("{base}/complete")),
            CallKind::Bulk,
        )
        .json(complete)
        .idempotent(true);
        let r = self.call(req).await?;
        parse_file(r.status, &r.content_type, &r.body)
    }

    /// Starts a task and returns its id. Not retried once it may have started (a second
    /// start would run the import twice).
    pub async fn start_task(
        &self,
        workspace: &str,
        model: &str,
        kind: TaskKind,
        object_id: &str,
    ) -> Result<String, AnaplanError> {
        let path = format!(
            "{}/{}/{}/tasks",
            self.model_path(workspace, model),
            kind.collection(),
            seg(object_id)
        );
        let req = Request::new(Method::POST, self.url(&path), CallKind::Bulk)
            .json(br#"{"localeName":"en_US"}"#.to_vec())
            .idempotent(false);
        let r = self.call(req).await?;
        parse_task(r.status, &r.content_type, &r.body).map(|t| t.task_id)
    }

    /// Polls a task every `task_poll_interval` until it ends (or `task_timeout` passes).
    pub async fn wait_task(
        &self,
        workspace: &str,
        model: &str,
        kind: TaskKind,
        object_id: &str,
        task_id: &str,
    ) -> Result<Task, AnaplanError> {
        let path = format!(
            "{}/{}/{}/tasks/{}",
            self.model_path(workspace, model),
            kind.collection(),
            seg(object_id),
            seg(task_id)
        );
        let cfg = &self.inner.config;
        let start = Instant::now();
        loop {
            tokio::time::sleep(cfg.task_poll_interval).await;
            let r = self
                .call(Request::new(Method::GET, self.url(&path), CallKind::Bulk))
                .await?;
            let task = parse_task(r.status, &r.content_type, &r.body)?;
            match task.task_state {
                TaskState::Complete => return Ok(task),
                TaskState::Cancelled => {
                    return Err(AnaplanError::Task {
                        object: object_id.to_string(),
                        task_id: task_id.to_string(),
                        detail: "the task was cancelled".into(),
                    });
                }
                _ if start.elapsed() >= cfg.task_timeout => {
                    return Err(AnaplanError::Task {
                        object: object_id.to_string(),
                        task_id: task_id.to_string(),
                        detail: format!("still {:?} after {:?}", task.task_state, cfg.task_timeout),
                    });
                }
                _ => {}
            }
        }
    }

    /// Runs an import and, when it left a failure dump, fetches and parses it.
    pub async fn run_import(
        &self,
        workspace: &str,
        model: &str,
        import_id: &str,
    ) -> Result<ImportOutcome, AnaplanError> {
        let task_id = self
            .start_task(workspace, model, TaskKind::Import, import_id)
            .await?;
        let task = self
            .wait_task(workspace, model, TaskKind::Import, import_id, &task_id)
            .await?;
        let result = task.result.unwrap_or_default();
        let row_errors = if result.failure_dump_available {
            let dump = format!(
                "{}/imports/{}/tasks/{}/dump",
                self.model_path(workspace, model),
                seg(import_id),
                seg(&task_id)
            );
            parse_dump(&self.download_chunked(&dump, true).await?)?
        } else {
            Vec::new()
        };
        Ok(ImportOutcome {
            task_id,
            successful: result.successful,
            result,
            row_errors,
        })
    }

    /// Runs an export and downloads the file it wrote (which has the export's id).
    pub async fn run_export(
        &self,
        workspace: &str,
        model: &str,
        export_id: &str,
    ) -> Result<Vec<u8>, AnaplanError> {
        let task_id = self
            .start_task(workspace, model, TaskKind::Export, export_id)
            .await?;
        let task = self
            .wait_task(workspace, model, TaskKind::Export, export_id, &task_id)
            .await?;
        if !task.result.as_ref().is_some_and(|r| r.successful) {
            return Err(AnaplanError::Task {
                object: export_id.to_string(),
                task_id,
                detail: "the export did not succeed".into(),
            });
        }
        self.download_file(workspace, model, export_id).await
    }

    /// A file's content: its chunks in order.
    pub async fn download_file(
        &self,
        workspace: &str,
        model: &str,
        file_id: &str,
    ) -> Result<Vec<u8>, AnaplanError> {
        let path = format!(
            "{}/files/{}",
            self.model_path(workspace, model),
            seg(file_id)
        );
        self.download_chunked(&path, false).await
    }

    /// Runs a process; fetches the failure dump of each nested action that left one.
    pub async fn run_process(
        &self,
        workspace: &str,
        model: &str,
        process_id: &str,
    ) -> Result<ProcessOutcome, AnaplanError> {
        let task_id = self
            .start_task(workspace, model, TaskKind::Process, process_id)
            .await?;
        let task = self
            .wait_task(workspace, model, TaskKind::Process, process_id, &task_id)
            .await?;
        let result = task.result.unwrap_or_default();
        let mut row_errors = Vec::new();
        for nested in &result.nested_results {
            if let (true, Some(object)) = (nested.failure_dump_available, &nested.object_id) {
                let path = format!(
                    "{}/processes/{}/tasks/{}/dumps/{}",
                    self.model_path(workspace, model),
                    seg(process_id),
                    seg(&task_id),
                    seg(object)
                );
                let rows = parse_dump(&self.download_chunked(&path, true).await?)?;
                row_errors.push((object.clone(), rows));
            }
        }
        Ok(ProcessOutcome {
            task_id,
            successful: result.successful,
            result,
            row_errors,
        })
    }

    /// Runs an action (e.g. delete by selection) to its end.
    pub async fn run_action(
        &self,
        workspace: &str,
        model: &str,
        action_id: &str,
    ) -> Result<Task, AnaplanError> {
        let task_id = self
            .start_task(workspace, model, TaskKind::Action, action_id)
            .await?;
        self.wait_task(workspace, model, TaskKind::Action, action_id, &task_id)
            .await
    }

    /// `GET {path}/chunks`, then each chunk in order. With no chunk listed, a dump is read
    /// whole from `{path}` (a 204 there means no content); a file with no chunks is empty.
    async fn download_chunked(
        &self,
        path: &str,
        whole_if_none: bool,
    ) -> Result<Vec<u8>, AnaplanError> {
        let r = self
            .call(Request::new(
                Method::GET,
                self.url(&format!("{path}/chunks")),
                CallKind::Bulk,
            ))
            .await?;
        let (chunks, _): (Vec<Chunk>, _) =
            parse_page("chunks", "chunks", r.status, &r.content_type, &r.body)?;
        let mut out = Vec::new();
        if chunks.is_empty() {
            if whole_if_none {
                let mut req = Request::new(Method::GET, self.url(path), CallKind::Bulk);
                req.accept = None;
                out = self.call(req).await?.body;
            }
            return Ok(out);
        }
        for chunk in chunks {
            let mut req = Request::new(
                Method::GET,
                self.url(&format!("{path}/chunks/{}", seg(&chunk.id))),
                CallKind::Bulk,
            );
            req.accept = None;
            out.extend(self.call(req).await?.body);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_round_trips() {
        let data = b"Code,Amount\n006A,12.5\n".repeat(100);
        let packed = gzip(&data).unwrap();
        assert!(packed.len() < data.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
}
