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

/// A cell value: a `Scalar` whose numbers are parsed from their JSON text by the standard
/// library, which rounds correctly. serde_json's default float parser may land one unit in the
/// last place off for long decimals, so `12345678901234.56` written as a JSON number would be
/// stored differently from the same text imported from a CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct CellScalar<'a>(pub Scalar<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for CellScalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de serde_json::value::RawValue = Deserialize::deserialize(d)?;
        let text = raw.get();
        if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(CellScalar(Scalar::Int(i)));
            }
            return text
                .parse::<f64>()
                .map(|f| CellScalar(Scalar::Float(f)))
                .map_err(de::Error::custom);
        }
        serde_json::from_str::<Scalar<'de>>(text)
            .map(CellScalar)
            .map_err(de::Error::custom)
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

    #[test]
    fn cell_numbers_round_like_the_standard_library() {
        // serde_json's default parser reads this one unit in the last place low.
        let text = "-1750515486855833.7";
        let body = format!(r#"[{text}, 12, "a\"b", true, 1e3]"#);
        let v: Vec<CellScalar> = serde_json::from_str(&body).unwrap();
        assert_eq!(v[0].0, Scalar::Float(text.parse::<f64>().unwrap()));
        assert_eq!(v[1].0, Scalar::Int(12));
        assert!(matches!(&v[2].0, Scalar::Str(s) if s == "a\"b"));
        assert_eq!(v[3].0, Scalar::Bool(true));
        assert_eq!(v[4].0, Scalar::Float(1000.0));
        let none: Option<CellScalar> = serde_json::from_str("null").unwrap();
        assert!(none.is_none());
        assert!(serde_json::from_str::<CellScalar>("[1]").is_err());
    }
}
