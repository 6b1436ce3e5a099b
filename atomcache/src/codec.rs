//! Turning values into stored bytes and back: the entry header and the pluggable [`Codec`].
//!
//! Every stored entry is `header ++ payload`. The header is 15 bytes:
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | magic `0xAC` |
//! | 1 | header format version (1) |
//! | 2 | codec id ([`Codec::ID`]) |
//! | 3..11 | written at, milliseconds since the Unix epoch, little endian |
//! | 11..15 | how long the computation took, milliseconds, little endian |
//!
//! A header that does not match (another program's bytes, an older format, another codec) reads
//! as a miss, never as garbage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{de::DeserializeOwned, Serialize};

/// The largest payload a codec will decode. Hostile bytes that claim a longer sequence fail
/// instead of allocating. Redis itself caps a string at 512 MiB.
pub const MAX_DECODE_BYTES: usize = 64 << 20;

const MAGIC: u8 = 0xAC;
const FORMAT_VERSION: u8 = 1;
/// Length of the header in front of every stored payload.
pub const HEADER_LEN: usize = 15;

/// Why bytes could not become a value, or a value could not become bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes do not start with an atomcache header of this version and codec.
    #[error("stored bytes have no valid atomcache header ({0})")]
    Header(&'static str),
    /// The codec failed to encode the value.
    #[error("encode failed: {0}")]
    Encode(String),
    /// The encoded value is larger than [`MAX_DECODE_BYTES`]: it could be stored but never
    /// read back, so it is not stored.
    #[error("the encoded value has {len} bytes, more than the {limit} bytes a stored value may have (MAX_DECODE_BYTES)")]
    TooLarge {
        /// Length of the encoded payload.
        len: usize,
        /// [`MAX_DECODE_BYTES`].
        limit: usize,
    },
    /// The codec failed to decode the payload.
    #[error("decode failed: {0}")]
    Decode(String),
}

/// A serde-based serialisation format for stored values.
///
/// The default is [`Bincode`]; `Json` is behind the `json` feature. A codec is chosen per
/// [`Cache`](crate::Cache) as its type parameter. Implement this trait to bring another format:
///
/// ```
/// use atomcache::{Codec, CodecError};
///
/// /// JSON through serde_json, as a custom codec.
/// struct MyJson;
///
/// impl Codec for MyJson {
///     const ID: u8 = 200;
///     fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
///         serde_json::to_vec(value).map_err(|e| CodecError::Encode(e.to_string()))
///     }
///     fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
///         serde_json::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string()))
///     }
/// }
///
/// let bytes = MyJson::encode(&vec![1, 2, 3]).unwrap();
/// assert_eq!(MyJson::decode::<Vec<u8>>(&bytes).unwrap(), vec![1, 2, 3]);
/// ```
pub trait Codec: Send + Sync + 'static {
    /// Written into the header; entries written by another codec read as a miss.
    /// Ids below 16 are reserved for atomcache's own codecs.
    const ID: u8;
    /// Serialises a value.
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError>;
    /// Deserialises a value. Must not allocate much more than `bytes.len()` for any input.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// The default codec: bincode 2 (compact, fast), with a decode limit of [`MAX_DECODE_BYTES`].
///
/// ```
/// use atomcache::{Bincode, Codec};
/// let bytes = Bincode::encode(&("hello", 42u32)).unwrap();
/// let back: (String, u32) = Bincode::decode(&bytes).unwrap();
/// assert_eq!(back, ("hello".to_string(), 42));
/// // A length prefix claiming ~2^60 elements fails instead of allocating.
/// assert!(Bincode::decode::<Vec<u64>>(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 0x10]).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl Codec for Bincode {
    const ID: u8 = 1;

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map_err(|e| CodecError::Encode(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let config = bincode::config::standard().with_limit::<MAX_DECODE_BYTES>();
        let (value, used) = bincode::serde::decode_from_slice(bytes, config)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        if used != bytes.len() {
            return Err(CodecError::Decode(format!(
                "{} trailing bytes after the value",
                bytes.len() - used
            )));
        }
        Ok(value)
    }
}

