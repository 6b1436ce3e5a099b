//! Naming: how a (prefix, namespace, id) triple becomes the keys of one entry.
//!
//! Layout: `<prefix>{<tag>}<ns-len>:<ns>:<id-part>:<role>` where
//! - `tag` is 16 hex digits of a stable 64-bit FNV-1a hash over namespace and id, inside braces:
//!   a Redis Cluster hash tag, so the value, the lease and the wake-up channel of one entry share
//!   one slot (it only spreads entries over slots; uniqueness comes from the rest of the key);
//! - `ns-len` makes the split between namespace and id unambiguous, so distinct
//!   (namespace, id) pairs never map to one key;
//! - `id-part` is `=<id>` for ids up to [`MAX_INLINE_ID`] bytes and `#<sha256 hex>` for longer
//!   ones (fixed length);
//! - `role` is `v` (value), `l` (lease), `f` (the token of the last lease that ended in a
//!   failure, kept briefly so that its waiters do not queue behind the next one) or `w`
//!   (wake-up channel).
//!
//! The prefix may not contain `{` or `}` (it would steal the hash tag).

use std::hash::Hasher;

use sha2::{Digest, Sha256};

use crate::Error;

/// Ids longer than this many bytes are stored by their SHA-256.
pub const MAX_INLINE_ID: usize = 128;

/// The Redis keys (and channel) of one cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    /// `base` followed by the value role `v`: the key read on every hit, built once.
    value: String,
}

impl EntryKey {
    /// Builds the keys for `id` in `namespace` under `prefix`.
    ///
    /// ```
    /// use atomcache::EntryKey;
    /// let k = EntryKey::new("app:", "users", "42");
    /// assert!(k.value().starts_with("app:{"));
    /// assert!(k.value().ends_with("5:users:=42:v"));
    /// // Different splits of the same characters never collide.
    /// assert_ne!(EntryKey::new("", "a:b", "c"), EntryKey::new("", "a", "b:c"));
    /// ```
    pub fn new(prefix: &str, namespace: &str, id: &str) -> Self {
        let mut tag = Fnv1a::new();
        tag.write(&(namespace.len() as u64).to_le_bytes());
        tag.write(namespace.as_bytes());
        tag.write(id.as_bytes());

        let ns_len = namespace.len().to_string();
        let id_len = if id.len() <= MAX_INLINE_ID {
            id.len() + 1
        } else {
            65
        };
        let mut key = String::with_capacity(
            prefix.len() + 18 + ns_len.len() + 1 + namespace.len() + 1 + id_len + 2,
        );
        key.push_str(prefix);
        key.push('{');
        push_hex(&mut key, &tag.finish().to_be_bytes());
        key.push('}');
        key.push_str(&ns_len);
        key.push(':');
        key.push_str(namespace);
        key.push(':');
        if id.len() <= MAX_INLINE_ID {
            key.push('=');
            key.push_str(id);
        } else {
            key.push('#');
            push_hex(&mut key, &Sha256::digest(id.as_bytes()));
        }
        key.push_str(":v");
        EntryKey { value: key }
    }

    /// The key holding the value.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The key holding the lease (the lock of the caller computing the value).
    pub fn lock(&self) -> String {
        self.with_role('l')
    }

    /// The key remembering, for a short while, the token of the last lease that ended in a
    /// failed computation.
    pub fn failed(&self) -> String {
        self.with_role('f')
    }

    /// The pub/sub channel on which the entry's wake-ups are published.
    pub fn channel(&self) -> String {
        self.with_role('w')
    }

    /// Common part of all keys of the entry; unique per entry.
    pub fn base(&self) -> &str {
        &self.value[..self.value.len() - 1]
    }

    fn with_role(&self, role: char) -> String {
        let base = self.base();
        let mut s = String::with_capacity(base.len() + 1);
        s.push_str(base);
        s.push(role);
        s
    }
}

