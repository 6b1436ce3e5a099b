//! Naming: how a (prefix, namespace, id) triple becomes the keys of one entry.
//!
//! Layout: `<prefix>{<tag>}<ns-len>:<ns>:<id-part>:<role>` where
//! - `tag` is 16 hex digits of SHA-256 over namespace and id, inside braces: a Redis Cluster
//!   hash tag, so the value, the lock and the wake-up channel of one entry share one slot;
//! - `ns-len` makes the split between namespace and id unambiguous, so distinct
//!   (namespace, id) pairs never map to one key;
//! - `id-part` is `=<id>` for ids up to [`MAX_INLINE_ID`] bytes and `#<sha256 hex>` for longer
//!   ones (fixed length);
//! - `role` is `v` (value), `l` (lock) or `w` (wake-up channel).
//!
//! The prefix may not contain `{` or `}` (it would steal the hash tag).

use sha2::{Digest, Sha256};

use crate::Error;

/// Ids longer than this many bytes are stored by their SHA-256.
pub const MAX_INLINE_ID: usize = 128;

/// The Redis keys (and channel) of one cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    base: String,
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
        let mut tag_hash = Sha256::new();
        tag_hash.update((namespace.len() as u64).to_le_bytes());
        tag_hash.update(namespace.as_bytes());
        tag_hash.update(id.as_bytes());
        let tag = tag_hash.finalize();

        let mut base = String::with_capacity(
            prefix.len() + namespace.len() + id.len().min(MAX_INLINE_ID) + 40,
        );
        base.push_str(prefix);
        base.push('{');
        push_hex(&mut base, &tag[..8]);
        base.push('}');
        base.push_str(&namespace.len().to_string());
        base.push(':');
        base.push_str(namespace);
        base.push(':');
        if id.len() <= MAX_INLINE_ID {
            base.push('=');
            base.push_str(id);
        } else {
            base.push('#');
            push_hex(&mut base, &Sha256::digest(id.as_bytes()));
        }
        base.push(':');
        EntryKey { base }
    }

    /// The key holding the value.
    pub fn value(&self) -> String {
        self.with_role('v')
    }

    /// The key holding the lock.
    pub fn lock(&self) -> String {
        self.with_role('l')
    }

    /// The pub/sub channel on which the entry's wake-ups are published.
    pub fn channel(&self) -> String {
        self.with_role('w')
    }

    /// Common part of all keys of the entry; unique per entry.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn with_role(&self, role: char) -> String {
        let mut s = String::with_capacity(self.base.len() + 1);
        s.push_str(&self.base);
        s.push(role);
        s
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
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
    fn roles_share_a_hash_tag_even_with_braces_in_ids() {
        for (ns, id) in [
            ("a", "b"),
            ("n{s", "}i{d}"),
            ("{", "}"),
            ("x", &"y".repeat(1000)),
        ] {
            let k = EntryKey::new("pre:", ns, id);
            let tag = hash_tag(&k.value()).to_string();
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
            .map(|(n, i)| EntryKey::new("", n, i).value())
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
        let hashed_text = a.value();
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
