//! The body of the `anaplan_responses` fuzz target: every parser of bytes from Anaplan, run on
//! the same input. None may panic; whatever they return is fine.

use super::dump::parse_dump;
use super::view::{CsvLayout, parse_view_csv, parse_view_json};
use super::wire::{
    LineItem, ListItem, Named, parse_auth, parse_cell_write, parse_file, parse_list_write,
    parse_page, parse_task,
};

#[doc(hidden)]
pub fn fuzz_responses(data: &[u8]) {
    const JSON: &str = "application/json";
    let _ = parse_auth(201, JSON, data);
    let _ = parse_task(200, JSON, data);
    let _ = parse_file(200, JSON, data);
    let _ = parse_cell_write(200, JSON, data);
    let _ = parse_list_write(200, JSON, data);
    let _ = parse_page::<Named>("modules", "modules", 200, JSON, data);
    let _ = parse_page::<LineItem>("line items", "items", 200, JSON, data);
    let _ = parse_page::<ListItem>("list items", "listItems", 200, JSON, data);
    let _ = parse_view_json(200, JSON, data);
    for layout in [
        CsvLayout::default(),
        CsvLayout {
            page_line: true,
            column_header_lines: 2,
            row_dimensions: 2,
        },
    ] {
        let _ = parse_view_csv(200, "text/csv", data, layout);
    }
    let _ = parse_dump(data);
    // The error path with a non-JSON content type keeps an excerpt of any bytes.
    let _ = parse_task(500, "text/html", data);
}
