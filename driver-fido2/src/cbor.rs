//! CTAP2's CBOR: a total decoder and the canonical encoder.
//!
//! Authenticators and platforms exchange CBOR maps keyed by small integers (CTAP 2.1 §6).
//! Everything that arrives from the other side goes through [`decode`], which first walks
//! the encoding itself: every declared length must fit in the bytes that are left, nesting is
//! limited to [`MAX_DEPTH`], indefinite lengths (forbidden by CTAP2's canonical form) and
//! trailing bytes are refused. Only then does `ciborium` build the [`Value`], so arbitrary
//! bytes give a [`CborError`], never a panic or an allocation that the input does not pay for.
//!
//! [`encode`] writes CTAP2 canonical CBOR (§8): map keys sorted by major type, then by the
//! length of their encoding, then bytewise; integers in their shortest form.
//!
//! ```
//! use driver_fido2::cbor::{self, Value};
//!
//! let map = Value::Map(vec![
//!     (cbor::int(3), Value::Bytes(vec![0xAA])),
//!     (cbor::int(1), Value::Text("example.com".into())),
//! ]);
//! let bytes = cbor::encode(&map);
//! assert_eq!(bytes[1], 0x01); // key 1 comes first
//! let back = cbor::decode(&bytes)?;
//! let fields = cbor::as_map(&back)?;
//! assert_eq!(cbor::text(fields, 1), Some("example.com"));
//! # Ok::<(), driver_fido2::cbor::CborError>(())
//! ```

use std::cmp::Ordering;
use std::fmt;

pub use ciborium::value::{Integer, Value};

/// The deepest nesting [`decode`] accepts. CTAP2 messages nest at most five or six levels
/// (a credential's user entity inside an assertion inside a response map).
pub const MAX_DEPTH: usize = 16;

/// Why bytes are not acceptable CTAP2 CBOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CborError {
    /// The input ends inside an item.
    Truncated,
    /// A length or header that CBOR does not allow (reserved additional information,
    /// indefinite length, invalid UTF-8, an unsupported simple value).
    Malformed(&'static str),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Bytes follow the top-level item.
    TrailingBytes,
    /// The item is well-formed but not of the type the protocol needs here.
    UnexpectedType(&'static str),
}

impl fmt::Display for CborError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("CBOR ends inside an item"),
            Self::Malformed(why) => write!(f, "malformed CBOR: {why}"),
            Self::TooDeep => write!(f, "CBOR nested deeper than {MAX_DEPTH} levels"),
            Self::TrailingBytes => f.write_str("bytes after the CBOR item"),
            Self::UnexpectedType(what) => write!(f, "CBOR item of the wrong type: {what}"),
        }
    }
}

impl std::error::Error for CborError {}

impl From<CborError> for token_core::Error {
    fn from(e: CborError) -> Self {
        token_core::Error::corrupted(e.to_string())
    }
}

/// Decodes exactly one CBOR item that fills `bytes`.
///
/// # Errors
/// A [`CborError`] for anything that is not one complete, well-formed, definite-length item
/// of at most [`MAX_DEPTH`] levels.
pub fn decode(bytes: &[u8]) -> Result<Value, CborError> {
    let end = scan(bytes, 0, 0)?;
    if end != bytes.len() {
        return Err(CborError::TrailingBytes);
    }
    ciborium::de::from_reader(bytes).map_err(|_| CborError::Malformed("rejected by the decoder"))
}

/// Decodes the one CBOR item at the start of `bytes` and returns it with the number of bytes
/// it took (authenticator data carries a COSE key followed by more CBOR, with no length).
///
/// # Errors
/// As [`decode`], except that bytes after the item are allowed.
pub fn decode_prefix(bytes: &[u8]) -> Result<(Value, usize), CborError> {
    let end = scan(bytes, 0, 0)?;
    let value = ciborium::de::from_reader(&bytes[..end])
        .map_err(|_| CborError::Malformed("rejected by the decoder"))?;
    Ok((value, end))
}

