//! What the mock answers: the OpenAI request shapes it reads and the
//! deterministic reply derived from them.
//!
//! Tests assert on replies, so a reply is a pure function of the request: an
//! echo of the last user message by default, or scripted with `MOCK_REPLY:` /
//! `MOCK_TOOL:` directive lines, then cut by `stop` and `max_tokens`. A token
//! is one whitespace-separated word plus the whitespace after it, so the
//! concatenated stream deltas always equal the non-streaming content.

use serde::Deserialize;
use serde_json::Value;

use crate::knobs::{directive, directives};

/// `stop`: one string or a list.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    fn list(&self) -> &[String] {
        match self {
            Stop::One(s) => std::slice::from_ref(s),
            Stop::Many(v) => v,
        }
    }
}

#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Deserialize, Debug)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
}

/// `POST /v1/chat/completions`. Unknown fields are accepted and ignored;
/// known ones are type-checked.
#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, rename = "temperature")]
    _temperature: Option<f64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
}

/// `prompt`: a string or a list of strings.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/completions` (legacy text completion).
#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default, rename = "temperature")]
    _temperature: Option<f64>,
    #[serde(default)]
    pub stop: Option<Stop>,
}

/// The text of a message's `content`: a string, or the `text` of its parts
/// joined by newlines.
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

impl ChatRequest {
    /// The last `user` message's text, and whether it is the final message
    /// (a tool result or assistant turn after it means the script moved on).
    pub fn last_user(&self) -> (String, bool) {
        match self.messages.iter().rposition(|m| m.role == "user") {
            Some(i) => (
                content_text(self.messages[i].content.as_ref()),
                i + 1 == self.messages.len(),
            ),
            None => (String::new(), false),
        }
    }

    /// Prompt tokens: words in every message.
    pub fn prompt_tokens(&self) -> u64 {
        self.messages
            .iter()
            .map(|m| word_count(&content_text(m.content.as_ref())))
            .sum()
    }

    /// `tool_choice` as a constraint: `None` = tools off, `Some(Some(name))` =
    /// that function is forced, `Some(None)` = model's choice.
    fn tool_policy(&self) -> Option<Option<&str>> {
        if self.tools.as_ref().is_none_or(|t| t.is_empty()) {
            return None;
        }
        match &self.tool_choice {
            Some(Value::String(s)) if s == "none" => None,
            Some(Value::Object(o)) => Some(
                o.get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str),
            ),
            _ => Some(None),
        }
    }

    pub fn stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    pub fn plan(&self, forced_tokens: Option<u64>) -> Reply {
        let (text, is_last) = self.last_user();
        let max = self.max_completion_tokens.or(self.max_tokens);
        let stop = self.stop.as_ref().map_or(&[][..], Stop::list);
        if is_last && let Some(forced) = self.tool_policy() {
            let mut calls: Vec<ToolCall> = directives(&text, "MOCK_TOOL:")
                .filter_map(ToolCall::parse)
                .collect();
            if calls.is_empty()
                && let Some(name) = forced
            {
                calls.push(ToolCall {
                    name: name.to_string(),
                    arguments: "{}".to_string(),
                });
            }
            if !calls.is_empty() {
                return Reply::tools(calls);
            }
        }
        Reply::text(&text, forced_tokens, stop, max)
    }
}

impl CompletionRequest {
    pub fn prompt_text(&self) -> String {
        match &self.prompt {
            Prompt::One(s) => s.clone(),
            Prompt::Many(v) => v.join("\n"),
        }
    }

    /// The prompt, then the suffix: where directives are looked for.
    pub fn script_text(&self) -> String {
        let mut t = self.prompt_text();
        if let Some(s) = &self.suffix {
            t.push('\n');
            t.push_str(s);
        }
        t
    }

    pub fn prompt_tokens(&self) -> u64 {
        word_count(&self.prompt_text()) + self.suffix.as_deref().map_or(0, word_count)
    }

    pub fn stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    pub fn plan(&self, forced_tokens: Option<u64>) -> Reply {
        let stop = self.stop.as_ref().map_or(&[][..], Stop::list);
        Reply::text(&self.prompt_text(), forced_tokens, stop, self.max_tokens)
    }
}

