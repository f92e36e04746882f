//! Wire formats: the non-streaming `chat.completion` / `text_completion`
//! objects and the SSE `data:` chunks of their streaming forms.
//!
//! Streaming chunks are written by hand around a pre-rendered head so that a
//! token costs exactly one buffer: with 10,000 open streams the per-token path
//! must not build a `serde_json::Value`.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::reply::{Content, Reply, ToolCall, counted_text};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completion,
}

/// Identity shared by every chunk of one response.
pub struct Meta {
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub prompt_tokens: u64,
}

impl Meta {
    pub fn new(api: Api, model: Option<&str>, prompt_tokens: u64) -> Meta {
        let prefix = match api {
            Api::Chat => "chatcmpl",
            Api::Completion => "cmpl",
        };
        Meta {
            api,
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: model.unwrap_or("mock").to_string(),
            prompt_tokens,
        }
    }

    fn usage(&self, completion_tokens: u64) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }

    /// The non-streaming response object.
    pub fn full(&self, reply: &Reply) -> Value {
        let text = match &reply.content {
            Content::Text(t) => Some(t.clone()),
            Content::Counted(n) => Some(counted_text(*n)),
            Content::Tools(_) => None,
        };
        let choice = match self.api {
            Api::Completion => json!({
                "index": 0,
                "text": text.unwrap_or_default(),
                "logprobs": null,
                "finish_reason": reply.finish_reason,
            }),
            Api::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if let Content::Tools(calls) = &reply.content {
                    message["tool_calls"] = calls
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            json!({
                                "id": call_id(&self.id, i),
                                "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments},
                            })
                        })
                        .collect();
                }
                json!({
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": reply.finish_reason,
                })
            }
        };
        json!({
            "id": self.id,
            "object": match self.api { Api::Chat => "chat.completion", Api::Completion => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": self.usage(reply.completion_tokens),
        })
    }

    pub fn chunks(&self) -> ChunkWriter {
        let object = match self.api {
            Api::Chat => "chat.completion.chunk",
            Api::Completion => "text_completion",
        };
        let head = format!(
            r#"data: {{"id":"{}","object":"{object}","created":{},"model":{},"choices":["#,
            self.id,
            self.created,
            Value::from(self.model.as_str()),
        );
        ChunkWriter {
            api: self.api,
            head: head.into_boxed_str(),
            id: self.id.clone().into_boxed_str(),
            prompt_tokens: self.prompt_tokens,
        }
    }
}

