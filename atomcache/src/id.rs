//! The cache ids of `#[cached]` calls: the JSON of the arguments, made exact where JSON is not.
//!
//! An id is the compact JSON of its parts (the type parameters, the arguments or the `key`):
//! one part alone (`42`, `"ada"`), several as an array (`[0,20]`), none as `null`. JSON is the
//! same in every replica of a build and readable in `redis-cli`, and it tells apart every two
//! values of one type, with one exception: `null`, which serde_json writes for `None`, `()`,
//! unit structs, NaN, `inf` and `-inf` alike (so `f(f64::NAN)`, `f(f64::INFINITY)` and, for an
//! `Option<f64>` argument, `f(None)` and `f(Some(f64::NAN))` would share an entry).
//!
//! The rule: **when the JSON holds a `null` token other than a plain `()`, the id is the JSON,
//! `~`, and what each of its `null`s stands for, comma-separated, in order**: `None`, `()`,
//! `inf`, `-inf`, `NaN`, `-NaN` (the quiet NaN and its negation), `NaN(0x…)` (any other NaN,
//! by its bits), each inside one `Some(..)` per `Some` it is wrapped in (`Some(None)`,
//! `Some(NaN)`). So `f(f64::NAN)` is `null~NaN`, `f(None)` is `null~None`, `g(3, None, -inf)` is
//! `[3,null,null]~None,-inf`, while `f(())` and a function without arguments stay `null`, and
//! ids without a `null` (the common case) are the JSON alone, as they always were.
//!
//! Why it is exact: serde_json writes `null` only for those values, so two values of one type
//! with the same JSON differ only in what their `null`s stand for, which the suffix spells out.
//! No id without the suffix equals one with it: the suffix follows a complete JSON value, which
//! valid JSON never continues with `~`. The suffix lists every `null` unless all of them are
//! plain `()`s, in which case there is nothing to tell apart. The `null`s of a tuple are the
//! `null`s of its elements in order, so the id of a tuple of parts is the id of the parts
//! joined ([`join`]): one rule for `cache_id` and `build_id`.
//!
//! Cost: a part whose JSON holds no `null` is serialised once, as before; one that holds a
//! `null` is walked a second time by [`Nulls`], which allocates only for its list.

use std::fmt::Write as _;

use serde::ser::{self, Error as _, Serialize};

/// Separates the JSON from the list of what its `null`s stand for.
const SUFFIX: char = '~';

/// One part of an id, encoded.
pub(crate) struct Encoded {
    json: String,
    nulls: Nulls,
}

/// Encodes one part: its JSON, and what its `null`s stand for when it has any.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Encoded, serde_json::Error> {
    let mut saw_null = false;
    let mut json = Vec::with_capacity(128);
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut json,
        SpotNull(&mut saw_null),
    ))?;
    let json = String::from_utf8(json).map_err(serde_json::Error::custom)?;
    let mut nulls = Nulls::default();
    if saw_null {
        value.serialize(Walk {
            nulls: &mut nulls,
            somes: 0,
        })?;
    }
    Ok(Encoded { json, nulls })
}

/// The id of these parts (see the module doc): `null` for none, the part alone for one, an
/// array for several; then `~` and what the `null`s stand for, if one is not a plain `()`.
pub(crate) fn join(parts: &[&Encoded]) -> String {
    let mut id = match parts {
        [] => "null".to_owned(),
        [one] => one.json.clone(),
        many => {
            let len = many.iter().map(|part| part.json.len() + 1).sum::<usize>() + 1;
            let mut id = String::with_capacity(len);
            id.push('[');
            for (i, part) in many.iter().enumerate() {
                if i > 0 {
                    id.push(',');
                }
                id.push_str(&part.json);
            }
            id.push(']');
            id
        }
    };
    if parts.iter().any(|part| part.nulls.telling) {
        id.push(SUFFIX);
        let mut first = true;
        for part in parts.iter().filter(|part| !part.nulls.list.is_empty()) {
            if !first {
                id.push(',');
            }
            first = false;
            id.push_str(&part.nulls.list);
        }
    }
    id
}

/// A JSON formatter that writes what `serde_json::to_string` writes and notes whether it wrote
/// a `null` token (`"null"` inside a string does not count).
struct SpotNull<'a>(&'a mut bool);

impl serde_json::ser::Formatter for SpotNull<'_> {
    fn write_null<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        *self.0 = true;
        writer.write_all(b"null")
    }
}

/// What the `null`s of one part stand for.
#[derive(Default)]
struct Nulls {
    /// Comma-separated, in the order serde_json writes them.
    list: String,
    /// Whether one of them is not a plain `()` (only then does the id list them).
    telling: bool,
}

/// A value that serde_json writes as `null`.
enum Null {
    None,
    Unit,
    F32(f32),
    F64(f64),
}