pub fn word_count(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// One scripted function call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

impl ToolCall {
    /// `<name> <json-args>`; arguments are passed through unchecked (a test
    /// may want invalid ones) and default to `{}`.
    fn parse(s: &str) -> Option<ToolCall> {
        let s = s.trim();
        let (name, args) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
        let args = args.trim();
        (!name.is_empty()).then(|| ToolCall {
            name: name.to_string(),
            arguments: if args.is_empty() { "{}" } else { args }.to_string(),
        })
    }

    /// Streamed argument pieces: at most this many characters each.
    const PIECE_CHARS: usize = 8;

    /// End of the argument piece starting at byte `pos`.
    pub fn piece_end(&self, pos: usize) -> usize {
        let rest = &self.arguments[pos..];
        rest.char_indices()
            .nth(Self::PIECE_CHARS)
            .map_or(self.arguments.len(), |(i, _)| pos + i)
    }

    /// Stream chunks this call takes: the header (id, name) plus the pieces.
    fn chunks(&self) -> u64 {
        1 + self.arguments.chars().count().div_ceil(Self::PIECE_CHARS) as u64
    }
}

/// The reply body before rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Text, already cut by `stop` / `max_tokens`.
    Text(String),
    /// `tok0 tok1 ... tok{n-1}`, generated while streaming (never held whole).
    Counted(u64),
    Tools(Vec<ToolCall>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub content: Content,
    pub finish_reason: &'static str,
    pub completion_tokens: u64,
}

impl Reply {
    fn tools(calls: Vec<ToolCall>) -> Reply {
        Reply {
            completion_tokens: calls.iter().map(ToolCall::chunks).sum(),
            content: Content::Tools(calls),
            finish_reason: "tool_calls",
        }
    }

    fn text(input: &str, forced: Option<u64>, stop: &[String], max: Option<u64>) -> Reply {
        let text = match forced {
            // Counted tokens stay lazy unless a stop string needs the text.
            Some(n) if stop.iter().all(String::is_empty) => {
                let kept = max.map_or(n, |m| m.min(n));
                return Reply {
                    content: Content::Counted(kept),
                    finish_reason: if kept < n { "length" } else { "stop" },
                    completion_tokens: kept,
                };
            }
            Some(n) => counted_text(n),
            None => scripted(input),
        };
        let text = match stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            Some(at) => &text[..at],
            None => &text[..],
        };
        let mut finish = "stop";
        let mut end = text.len();
        let mut count = 0;
        let mut pos = 0;
        while let Some(next) = token_end(text, pos) {
            if max.is_some_and(|m| count >= m) {
                finish = "length";
                end = text[..pos].trim_end().len();
                break;
            }
            count += 1;
            pos = next;
        }
        Reply {
            content: Content::Text(text[..end].to_string()),
            finish_reason: finish,
            completion_tokens: count,
        }
    }
}

/// The default echo, or the `MOCK_REPLY:` text with `\n`, `\t`, `\\` unescaped.
fn scripted(input: &str) -> String {
    match directive(input, "MOCK_REPLY:") {
        Some(raw) => unescape(raw),
        None => format!(
            "mock reply to: {}",
            input.chars().take(40).collect::<String>()
        ),
    }
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// `tok0 tok1 ... tok{n-1}` as one string (non-streaming, or cut by `stop`).
pub fn counted_text(n: u64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for i in 0..n {
        let _ = write!(s, "tok{i}{}", if i + 1 < n { " " } else { "" });
    }
    s
}

/// End (byte offset) of the token starting at `pos`: whitespace before the
/// word (only the first token has any), the word, the whitespace after it.
pub fn token_end(s: &str, pos: usize) -> Option<usize> {
    let rest = s.get(pos..).filter(|r| !r.is_empty())?;
    let mut in_word = false;
    let mut after_word = false;
    for (i, c) in rest.char_indices() {
        let ws = c.is_whitespace();
        if after_word && !ws {
            return Some(pos + i);
        }
        if !ws {
            in_word = true;
        } else if in_word {
            after_word = true;
        }
    }
    Some(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<&str> {
        let mut out = vec![];
        let mut pos = 0;
        while let Some(end) = token_end(s, pos) {
            out.push(&s[pos..end]);
            pos = end;
        }
        out
    }

    #[test]
    fn tokens_are_words_with_following_whitespace() {
        assert_eq!(toks("  a bb\n  c "), vec!["  a ", "bb\n  ", "c "]);
        assert_eq!(toks(""), Vec::<&str>::new());
        assert_eq!(toks("é ü"), vec!["é ", "ü"]);
    }

    #[test]
    fn stop_then_max_tokens() {
        let r = Reply::text("MOCK_REPLY: a b c STOP d", None, &["STOP".into()], None);
        assert_eq!(r.content, Content::Text("a b c ".into()));
        assert_eq!((r.finish_reason, r.completion_tokens), ("stop", 3));
        let r = Reply::text("MOCK_REPLY: a b c d", None, &[], Some(2));
        assert_eq!(r.content, Content::Text("a b".into()));
        assert_eq!((r.finish_reason, r.completion_tokens), ("length", 2));
        let r = Reply::text("", Some(5), &[], Some(3));
        assert_eq!(r.content, Content::Counted(3));
        let r = Reply::text("", Some(5), &["tok3".into()], None);
        assert_eq!(r.content, Content::Text("tok0 tok1 tok2 ".into()));
    }

    #[test]
    fn reply_directive_unescapes() {
        assert_eq!(scripted("x\n# MOCK_REPLY: a\\nb\\\\n"), "a\nb\\n");
        assert_eq!(
            scripted("hello there, this is a long message of more than forty chars"),
            "mock reply to: hello there, this is a long message of m"
        );
    }

    #[test]
    fn tool_pieces_cover_arguments() {
        let c = ToolCall::parse(r#"get_weather {"city": "Zürich, CH"}"#).unwrap();
        let mut pos = 0;
        let mut pieces = vec![];
        while pos < c.arguments.len() {
            let end = c.piece_end(pos);
            pieces.push(&c.arguments[pos..end]);
            pos = end;
        }
        assert_eq!(pieces.concat(), c.arguments);
        assert_eq!(c.chunks(), 1 + pieces.len() as u64);
    }
}
