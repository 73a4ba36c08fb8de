//! Request fields read as their JSON Schema says, for `deserialize_with`.
//!
//! Integers as JSON spells them: `1299`, `1299.0` and `1.299e3` are the
//! same JSON number, and JSON Schema counts each as an `integer`, so an
//! integer field of a request accepts all three ([`whole`]); a number with
//! a fraction (`12.99`) is still refused. A number written with a fraction
//! or an exponent is read as an IEEE double, which is exact up to 2^53
//! (RFC 8259 §6): beyond that only plain digits are accepted.
//!
//! Objects as objects: serde builds a struct from a JSON array too
//! (`[1299, "EUR"]` for a `Money`), which the schema (`type: object`)
//! refuses; [`object`] takes only an object. (A request body itself must
//! be an object: `web::text` refuses any other.)

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Unexpected, Visitor};
use serde_json::{Map, Value};

/// A field whose type is a struct: only a JSON object is taken.
///
/// # Errors
/// Not an object, or what the struct refuses.
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let members = Map::<String, Value>::deserialize(deserializer)?;
    serde_json::from_value(Value::Object(members)).map_err(de::Error::custom)
}

/// The same for an optional field (`null` or absent is `None`; pair it
/// with `#[serde(default)]`).
///
/// # Errors
/// As [`object`].
pub fn object_option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Option::<Map<String, Value>>::deserialize(deserializer)?
        .map(|members| serde_json::from_value(Value::Object(members)))
        .transpose()
        .map_err(de::Error::custom)
}

/// A merge patch's field whose `null` empties it (a list, an object):
/// `None` when left out (pair it with `#[serde(default)]`), `Some(empty)`
/// for `null`.
///
/// # Errors
/// What `T` refuses.
pub fn null_empties<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(|value| Some(value.unwrap_or_default()))
}

/// An array of structs: each item only a JSON object.
///
/// # Errors
/// As [`object`], for any item.
pub fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Vec::<Map<String, Value>>::deserialize(deserializer)?
        .into_iter()
        .map(|members| serde_json::from_value(Value::Object(members)))
        .collect::<Result<Vec<T>, _>>()
        .map_err(de::Error::custom)
}

/// Largest magnitude a double holds exactly as an integer.
const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

/// `#[serde(deserialize_with = "kernel::json::whole")]` on an integer field.
///
/// # Errors
/// Not a number, a number with a fraction, or out of the field's range.
pub fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    deserializer.deserialize_i64(Whole(PhantomData))
}

/// The same for an optional field (`null` or absent is `None`; pair it
/// with `#[serde(default)]`).
///
/// # Errors
/// As [`whole`].
pub fn whole_option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    deserializer.deserialize_option(Optional(PhantomData))
}

struct Whole<T>(PhantomData<T>);

impl<T: TryFrom<i64>> Whole<T> {
    fn fit<E: de::Error>(&self, value: i64) -> Result<T, E> {
        T::try_from(value).map_err(|_| E::invalid_value(Unexpected::Signed(value), self))
    }
}

impl<T: TryFrom<i64>> Visitor<'_> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `i32`, `i64`: the words serde's own integers use.
        let name = std::any::type_name::<T>();
        write!(f, "{}", name.rsplit("::").next().unwrap_or(name))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        self.fit(value)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        let signed = i64::try_from(value)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))?;
        self.fit(signed)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        if value.fract() == 0.0 && value.abs() <= EXACT {
            // Exact: a whole double of at most 2^53 converts without loss.
            self.fit(value as i64)
        } else {
            Err(E::invalid_type(Unexpected::Float(value), &self))
        }
    }
}

struct Optional<T>(PhantomData<T>);

impl<'de, T: TryFrom<i64>> Visitor<'de> for Optional<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Whole::<T>(PhantomData).expecting(f)?;
        f.write_str(" or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        whole(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Pair {
        a: i32,
        b: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        #[serde(deserialize_with = "super::object")]
        one: Pair,
        #[serde(default, deserialize_with = "super::object_option")]
        maybe: Option<Pair>,
        #[serde(default, deserialize_with = "super::objects")]
        many: Vec<Pair>,
    }

    #[test]
    fn structs_come_from_objects_only() {
        let outer: Outer = serde_json::from_str(
            r#"{"one": {"a": 1, "b": "x"}, "maybe": null, "many": [{"a": 2, "b": "y"}]}"#,
        )
        .unwrap();
        assert_eq!(
            outer.one,
            Pair {
                a: 1,
                b: "x".into()
            }
        );
        assert_eq!(outer.maybe, None);
        assert_eq!(
            outer.many,
            [Pair {
                a: 2,
                b: "y".into()
            }]
        );
        // serde alone takes these arrays for the struct.
        assert!(serde_json::from_str::<Pair>(r#"[1, "x"]"#).is_ok());
        for refused in [
            r#"{"one": [1, "x"]}"#,
            r#"{"one": {"a": 1, "b": "x"}, "maybe": [1, "x"]}"#,
            r#"{"one": {"a": 1, "b": "x"}, "many": [[1, "x"]]}"#,
        ] {
            let err = serde_json::from_str::<Outer>(refused).unwrap_err();
            assert!(
                err.to_string().contains("expected a map"),
                "{refused}: {err}"
            );
        }
        let inner = serde_json::from_str::<Outer>(r#"{"one": {"a": 1}}"#).unwrap_err();
        assert!(inner.to_string().contains("missing field `b`"), "{inner}");
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Line {
        #[serde(deserialize_with = "super::whole")]
        quantity: i32,
        #[serde(default, deserialize_with = "super::whole_option")]
        threshold: Option<i32>,
    }

    fn line(json: &str) -> Result<Line, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn every_spelling_of_an_integer_is_one() {
        for json in [
            r#"{"quantity": 334}"#,
            r#"{"quantity": 334.0}"#,
            r#"{"quantity": 3.34e2}"#,
            r#"{"quantity": 33400e-2}"#,
        ] {
            assert_eq!(
                line(json),
                Ok(Line {
                    quantity: 334,
                    threshold: None
                }),
                "{json}"
            );
        }
        assert_eq!(
            line(r#"{"quantity": -2147483648.0}"#).unwrap().quantity,
            i32::MIN
        );
        let with = line(r#"{"quantity": 1, "threshold": 5.0}"#).unwrap();
        assert_eq!(with.threshold, Some(5));
        let null = line(r#"{"quantity": 1, "threshold": null}"#).unwrap();
        assert_eq!(null.threshold, None);
    }

    #[test]
    fn fractions_other_types_and_out_of_range_are_refused() {
        let fraction = line(r#"{"quantity": 12.99}"#).unwrap_err();
        assert!(
            fraction.contains("floating point `12.99`, expected i32"),
            "{fraction}"
        );
        assert!(line(r#"{"quantity": "3"}"#).is_err());
        assert!(line(r#"{"quantity": true}"#).is_err());
        let range = line(r#"{"quantity": 2147483648}"#).unwrap_err();
        assert!(range.contains("expected i32"), "{range}");
        assert!(line(r#"{"quantity": 2147483648.0}"#).is_err());
        assert!(line(r#"{"quantity": 1, "threshold": 0.5}"#).is_err());
        // Past 2^53 a double no longer tells which integer was written.
        assert!(serde_json::from_str::<Money>(r#"{"amount": 1e17}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Money>(r#"{"amount": 100000000000000000}"#)
                .unwrap()
                .amount,
            100_000_000_000_000_000
        );
    }

    #[derive(Debug, Deserialize)]
    struct Money {
        #[serde(deserialize_with = "super::whole")]
        amount: i64,
    }
}
