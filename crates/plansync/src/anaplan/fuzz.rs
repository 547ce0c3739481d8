//! The body of the `anaplan_responses` fuzz target: every parser of bytes from Anaplan, run on
//! the same input. None may panic; whatever they return is fine.

use super::dump::parse_dump;
use super::large_read::{parse_list_page, parse_read_status, parse_view_page};
use super::retry::retry_after;
use super::view::{CsvLayout, parse_view_csv, parse_view_json};
use super::wire::{
    Chunk, LineItem, ListItem, Model, Named, Workspace, parse_auth, parse_cell_write, parse_file,
    parse_list_metadata, parse_list_properties, parse_list_write, parse_page, parse_task,
};

#[doc(hidden)]
pub fn fuzz_responses(data: &[u8]) {
    const JSON: &str = "application/json";
    let _ = parse_auth(201, JSON, data);
    let _ = parse_task(200, JSON, data);
    let _ = parse_file(200, JSON, data);
    let _ = parse_cell_write(200, JSON, data);
    let _ = parse_list_write(200, JSON, data);
    let _ = parse_list_metadata(200, JSON, data);
    let _ = parse_page::<Named>("modules", "modules", 200, JSON, data);
    let _ = parse_page::<LineItem>("line items", "items", 200, JSON, data);
    let _ = parse_page::<ListItem>("list items", "listItems", 200, JSON, data);
    let _ = parse_page::<ListItem>("dimension items", "items", 200, JSON, data);
    let _ = parse_page::<Workspace>("workspaces", "workspaces", 200, JSON, data);
    let _ = parse_page::<Model>("models", "models", 200, JSON, data);
    let _ = parse_page::<Chunk>("chunks", "chunks", 200, JSON, data);
    let _ = parse_list_properties(200, JSON, data);
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
    let _ = parse_read_status(200, JSON, data);
    let header = ["Opportunities".to_string(), "Amount".to_string()];
    for known in [None, Some(&header[..])] {
        let _ = parse_view_page(200, "text/csv", data, known);
        let _ = parse_list_page(200, "text/csv", data, known);
    }
    // The error path with a non-JSON content type keeps an excerpt of any bytes.
    let _ = parse_task(500, "text/html", data);
    // `Retry-After`, when the bytes make a header value: a wait of at most an hour.
    if let Ok(value) = reqwest::header::HeaderValue::from_bytes(data) {
        let wait = retry_after(Some(&value));
        assert!(wait.is_none_or(|w| w <= std::time::Duration::from_secs(3600)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The saved corpus replays on stable too, so every input that once broke a parser stays
    /// a regression test.
    #[test]
    fn corpus_replays_without_panics() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("fuzz/corpus/anaplan_responses");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            fuzz_responses(&data);
            count += 1;
        }
        assert!(count >= 10, "{count} corpus files");
    }

    #[test]
    fn the_corpus_is_realistic_the_parsers_accept_it() {
        let read = |name: &str| {
            std::fs::read(
                std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                    .join("fuzz/corpus/anaplan_responses")
                    .join(name),
            )
            .unwrap()
        };
        const JSON: &str = "application/json";
        assert!(parse_auth(201, JSON, &read("auth_basic_201.json")).is_ok());
        assert_eq!(
            parse_cell_write(200, JSON, &read("cell_write_failures.json"))
                .unwrap()
                .failures[1]
                .request_index,
            3
        );
        assert!(parse_task(200, JSON, &read("task_process_nested.json")).is_ok());
        assert_eq!(parse_dump(&read("import_dump.csv")).unwrap().len(), 3);
        assert!(parse_view_json(200, JSON, &read("view_v1.json")).is_ok());
        let layout = CsvLayout {
            page_line: true,
            column_header_lines: 2,
            row_dimensions: 1,
        };
        assert_eq!(
            parse_view_csv(200, "text/csv", &read("view_grid.csv"), layout)
                .unwrap()
                .rows
                .len(),
            2
        );
        assert!(parse_read_status(200, JSON, &read("view_read_request_complete.json")).is_ok());
        let (header, page) =
            parse_view_page(200, "text/csv", &read("view_read_page.csv"), None).unwrap();
        assert_eq!(page.rows.len(), 3);
        assert_eq!(header.len(), page.columns.len() + 1);
        let (_, items) =
            parse_list_page(200, "text/csv", &read("list_read_page.csv"), None).unwrap();
        assert_eq!(items.len(), 2);
        let (workspaces, _) = parse_page::<Workspace>(
            "workspaces",
            "workspaces",
            200,
            JSON,
            &read("workspaces_page.json"),
        )
        .unwrap();
        assert_eq!(workspaces.len(), 1);
        let (chunks, _) =
            parse_page::<Chunk>("chunks", "chunks", 200, JSON, &read("chunks.json")).unwrap();
        assert!(!chunks.is_empty());
        assert_eq!(
            parse_list_properties(200, JSON, &read("list_properties.json")).unwrap(),
            ["Owner", "Amount"]
        );
        let wait =
            reqwest::header::HeaderValue::from_bytes(&read("retry_after_seconds.txt")).unwrap();
        assert_eq!(
            retry_after(Some(&wait)),
            Some(std::time::Duration::from_millis(2500))
        );
        assert!(parse_task(200, JSON, &read("truncated_task.json")).is_err());
        assert!(parse_dump(&read("html_gateway.html")).is_err());
    }
}