/// 64-bit FNV-1a: tiny, stable across builds and platforms (the tag must be the same in every
/// replica), and fast on short inputs.
/// Also the hasher of the in-flight map (`crate::flight`), where SipHash's protection against
/// chosen collisions buys nothing (the keys come from this process's own calls).
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    pub(crate) fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a::new()
    }
}

impl std::hash::Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

/// Checks a key prefix: no hash-tag braces, no control characters.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), Error> {
    if prefix.contains(['{', '}']) {
        return Err(Error::InvalidConfig(format!(
            "key prefix {prefix:?} contains '{{' or '}}', which would break Redis Cluster hash tags"
        )));
    }
    if prefix.chars().any(char::is_control) {
        return Err(Error::InvalidConfig(format!(
            "key prefix {prefix:?} contains control characters"
        )));
    }
    Ok(())
}

/// Returns the Redis Cluster hash slot text of a key (the part between the first `{` and the next `}`).
#[cfg(test)]
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(close) = key[open + 1..].find('}') {
            if close > 0 {
                return &key[open + 1..open + 1 + close];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        for (input, expected) in [
            (&b""[..], 0xcbf2_9ce4_8422_2325u64),
            (b"a", 0xaf63_dc4c_8601_ec8c),
            (b"foobar", 0x8594_4171_f739_67e8),
        ] {
            let mut h = Fnv1a::new();
            h.write(input);
            assert_eq!(h.finish(), expected, "{input:?}");
        }
    }

    #[test]
    fn the_layout_is_stable() {
        // Keys are shared by every replica and every version: this must never change silently.
        let key = EntryKey::new("app:", "users", "42");
        assert_eq!(
            key.value().len(),
            "app:{".len() + 16 + "}5:users:=42:v".len()
        );
        assert!(key.value().ends_with("}5:users:=42:v"));
        assert_eq!(key.base(), &key.value()[..key.value().len() - 1]);
        assert_eq!(key.lock(), format!("{}l", key.base()));
        assert_eq!(key.channel(), format!("{}w", key.base()));
    }

    #[test]
    fn roles_share_a_hash_tag_even_with_braces_in_ids() {
        for (ns, id) in [
            ("a", "b"),
            ("n{s", "}i{d}"),
            ("{", "}"),
            ("x", &"y".repeat(1000)),
        ] {
            let k = EntryKey::new("pre:", ns, id);
            let tag = hash_tag(k.value()).to_string();
            assert_eq!(tag.len(), 16);
            assert_eq!(hash_tag(&k.lock()), tag);
            assert_eq!(hash_tag(&k.channel()), tag);
        }
    }

    #[test]
    fn distinct_pairs_give_distinct_keys() {
        let pairs = [
            ("a", "b:c"),
            ("a:b", "c"),
            ("ab", "c"),
            ("a", "bc"),
            ("", "abc"),
            ("abc", ""),
            ("1:a", "b"),
            ("1", "a:b"),
        ];
        let keys: HashSet<_> = pairs
            .iter()
            .map(|(n, i)| EntryKey::new("", n, i).value().to_owned())
            .collect();
        assert_eq!(keys.len(), pairs.len());
    }

    #[test]
    fn long_ids_are_hashed_to_a_fixed_length() {
        let a = EntryKey::new("", "ns", &"a".repeat(10_000));
        let b = EntryKey::new("", "ns", &"a".repeat(20_000));
        assert_ne!(a, b);
        assert_eq!(a.value().len(), b.value().len());
        assert!(a.value().len() < 120);
        // An inline id can never look like a hashed one: '=' vs '#'.
        let hashed_text = a.value().to_owned();
        let inline = EntryKey::new("", "ns", &hashed_text);
        assert_ne!(inline.value(), hashed_text);
    }

    #[test]
    fn prefix_validation() {
        assert!(validate_prefix("app:v1:").is_ok());
        assert!(validate_prefix("a{b").is_err());
        assert!(validate_prefix("a\nb").is_err());
    }
}
