//! Bulk action definitions: imports (into a list or a module), exports (of a module) and
//! processes (a run of imports and exports).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportTarget {
    List(usize),
    Module(usize),
}

pub struct ImportDef {
    pub id: u64,
    pub name: String,
    pub target: ImportTarget,
    pub file: u64,
}

pub struct ExportDef {
    pub id: u64,
    pub name: String,
    pub module: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionRef {
    Import(usize),
    Export(usize),
}

pub struct ProcessDef {
    pub id: u64,
    pub name: String,
    pub actions: Vec<ActionRef>,
}
