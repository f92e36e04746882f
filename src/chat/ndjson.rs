//! Duo Chat event lines byte-for-byte as upstream writes them:
//! `json.dumps({"type": ..., "data": {...}})` + `\n` (see `crate::pyjson`).

pub use crate::pyjson::Py;
use crate::pyjson::dumps;

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
