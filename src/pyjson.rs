//! JSON byte-for-byte as Python's `json.dumps` writes it by default:
//! separators `", "` and `": "`, `ensure_ascii` (every character outside
//! printable ASCII as `\uXXXX`, astral ones as surrogate pairs) and key order
//! as written. serde_json differs in all three, and GitLab's clients and tests
//! compare these bytes (Duo Chat NDJSON events, v4 code suggestion SSE data).

/// A JSON value with ordered object keys.
#[derive(Clone, Debug, PartialEq)]
pub enum Py {
    Null,
    Bool(bool),
    Int(u64),
    Str(String),
    List(Vec<Py>),
    Obj(Vec<(String, Py)>),
}

impl Py {
    pub fn str(s: impl Into<String>) -> Py {
        Py::Str(s.into())
    }

    pub fn opt_str(s: Option<&str>) -> Py {
        s.map_or(Py::Null, Py::str)
    }

    pub fn obj<const N: usize>(fields: [(&str, Py); N]) -> Py {
        Py::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
}

pub fn dumps(v: &Py, out: &mut String) {
    match v {
        Py::Null => out.push_str("null"),
        Py::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Py::Int(n) => out.push_str(&n.to_string()),
        Py::Str(s) => string(s, out),
        Py::List(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                dumps(v, out);
            }
            out.push(']');
        }
        Py::Obj(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                string(k, out);
                out.push_str(": ");
                dumps(v, out);
            }
            out.push('}');
        }
    }
}

fn string(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// `json.dumps(v)` as a string.
pub fn to_string(v: &Py) -> String {
    let mut out = String::new();
    dumps(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_lists_match_python() {
        // python3 -c 'import json; print(json.dumps(["é€😀\x01\x7f", {"a": None}]))'
        let v = Py::List(vec![Py::str("é€😀\u{1}\u{7f}"), Py::obj([("a", Py::Null)])]);
        assert_eq!(
            to_string(&v),
            r#"["\u00e9\u20ac\ud83d\ude00\u0001\u007f", {"a": null}]"#
        );
        assert_eq!(to_string(&Py::str("a\"b\\c\nd")), r#""a\"b\\c\nd""#);
    }
}
