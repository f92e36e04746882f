//! The self-hosted model families GitLab knows (`model_name` / `model_metadata.name`),
//! with the facts the gateway needs about each: display name, prompt family
//! directories, context budget and default sampling parameters.

/// One self-hosted model family.
#[derive(Debug, PartialEq)]
pub struct Family {
    /// GitLab's identifier, as Rails sends it (`mistral`, `codestral`, ...).
    pub id: &'static str,
    /// Display name for the model catalogue.
    pub name: &'static str,
    /// Prompt directories to try in order before `base`.
    pub prompt_dirs: &'static [&'static str],
    /// Context budget in tokens, for input truncation.
    pub max_context_tokens: u64,
    /// Default model name sent when the request has no identifier.
    pub default_model: &'static str,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Duo Chat: strip a leading `<think>...</think>` block.
    pub strip_reasoning: bool,
}

const fn family(
    id: &'static str,
    name: &'static str,
    prompt_dirs: &'static [&'static str],
    max_context_tokens: u64,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
) -> Family {
    Family {
        id,
        name,
        prompt_dirs,
        max_context_tokens,
        default_model: id,
        temperature,
        max_tokens,
        strip_reasoning: false,
    }
}

/// Every family, in catalogue order.
pub static FAMILIES: &[Family] = &[
    family(
        "mistral",
        "Mistral",
        &["mistral"],
        128_000,
        Some(0.0),
        Some(4096),
    ),
    family(
        "mixtral",
        "Mixtral",
        &["mixtral", "mistral"],
        32_000,
        Some(0.0),
        Some(4096),
    ),
    family(
        "codestral",
        "Codestral",
        &["codestral", "mistral"],
        128_000,
        Some(0.0),
        Some(4096),
    ),
    family(
        "llama3",
        "Llama3",
        &["llama3"],
        128_000,
        Some(0.0),
        Some(4096),
    ),
    family(
        "codellama",
        "Codellama",
        &["codellama"],
        16_000,
        Some(0.0),
        Some(4096),
    ),
    family("gpt", "GPT", &["gpt"], 128_000, None, None),
    family(
        "codegemma",
        "Codegemma",
        &["codegemma"],
        8_000,
        Some(0.0),
        Some(4096),
    ),
    family(
        "deepseekcoder",
        "DeepSeekCoder",
        &["deepseekcoder"],
        16_000,
        Some(0.0),
        Some(4096),
    ),
    family(
        "claude_3",
        "Self-Hosted Claude",
        &[],
        200_000,
        Some(0.0),
        Some(4096),
    ),
    family(
        "gemini",
        "Self-Hosted Gemini",
        &["gemini"],
        1_000_000,
        Some(1.0),
        Some(65_536),
    ),
    Family {
        strip_reasoning: true,
        ..family(
            "qwen",
            "Self-Hosted Qwen",
            &["qwen"],
            262_144,
            Some(0.0),
            Some(8192),
        )
    },
    family(
        "general",
        "Self-Hosted General Models",
        &[],
        200_000,
        Some(0.0),
        Some(4096),
    ),
    family(
        "embedding",
        "Self-Hosted Embedding Models",
        &["embedding"],
        200_000,
        None,
        None,
    ),
];

/// Looks a family up by GitLab identifier (case-sensitive, as Rails sends it).
pub fn find(id: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rails_family_is_known() {
        for id in [
            "mistral",
            "llama3",
            "codegemma",
            "codestral",
            "codellama",
            "deepseekcoder",
            "claude_3",
            "gpt",
            "mixtral",
            "general",
            "gemini",
            "embedding",
            "qwen",
        ] {
            assert!(find(id).is_some(), "{id}");
        }
        assert!(find("qwen2p5-coder-7b").is_none());
        assert!(find("qwen").unwrap().strip_reasoning);
    }
}
