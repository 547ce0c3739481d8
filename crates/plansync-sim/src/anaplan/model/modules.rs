//! The structure cells hang on: modules, their line items and views.

use super::cells::{Column, Format};
use crate::anaplan::formula::Expr;

pub struct LineItem {
    pub id: u64,
    pub name: String,
    pub module: usize,
    pub format: Format,
    pub formula: Option<Expr>,
    pub formula_text: Option<String>,
    pub column: Column,
}

pub struct Module {
    pub id: u64,
    pub name: String,
    /// The list that dimensions every line item of the module.
    pub list: usize,
    pub line_items: Vec<usize>,
}

/// A view: the module's default view (same ID as the module) or a saved view.
pub struct View {
    pub id: u64,
    pub name: String,
    pub module: usize,
    pub line_items: Vec<usize>,
}