/// Reads an item's head at `pos`: (major type, additional information, argument, position
/// after the head).
fn head(bytes: &[u8], pos: usize) -> Result<(u8, u8, u64, usize), CborError> {
    let first = *bytes.get(pos).ok_or(CborError::Truncated)?;
    let major = first >> 5;
    let info = first & 0x1F;
    let width = match info {
        0..=23 => return Ok((major, info, u64::from(info), pos + 1)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        31 => return Err(CborError::Malformed("indefinite length")),
        _ => return Err(CborError::Malformed("reserved additional information")),
    };
    let start = pos + 1;
    let arg = bytes
        .get(start..start + width)
        .ok_or(CborError::Truncated)?
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    Ok((major, info, arg, start + width))
}

/// Checks the item at `pos` and returns the position after it.
fn scan(bytes: &[u8], pos: usize, depth: usize) -> Result<usize, CborError> {
    if depth > MAX_DEPTH {
        return Err(CborError::TooDeep);
    }
    let (major, info, arg, mut pos) = head(bytes, pos)?;
    let left = (bytes.len() - pos) as u64;
    match major {
        0 | 1 => Ok(pos),
        2 | 3 => {
            if arg > left {
                return Err(CborError::Truncated);
            }
            let end = pos + arg as usize;
            if major == 3 && std::str::from_utf8(&bytes[pos..end]).is_err() {
                return Err(CborError::Malformed("text string is not UTF-8"));
            }
            Ok(end)
        }
        4 | 5 => {
            // Every item takes at least one byte: a count beyond what is left cannot be met.
            let items = if major == 5 {
                arg.saturating_mul(2)
            } else {
                arg
            };
            if items > left {
                return Err(CborError::Truncated);
            }
            for _ in 0..items {
                pos = scan(bytes, pos, depth + 1)?;
            }
            Ok(pos)
        }
        6 => scan(bytes, pos, depth + 1),
        _ => match info {
            20..=22 | 25..=27 => Ok(pos),
            _ => Err(CborError::Malformed("unsupported simple value")),
        },
    }
}

/// Encodes `value` in CTAP2 canonical form (maps sorted, shortest integers).
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every Value variant is serialisable.
    if ciborium::ser::into_writer(&canonical(value), &mut out).is_err() {
        out.clear();
    }
    out
}

/// A copy of `value` with every map's entries in canonical order.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Map(entries) => {
            let mut sorted: Vec<(Vec<u8>, Value, Value)> = entries
                .iter()
                .map(|(k, v)| {
                    let k = canonical(k);
                    let mut key_bytes = Vec::new();
                    let _ = ciborium::ser::into_writer(&k, &mut key_bytes);
                    (key_bytes, k, canonical(v))
                })
                .collect();
            sorted.sort_by(|a, b| key_order(&a.0, &b.0));
            Value::Map(sorted.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::Tag(tag, inner) => Value::Tag(*tag, Box::new(canonical(inner))),
        other => other.clone(),
    }
}

/// CTAP2 §8 key order: major type, then encoded length, then bytes.
fn key_order(a: &[u8], b: &[u8]) -> Ordering {
    let major = |x: &[u8]| x.first().map_or(0, |b| b >> 5);
    major(a)
        .cmp(&major(b))
        .then(a.len().cmp(&b.len()))
        .then_with(|| a.cmp(b))
}

/// An integer map key or value.
pub fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

/// A map with integer keys (CTAP's parameter and answer maps), entries in the order given.
pub(crate) fn int_map(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (int(k), v)).collect())
}

/// The entries of a map.
///
/// # Errors
/// [`CborError::UnexpectedType`] when `value` is not a map.
pub fn as_map(value: &Value) -> Result<&[(Value, Value)], CborError> {
    match value {
        Value::Map(entries) => Ok(entries),
        _ => Err(CborError::UnexpectedType("expected a map")),
    }
}

/// The value under integer key `key`.
pub fn get(map: &[(Value, Value)], key: i64) -> Option<&Value> {
    map.iter()
        .find(|(k, _)| matches!(k, Value::Integer(i) if i128::from(*i) == i128::from(key)))
        .map(|(_, v)| v)
}

