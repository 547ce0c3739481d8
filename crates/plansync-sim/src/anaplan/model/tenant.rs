//! The tenant: workspaces, models behind their locks, and finding a model's lists, modules,
//! views and line items by key.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::PRIVATE_FILE_START;
use super::definitions::{ExportDef, ImportDef, ProcessDef};
use super::files::FileData;
use super::lists::List;
use super::modules::{LineItem, Module, View};
use crate::anaplan::tasks::TaskBook;

/// Everything inside one model.
pub struct ModelData {
    pub lists: Vec<List>,
    pub modules: Vec<Module>,
    pub line_items: Vec<LineItem>,
    pub views: Vec<View>,
    pub files: BTreeMap<u64, FileData>,
    pub next_private_file: u64,
    pub imports: Vec<ImportDef>,
    pub exports: Vec<ExportDef>,
    pub processes: Vec<ProcessDef>,
    pub tasks: TaskBook,
    pub open: bool,
    /// Bumped on every change, for `lastSavedSerialNumber`.
    pub serial: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// A model and the lock over its data.
pub struct ModelSlot {
    pub id: String,
    pub name: String,
    pub workspace: usize,
    /// Guards all of the model's data. Handlers take it for one request's worth of work and
    /// never await while holding it (it is a std mutex: short, CPU-only critical sections).
    pub data: Mutex<ModelData>,
    /// Wakes the model's task runner when a task is queued.
    pub wake: Notify,
}

pub struct Workspace {
    pub id: String,
    pub name: String,
    pub size_allowance: u64,
}

pub struct Tenant {
    pub customer_guid: String,
    pub workspaces: Vec<Workspace>,
    pub models: Vec<ModelSlot>,
}

impl Tenant {
    pub fn model(&self, id: &str) -> Option<&ModelSlot> {
        self.models.iter().find(|m| m.id == id)
    }

    pub fn workspace(&self, id: &str) -> Option<(usize, &Workspace)> {
        self.workspaces.iter().enumerate().find(|(_, w)| w.id == id)
    }
}

impl ModelData {
    pub fn list_by_name(&self, name: &str) -> Option<usize> {
        self.lists.iter().position(|l| l.name == name)
    }

    /// A list by numeric ID or by name.
    pub fn find_list(&self, key: &str) -> Option<usize> {
        self.lists
            .iter()
            .position(|l| l.id.to_string() == key)
            .or_else(|| self.list_by_name(key))
    }

    pub fn find_module(&self, key: &str) -> Option<usize> {
        self.modules
            .iter()
            .position(|m| m.id.to_string() == key || m.name == key)
    }

    pub fn find_view(&self, key: &str) -> Option<usize> {
        self.views
            .iter()
            .position(|v| v.id.to_string() == key || v.name == key)
    }

    pub fn line_item_in(
        &self,
        module: usize,
        key_id: Option<&str>,
        key_name: Option<&str>,
    ) -> Option<usize> {
        let m = self.modules.get(module)?;
        m.line_items.iter().copied().find(|&li| {
            let l = &self.line_items[li];
            key_id.is_some_and(|id| l.id.to_string() == id.trim())
                || key_name.is_some_and(|n| l.name == n)
        })
    }

    pub fn touch(&mut self) {
        self.serial += 1;
        self.last_modified = chrono::Utc::now();
    }

    /// Whether a task holds the model lock (transactional writes get 409).
    pub fn busy(&self) -> bool {
        self.tasks.running().is_some()
    }
}

/// A model with nothing in it yet, open, at serial 1.
pub(super) fn empty_model() -> ModelData {
    ModelData {
        lists: Vec::new(),
        modules: Vec::new(),
        line_items: Vec::new(),
        views: Vec::new(),
        files: BTreeMap::new(),
        next_private_file: PRIVATE_FILE_START,
        imports: Vec::new(),
        exports: Vec::new(),
        processes: Vec::new(),
        tasks: TaskBook::default(),
        open: true,
        serial: 1,
        last_modified: chrono::Utc::now(),
    }
}
