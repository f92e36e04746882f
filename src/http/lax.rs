//! Pydantic's lax mode for the number and boolean fields of request bodies:
//! upstream's models accept `"42"` (and `42.0`) for an integer and `"true"`,
//! `1` or `"yes"` for a boolean, and some clients send them so
//! (`project_id` as a string). Strings stay strict, as in pydantic 2: a
//! number is no string. Errors never repeat the value (it could be a key
//! sent in the wrong field).

use serde::{Deserialize, Deserializer, de::Error};
use serde_json::Value;

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => {
            let t = s.trim();
            // "42", "+42", "-7", "42.0", "42.00"
            let t = match t.split_once('.') {
                Some((int, zeros)) if !zeros.is_empty() && zeros.bytes().all(|b| b == b'0') => int,
                _ => t,
            };
            t.parse::<i64>().ok()
        }
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn bool_of(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "t" | "yes" | "y" | "on" => Some(true),
            "0" | "false" | "f" | "no" | "n" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

const INT: &str = "expected an integer (a number or a string of digits)";
const BOOL: &str = "expected a boolean (true/false, 1/0, or a string such as \"yes\")";

/// An integer field.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    int_of(&Value::deserialize(d)?).ok_or_else(|| D::Error::custom(INT))
}

/// An optional integer field (`null` or absent is `None`; use with `#[serde(default)]`).
pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => int_of(&v).map(Some).ok_or_else(|| D::Error::custom(INT)),
    }
}

/// A boolean field.
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    bool_of(&Value::deserialize(d)?).ok_or_else(|| D::Error::custom(BOOL))
}

/// An optional boolean field (`null` or absent is `None`; use with `#[serde(default)]`).
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => bool_of(&v).map(Some).ok_or_else(|| D::Error::custom(BOOL)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_pydantic_accepts() {
        for (v, want) in [
            (json!(42), Some(42)),
            (json!("42"), Some(42)),
            (json!(" -7 "), Some(-7)),
            (json!("42.0"), Some(42)),
            (json!(42.0), Some(42)),
            (json!(true), Some(1)),
            (json!("4.5"), None),
            (json!(4.5), None),
            (json!("sk-abc"), None),
            (json!([1]), None),
        ] {
            assert_eq!(int_of(&v), want, "{v}");
        }
        for (v, want) in [
            (json!(true), Some(true)),
            (json!("False"), Some(false)),
            (json!("yes"), Some(true)),
            (json!(0), Some(false)),
            (json!(1), Some(true)),
            (json!(2), None),
            (json!("maybe"), None),
        ] {
            assert_eq!(bool_of(&v), want, "{v}");
        }
    }
}
