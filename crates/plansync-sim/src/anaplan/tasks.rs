//! Bulk tasks: the per-model queue, the model lock, and the runner that executes them.
//!
//! One task runs at a time per model; the others wait as `NOT_STARTED`. A running task holds
//! the model lock: transactional writes get 409 until it finishes. The runner is one tokio
//! task per model: it takes the next queued task, shows it `IN_PROGRESS` for the configured
//! step time (so tests can watch), then applies it to the model in one critical section and
//! marks it `COMPLETE` (or `CANCELLED` if a cancel arrived meanwhile, with nothing applied).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::actions;
use super::model::{ModelData, ModelSlot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    NotStarted,
    InProgress,
    Complete,
    Cancelling,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::NotStarted => "NOT_STARTED",
            TaskState::InProgress => "IN_PROGRESS",
            TaskState::Complete => "COMPLETE",
            TaskState::Cancelling => "CANCELLING",
            TaskState::Cancelled => "CANCELLED",
        }
    }
}

/// One line of `result.details`.
#[derive(Debug, Clone)]
pub struct Detail {
    pub text: String,
    pub kind: &'static str,
    pub values: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TaskResult {
    pub successful: bool,
    pub failure_dump: bool,
    pub object_id: u64,
    pub object_name: String,
    pub details: Vec<Detail>,
    pub nested: Vec<TaskResult>,
}

impl TaskResult {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "successful": self.successful,
            "failureDumpAvailable": self.failure_dump,
            "objectId": self.object_id.to_string(),
            "objectName": self.object_name,
        });
        if !self.details.is_empty() {
            v["details"] = self
                .details
                .iter()
                .map(|d| {
                    json!({
                        "localMessageText": d.text,
                        "occurrences": 0,
                        "type": d.kind,
                        "values": d.values,
                    })
                })
                .collect();
        }
        if !self.nested.is_empty() {
            v["nestedResults"] = self.nested.iter().map(TaskResult::to_json).collect();
        }
        v
    }
}

pub struct Task {
    pub id: String,
    /// The import, export or process the task runs.
    pub action: u64,
    pub state: TaskState,
    pub creation_ms: i64,
    pub started: Option<Instant>,
    pub result: Option<TaskResult>,
}

#[derive(Default)]
pub struct TaskBook {
    pub tasks: Vec<Task>,
    queue: VecDeque<usize>,
    running: Option<usize>,
    /// Failure dumps by (task ID, import ID).
    pub dumps: HashMap<(String, u64), Vec<u8>>,
    /// The step time, for progress while a task runs.
    pub step: Duration,
}

impl TaskBook {
    pub fn enqueue(&mut self, action: u64, id: String) -> usize {
        self.tasks.push(Task {
            id,
            action,
            state: TaskState::NotStarted,
            creation_ms: chrono::Utc::now().timestamp_millis(),
            started: None,
            result: None,
        });
        let i = self.tasks.len() - 1;
        self.queue.push_back(i);
        i
    }

    pub fn running(&self) -> Option<&Task> {
        self.running.and_then(|i| self.tasks.get(i))
    }

    fn start_next(&mut self) -> Option<usize> {
        if self.running.is_some() {
            return None;
        }
        while let Some(i) = self.queue.pop_front() {
            if let Some(t) = self.tasks.get_mut(i)
                && t.state == TaskState::NotStarted
            {
                t.state = TaskState::InProgress;
                t.started = Some(Instant::now());
                self.running = Some(i);
                return Some(i);
            }
        }
        None
    }

    pub fn find(&self, action: u64, task_id: &str) -> Option<&Task> {
        self.tasks
            .iter()
            .find(|t| t.action == action && t.id.eq_ignore_ascii_case(task_id))
    }

    pub fn for_action(&self, action: u64) -> impl Iterator<Item = &Task> {
        self.tasks.iter().filter(move |t| t.action == action)
    }

    /// Cancels a queued task at once, a running one when its step ends.
    pub fn cancel(&mut self, action: u64, task_id: &str) -> Option<&Task> {
        let i = self
            .tasks
            .iter()
            .position(|t| t.action == action && t.id.eq_ignore_ascii_case(task_id))?;
        let t = &mut self.tasks[i];
        match t.state {
            TaskState::NotStarted => t.state = TaskState::Cancelled,
            TaskState::InProgress => t.state = TaskState::Cancelling,
            _ => {}
        }
        self.tasks.get(i)
    }

    pub fn task_json(&self, t: &Task, full: bool) -> Value {
        let mut v = json!({
            "taskId": t.id,
            "taskState": t.state.as_str(),
            "creationTime": t.creation_ms,
        });
        if full {
            let (progress, step) = match t.state {
                TaskState::NotStarted => (0.0, "Waiting to start."),
                TaskState::InProgress => {
                    let done = t.started.map_or(0.0, |s| {
                        s.elapsed().as_secs_f64() / self.step.as_secs_f64().max(0.001)
                    });
                    (done.min(0.99), "Processing ...")
                }
                TaskState::Complete => (1.0, "Complete."),
                TaskState::Cancelling => (0.5, "Cancelling."),
                TaskState::Cancelled => (1.0, "Cancelled."),
            };
            v["type"] = json!("taskInformation");
            v["progress"] = json!(progress);
            v["currentStep"] = json!(step);
            if let Some(r) = &t.result {
                v["result"] = r.to_json();
            }
        }
        v
    }
}

/// A fresh task ID: 32 uppercase hex digits.
pub fn new_task_id() -> String {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Runs the model's tasks until `shutdown` turns true.
pub async fn run_model(
    slot: Arc<ModelSlotRef>,
    step: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let started = {
            let Ok(mut md) = slot.get().data.lock() else {
                return;
            };
            md.tasks.start_next()
        };
        let Some(index) = started else {
            tokio::select! {
                _ = slot.get().wake.notified() => continue,
                _ = shutdown.wait_for(|s| *s) => return,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Ok(mut md) = slot.get().data.lock() else {
            return;
        };
        finish(&mut md, index);
    }
}

fn finish(md: &mut ModelData, index: usize) {
    let Some(task) = md.tasks.tasks.get(index) else {
        return;
    };
    let (action, task_id, state) = (task.action, task.id.clone(), task.state);
    if state == TaskState::Cancelling {
        if let Some(t) = md.tasks.tasks.get_mut(index) {
            t.state = TaskState::Cancelled;
        }
    } else {
        let result = actions::run(md, action, &task_id);
        if let Some(t) = md.tasks.tasks.get_mut(index) {
            t.state = TaskState::Complete;
            t.result = Some(result);
        }
    }
    md.tasks.running = None;
}

/// A model slot shared with its runner: the tenant owns the slots, so the runner holds the
/// tenant and an index.
pub struct ModelSlotRef {
    pub tenant: Arc<super::model::Tenant>,
    pub index: usize,
}

impl ModelSlotRef {
    fn get(&self) -> &ModelSlot {
        // The index was taken from the tenant's own model list, which never changes.
        &self.tenant.models[self.index]
    }
}
