//! A JSON scalar read without building a `serde_json::Value`: strings are borrowed from the
//! request body when they have no escapes. Used on the cell-write hot path, where a request may
//! hold 100,000 cells, and wherever an ID may come as a string or (as the Python SDK sends it)
//! as a number.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::model::Input;

#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

impl Scalar<'_> {
    /// The value as an ID or name: strings as they are, integers in decimal.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Scalar::Str(s) => Some(Cow::Borrowed(s.as_ref())),
            Scalar::Int(i) => Some(Cow::Owned(i.to_string())),
            _ => None,
        }
    }

    /// The value as a numeric ID.
    pub fn id(&self) -> Option<u64> {
        match self {
            Scalar::Str(s) => s.trim().parse().ok(),
            Scalar::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }

    pub fn input(&self) -> Option<Input<'_>> {
        match self {
            Scalar::Str(s) => Some(Input::Str(s)),
            Scalar::Int(i) => Some(Input::Num(*i as f64)),
            Scalar::Float(f) => Some(Input::Num(*f)),
            Scalar::Bool(b) => Some(Input::Bool(*b)),
            Scalar::Null => None,
        }
    }
}

struct ScalarVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
    type Value = Scalar<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number, boolean or null")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_plain_strings_and_reads_numbers() {
        let v: Vec<Scalar> =
            serde_json::from_str(r#"["ab", "a\"b", 12, 1.5, true, null]"#).unwrap();
        assert!(matches!(&v[0], Scalar::Str(Cow::Borrowed("ab"))));
        assert!(matches!(&v[1], Scalar::Str(Cow::Owned(s)) if s == "a\"b"));
        assert_eq!(v[2].id(), Some(12));
        assert_eq!(v[2].text().unwrap(), "12");
        assert_eq!(v[3], Scalar::Float(1.5));
        assert_eq!(v[4], Scalar::Bool(true));
        assert!(v[5].input().is_none());
        assert!(serde_json::from_str::<Scalar>("[1]").is_err());
    }
}
