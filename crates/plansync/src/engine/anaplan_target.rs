//! One pairing's objects in Anaplan, as the engine reads them: the ids the rule file's names
//! resolve to, and the size-adaptive read of the pairing's list and of its module's default
//! view. The poller and the sink both read through here, so both resolve, choose between a
//! plain read and a read request, fall back when Anaplan refuses a plain read for its size,
//! and count their calls the same way.
//!
//! A read's shape is decided before it is sent, from a size the caller knows (a cache) or
//! asks for ([`item_count`], one call): a plain read holds every parsed item or row at once,
//! a read request one page's. A plain read Anaplan refuses for its size (the count was stale,
//! or unknown) is read again through a read request. Calls are counted as the API budget
//! sees the reads that matter: one for a plain read, one for a read request (its page and
//! status calls are paced by the client, not counted here).

use crate::anaplan::limits::MAX_VIEW_CELLS;
use crate::anaplan::{AnaplanClient, AnaplanError, ListItem, ViewData, ViewPages};
use crate::rules::ruleset::AnaplanTarget;

/// A list of more items than this is read with a read request, page by page, even when
/// Anaplan would return it whole: a plain read holds every parsed item (ids, parents, every
/// property: about 770 bytes each), which the callers' folds do not need.
pub const PAGED_LIST_ITEMS: usize = 50_000;

/// Calls [`resolve`] makes.
pub const RESOLVE_CALLS: usize = 2;

/// The ids a pairing's names resolve to. Resolve once and reuse: re-resolve when the rule
/// file names other objects ([`ResolvedTarget::is_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    /// What the ids were resolved from.
    pub names: AnaplanTarget,
    pub list_id: String,
    /// Also the id of the module's default view.
    pub module_id: String,
}

impl ResolvedTarget {
    /// Whether these ids were resolved from `names` (a reloaded rule file may name others).
    pub fn is_for(&self, names: &AnaplanTarget) -> bool {
        self.names == *names
    }

    pub fn model(&self) -> &str {
        &self.names.model
    }
}

/// Which name could not be resolved, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ResolveError {
    /// `list NAME` or `module NAME`.
    pub what: String,
    #[source]
    pub source: AnaplanError,
}

/// Resolves the list and module names to ids ([`RESOLVE_CALLS`] listing calls).
pub async fn resolve(
    client: &AnaplanClient,
    names: &AnaplanTarget,
) -> Result<ResolvedTarget, ResolveError> {
    let list_id = client
        .list_id(&names.model, &names.list)
        .await
        .map_err(|source| ResolveError {
            what: format!("list {}", names.list),
            source,
        })?;
    let module_id = client
        .module_id(&names.model, &names.module)
        .await
        .map_err(|source| ResolveError {
            what: format!("module {}", names.module),
            source,
        })?;
    Ok(ResolvedTarget {
        names: names.clone(),
        list_id,
        module_id,
    })
}

/// When reads go through read requests (the defaults outside tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Lists of more items are read in pages ([`PAGED_LIST_ITEMS`]).
    pub paged_list_items: usize,
    /// Views of more cells are read in pages ([`MAX_VIEW_CELLS`]).
    pub max_view_cells: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            paged_list_items: PAGED_LIST_ITEMS,
            max_view_cells: MAX_VIEW_CELLS,
        }
    }
}

impl ReadLimits {
    /// Whether a list of `items` (unknown: `None`) is read through a read request.
    /// An unknown size is tried plain: Anaplan's refusal for size then decides.
    pub fn list_paged(&self, items: Option<usize>) -> bool {
        items.is_some_and(|n| n > self.paged_list_items)
    }

    /// Whether a view of `items` rows by `line_items` columns is read through a read request.
    pub fn view_paged(&self, items: Option<usize>, line_items: usize) -> bool {
        items.is_some_and(|n| n.saturating_mul(line_items) > self.max_view_cells)
    }
}

/// The list's item count (one call), `None` if Anaplan's answer carries none readable: then
/// a plain read (and its refusal for size) decides.
pub async fn item_count(
    client: &AnaplanClient,
    target: &ResolvedTarget,
) -> Result<Option<usize>, AnaplanError> {
    match client
        .list_item_count(target.model(), &target.list_id)
        .await
    {
        Ok(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Err(e @ AnaplanError::Decode { .. }) => {
            tracing::debug!(target: "plansync::engine", event = "list_count_unreadable", list = %target.names.list, error = %e, "no readable item count: the list is read whole");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// How a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Whether it went through a read request.
    pub paged: bool,
    /// Calls, counted as the module doc says.
    pub calls: usize,
}

/// Reads the list, each item handed to `each` as it is parsed: plain unless `paged`, and
/// through a read request when `paged` or when Anaplan refuses the plain read for its size.
pub async fn read_list(
    client: &AnaplanClient,
    target: &ResolvedTarget,
    paged: bool,
    each: &mut impl FnMut(ListItem),
) -> Result<Read, AnaplanError> {
    let mut calls = 0;
    if !paged {
        calls += 1;
        match client.list_items(target.model(), &target.list_id).await {
            Ok(items) => {
                tracing::debug!(target: "plansync::engine", event = "list_read", list = %target.names.list, items = items.len(), "read the list whole");
                items.into_iter().for_each(&mut *each);
                return Ok(Read {
                    paged: false,
                    calls,
                });
            }
            Err(e) if e.is_over_read_limit() => {
                tracing::debug!(target: "plansync::engine", event = "list_read_paged", list = %target.names.list, "the list is over the read limit: reading it in pages");
            }
            Err(e) => return Err(e),
        }
    }
    calls += 1;
    let names = &target.names;
    let mut pages = client
        .read_list_pages(&names.workspace, &names.model, &target.list_id)
        .await?;
    let mut items = 0;
    while let Some(n) = pages.next_page_each(&mut *each).await? {
        items += n;
    }
    close(pages.finish().await);
    tracing::debug!(target: "plansync::engine", event = "list_read", list = %names.list, items, "read the list through a read request");
    Ok(Read { paged: true, calls })
}

/// The module's default view as read: whole, or a read request to take page by page (then
/// hand it to [`close_view`]).
pub enum View {
    Whole(ViewData),
    Pages(ViewPages),
}

/// Reads the module's default view: plain unless `paged`, and through a read request when
/// `paged` or when Anaplan refuses the plain read for its size.
pub async fn read_view(
    client: &AnaplanClient,
    target: &ResolvedTarget,
    paged: bool,
) -> Result<(View, usize), AnaplanError> {
    let mut calls = 0;
    if !paged {
        calls += 1;
        match client
            .read_view_json(target.model(), &target.module_id, &[])
            .await
        {
            Ok(view) => return Ok((View::Whole(view), calls)),
            Err(e) if e.is_over_read_limit() => {
                tracing::debug!(target: "plansync::engine", event = "module_read_paged", module = %target.names.module, "the module is over the view read limit: reading it in pages");
            }
            Err(e) => return Err(e),
        }
    }
    calls += 1;
    let names = &target.names;
    let pages = client
        .read_view_pages(&names.workspace, &names.model, &target.module_id)
        .await?;
    Ok((View::Pages(pages), calls))
}

/// Deletes a view read request whose pages are read.
pub async fn close_view(pages: ViewPages) {
    close(pages.finish().await);
}

fn close(finished: Result<(), AnaplanError>) {
    if let Err(e) = finished {
        // The pages are read; Anaplan reclaims the request after 30 minutes anyway.
        tracing::debug!(target: "plansync::engine", event = "read_request_delete_failed", error = %e, "could not delete a read request");
    }
}
