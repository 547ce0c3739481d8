//! Reading a response body with a cap, for both clients: a hostile or broken server (or a
//! small gzip body that inflates to gigabytes: reqwest decompresses as it streams, so the cap
//! counts what is decompressed) gets a clear error, never the process's memory.
//!
//! Large reads stay paged by the callers (list and view pages, export chunks, query
//! locators); the cap is far above the largest page they ask for.

/// The default cap on one response body: above the largest page or chunk either system
/// sends (Anaplan's export chunks are at most 50 MB; CRM query pages and plansync's own
/// Bulk API results are far smaller).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// A token endpoint's answer is a few hundred bytes.
pub const MAX_AUTH_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub(crate) enum BodyError {
    /// More than `limit` bytes (after decompression): the read was stopped there.
    TooLarge {
        limit: usize,
    },
    Read(reqwest::Error),
}

/// The whole body, or [`BodyError::TooLarge`] as soon as it passes `limit`.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    // A declared length over the cap fails before a byte is read (absent when compressed).
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    // One allocation for a body whose size is known (a page of a large read is megabytes).
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `limit` for people: `128 MiB`, `64 KiB`, `900 bytes`.
pub(crate) fn size(limit: usize) -> String {
    match limit {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}
