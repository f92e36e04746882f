//! Code generation: the model writes new code at the cursor from an
//! instruction the developer left in a comment (or sent alongside).
//!
//! Two ways in, as upstream: the prompt path (`code_suggestions/generations`,
//! a prompt per model family with the sampling parameters GitLab tuned for it)
//! and the legacy path (the client's own prompt sent as is, with fixed
//! sampling). The prompt texts are ours; the variable names, the literal
//! `{{cursor}}` insertion marker and the per-family parameters are facts the
//! clients and administrators rely on. Whatever the model answers is cleaned
//! up here (fences, repeated code, whitespace) so the editor can insert it.

use std::{collections::VecDeque, time::Duration};

use futures_util::{Stream, StreamExt, stream};
use serde_json::{Map, Value};

use super::completion::estimate_tokens;
use crate::models::{
    ChatRequest, Completion, EventStream, Family, Message, ModelError, ModelTarget, Role,
    StreamEvent,
    service::{Feature, ModelService},
};

pub const GENERATIONS: Feature = Feature {
    category: "code_suggestions",
    unit_primitive: "generate_code",
};

/// The one generation prompt id this gateway serves.
pub const PROMPT_ID: &str = "code_suggestions/generations";

/// Where the model should write; the literal text the model sees.
pub const CURSOR: &str = "{{cursor}}";

/// What a code generation request carries, for the prompt path.
#[derive(Clone, Debug, Default)]
pub struct GenerationInput {
    pub file_name: String,
    /// The language as named in the prompt (client's identifier, else detected).
    pub language: Option<String>,
    /// Content above the cursor.
    pub prefix: String,
    /// `prompt_enhancer` keys from the language server, merged into the prompt variables.
    pub enhancer: Map<String, Value>,
}

impl GenerationInput {
    /// The prefix as a fenced Markdown block: `instruction` and `user_instruction`.
    pub fn fenced_prefix(&self, prefix: &str) -> String {
        format!(
            "```{}\n{prefix}\n```",
            self.language.as_deref().unwrap_or_default()
        )
    }

    /// A `prompt_enhancer` value as text, when present and not empty.
    fn enhancer_text(&self, key: &str) -> Option<String> {
        let text = match self.enhancer.get(key)? {
            Value::Null => return None,
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        };
        (!text.trim().is_empty()).then_some(text)
    }

    /// `examples_array` as (example, response) pairs.
    fn examples(&self) -> Vec<(String, String)> {
        let Some(Value::Array(items)) = self.enhancer.get("examples_array") else {
            return Vec::new();
        };
        let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        items
            .iter()
            .filter_map(|v| Some((field(v, "example")?, field(v, "response")?)))
            .collect()
    }
}

/// Sampling and layout of one family's generation prompt (§6.7 of the spec).
struct Params {
    /// The prompt directory: also names the prompt.
    dir: &'static str,
    temperature: Option<f64>,
    max_tokens: u32,
    stop: &'static [&'static str],
}

fn params(family: &Family) -> Params {
    let dir = family.prompt_dirs.first().copied().unwrap_or("base");
    let p = |temperature: Option<f64>, max_tokens: u32| Params {
        dir,
        temperature,
        max_tokens,
        stop: &[],
    };
    match dir {
        "codegemma" => p(Some(0.95), 512),
        "codellama" => p(Some(0.95), 256),
        "codestral" => p(Some(0.3), 256),
        "deepseekcoder" => p(Some(0.95), 512),
        "gpt" => p(Some(1.0), 512),
        "llama3" => p(family.temperature, 256),
        "mistral" => p(Some(0.95), 256),
        "mixtral" => Params {
            stop: &["UNABLE_TO_GENERATE"],
            ..p(Some(0.2), 2048)
        },
        _ => Params {
            dir: "base",
            ..p(Some(0.2), 2048)
        },
    }
}

/// The prompt's display name, reported as `model.name` on the prompt path.
pub fn prompt_name(family: &Family) -> String {
    match params(family).dir {
        "base" => "Code Generations".to_string(),
        _ => format!("{} Code Generations", family.name),
    }
}

