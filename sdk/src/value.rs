//! Decoding a [`Value`] from bytes nobody vouches for (a plugin's output, a
//! worker's frame): nesting is capped at [`MAX_DEPTH`], so a bomb of nested
//! lists cannot overflow the decoding thread's stack, and within
//! [`decode_bounded`] the number of values is capped too, so a few bytes
//! per value cannot become gigabytes of them.

use crate::abi::Value;
use crate::fields::{Fields, Key};
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// Deepest nesting of lists and maps a value may have.
pub const MAX_DEPTH: u32 = 32;

thread_local! {
    /// Values still allowed in the decode running on this thread, if it
    /// is bounded.
    static BUDGET: Cell<Option<usize>> = const { Cell::new(None) };
    /// Why the last decode on this thread was refused: postcard keeps no
    /// custom message, and "Serde Deserialization Error" helps nobody.
    static WHY: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A decoding error that says `why`, kept for [`take_refusal`].
pub fn refuse<E: de::Error>(why: String) -> E {
    WHY.with(|w| *w.borrow_mut() = Some(why.clone()));
    E::custom(why)
}

/// Why the last refused decode on this thread was refused, once.
pub fn take_refusal() -> Option<String> {
    WHY.with(|w| w.borrow_mut().take())
}

/// Runs `decode` with at most `values` values (of any depth) decoded;
/// past that, decoding fails.
pub fn decode_bounded<T>(values: usize, decode: impl FnOnce() -> T) -> T {
    struct Reset(Option<usize>);
    impl Drop for Reset {
        fn drop(&mut self) {
            BUDGET.with(|b| b.set(self.0));
        }
    }
    let _reset = Reset(BUDGET.with(|b| b.replace(Some(values))));
    decode()
}

fn spend<E: de::Error>() -> Result<(), E> {
    BUDGET.with(|b| match b.get() {
        Some(0) => Err(refuse("too many values in one answer".into())),
        Some(n) => {
            b.set(Some(n - 1));
            Ok(())
        }
        None => Ok(()),
    })
}

/// Preallocation never trusts a declared length beyond this.
const CAUTIOUS: usize = 1024;

const VARIANTS: &[&str] = &["Null", "Bool", "Int", "Float", "Str", "List", "Map"];

/// Which variant, by index (postcard) or by name (self-describing formats).
struct Variant(u32);

impl<'de> serde::Deserialize<'de> for Variant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Variant;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Value variant")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Variant, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|&i| (i as usize) < VARIANTS.len())
                    .map(Variant)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &"a variant index below 7"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Variant, E> {
                VARIANTS
                    .iter()
                    .position(|n| *n == v)
                    .map(|i| Variant(i as u32))
                    .ok_or_else(|| E::unknown_variant(v, VARIANTS))
            }
        }
        d.deserialize_identifier(V)
    }
}

/// A [`Value`] at nesting `depth`.
#[derive(Clone, Copy)]
struct At(u32);

impl<'de> DeserializeSeed<'de> for At {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_enum("Value", VARIANTS, self)
    }
}

impl<'de> Visitor<'de> for At {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Value")
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        spend()?;
        let (Variant(i), v) = data.variant::<Variant>()?;
        let nested = |depth: u32| {
            if depth >= MAX_DEPTH {
                Err(refuse(format!("values nested deeper than {MAX_DEPTH}")))
            } else {
                Ok(Nested(depth + 1))
            }
        };
        Ok(match i {
            0 => {
                v.unit_variant()?;
                Value::Null
            }
            1 => Value::Bool(v.newtype_variant()?),
            2 => Value::Int(v.newtype_variant()?),
            3 => Value::Float(v.newtype_variant()?),
            4 => Value::Str(v.newtype_variant()?),
            5 => Value::List(v.newtype_variant_seed(ListOf(nested(self.0)?))?),
            _ => Value::Map(v.newtype_variant_seed(MapOf(nested(self.0)?))?),
        })
    }
}

#[derive(Clone, Copy)]
struct Nested(u32);
struct ListOf(Nested);
struct MapOf(Nested);

impl<'de> DeserializeSeed<'de> for ListOf {
    type Value = Vec<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListOf {
    type Value = Vec<Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(CAUTIOUS));
        while let Some(v) = seq.next_element_seed(At(self.0.0))? {
            out.push(v);
        }
        Ok(out)
    }
}

impl<'de> DeserializeSeed<'de> for MapOf {
    type Value = Fields;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MapOf {
    type Value = Fields;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(CAUTIOUS));
        while let Some(k) = map.next_key_seed(KeyOf)? {
            let v = map.next_value_seed(At(self.0.0))?;
            out.push((k, v));
        }
        // Sorted already when a trawl SDK wrote it; sorted once otherwise.
        Ok(Fields::from_entries(out))
    }
}

/// A map's key: one of the names kept once ([`crate::keys`]) is borrowed,
/// not allocated again for every record.
struct KeyOf;

impl<'de> DeserializeSeed<'de> for KeyOf {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyOf {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(crate::keys::key(v))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
        Ok(crate::keys::key_from(v))
    }
}

impl<'de> serde::Deserialize<'de> for Fields {
    /// A record's fields: its values are at the top, depth 0.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MapOf(Nested(0)).deserialize(d)
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        At(0).deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Value {
        let mut v = Value::Null;
        for _ in 0..depth {
            v = Value::List(vec![v]);
        }
        v
    }

    #[test]
    fn values_round_trip_in_postcard_and_json() {
        let mut m = Fields::new();
        m.insert("k", Value::List(vec![Value::Int(-3), Value::Float(1.5), Value::Bool(true)]));
        m.insert("s", "x");
        let v = Value::Map(m);
        let bytes = postcard::to_allocvec(&v).unwrap();
        assert_eq!(postcard::from_bytes::<Value>(&bytes).unwrap(), v);
        assert_eq!(
            postcard::from_bytes::<Value>(&postcard::to_allocvec(&nested(MAX_DEPTH as usize)).unwrap()).unwrap(),
            nested(32)
        );
    }

    #[test]
    fn a_depth_bomb_is_an_error_not_a_stack_overflow() {
        // 500k nested one-element lists, as postcard writes them: variant
        // 5, length 1, … then Null. Built by hand: encoding it recursively
        // would itself overflow.
        let mut bytes = Vec::new();
        for _ in 0..500_000 {
            bytes.extend_from_slice(&[5, 1]);
        }
        bytes.push(0);
        let e = postcard::from_bytes::<Value>(&bytes).unwrap_err();
        assert!(format!("{e:?}").contains("Custom") || !format!("{e}").is_empty());
        assert!(postcard::from_bytes::<Value>(&postcard::to_allocvec(&nested(33)).unwrap()).is_err());
    }

    #[test]
    fn a_bounded_decode_stops_at_its_budget() {
        let many = Value::List(vec![Value::Null; 1000]);
        let bytes = postcard::to_allocvec(&many).unwrap();
        assert!(decode_bounded(100, || postcard::from_bytes::<Value>(&bytes)).is_err());
        assert!(decode_bounded(1001, || postcard::from_bytes::<Value>(&bytes)).is_ok());
        // The budget is for that decode only.
        assert!(postcard::from_bytes::<Value>(&bytes).is_ok());
    }
}
