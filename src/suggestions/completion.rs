//! Code completion prompts: fill-in-the-middle per model family, and input
//! truncation to the family's context budget.
//!
//! The FIM token strings and their layout are facts of each model family (they
//! must match what the model was trained on); the instruction texts around
//! them are ours. Self-hosted completions use the chat-completions API with
//! the FIM string in the user message, as GitLab's gateway does.

use std::time::Duration;

use crate::models::{ChatRequest, Family, Message, Role};

/// What a code completion request carries.
#[derive(Clone, Debug, Default)]
pub struct CompletionInput {
    pub file_name: String,
    pub language: Option<String>,
    pub prefix: String,
    pub suffix: String,
    /// Extra context snippets (open tabs, imports...), most relevant first.
    pub context: Vec<String>,
}

/// Share of the context budget kept for the text below the cursor.
const SUFFIX_SHARE: f64 = 0.07;
/// Tokens kept free for our instructions and the chat template.
const OVERHEAD_TOKENS: u64 = 256;

/// A rough token count: code averages about three bytes per token. Budgets
/// are kept conservative, so an estimate that runs high only trims more.
pub fn estimate_tokens(s: &str) -> u64 {
    (s.len() as u64).div_ceil(3)
}

/// Keeps at most `tokens` worth of the end of `s` (on a char boundary).
pub(crate) fn keep_end(s: &str, tokens: u64) -> &str {
    let max = usize::try_from(tokens.saturating_mul(3)).unwrap_or(usize::MAX);
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Keeps at most `tokens` worth of the start of `s` (on a char boundary).
fn keep_start(s: &str, tokens: u64) -> &str {
    let max = usize::try_from(tokens.saturating_mul(3)).unwrap_or(usize::MAX);
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Prefix (with context prepended) and suffix, cut to the family's budget.
pub fn truncate(family: &Family, input: &CompletionInput, max_output: u32) -> (String, String) {
    let budget = family
        .max_context_tokens
        .saturating_sub(u64::from(max_output) + OVERHEAD_TOKENS);
    let suffix_budget = (budget as f64 * SUFFIX_SHARE) as u64;
    let suffix = keep_start(&input.suffix, suffix_budget);
    let prefix_budget = budget.saturating_sub(estimate_tokens(suffix));
    let prefix = keep_end(&input.prefix, prefix_budget);
    let left = prefix_budget.saturating_sub(estimate_tokens(prefix));
    let context = input.context.join("\n");
    let context = keep_start(&context, left);
    let prefix = if context.is_empty() {
        prefix.to_string()
    } else {
        format!("{context}\n{prefix}")
    };
    (prefix, suffix.to_string())
}

fn system_text(language: &str) -> String {
    format!(
        "You complete {language} source code. You are shown the code before and after the \
cursor; answer with only the code that belongs at the cursor: no explanation, no Markdown fences, \
no repetition of the code around it."
    )
}

struct Layout {
    system: bool,
    user: String,
    max_tokens: u32,
    temperature: Option<f64>,
    stop: &'static [&'static str],
}

const MISTRAL_STOPS: &[&str] = &["[INST]", "[/INST]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]"];
const CODEGEMMA_STOPS: &[&str] = &[
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|file_separator|>",
];
const CODELLAMA_STOPS: &[&str] = &["<PRE>", "<SUF>", "<MID>", "<EOT>"];

fn layout(family: &Family, language: &str, file_name: &str, prefix: &str, suffix: &str) -> Layout {
    let family_temp = family.temperature;
    match family.prompt_dirs.first().copied().unwrap_or("base") {
        "codestral" => Layout {
            system: true,
            user: format!("<s>[SUFFIX]{suffix}[PREFIX]{prefix}"),
            max_tokens: 64,
            temperature: Some(0.32),
            stop: MISTRAL_STOPS,
        },
        "mistral" | "mixtral" => Layout {
            system: true,
            user: format!("<s>[SUFFIX]{suffix}[PREFIX]{prefix}"),
            max_tokens: 64,
            temperature: family_temp,
            stop: MISTRAL_STOPS,
        },
        "codegemma" => Layout {
            system: false,
            user: format!("<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"),
            max_tokens: 128,
            temperature: Some(0.95),
            stop: CODEGEMMA_STOPS,
        },
        "codellama" => Layout {
            system: false,
            user: format!("<PRE> {prefix} <SUF> {suffix} <MID>"),
            max_tokens: 128,
            temperature: Some(0.95),
            stop: CODELLAMA_STOPS,
        },
        "deepseekcoder" => Layout {
            system: false,
            user: format!("<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>"),
            max_tokens: 128,
            temperature: family_temp,
            stop: &[],
        },
        "llama3" => Layout {
            system: true,
            user: format!(
                "Here is a {language} file with a gap marked |CODE|.\n\n{prefix}|CODE|{suffix}\n\n\
Write only the code that replaces |CODE|."
            ),
            max_tokens: 64,
            temperature: Some(0.0),
            stop: &[],
        },
        "gpt" => Layout {
            system: true,
            user: format!(
                "Complete the {language} code at the cursor.\n<before_cursor>\n{prefix}\n</before_cursor>\n\
<after_cursor>\n{suffix}\n</after_cursor>\nReply with the inserted code only."
            ),
            max_tokens: 64,
            temperature: None,
            stop: &[],
        },
        _ => Layout {
            system: true,
            user: format!(
                "File: {file_name} ({language}).\n<code_before_cursor>\n{prefix}\n</code_before_cursor>\n\
<code_after_cursor>\n{suffix}\n</code_after_cursor>\nReply with only the code to insert at the cursor."
            ),
            max_tokens: 128,
            temperature: family_temp,
            stop: &[],
        },
    }
}

/// The chat request for a completion, or `None` when the language is unknown
/// (then no model is called and the answer has no choices, as upstream).
pub fn build(family: &Family, input: &CompletionInput, timeout: Duration) -> Option<ChatRequest> {
    let language = input.language.as_deref()?;
    // Truncate with the largest output any layout asks for.
    let (prefix, suffix) = truncate(family, input, 128);
    let l = layout(family, language, &input.file_name, &prefix, &suffix);
    let mut messages = Vec::new();
    if l.system {
        messages.push(Message::new(Role::System, system_text(language)));
    }
    messages.push(Message::new(Role::User, l.user));
    let mut req = ChatRequest::new(messages, timeout);
    req.max_tokens = Some(l.max_tokens);
    req.temperature = l.temperature;
    req.stop = l.stop.iter().map(|s| s.to_string()).collect();
    Some(req)
}

/// Family-specific clean-up of model output (mixtral escapes underscores).
pub fn normalise(family: &Family, text: &str) -> String {
    if family.id == "mixtral" {
        text.replace("\\_", "_")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::catalog::find;

    fn input(prefix: &str, suffix: &str) -> CompletionInput {
        CompletionInput {
            file_name: "main.py".into(),
            language: Some("python".into()),
            prefix: prefix.into(),
            suffix: suffix.into(),
            context: vec![],
        }
    }

    #[test]
    fn fim_layouts_per_family() {
        let r = build(
            find("codestral").unwrap(),
            &input("def f(", "):"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].content, "<s>[SUFFIX]):[PREFIX]def f(");
        assert_eq!(r.stop.len(), 5);
        let r = build(
            find("codellama").unwrap(),
            &input("a", "b"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.messages[0].content, "<PRE> a <SUF> b <MID>");
        let r = build(
            find("deepseekcoder").unwrap(),
            &input("a", "b"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            r.messages[0].content,
            "<｜fim▁begin｜>a<｜fim▁hole｜>b<｜fim▁end｜>"
        );
        let r = build(
            find("codegemma").unwrap(),
            &input("a", "b"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            r.messages[0].content,
            "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"
        );
        assert!(
            build(
                find("mistral").unwrap(),
                &CompletionInput {
                    language: None,
                    ..input("a", "b")
                },
                Duration::from_secs(1)
            )
            .is_none()
        );
    }

    #[test]
    fn truncation_keeps_the_text_nearest_the_cursor() {
        let fam = find("codegemma").unwrap(); // 8k tokens
        let long_prefix = format!("{}NEAR", "x".repeat(100_000));
        let long_suffix = format!("NEAR{}", "y".repeat(100_000));
        let (p, s) = truncate(fam, &input(&long_prefix, &long_suffix), 128);
        assert!(p.ends_with("NEAR") && s.starts_with("NEAR"));
        assert!(estimate_tokens(&p) + estimate_tokens(&s) <= fam.max_context_tokens);
        assert!(estimate_tokens(&s) <= (fam.max_context_tokens as f64 * 0.07) as u64);
        let mut with_ctx = input("code", "");
        with_ctx.context = vec!["import os".into()];
        let (p, _) = truncate(fam, &with_ctx, 128);
        assert_eq!(p, "import os\ncode");
    }
}
