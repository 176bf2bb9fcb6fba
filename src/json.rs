//! A JSON tree that borrows its strings from the text it was parsed from: what identifying and
//! routing an event needs, without the allocation per key and per string of a
//! `serde_json::Value` (that tree was most of the request path's parsing cost).
//!
//! Invariant: an object's members are sorted by key, and a key sent twice keeps its last value,
//! as in a `serde_json::Map`; numbers are `serde_json::Number`s built the way `Value` builds
//! them, so the canonical text of a tree is the canonical text of the same `Value`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// One JSON value; see the module docs. A borrowed string (or key) is a slice of JSON text
/// between quotes with no escape sequence, and JSON text holds no raw control character (the
/// parser refuses them): so it holds no character JSON escapes, and its canonical text is the
/// slice between quotes. Only the parser makes strings and objects: the `String` variant cannot
/// be built outside this crate, and an [`Object`]'s members are private.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    #[non_exhaustive]
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// An object's members, sorted by key, keys unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// The value of `key`, if present (an explicit `null` is present).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.get_entry(key).map(|(_, v)| v)
    }

    /// The key as stored and the value of `key`, if present.
    pub fn get_entry(&self, key: &str) -> Option<(&str, &Json<'a>)> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| (self.0[i].0.as_ref(), &self.0[i].1))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The members in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Appends the canonical text (see [`Json::write_canonical`]).
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(key, out);
            out.push(b':');
            value.write_canonical(out);
        }
        out.push(b'}');
    }
}

impl<'a> Json<'a> {
    /// Parses `text`; strings without escapes borrow from it.
    pub fn parse(text: &'a str) -> Result<Json<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The canonical text (see [`Json::write_canonical`]) as a string: for a value read from a
    /// payload, the same text `serde_json` would write for it.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    /// The value as a `serde_json::Value` (what `extras` are kept as).
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// The JSON type name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }

    /// Appends the canonical text: object keys sorted, no whitespace, strings and numbers
    /// written by serde_json.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(true) => out.extend_from_slice(b"true"),
            Json::Bool(false) => out.extend_from_slice(b"false"),
            Json::Number(n) => serde_json::to_writer(&mut *out, n).expect("a number serializes"),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_canonical(out);
                }
                out.push(b']');
            }
            Json::Object(object) => object.write_canonical(out),
        }
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes. A borrowed string holds
/// nothing to escape (see [`Json`]), so it is copied as it is: serde_json's escaping loop, byte
/// by byte, was a tenth of the request path's parsing in a profile of `stage_bench`.
#[allow(
    clippy::ptr_arg,
    reason = "whether the text is borrowed is what this goes by"
)]
fn write_string(s: &Cow<'_, str>, out: &mut Vec<u8>) {
    match s {
        Cow::Borrowed(text) => {
            debug_assert!(
                !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'),
                "a borrowed string needs no escapes: {text:?}"
            );
            out.reserve(text.len() + 2);
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(text) => serde_json::to_writer(&mut *out, text).expect("a string serializes"),
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        // As `serde_json::Value` does: a float JSON cannot hold is null.
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Json<'de>)> = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            members.push((key.0, map.next_value()?));
        }
        // Sorted by key, the last of equal keys kept (a stable sort keeps them in order; the
        // later of two equal members moves into the earlier one's place and is removed).
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        Ok(Json::Object(Object(members)))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The canonical text of a `serde_json::Value`, as the first implementation wrote it.
    fn value_canonical(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(map) => {
                out.push(b'{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, k).unwrap();
                    out.push(b':');
                    value_canonical(v, out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    value_canonical(item, out);
                }
                out.push(b']');
            }
            scalar => serde_json::to_writer(&mut *out, scalar).unwrap(),
        }
    }

    #[test]
    fn canonical_text_is_that_of_a_serde_json_value() {
        let texts = [
            r#"{"b":1,"a":[1,2.50,-0,1e3,1E-7,18446744073709551615,-9223372036854775808],"c":null}"#,
            r#"{"k":"v\u00e9\n\"q\"","k":"last wins","\u0041":true,"A":false}"#,
            r#"{"nested":{"z":{"y":[{"b":2,"a":1}],"x":""}},"e\\scaped key":"x"}"#,
            r#"{"big":123456789012345678901234567890,"tiny":1e-400,"neg":-1.5e300}"#,
            r#"{}"#,
            r#"{"emoji":"😀","ctl":"\u0001\u001f"}"#,
        ];
        for text in texts {
            let ours = Json::parse(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            ours.write_canonical(&mut a);
            value_canonical(&value, &mut b);
            assert_eq!(
                String::from_utf8(a).unwrap(),
                String::from_utf8(b).unwrap(),
                "{text}"
            );
        }
    }

    /// Values whose strings and keys hold every kind of character serde_json escapes (quotes,
    /// backslashes, control characters) or not (slashes, non-ASCII).
    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = "[a-z\"\\\\/\u{0}-\u{1f}\u{7f}é😀 ]{0,6}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            text.prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(text, inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Borrowed strings are copied as they are, owned ones escaped by serde_json: the text
        /// is serde_json's either way, for the text as serde_json writes it and for the same
        /// text with every `/` sent escaped (which makes those strings owned).
        #[test]
        fn canonical_strings_are_written_as_serde_json_writes_them(v in value()) {
            let plain = serde_json::to_string(&v).unwrap();
            let escaped = plain.replace('/', "\\/");
            let mut expected = Vec::new();
            value_canonical(&v, &mut expected);
            for text in [plain, escaped] {
                let mut ours = Vec::new();
                Json::parse(&text).unwrap().write_canonical(&mut ours);
                proptest::prop_assert_eq!(&ours, &expected, "{}", text);
            }
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed_and_lookups_find_keys() {
        let text = r#"{"hookType":"Contact created","n":{"x":"a\"b"}}"#;
        let tree = Json::parse(text).unwrap();
        let object = tree.as_object().unwrap();
        assert!(matches!(
            object.get("hookType"),
            Some(Json::String(Cow::Borrowed("Contact created")))
        ));
        let inner = object.get("n").and_then(Json::as_object).unwrap();
        assert!(matches!(inner.get("x"), Some(Json::String(Cow::Owned(s))) if s == "a\"b"));
        assert!(object.get("missing").is_none());
        assert_eq!(Json::parse("[1]").unwrap().kind(), "array");
    }
}