/// Tokens kept free for our instructions and the chat template.
const OVERHEAD_TOKENS: u64 = 512;

fn system_text(language: &str, file_name: &str, unable_marker: bool) -> String {
    let mut s = format!(
        "You write {language} code inside a developer's editor, in the file `{file_name}`. \
You are shown the file up to the insertion point, which is marked {CURSOR}. Write the code \
that belongs at {CURSOR}, doing what the comments right before it ask for and fitting the \
existing code's style. Answer with the new code only, in one Markdown code block: no \
explanation, and do not repeat code that is already in the file."
    );
    if unable_marker {
        s.push_str(" If the request cannot be turned into code, answer UNABLE_TO_GENERATE.");
    }
    s
}

/// The chat request for a generation on the prompt path.
pub fn build(family: &Family, input: &GenerationInput, timeout: Duration) -> ChatRequest {
    let p = params(family);
    let language = input.language.as_deref().unwrap_or("source");
    let enhancer_len: u64 = input
        .enhancer
        .values()
        .map(|v| estimate_tokens(&v.to_string()))
        .sum();
    let budget = family
        .max_context_tokens
        .saturating_sub(u64::from(p.max_tokens) + OVERHEAD_TOKENS + enhancer_len);
    let above = input
        .enhancer_text("trimmed_content_above_cursor")
        .unwrap_or_else(|| input.prefix.clone());
    let prefix = super::completion::keep_end(&above, budget);
    let fenced = input.fenced_prefix(prefix);
    let user_instruction = input
        .enhancer_text("user_instruction")
        .unwrap_or_else(|| fenced.clone());

    let mut user = String::new();
    if let Some(libs) = input.enhancer_text("libraries") {
        user.push_str(&format!(
            "Libraries the project uses (prefer these):\n{libs}\n\n"
        ));
    }
    for (key, title) in [
        ("related_files", "Files related to this one"),
        ("related_snippets", "Code related to this file"),
    ] {
        if let Some(text) = input.enhancer_text(key) {
            user.push_str(&format!("{title}:\n{text}\n\n"));
        }
    }
    for (example, response) in input.examples() {
        user.push_str(&format!(
            "Example request:\n{example}\nExample answer:\n{response}\n\n"
        ));
    }
    if p.dir == "base" {
        // The generic prompt hands the instruction over as the whole user turn.
        user.push_str(&user_instruction);
    } else {
        if input.enhancer.contains_key("user_instruction") {
            user.push_str(&format!("Instruction: {user_instruction}\n\n"));
        }
        user.push_str(&format!(
            "The file so far:\n```{lang}\n{prefix}{CURSOR}",
            lang = input.language.as_deref().unwrap_or_default(),
        ));
        if let Some(below) = input.enhancer_text("trimmed_content_below_cursor") {
            user.push_str(&below);
        }
        user.push_str(&format!(
            "\n```\n\nWrite the code for {CURSOR} now, as one Markdown code block."
        ));
    }
    let messages = vec![
        Message::new(
            Role::System,
            system_text(language, &input.file_name, p.dir == "mixtral"),
        ),
        Message::new(Role::User, user),
    ];
    let mut req = ChatRequest::new(messages, timeout);
    req.temperature = p.temperature;
    req.max_tokens = Some(p.max_tokens);
    req.stop = p.stop.iter().map(|s| s.to_string()).collect();
    req
}

/// The legacy path: the client's messages, sent with fixed sampling.
pub fn build_legacy(family: &Family, messages: Vec<Message>, timeout: Duration) -> ChatRequest {
    let mut req = ChatRequest::new(messages, timeout);
    req.temperature = Some(0.2);
    req.max_tokens = Some(2048);
    req.top_p = Some(0.95);
    if family.id == "mistral" {
        req.stop = vec!["</new_code>".to_string()];
    }
    req
}

/// Mixtral escapes underscores Markdown-style.
fn unescape(family: &Family, text: &str) -> String {
    if family.id == "mixtral" {
        text.replace("\\_", "_")
    } else {
        text.to_string()
    }
}

fn is_fence(line: &str) -> bool {
    line.trim_start().starts_with("```")
}

