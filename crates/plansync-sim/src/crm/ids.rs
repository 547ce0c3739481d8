//! Salesforce-style record ids: 15 case-sensitive characters (3-character key prefix, 2-character
//! pod, one reserved character, 9 base-62 digits) plus the 3-character case-insensitive suffix.
//!
//! The simulator numbers records per object from 1, so an id maps straight back to a slot in its
//! table without an index: that keeps a million-record org to one `Vec` per object.

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SUFFIX: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
/// Pod and reserved characters of every id the simulator mints.
const POD: &str = "5g0";

/// The 18-character id of record number `n` (from 1) of the object with `prefix`.
pub fn make_id(prefix: &str, n: u64) -> String {
    let mut digits = [b'0'; 9];
    let mut rest = n;
    for slot in digits.iter_mut().rev() {
        // `rest % 62` is below 62, so the index is in bounds.
        *slot = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    let mut id = String::with_capacity(18);
    id.push_str(prefix);
    id.push_str(POD);
    id.extend(digits.iter().map(|&b| b as char));
    let suffix = suffix_of(&id);
    id.push_str(&suffix);
    id
}

/// The 3-character case-insensitive suffix of a 15-character id.
pub fn suffix_of(id15: &str) -> String {
    let bytes = id15.as_bytes();
    let mut out = String::with_capacity(3);
    for chunk in 0..3 {
        let mut bits = 0usize;
        for i in 0..5 {
            if bytes
                .get(chunk * 5 + i)
                .is_some_and(|b| b.is_ascii_uppercase())
            {
                bits |= 1 << i;
            }
        }
        out.push(SUFFIX[bits & 31] as char);
    }
    out
}

/// Splits an id this simulator minted into its key prefix and record number; accepts the 15- and
/// the 18-character form (the suffix must match). `None` for anything else.
pub fn parse_id(id: &str) -> Option<(&str, u64)> {
    if !id.is_ascii() || (id.len() != 15 && id.len() != 18) {
        return None;
    }
    let id15 = &id[..15];
    if id.len() == 18 && !id[15..].eq_ignore_ascii_case(&suffix_of(id15)) {
        return None;
    }
    if &id15[3..6] != POD {
        return None;
    }
    let mut n: u64 = 0;
    for b in id15[6..].bytes() {
        let digit = BASE62.iter().position(|&c| c == b)? as u64;
        n = n.checked_mul(62)?.checked_add(digit)?;
    }
    Some((&id15[..3], n))
}

/// Whether `s` looks like a Salesforce id at all (15 or 18 alphanumeric characters).
pub fn looks_like_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_the_suffix() {
        let id = make_id("006", 123_456);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("0065g0"));
        assert_eq!(parse_id(&id), Some(("006", 123_456)));
        assert_eq!(parse_id(&id[..15]), Some(("006", 123_456)));
        let mut bad = id.clone();
        bad.replace_range(15..18, "ZZZ");
        assert_eq!(parse_id(&bad), None);
        assert_eq!(parse_id("not an id"), None);
    }

    #[test]
    fn suffix_matches_a_known_salesforce_id() {
        // 001A0000006Vm9r -> 001A0000006Vm9rIAC, a published example of the algorithm.
        assert_eq!(suffix_of("001A0000006Vm9r"), "IAC");
    }
}
