//! Anaplan's documented limits, in one place: what one call may carry or return. The
//! client's settings are checked against them (`config.rs`), and the engine's readers and
//! writers size their calls by them; nothing else in plansync spells these numbers.

/// Cells one transactional write (`POST …/modules/{id}/data`) may carry.
pub const MAX_CELLS_PER_WRITE: usize = 100_000;

/// Bytes of one transactional write's body.
pub const MAX_WRITE_BYTES: usize = 15 * 1024 * 1024;

/// List items one add, update or delete call may carry.
pub const MAX_LIST_ITEMS_PER_CALL: usize = 100_000;

/// Bytes of one chunk of a file upload.
pub const MAX_UPLOAD_CHUNK_BYTES: usize = 50 * 1024 * 1024;

/// Entries of one page of a listing (`limit`).
pub const MAX_PAGE_SIZE: usize = 5000;

/// Cells a plain view read returns; a larger view is refused with a 400 and must be read
/// with a view read request, page by page.
pub const MAX_VIEW_CELLS: usize = 1_000_000;

/// Items a plain list read returns; a larger list is refused with a 400 and must be read
/// with a list read request, page by page.
pub const MAX_LIST_READ_ITEMS: usize = 1_000_000;

/// Codes per item lookup call. Anaplan documents no limit; this keeps a request's body
/// (about 20 bytes a code) well under a megabyte.
pub const LOOKUP_CODES_PER_CALL: usize = 10_000;