/// Tool call ids are derived from the response id: unique, yet predictable
/// within one response.
fn call_id(response_id: &str, index: usize) -> String {
    let tail = response_id.rsplit('-').next().unwrap_or(response_id);
    format!("call_{}_{index}", &tail[..tail.len().min(12)])
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";
const TAIL: &[u8] = br#","logprobs":null,"finish_reason":null}]}"#;

/// Renders the SSE chunks of one streaming response.
pub struct ChunkWriter {
    api: Api,
    head: Box<str>,
    id: Box<str>,
    prompt_tokens: u64,
}

impl ChunkWriter {
    fn start(&self, extra: usize) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.head.len() + 96 + extra);
        b.extend_from_slice(self.head.as_bytes());
        b
    }

    fn end(mut b: Vec<u8>, tail: &[u8]) -> Bytes {
        b.extend_from_slice(tail);
        b.extend_from_slice(b"\n\n");
        Bytes::from(b)
    }

    /// One text token; `first` adds the assistant role (chat).
    pub fn token(&self, token: &str, first: bool) -> Bytes {
        let mut b = self.start(token.len());
        self.token_open(&mut b, first);
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut b, token);
        Self::end(b, self.token_close())
    }

    /// Counted token `tok{i}` (plus a space unless last): no escaping needed.
    pub fn counted(&self, i: u64, last: bool, first: bool) -> Bytes {
        use std::io::Write;
        let mut b = self.start(24);
        self.token_open(&mut b, first);
        let _ = write!(b, "\"tok{i}{}\"", if last { "" } else { " " });
        Self::end(b, self.token_close())
    }

    fn token_open(&self, b: &mut Vec<u8>, first: bool) {
        b.extend_from_slice(match (self.api, first) {
            (Api::Chat, true) => br#"{"index":0,"delta":{"role":"assistant","content":"#,
            (Api::Chat, false) => br#"{"index":0,"delta":{"content":"#,
            (Api::Completion, _) => br#"{"index":0,"text":"#,
        });
    }

    fn token_close(&self) -> &'static [u8] {
        match self.api {
            Api::Chat => br#"},"logprobs":null,"finish_reason":null}]}"#,
            Api::Completion => TAIL,
        }
    }

    /// The chunk carrying `finish_reason`.
    pub fn finish(&self, reason: &str) -> Bytes {
        let mut b = self.start(0);
        b.extend_from_slice(match self.api {
            Api::Chat => br#"{"index":0,"delta":{}"#.as_slice(),
            Api::Completion => br#"{"index":0,"text":"""#.as_slice(),
        });
        b.extend_from_slice(br#","logprobs":null,"finish_reason":"#);
        let _ = serde_json::to_writer(&mut b, reason);
        Self::end(b, b"}]}")
    }

    /// `stream_options.include_usage`: empty `choices`, then `usage`.
    pub fn usage(&self, completion_tokens: u64) -> Bytes {
        let mut b = self.start(0);
        let p = self.prompt_tokens;
        let t = p + completion_tokens;
        b.extend_from_slice(
            format!(
                r#"],"usage":{{"prompt_tokens":{p},"completion_tokens":{completion_tokens},"total_tokens":{t}}}}}"#
            )
            .as_bytes(),
        );
        b.extend_from_slice(b"\n\n");
        Bytes::from(b)
    }

    /// A tool call's first delta: id, type, name and empty arguments.
    pub fn tool_open(&self, index: usize, call: &ToolCall, first: bool) -> Bytes {
        let mut delta = json!({"tool_calls": [{
            "index": index,
            "id": call_id(&self.id, index),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }]});
        if first {
            delta["role"] = "assistant".into();
            delta["content"] = Value::Null;
        }
        self.delta(&delta)
    }

    /// A piece of a tool call's arguments.
    pub fn tool_arguments(&self, index: usize, piece: &str) -> Bytes {
        self.delta(&json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    }

    fn delta(&self, delta: &Value) -> Bytes {
        let mut b = self.start(64);
        b.extend_from_slice(br#"{"index":0,"delta":"#);
        let _ = serde_json::to_writer(&mut b, delta);
        Self::end(b, TAIL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &Bytes) -> Value {
        let s = std::str::from_utf8(b).unwrap();
        let s = s
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn chunks_are_valid_json() {
        for api in [Api::Chat, Api::Completion] {
            let m = Meta::new(api, Some("m\"x"), 3);
            let w = m.chunks();
            let t = parse(&w.token("a \"q\"\n", true));
            assert_eq!(t["model"], "m\"x");
            let c = parse(&w.counted(7, false, false));
            let f = parse(&w.finish("length"));
            assert_eq!(f["choices"][0]["finish_reason"], "length");
            let u = parse(&w.usage(4));
            assert_eq!(u["usage"]["total_tokens"], 7);
            assert_eq!(u["choices"], json!([]));
            match api {
                Api::Chat => {
                    assert_eq!(t["choices"][0]["delta"]["role"], "assistant");
                    assert_eq!(t["choices"][0]["delta"]["content"], "a \"q\"\n");
                    assert_eq!(c["choices"][0]["delta"]["content"], "tok7 ");
                    let call = ToolCall {
                        name: "f".into(),
                        arguments: "{}".into(),
                    };
                    let o = parse(&w.tool_open(0, &call, true));
                    assert_eq!(
                        o["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
                        "f"
                    );
                    parse(&w.tool_arguments(0, "{\""));
                }
                Api::Completion => {
                    assert_eq!(t["choices"][0]["text"], "a \"q\"\n");
                    assert_eq!(c["choices"][0]["text"], "tok7 ");
                }
            }
        }
    }
}