/// The content of the first fenced block (to its end, or to the end of the
/// text when the model was cut off), or the whole text when there is none.
fn strip_fences(text: &str) -> &str {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if is_fence(line) {
            let body = &text[offset + line.len()..];
            let mut end = 0;
            for l in body.split_inclusive('\n') {
                if is_fence(l) {
                    return &body[..end];
                }
                end += l.len();
            }
            return body;
        }
        offset += line.len();
    }
    text
}

/// Lines repeated from the end of the prefix at the start of the answer (the
/// model "reflecting" the instruction comment or the code before it) are dropped.
/// A match must carry some substance, so a lone `}` or `end` is kept.
fn drop_reflection<'a>(text: &'a str, prefix: &str) -> &'a str {
    const MAX_LINES: usize = 50;
    const MIN_CHARS: usize = 8;
    let tail: Vec<&str> = prefix
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(MAX_LINES)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let body = text.trim_start_matches(['\n', '\r']);
    let lines: Vec<&str> = body.split_inclusive('\n').take(MAX_LINES).collect();
    for k in (1..=tail.len().min(lines.len())).rev() {
        let head = &lines[..k];
        let matches = head
            .iter()
            .zip(&tail[tail.len() - k..])
            .all(|(a, b)| a.trim() == *b);
        let chars: usize = head.iter().map(|l| l.trim().len()).sum();
        if matches && chars >= MIN_CHARS {
            let cut: usize = head.iter().map(|l| l.len()).sum();
            return &body[cut..];
        }
    }
    text
}

/// The clean-up of a whole (non-streamed) answer: fences stripped, repeated
/// code dropped, whitespace trimmed, and a newline first when the prefix does
/// not end with one (so the code starts on its own line).
pub fn clean(family: &Family, text: &str, prefix: &str) -> String {
    let text = unescape(family, text);
    let code = drop_reflection(strip_fences(&text), prefix).trim();
    if code.is_empty() || prefix.is_empty() || prefix.ends_with('\n') {
        code.to_string()
    } else {
        format!("\n{code}")
    }
}

/// Re-chunks a streamed answer into whole lines and drops fence lines.
#[derive(Debug)]
pub struct LineChunker {
    family: &'static Family,
    pending: String,
}

impl LineChunker {
    pub fn new(family: &'static Family) -> Self {
        Self {
            family,
            pending: String::new(),
        }
    }

    /// The complete lines `delta` finishes, in order.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.pending.push_str(delta);
        let Some(last_nl) = self.pending.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.pending.split_off(last_nl + 1);
        let done = std::mem::replace(&mut self.pending, rest);
        done.split_inclusive('\n')
            .filter(|l| !is_fence(l))
            .map(|l| unescape(self.family, l))
            .collect()
    }

    /// The unterminated last line, if any.
    pub fn finish(self) -> Option<String> {
        (!self.pending.is_empty() && !is_fence(&self.pending))
            .then(|| unescape(self.family, &self.pending))
    }
}

/// A non-streamed generation, cleaned up against `prefix`.
pub async fn generate(
    models: &ModelService,
    target: &ModelTarget,
    request: &ChatRequest,
    prefix: &str,
) -> Result<Completion, ModelError> {
    let mut c = models.chat(target, request, GENERATIONS).await?;
    c.text = clean(target.family, &c.text, prefix);
    Ok(c)
}

struct LineStream {
    events: EventStream,
    chunker: Option<LineChunker>,
    ready: VecDeque<String>,
}