impl Nulls {
    fn push(&mut self, somes: usize, null: Null) {
        if !self.list.is_empty() {
            self.list.push(',');
        }
        self.telling |= somes > 0 || !matches!(null, Null::Unit);
        for _ in 0..somes {
            self.list.push_str("Some(");
        }
        let _ = match null {
            Null::None => write!(self.list, "None"),
            Null::Unit => write!(self.list, "()"),
            Null::F32(x) if x.is_nan() => write_nan(&mut self.list, x.to_bits().into(), 32),
            Null::F64(x) if x.is_nan() => write_nan(&mut self.list, x.to_bits(), 64),
            Null::F32(x) => write!(self.list, "{}", if x > 0.0 { "inf" } else { "-inf" }),
            Null::F64(x) => write!(self.list, "{}", if x > 0.0 { "inf" } else { "-inf" }),
        };
        for _ in 0..somes {
            self.list.push(')');
        }
    }
}

/// `NaN` and `-NaN` for the quiet NaN (the one `f64::NAN` is on every platform Rust supports),
/// `NaN(0x…)` with the bits for any other: the same text for the same bits everywhere.
fn write_nan(out: &mut String, bits: u64, width: u32) -> std::fmt::Result {
    let sign = 1u64 << (width - 1);
    let quiet = match width {
        32 => 0x7fc0_0000,
        _ => 0x7ff8_0000_0000_0000,
    };
    match bits {
        _ if bits == quiet => write!(out, "NaN"),
        _ if bits == quiet | sign => write!(out, "-NaN"),
        _ => write!(out, "NaN(0x{bits:0digits$x})", digits = width as usize / 4),
    }
}

/// Walks a value as serde_json does and records what each `null` it writes stands for; all
/// other values are skipped. `somes`: how many `Some`s directly wrap the value.
struct Walk<'a> {
    nulls: &'a mut Nulls,
    somes: usize,
}

impl<'a> Walk<'a> {
    fn inner(nulls: &'a mut Nulls) -> Self {
        Walk { nulls, somes: 0 }
    }

    fn push(self, null: Null) -> Result<(), serde_json::Error> {
        self.nulls.push(self.somes, null);
        Ok(())
    }
}

impl<'a> ser::Serializer for Walk<'a> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, _: bool) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Self::Error> {
        if v.is_finite() {
            return Ok(());
        }
        self.push(Null::F32(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Self::Error> {
        if v.is_finite() {
            return Ok(());
        }
        self.push(Null::F64(v))
    }
    fn serialize_char(self, _: char) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Self::Error> {
        self.push(Null::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Self::Error> {
        value.serialize(Walk {
            nulls: self.nulls,
            somes: self.somes + 1,
        })
    }
    fn serialize_unit(self) -> Result<(), Self::Error> {
        self.push(Null::Unit)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Self::Error> {
        self.push(Null::Unit)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Self::Error> {
        Ok(()) // `"Variant"`
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        value.serialize(self) // transparent in JSON
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        value.serialize(Walk::inner(self.nulls)) // `{"Variant":value}`
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, Self::Error> {
        Ok(Compound(self.nulls))
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, Self::Error> {
        Ok(Compound(self.nulls))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Self::Error> {
        Ok(Compound(self.nulls))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Self::Error> {
        Ok(Compound(self.nulls))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, Self::Error> {
        Ok(Compound(self.nulls))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Self::Error> {
        Ok(Compound(self.nulls))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Self::Error> {
        Ok(Compound(self.nulls))
    }
}

/// The elements, fields or values of a compound value (each wrapped in no `Some` of its own).
struct Compound<'a>(&'a mut Nulls);

impl Compound<'_> {
    fn walk<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), serde_json::Error> {
        value.serialize(Walk::inner(self.0))
    }
}

/// The sequence-like compounds: every element is walked.
macro_rules! walk_elements {
    ($($trait:ident::$method:ident),* $(,)?) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = serde_json::Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
                self.walk(value)
            }
            fn end(self) -> Result<(), Self::Error> {
                Ok(())
            }
        }
    )*};
}

walk_elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    /// serde_json rejects keys that would be `null` (unit, `None`, non-finite floats), and this
    /// walk runs only on values it accepted: keys hold no `null`.
    fn serialize_key<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), Self::Error> {
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.walk(value)
    }
    fn end(self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The struct-like compounds: every field's value is walked (names hold no `null`).
macro_rules! walk_fields {
    ($($trait:ident),* $(,)?) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = serde_json::Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Result<(), Self::Error> {
                self.walk(value)
            }
            fn end(self) -> Result<(), Self::Error> {
                Ok(())
            }
        }
    )*};
}

walk_fields!(SerializeStruct, SerializeStructVariant);
