//! NATS KV keys: which are valid, and a reversible encoding of arbitrary ids into keys.

use std::fmt::Write as _;

/// Whether `key` is a valid NATS KV key: non-empty, only `[-/_=.a-zA-Z0-9]`, and not
/// starting or ending with `.` (dots separate subject tokens, so no empty token either).
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}

/// Encodes any non-empty id as a valid key: ASCII letters, digits, `-` and `_` stay as they
/// are, every other byte of the UTF-8 becomes `=XX` (upper-case hex). Reversed by
/// [`id_from_key`]. An empty id gives an empty key, which every bucket call rejects.
pub fn key_for(id: &str) -> String {
    let mut key = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            key.push(char::from(byte));
        } else {
            write!(key, "={byte:02X}").expect("writing to a String cannot fail");
        }
    }
    key
}

/// The id that [`key_for`] encoded into `key`, or `None` when `key` is not such an encoding.
pub fn id_from_key(key: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(key.len());
    let mut rest = key.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            if hex.bytes().any(|b| b.is_ascii_lowercase()) {
                return None;
            }
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else if first.is_ascii_alphanumeric() || first == b'-' || first == b'_' {
            bytes.push(first);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_stay_readable() {
        assert_eq!(key_for("machine-01_ab"), "machine-01_ab");
        assert_eq!(
            id_from_key("machine-01_ab").as_deref(),
            Some("machine-01_ab")
        );
    }

    #[test]
    fn other_bytes_are_escaped_and_round_trip() {
        for id in ["a.b", "org/app", "x=y", "..", "sp ace", "café", "*>", "=41"] {
            let key = key_for(id);
            assert!(is_valid_key(&key), "{id:?} gave invalid key {key:?}");
            assert_eq!(id_from_key(&key).as_deref(), Some(id), "key {key:?}");
        }
        assert_eq!(key_for("a.b/c"), "a=2Eb=2Fc");
    }

    #[test]
    fn rejects_what_key_for_never_makes() {
        for key in ["a.b", "=4", "=zz", "=2e", "a=", "=C3"] {
            assert_eq!(id_from_key(key), None, "{key:?}");
        }
    }

    #[test]
    fn validates_keys_like_nats() {
        for key in ["a", "host1.m-2", "a/b=c_d", "A.b.C"] {
            assert!(is_valid_key(key), "{key:?}");
        }
        for key in ["", ".a", "a.", "a..b", "a b", "a*", "a>", "é"] {
            assert!(!is_valid_key(key), "{key:?}");
        }
    }
}
