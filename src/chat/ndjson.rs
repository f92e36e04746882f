//! Event lines byte-for-byte as upstream writes them: Python's
//! `json.dumps({"type": ..., "data": {...}})` with its default separators
//! (`", "`, `": "`), `ensure_ascii` (every character outside printable ASCII
//! as `\uXXXX`, astral ones as surrogate pairs) and key order as written.
//! serde_json's output differs in all three, and Rails' line splitter and
//! tests compare these bytes.

/// A JSON value with ordered object keys.
#[derive(Clone, Debug, PartialEq)]
pub enum Py {
    Null,
    Bool(bool),
    Int(u64),
    Str(String),
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

/// One event line: `{"type": <kind>, "data": <data>}` + `\n`.
pub fn event(kind: &str, data: Py) -> String {
    let mut out = String::new();
    dumps(
        &Py::obj([("type", Py::str(kind)), ("data", data)]),
        &mut out,
    );
    out.push('\n');
    out
}

pub fn dumps(v: &Py, out: &mut String) {
    match v {
        Py::Null => out.push_str("null"),
        Py::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Py::Int(n) => out.push_str(&n.to_string()),
        Py::Str(s) => string(s, out),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_json_dumps() {
        let line = event(
            "final_answer_delta",
            Py::obj([
                ("text", Py::str("Hé \"q\" \\ \n\t😀\u{7f}\u{1}")),
                ("finish_reason", Py::Null),
            ]),
        );
        // python3 -c 'import json; print(json.dumps({"type": "final_answer_delta",
        //   "data": {"text": "Hé \"q\" \\ \n\t😀\x7f\x01", "finish_reason": None}}))'
        assert_eq!(
            line,
            "{\"type\": \"final_answer_delta\", \"data\": {\"text\": \"H\\u00e9 \\\"q\\\" \\\\ \\n\\t\\ud83d\\ude00\\u007f\\u0001\", \"finish_reason\": null}}\n"
        );
        let line = event(
            "error",
            Py::obj([("message", Py::str("x")), ("retryable", Py::Bool(false))]),
        );
        assert_eq!(
            line,
            "{\"type\": \"error\", \"data\": {\"message\": \"x\", \"retryable\": false}}\n"
        );
    }
}