/// A streamed generation, one chunk per line, fence lines dropped. Dropping
/// the stream cancels the model call.
pub async fn generate_stream(
    models: &ModelService,
    target: &ModelTarget,
    request: &ChatRequest,
) -> Result<impl Stream<Item = Result<String, ModelError>> + Send + use<>, ModelError> {
    let events = models.chat_stream(target, request, GENERATIONS).await?;
    let state = LineStream {
        events,
        chunker: Some(LineChunker::new(target.family)),
        ready: VecDeque::new(),
    };
    Ok(stream::unfold(state, |mut s| async move {
        loop {
            if let Some(line) = s.ready.pop_front() {
                return Some((Ok(line), s));
            }
            let chunker = s.chunker.as_mut()?;
            match s.events.next().await {
                Some(Ok(StreamEvent::Text(t))) => s.ready.extend(chunker.push(&t)),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    s.chunker = None;
                    return Some((Err(e), s));
                }
                None => {
                    if let Some(rest) = s.chunker.take().and_then(LineChunker::finish) {
                        s.ready.push_back(rest);
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::catalog::find;

    fn input(prefix: &str) -> GenerationInput {
        GenerationInput {
            file_name: "main.py".into(),
            language: Some("python".into()),
            prefix: prefix.into(),
            enhancer: Map::new(),
        }
    }

    #[test]
    fn family_parameters() {
        let t = Duration::from_secs(1);
        let r = build(find("codestral").unwrap(), &input("# sort\n"), t);
        assert_eq!((r.temperature, r.max_tokens), (Some(0.3), Some(256)));
        assert_eq!(r.messages.len(), 2);
        assert!(r.messages[1].content.contains("# sort\n{{cursor}}"));
        let r = build(find("mixtral").unwrap(), &input("x"), t);
        assert_eq!((r.temperature, r.max_tokens), (Some(0.2), Some(2048)));
        assert_eq!(r.stop, vec!["UNABLE_TO_GENERATE"]);
        let r = build(find("llama3").unwrap(), &input("x"), t);
        assert_eq!((r.temperature, r.max_tokens), (Some(0.0), Some(256)));
        let r = build(find("general").unwrap(), &input("# sort\n"), t);
        assert_eq!(r.messages[1].content, "```python\n# sort\n\n```");
        assert_eq!(prompt_name(find("general").unwrap()), "Code Generations");
        assert_eq!(
            prompt_name(find("mistral").unwrap()),
            "Mistral Code Generations"
        );
        let r = build_legacy(find("mistral").unwrap(), vec![], t);
        assert_eq!(r.stop, vec!["</new_code>"]);
        assert_eq!(r.top_p, Some(0.95));
    }

    #[test]
    fn enhancer_keys_reach_the_prompt() {
        let mut i = input("def f():\n");
        i.enhancer
            .insert("libraries".into(), serde_json::json!(["requests"]));
        i.enhancer.insert(
            "examples_array".into(),
            serde_json::json!([{"example": "E1", "response": "R1", "trigger_type": "comment"}]),
        );
        i.enhancer
            .insert("user_instruction".into(), serde_json::json!("do X"));
        let r = build(find("codegemma").unwrap(), &i, Duration::from_secs(1));
        let u = &r.messages[1].content;
        assert!(u.contains("requests") && u.contains("E1") && u.contains("R1"));
        assert!(u.contains("Instruction: do X"));
    }

    #[test]
    fn clean_up_of_answers() {
        let f = find("codestral").unwrap();
        assert_eq!(
            clean(
                f,
                "Here you go:\n```python\ndef f():\n    pass\n```\nEnjoy",
                "x\n"
            ),
            "def f():\n    pass"
        );
        assert_eq!(clean(f, "  code  ", "# do it"), "\ncode");
        assert_eq!(clean(f, "```py\ncut off", "\n"), "cut off");
        assert_eq!(
            clean(f, "# write a sort\ndef sort(): ...", "# write a sort\n"),
            "def sort(): ..."
        );
        assert_eq!(clean(f, "}\nmore", "  }\n"), "}\nmore");
        assert_eq!(clean(find("mixtral").unwrap(), "my\\_var", "\n"), "my_var");
        assert_eq!(clean(f, "", "x"), "");
    }

    #[test]
    fn streamed_lines() {
        let mut c = LineChunker::new(find("mixtral").unwrap());
        assert!(c.push("```py").is_empty());
        assert_eq!(c.push("thon\na = 1\nb\\_c"), vec!["a = 1\n"]);
        assert_eq!(c.push(" = 2\n```"), vec!["b_c = 2\n"]);
        assert_eq!(c.finish(), None);
        let mut c = LineChunker::new(find("mistral").unwrap());
        assert!(c.push("tail").is_empty());
        assert_eq!(c.finish().as_deref(), Some("tail"));
    }
}