/// The value under text key `key`.
pub fn get_text_key<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
        .map(|(_, v)| v)
}

/// The byte string under integer key `key`.
pub fn bytes(map: &[(Value, Value)], key: i64) -> Option<&[u8]> {
    match get(map, key)? {
        Value::Bytes(b) => Some(b),
        _ => None,
    }
}

/// The text string under integer key `key`.
pub fn text(map: &[(Value, Value)], key: i64) -> Option<&str> {
    match get(map, key)? {
        Value::Text(t) => Some(t),
        _ => None,
    }
}

/// The unsigned integer under integer key `key`.
pub fn uint(map: &[(Value, Value)], key: i64) -> Option<u64> {
    match get(map, key)? {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

/// The integer under integer key `key`.
pub fn integer(map: &[(Value, Value)], key: i64) -> Option<i64> {
    match get(map, key)? {
        Value::Integer(i) => i64::try_from(*i).ok(),
        _ => None,
    }
}

/// The boolean under integer key `key`.
pub fn boolean(map: &[(Value, Value)], key: i64) -> Option<bool> {
    match get(map, key)? {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

/// The array under integer key `key`.
pub fn array(map: &[(Value, Value)], key: i64) -> Option<&[Value]> {
    match get(map, key)? {
        Value::Array(a) => Some(a),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cose_key_order_is_canonical() {
        // CTAP2 §8 example order for a COSE key: 1, 3, -1, -2, -3.
        let key = Value::Map(vec![
            (int(-3), Value::Bytes(vec![2])),
            (int(-1), int(1)),
            (int(3), int(-25)),
            (int(-2), Value::Bytes(vec![1])),
            (int(1), int(2)),
        ]);
        let bytes = encode(&key);
        assert_eq!(
            bytes,
            [0xA5, 0x01, 0x02, 0x03, 0x38, 0x18, 0x20, 0x01, 0x21, 0x41, 0x01, 0x22, 0x41, 0x02]
        );
    }

    #[test]
    fn text_keys_sort_by_length_then_bytes() {
        let map = Value::Map(vec![
            (Value::Text("type".into()), int(0)),
            (Value::Text("id".into()), int(0)),
            (Value::Text("alg".into()), int(0)),
        ]);
        let back = decode(&encode(&map)).unwrap();
        let keys: Vec<_> = as_map(&back)
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["id", "alg", "type"]);
    }

    #[test]
    fn refuses_what_ctap_forbids() {
        assert_eq!(decode(&[]), Err(CborError::Truncated));
        assert_eq!(
            decode(&[0x9F, 0xFF]),
            Err(CborError::Malformed("indefinite length"))
        );
        assert_eq!(decode(&[0x01, 0x02]), Err(CborError::TrailingBytes));
        // A byte string that claims 4 GiB.
        assert_eq!(
            decode(&[0x5A, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(CborError::Truncated)
        );
        // An array that claims 2^64-1 items.
        let mut huge = vec![0x9B];
        huge.extend([0xFF; 8]);
        assert_eq!(decode(&huge), Err(CborError::Truncated));
        let deep = vec![0x81; MAX_DEPTH + 2];
        assert_eq!(decode(&deep), Err(CborError::TooDeep));
        assert!(matches!(
            decode(&[0x62, 0xC3, 0x28]),
            Err(CborError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_then_decode_is_identity(
            entries in proptest::collection::vec((any::<i32>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..12)
        ) {
            let mut map: Vec<(Value, Value)> = Vec::new();
            for (k, v) in entries {
                if get(&map, i64::from(k)).is_none() {
                    map.push((int(i64::from(k)), Value::Bytes(v)));
                }
            }
            let value = canonical(&Value::Map(map));
            let bytes = encode(&value);
            prop_assert_eq!(decode(&bytes).unwrap(), value.clone());
            prop_assert_eq!(encode(&decode(&bytes).unwrap()), bytes);
        }
    }
}
