//! A document of the file as a [`Value`], integers wider than 64 bits
//! included.
//!
//! [`Value`] holds no integer wider than 64 bits: reading one into it fails
//! the whole document, which hid its other problems and named the number's
//! place only as the parser's text. Here such an integer becomes a
//! [wide integer](wide_integer), which no type of the file takes: its
//! problem is then reported where it was written, in the words of its field
//! (`12345678901234567890123 is out of range 1-65535`), as any other value's.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, EnumAccess, MapAccess, SeqAccess, VariantAccess as _},
};
use serde_yaml_ng::{
    Mapping, Value,
    value::{Tag, TaggedValue},
};

/// The start of a wide integer's tag, the rest of which is the integer.
const WIDE_INTEGER_TAG: &str = "!xlb/wide-integer:";

/// Reads one document, as [`Value::deserialize`] does but for integers wider
/// than 64 bits (see the module's documentation).
pub(super) fn read<'de, D: Deserializer<'de>>(document: D) -> Result<Value, D::Error> {
    document.deserialize_any(Visitor)
}

/// The integer that `value` stands for, in decimal digits, when it is a
/// wide one.
///
/// It is a tagged value whose tag holds the digits and whose value is not a
/// number: serde_yaml_ng reads a tagged value as what it holds wherever a
/// type does not ask for a tag, and the only type that would take a NaN is
/// a float, which no field of the file is. So every field refuses it at its
/// own place: an integer, text, a list or a mapping alike. (Text would not
/// do: a field of text would take it.)
pub(super) fn wide_integer(value: &Value) -> Option<String> {
    let Value::Tagged(tagged) = value else {
        return None;
    };
    let Value::Number(nan) = &tagged.value else {
        return None;
    };
    // A tag's text is only seen displayed, with its `!`.
    let tag = tagged.tag.to_string();
    let digits = tag.strip_prefix(WIDE_INTEGER_TAG)?;
    // What `wide` makes, and nothing that was written to look like it.
    let wide = digits
        .parse::<i128>()
        .is_ok_and(|i| i64::try_from(i).is_err() && u64::try_from(i).is_err())
        || digits
            .parse::<u128>()
            .is_ok_and(|u| u64::try_from(u).is_err());
    (nan.is_nan() && wide).then(|| digits.to_owned())
}

/// A wide integer (see [`wide_integer`]) for `digits`.
fn wide(digits: String) -> Value {
    Value::Tagged(Box::new(TaggedValue {
        tag: Tag::new(format!("{WIDE_INTEGER_TAG}{digits}")),
        value: Value::Number(f64::NAN.into()),
    }))
}

struct Visitor;

/// One value of a sequence or mapping, read as [`read`] reads a document.
struct Item(Value);

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        read(deserializer).map(Item)
    }
}

impl<'de> de::Visitor<'de> for Visitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        Ok(Value::Number(u.into()))
    }

    fn visit_i128<E: de::Error>(self, i: i128) -> Result<Value, E> {
        Ok(match i64::try_from(i) {
            Ok(i) => Value::Number(i.into()),
            Err(_) => wide(i.to_string()),
        })
    }

    fn visit_u128<E: de::Error>(self, u: u128) -> Result<Value, E> {
        Ok(match u64::try_from(u) {
            Ok(u) => Value::Number(u.into()),
            Err(_) => wide(u.to_string()),
        })
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        read(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Item(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut mapping = Mapping::new();
        while let Some(Item(key)) = map.next_key()? {
            if mapping.contains_key(&key) {
                return Err(de::Error::custom(DuplicateKey(&key)));
            }
            let Item(value) = map.next_value()?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    /// A tagged value: serde_yaml_ng gives the tag as the variant.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, contents): (String, _) = data.variant()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        let Item(value) = contents.newtype_variant()?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

/// `error` as serde_yaml_ng words it, its place said right: the place of a
/// duplicate key is that of the mapping that holds it (the parser knows
/// no other when the key turns out to be a second one).
pub(crate) fn located(error: &serde_yaml_ng::Error) -> String {
    let message = error.to_string();
    match message.find("duplicate entry ") {
        Some(start) => {
            let (path, rest) = message.split_at(start);
            format!(
                "{path}{}",
                rest.replacen(" at line ", " in the mapping that starts at line ", 1)
            )
        }
        None => message,
    }
}

/// A key written twice in one mapping, in serde_yaml_ng's words.
struct DuplicateKey<'a>(&'a Value);

impl fmt::Display for DuplicateKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("duplicate entry ")?;
        match self.0 {
            Value::Null => f.write_str("with null key"),
            Value::Bool(b) => write!(f, "with key `{b}`"),
            Value::Number(n) => write!(f, "with key {n}"),
            Value::String(s) => write!(f, "with key {s:?}"),
            Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => f.write_str("in YAML map"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(text: &str) -> Result<Value, String> {
        read(serde_yaml_ng::Deserializer::from_str(text)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_document_reads_as_serde_yaml_reads_it() {
        let text = "a: [1, -2, 18446744073709551615, 1.5, .nan, ~, true, text, '7']
b: &x {c: !tagged {d: 1}, e: !!str 5}
c: *x
? [k]
: v
";
        assert_eq!(
            read_str(text),
            Ok(serde_yaml_ng::from_str::<Value>(text).unwrap())
        );
        for text in [
            "a: 1\na: 2\n",
            "~: 1\n~: 2\n",
            "5: 1\n5: 2\n",
            "[k]: 1\n[k]: 2\n",
        ] {
            assert_eq!(
                read_str(text),
                Err(serde_yaml_ng::from_str::<Value>(text)
                    .unwrap_err()
                    .to_string()),
                "{text}"
            );
        }
    }

    #[test]
    fn an_integer_wider_than_64_bits_is_kept_as_a_wide_integer() {
        let value = read_str(
            "[18446744073709551616, -9223372036854775809, 0x10000000000000000, \
             340282366920938463463374607431768211455]",
        )
        .unwrap();
        let Value::Sequence(items) = value else {
            panic!("{value:?}")
        };
        let wide: Vec<Option<String>> = items.iter().map(wide_integer).collect();
        assert_eq!(
            wide,
            [
                Some("18446744073709551616".to_owned()),
                Some("-9223372036854775809".to_owned()),
                // In decimal, whatever its base.
                Some("18446744073709551616".to_owned()),
                Some("340282366920938463463374607431768211455".to_owned()),
            ]
        );
        // No type of the file takes one, not even text.
        for item in &items {
            assert!(serde_yaml_ng::from_value::<String>(item.clone()).is_err());
            assert!(serde_yaml_ng::from_value::<i64>(item.clone()).is_err());
            assert!(serde_yaml_ng::from_value::<Option<u128>>(item.clone()).is_err());
            assert!(serde_yaml_ng::from_value::<Vec<String>>(item.clone()).is_err());
        }
    }

    #[test]
    fn only_a_wide_integer_is_one() {
        for text in [
            "18446744073709551615",
            "-9223372036854775808",
            "!xlb/wide-integer:5 .nan",
            "!xlb/wide-integer:18446744073709551616 1",
            "!xlb/wide-integer:x .nan",
            "'18446744073709551616'",
        ] {
            let value = read_str(text).unwrap();
            assert_eq!(wide_integer(&value), None, "{text}");
        }
    }
}
