//! Measures what the Anaplan poller's list index costs: heap bytes per item once built, the
//! peak while it is folded in page by page, build time and lookup time, against the parsed
//! `Vec<ListItem>` it replaces. Items are coded by CRM id and named by it (as the engine
//! creates them), folded in one by one as the poller folds a read request's pages. Run with:
//!
//! ```text
//! cargo run --release --example list_index_size [items]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use plansync::anaplan::ListItem;
use plansync::engine::anaplan_poll::ListIndex;
use plansync::rules::Pairing;
use plansync::rules::ruleset::AnaplanField;

/// Counts live and peak heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    /// The system's realloc (which moves large blocks without a copy), counted as the
    /// difference.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grown = new_size - layout.size();
                let live = LIVE.fetch_add(grown, Ordering::Relaxed) + grown;
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn item(i: usize) -> ListItem {
    let code = format!("006{i:012}AAA");
    ListItem {
        id: format!("{}", 200_000_000_000u64 + i as u64),
        name: code.clone(),
        code: Some(code),
        parent: None,
        parent_id: None,
        properties: [("Opportunity Name".to_string(), format!("Deal {i}"))].into(),
    }
}

fn measure(label: &str, pairing: &Pairing, n: usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let mut b = ListIndex::builder(pairing, n);
    // As the poller folds a read request's page: item by item as the CSV is parsed.
    for i in 0..n {
        if let Err(e) = b.add(&item(i)) {
            eprintln!("{e}");
            return;
        }
    }
    let index = b.finish();
    let built = started.elapsed();
    let held = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let started = Instant::now();
    let mut found = 0;
    for i in (0..n).step_by(7) {
        found += usize::from(index.find_name(&format!("006{i:012}AAA")).is_some());
    }
    let lookups = n.div_ceil(7);
    let per_lookup = started.elapsed().as_nanos() as f64 / lookups as f64;
    assert_eq!(found, lookups);
    println!(
        "{label}: {n} items, {:.1} bytes/item held ({:.1} MiB), peak while building {:.1} MiB, built in {:.2} s, {per_lookup:.0} ns a lookup",
        held as f64 / n as f64,
        held as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        built.as_secs_f64(),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/opportunity.toml");
    let opportunity = plansync::rules::load_file(&path)?;
    let mut no_properties = opportunity.clone();
    no_properties
        .fields
        .retain(|f| matches!(f.anaplan, AnaplanField::LineItem(_)));
    measure("no list property mapped", &no_properties, n);
    measure("`Opportunity Name` mapped", &opportunity, n);

    // What it replaces, at a tenth of the size (its cost per item does not depend on n).
    let sample = (n / 10).max(1);
    let before = LIVE.load(Ordering::Relaxed);
    let whole: Vec<ListItem> = (0..sample).map(item).collect();
    let held = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "Vec<ListItem> (parsed, as the plain read held it): {:.1} bytes/item",
        held as f64 / sample as f64
    );
    drop(whole);
    Ok(())
}
