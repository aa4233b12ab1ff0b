//! [`Fields`]: a record's named values, as a vector kept sorted by name.
//!
//! Records carry a dozen or two fields, built once and read a few times.
//! A sorted vector does that with one allocation, where a `BTreeMap` of
//! owned strings took one per name and a node per few entries; names
//! written as literals (`"path"`) are borrowed, not copied. It serializes
//! as a map in name order, the bytes a `BTreeMap<String, Value>` gave, so
//! the ABI is unchanged by it.

use crate::abi::Value;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::fmt;

/// A field's name: borrowed when it is a literal, owned otherwise.
pub type Key = Cow<'static, str>;

/// Named values, sorted by name, each name once.
#[derive(Clone, Default, PartialEq)]
pub struct Fields {
    entries: Vec<(Key, Value)>,
}

impl Fields {
    pub fn new() -> Self {
        Fields { entries: Vec::new() }
    }

    /// Room for `n` fields without growing.
    pub fn with_capacity(n: usize) -> Self {
        Fields { entries: Vec::with_capacity(n) }
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_ref().cmp(name))
    }

    /// Sets `name` to `value`, returning the value it replaces. Adding
    /// names in order appends; otherwise the tail shifts by one.
    pub fn insert(&mut self, name: impl Into<Key>, value: impl Into<Value>) -> Option<Value> {
        let name = name.into();
        let value = value.into();
        if self.entries.last().is_none_or(|(last, _)| *last < name) {
            self.entries.push((name, value));
            return None;
        }
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (name, value));
                None
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.find(name).ok().map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.find(name).ok().map(|i| &mut self.entries[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.find(name).ok().map(|i| self.entries.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names and values, in name order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &Value)> + ExactSizeIterator {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Names and values, values mutable, in name order.
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&str, &mut Value)> + ExactSizeIterator {
        self.entries.iter_mut().map(|(k, v)| (&**k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.entries.iter().map(|(k, _)| k.as_ref())
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator {
        self.entries.iter().map(|(_, v)| v)
    }

    /// From entries in any order: sorted once, and of a name given twice
    /// the last value stays (as inserting them one by one would leave).
    /// Linearithmic, so a hostile list of names in reverse order costs no
    /// more than a sorted one.
    pub fn from_entries(mut entries: Vec<(Key, Value)>) -> Self {
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable, so equal names keep their order and the last one wins.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out: Vec<(Key, Value)> = Vec::with_capacity(entries.len());
            for e in entries {
                match out.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => out.push(e),
                }
            }
            entries = out;
        }
        Fields { entries }
    }

    /// About how many bytes the fields hold (see [`Value::approx_size`]):
    /// what byte budgets count, in the plugin and in the host alike.
    pub fn approx_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| 48 + k.len() + v.approx_size()).sum()
    }

    /// A view that serializes values plainly (`"x"`, `3`, `{...}`), for
    /// JSON, where [`Value`]'s own `Serialize` names each variant.
    pub fn plain(&self) -> Plain<'_> {
        Plain::Fields(self)
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<Q: Borrow<str> + ?Sized> std::ops::Index<&Q> for Fields {
    type Output = Value;
    /// The value of a name that is there; panics otherwise, as
    /// `BTreeMap` does. For tests and names known to be set.
    fn index(&self, name: &Q) -> &Value {
        self.get(name.borrow()).unwrap_or_else(|| panic!("no field {:?}", name.borrow()))
    }
}

impl<K: Into<Key>, V: Into<Value>> FromIterator<(K, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Fields::from_entries(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<K: Into<Key>, V: Into<Value>> Extend<(K, V)> for Fields {
    /// Appended, then sorted once (see [`Fields::from_entries`]): names in
    /// any order cost no more than sorted ones.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.extend(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
        *self = Fields::from_entries(entries);
    }
}

impl From<BTreeMap<String, Value>> for Fields {
    fn from(m: BTreeMap<String, Value>) -> Self {
        Fields { entries: m.into_iter().map(|(k, v)| (Key::Owned(k), v)).collect() }
    }
}

impl<K: Into<Key>, V: Into<Value>, const N: usize> From<[(K, V); N]> for Fields {
    fn from(a: [(K, V); N]) -> Self {
        a.into_iter().collect()
    }
}

impl IntoIterator for Fields {
    type Item = (Key, Value);
    type IntoIter = std::vec::IntoIter<(Key, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (Key, Value)>, fn(&'a (Key, Value)) -> (&'a str, &'a Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            m.serialize_entry(k.as_ref(), v)?;
        }
        m.end()
    }
}

/// Values as JSON shows them: see [`Fields::plain`].
#[derive(Clone, Copy, Debug)]
pub enum Plain<'a> {
    Fields(&'a Fields),
    Value(&'a Value),
}

impl Serialize for Plain<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Plain::Fields(f) => {
                let mut m = s.serialize_map(Some(f.len()))?;
                for (k, v) in f.iter() {
                    m.serialize_entry(k, &Plain::Value(v))?;
                }
                m.end()
            }
            Plain::Value(v) => match v {
                Value::Null => s.serialize_unit(),
                Value::Bool(b) => s.serialize_bool(*b),
                Value::Int(i) => s.serialize_i64(*i),
                // JSON has no NaN or infinity: null, as serde_json writes them.
                Value::Float(f) if !f.is_finite() => s.serialize_unit(),
                Value::Float(f) => s.serialize_f64(*f),
                Value::Str(x) => s.serialize_str(x),
                Value::List(l) => {
                    let mut q = s.serialize_seq(Some(l.len()))?;
                    for v in l {
                        q.serialize_element(&Plain::Value(v))?;
                    }
                    q.end()
                }
                Value::Map(f) => Plain::Fields(f).serialize(s),
            },
        }
    }
}

/// Serializes fields plainly: `#[serde(serialize_with = "trawl_sdk::fields::serialize_plain")]`.
pub fn serialize_plain<S: Serializer>(f: &Fields, s: S) -> Result<S::Ok, S::Error> {
    f.plain().serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_btreemap_it_replaces() {
        let mut m = BTreeMap::new();
        let mut f = Fields::new();
        for (k, v) in [("path", Value::from("/a")), ("b", Value::Int(3)), ("zz", Value::Bool(true)), ("b", Value::Null)]
        {
            m.insert(k.to_string(), v.clone());
            f.insert(k, v);
        }
        assert_eq!(postcard::to_allocvec(&f).unwrap(), postcard::to_allocvec(&m).unwrap());
        assert_eq!(f, Fields::from(m));
        assert_eq!(f.keys().collect::<Vec<_>>(), ["b", "path", "zz"]);
        assert_eq!(f["b"], Value::Null);
    }

    #[test]
    fn entries_in_any_order_sort_and_the_last_of_a_name_wins() {
        let f: Fields = [("c", Value::Int(1)), ("a", Value::Int(2)), ("c", Value::Int(3))].into();
        assert_eq!(
            f.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<_>>(),
            [("a".to_string(), Value::Int(2)), ("c".to_string(), Value::Int(3))]
        );
        let mut e = f.clone();
        e.extend([("b", Value::Int(9)), ("a", Value::Int(8))]);
        assert_eq!(e.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(e["a"], Value::Int(8), "a later value of a name wins");
        let mut g = f.clone();
        assert_eq!(g.insert("b", 5), None);
        assert_eq!(g.insert("c", 6), Some(Value::Int(3)));
        assert_eq!(g.remove("a"), Some(Value::Int(2)));
        assert_eq!(g.keys().collect::<Vec<_>>(), ["b", "c"]);
    }
}