/// JSON through `serde_json` (feature `json`): readable in `redis-cli`, larger and slower.
///
/// ```
/// # #[cfg(feature = "json")] {
/// use atomcache::{Codec, Json};
/// assert_eq!(Json::encode(&[1, 2]).unwrap(), b"[1,2]");
/// # }
/// ```
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl Codec for Json {
    const ID: u8 = 2;

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::Encode(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        if bytes.len() > MAX_DECODE_BYTES {
            return Err(CodecError::Decode(
                "payload exceeds the decode limit".into(),
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string()))
    }
}

/// What the header of a stored entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// When the entry was written.
    pub written_at: SystemTime,
    /// How long the computation that produced it took.
    pub compute_time: Duration,
}

/// Header + payload for a value.
pub(crate) fn encode_entry<C: Codec, T: Serialize + ?Sized>(
    value: &T,
    compute_time: Duration,
) -> Result<Vec<u8>, CodecError> {
    let payload = C::encode(value)?;
    if payload.len() > MAX_DECODE_BYTES {
        return Err(CodecError::TooLarge {
            len: payload.len(),
            limit: MAX_DECODE_BYTES,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    let written_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let compute_ms = u32::try_from(compute_time.as_millis()).unwrap_or(u32::MAX);
    out.push(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(C::ID);
    out.extend_from_slice(&written_ms.to_le_bytes());
    out.extend_from_slice(&compute_ms.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads the header, returning the metadata and the payload behind it.
pub(crate) fn split_entry<C: Codec>(bytes: &[u8]) -> Result<(EntryMeta, &[u8]), CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::Header("too short"));
    }
    if bytes[0] != MAGIC {
        return Err(CodecError::Header("bad magic byte"));
    }
    if bytes[1] != FORMAT_VERSION {
        return Err(CodecError::Header("unknown format version"));
    }
    if bytes[2] != C::ID {
        return Err(CodecError::Header("written by another codec"));
    }
    Ok((read_meta(bytes), &bytes[HEADER_LEN..]))
}

/// The metadata of a header that is at least [`HEADER_LEN`] long (not otherwise checked).
pub(crate) fn read_meta(bytes: &[u8]) -> EntryMeta {
    let mut written = [0u8; 8];
    written.copy_from_slice(&bytes[3..11]);
    let mut compute = [0u8; 4];
    compute.copy_from_slice(&bytes[11..15]);
    EntryMeta {
        written_at: UNIX_EPOCH + Duration::from_millis(u64::from_le_bytes(written)),
        compute_time: Duration::from_millis(u64::from(u32::from_le_bytes(compute))),
    }
}

/// Header check + payload decode.
pub(crate) fn decode_entry<C: Codec, T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(EntryMeta, T), CodecError> {
    let (meta, payload) = split_entry::<C>(bytes)?;
    Ok((meta, C::decode(payload)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_value_and_meta() {
        let bytes =
            encode_entry::<Bincode, _>(&vec![1u32, 2, 3], Duration::from_millis(1234)).unwrap();
        let (meta, value): (_, Vec<u32>) = decode_entry::<Bincode, _>(&bytes).unwrap();
        assert_eq!(value, vec![1, 2, 3]);
        assert_eq!(meta.compute_time, Duration::from_millis(1234));
        assert!(meta.written_at <= SystemTime::now());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"hello world, not ours",
            &[MAGIC, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[
                MAGIC,
                FORMAT_VERSION,
                99,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                1,
            ],
        ] {
            assert!(decode_entry::<Bincode, String>(bytes).is_err());
        }
    }

    #[test]
    fn hostile_length_prefix_does_not_allocate() {
        let mut bytes = encode_entry::<Bincode, _>(&Vec::<u64>::new(), Duration::ZERO).unwrap();
        bytes.truncate(HEADER_LEN);
        // varint marker for a u64 length, then 2^62.
        bytes.push(253);
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(decode_entry::<Bincode, Vec<u64>>(&bytes).is_err());
        assert!(decode_entry::<Bincode, String>(&bytes).is_err());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode_entry::<Bincode, _>(&7u8, Duration::ZERO).unwrap();
        bytes.push(0);
        assert!(decode_entry::<Bincode, u8>(&bytes).is_err());
    }
}
