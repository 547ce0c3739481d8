//! Splitting a batch into calls the API accepts: at most so many items and so many body bytes
//! per call, whichever comes first, in input order, so a failure's index inside a call maps
//! back to the caller's index by adding the call's start.

use std::ops::Range;

use super::error::AnaplanError;

/// Consecutive ranges over items whose encoded sizes are `sizes`, each holding at most
/// `max_count` items and making a body of at most `max_bytes`, where a body is `overhead`
/// bytes of envelope plus the items separated by commas. An item that cannot fit even alone is
/// an error (it would be refused whatever we did).
pub fn chunk_ranges(
    sizes: &[usize],
    max_count: usize,
    max_bytes: usize,
    overhead: usize,
) -> Result<Vec<Range<usize>>, AnaplanError> {
    let max_count = max_count.max(1);
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = overhead;
    for (i, &size) in sizes.iter().enumerate() {
        if overhead.saturating_add(size) > max_bytes {
            return Err(AnaplanError::ItemTooLarge {
                index: i,
                bytes: size,
                limit: max_bytes,
            });
        }
        let count = i - start;
        let separator = usize::from(count > 0);
        if count == max_count || bytes.saturating_add(separator + size) > max_bytes {
            ranges.push(start..i);
            start = i;
            bytes = overhead + size;
        } else {
            bytes += separator + size;
        }
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    Ok(ranges)
}

/// Joins pre-encoded JSON items into `prefix[a,b,…]suffix`.
pub fn join_json(prefix: &[u8], items: &[Vec<u8>], suffix: &[u8]) -> Vec<u8> {
    let len = prefix.len() + suffix.len() + 2 + items.iter().map(|i| i.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(prefix);
    body.push(b'[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.push(b']');
    body.extend_from_slice(suffix);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn by_count() {
        let r = chunk_ranges(&[1; 7], 3, usize::MAX, 2).unwrap();
        assert_eq!(r, [0..3, 3..6, 6..7]);
    }

    #[test]
    fn by_bytes_counting_brackets_and_commas() {
        // "[" + 4 + "," + 4 + "]" = 11 bytes.
        assert_eq!(chunk_ranges(&[4, 4, 4], 100, 11, 2).unwrap(), [0..2, 2..3]);
        assert_eq!(
            chunk_ranges(&[4, 4, 4], 100, 10, 2).unwrap(),
            [0..1, 1..2, 2..3]
        );
        assert!(chunk_ranges(&[], 3, 10, 2).unwrap().is_empty());
    }

    #[test]
    fn an_item_too_big_alone_is_refused() {
        let err = chunk_ranges(&[1, 20, 1], 10, 10, 2).unwrap_err();
        assert!(matches!(err, AnaplanError::ItemTooLarge { index: 1, .. }));
    }

    #[test]
    fn join_makes_the_counted_body() {
        let items = vec![b"{\"a\":1}".to_vec(), b"2".to_vec()];
        let body = join_json(b"{\"items\":", &items, b"}");
        assert_eq!(body, b"{\"items\":[{\"a\":1},2]}");
    }

    proptest! {
        #[test]
        fn chunks_preserve_order_and_respect_both_limits(
            sizes in proptest::collection::vec(1usize..60, 0..300),
            max_count in 1usize..20,
            max_bytes in 62usize..400,
        ) {
            let ranges = chunk_ranges(&sizes, max_count, max_bytes, 2).unwrap();
            // Consecutive, covering every index once, in order.
            let mut next = 0;
            for r in &ranges {
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start);
                next = r.end;
                prop_assert!(r.len() <= max_count);
                let items: Vec<Vec<u8>> = sizes[r.clone()].iter().map(|&s| vec![b'x'; s]).collect();
                prop_assert!(join_json(b"", &items, b"").len() <= max_bytes);
            }
            prop_assert_eq!(next, sizes.len());
            // Greedy: no chunk could have taken the next item.
            for pair in ranges.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                let with_next: usize = 2 + sizes[a.start..=b.start].iter().sum::<usize>() + a.len();
                prop_assert!(a.len() == max_count || with_next > max_bytes);
            }
        }
    }
}
