//! The simulated tenant's data: workspaces, models, lists and their items, modules, line items
//! and cells, files and bulk definitions, built from a [`Seed`](super::seed::Seed).
//!
//! Sized for a million list items: an item is a slot in a `Vec` (its index never changes and
//! gives its ID), codes and names are indexed in hash maps, and each line item keeps its cells
//! in a typed map keyed by item index (`HashMap<u32, f64>` for a number line item), not JSON.
//! A deleted item leaves an empty slot so the IDs of the others stay put.
//!
//! Rooms:
//! - `tenant.rs`: the tenant, its workspaces, the models and their locks, lookups by key.
//! - `lists.rs`: lists, their properties and items (add, locate, update, delete).
//! - `modules.rs`: modules, line items and views.
//! - `cells.rs`: formats, cell values and the typed columns that hold them.
//! - `files.rs`: uploaded and exported files, in chunks.
//! - `definitions.rs`: import, export and process definitions.
//! - `build.rs`: building a tenant from a seed, checking every cross reference.
//!
//! The ID scheme lives here, as every room hands out IDs from it.

mod build;
mod cells;
mod definitions;
mod files;
mod lists;
mod modules;
mod tenant;

pub use build::build;
pub use cells::{CellValue, Format, Input};
pub use definitions::{ActionRef, ExportDef, ImportTarget};
pub use files::FileData;
pub use lists::{ItemInput, ListItemView, PropFormat};
pub use tenant::{ModelData, ModelSlot, Tenant};

pub const LIST_PREFIX: u64 = 101_000_000_000;
pub const MODULE_PREFIX: u64 = 102_000_000_000;
pub const IMPORT_PREFIX: u64 = 112_000_000_000;
pub const FILE_PREFIX: u64 = 113_000_000_000;
pub const EXPORT_PREFIX: u64 = 116_000_000_000;
pub const PROCESS_PREFIX: u64 = 118_000_000_000;
/// Line items (Anaplan's own line item IDs are in the 2xx range too).
pub const LINE_ITEM_PREFIX: u64 = 206_000_000_000;
/// List items of the n-th list: `(ITEM_PREFIX_BASE + n) * 10^9 + index`.
const ITEM_PREFIX_BASE: u64 = 300;
/// Private files created by a POST on an unknown file ID start here.
const PRIVATE_FILE_START: u64 = FILE_PREFIX + 500_000;

/// The tenant of the default seed, for the rooms' unit tests.
#[cfg(test)]
fn tenant_for_tests() -> Tenant {
    build(&super::seed::Seed::default_seed()).expect("the default seed builds")
}
