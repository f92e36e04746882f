//! The self-hosted model families GitLab knows (`model_name` / `model_metadata.name`),
//! with the facts the gateway needs about each: display name, prompt family
//! directories, context budget and default sampling parameters; and the
//! feature settings (`unit_primitives.yml` upstream) that
//! `GET /v1/models/definitions` offers them for.

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
    /// What the family's models are good for (which feature settings offer it).
    pub kind: Kind,
}

/// What a family's models can be selected for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Instruction-following models: chat, prompts and code suggestions.
    General,
    /// Code models (fill-in-the-middle): code suggestions only.
    Code,
    /// Embedding models: codebase embeddings only.
    Embedding,
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
        kind: Kind::General,
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
    Family {
        kind: Kind::Code,
        ..family(
            "codellama",
            "Codellama",
            &["codellama"],
            16_000,
            Some(0.0),
            Some(4096),
        )
    },
    family("gpt", "GPT", &["gpt"], 128_000, None, None),
    Family {
        kind: Kind::Code,
        ..family(
            "codegemma",
            "Codegemma",
            &["codegemma"],
            8_000,
            Some(0.0),
            Some(4096),
        )
    },
    Family {
        kind: Kind::Code,
        ..family(
            "deepseekcoder",
            "DeepSeekCoder",
            &["deepseekcoder"],
            16_000,
            Some(0.0),
            Some(4096),
        )
    },
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
    Family {
        kind: Kind::Embedding,
        ..family(
            "embedding",
            "Self-Hosted Embedding Models",
            &["embedding"],
            200_000,
            None,
            None,
        )
    },
];

/// Which families a feature setting can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uses {
    /// Code suggestions: general and code models.
    Code,
    /// Chat and prompt features: general models.
    Text,
    /// Codebase embeddings: embedding models.
    Embedding,
}

impl Uses {
    /// True when a family of `kind` can serve this feature.
    pub fn accepts(self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Uses::Code, Kind::General | Kind::Code)
                | (Uses::Text, Kind::General)
                | (Uses::Embedding, Kind::Embedding)
        )
    }
}

/// A GitLab feature setting and the unit primitives it covers.
#[derive(Debug, PartialEq)]
pub struct FeatureSetting {
    pub name: &'static str,
    pub unit_primitives: &'static [&'static str],
    pub uses: Uses,
    /// The family offered by default (a self-hosted family: there is no cloud here).
    pub default_family: &'static str,
}

const fn feature(
    name: &'static str,
    unit_primitives: &'static [&'static str],
    uses: Uses,
) -> FeatureSetting {
    FeatureSetting {
        name,
        unit_primitives,
        uses,
        default_family: match uses {
            Uses::Code => "codestral",
            Uses::Text => "mistral",
            Uses::Embedding => "embedding",
        },
    }
}

/// The feature settings GitLab asks the catalogue about, in upstream order.
pub static FEATURE_SETTINGS: &[FeatureSetting] = &[
    feature("duo_chat", &["ask_build", "ask_commit"], Uses::Text),
    feature("code_generations", &["generate_code"], Uses::Code),
    feature("code_completions", &["complete_code"], Uses::Code),
    feature("duo_chat_fix_code", &["fix_code"], Uses::Text),
    feature("duo_chat_refactor_code", &["refactor_code"], Uses::Text),
    feature("duo_chat_write_tests", &["write_tests"], Uses::Text),
    feature("duo_chat_explain_code", &["explain_code"], Uses::Text),
    feature(
        "generate_commit_message",
        &["generate_commit_message"],
        Uses::Text,
    ),
    feature(
        "summarize_new_merge_request",
        &["summarize_new_merge_request"],
        Uses::Text,
    ),
    feature("summarize_review", &["summarize_review"], Uses::Text),
    feature(
        "resolve_vulnerability",
        &["resolve_vulnerability"],
        Uses::Text,
    ),
    feature(
        "duo_chat_explain_vulnerability",
        &["explain_vulnerability"],
        Uses::Text,
    ),
    feature(
        "code_suggestions",
        &["generate_code", "complete_code"],
        Uses::Code,
    ),
    feature(
        "glab_ask_git_command",
        &["glab_ask_git_command"],
        Uses::Text,
    ),
    feature(
        "duo_chat_troubleshoot_job",
        &["troubleshoot_job"],
        Uses::Text,
    ),
    feature(
        "duo_generate_issue_description",
        &["generate_issue_description"],
        Uses::Text,
    ),
    feature(
        "duo_chat_summarize_comments",
        &["summarize_comments"],
        Uses::Text,
    ),
    feature("duo_agent_platform", &["duo_agent_platform"], Uses::Text),
    feature(
        "duo_agent_platform_agentic_chat",
        &["duo_agent_platform"],
        Uses::Text,
    ),
    feature("categorize_question", &["duo_chat"], Uses::Text),
    feature(
        "generate_description",
        &["generate_issue_description"],
        Uses::Text,
    ),
    feature(
        "measure_comment_temperature",
        &["measure_comment_temperature"],
        Uses::Text,
    ),
    feature("workflow", &["duo_workflow_execute_workflow"], Uses::Text),
    FeatureSetting {
        // "Test connection" checks any chat or code model.
        default_family: "general",
        ..feature("model_configuration", &["complete_code"], Uses::Code)
    },
    feature(
        "embeddings_code",
        &["generate_embeddings_codebase"],
        Uses::Embedding,
    ),
    feature("feature_discovery_search", &[], Uses::Text),
    feature("recommend_reviewers_post", &[], Uses::Text),
    feature("recommend_reviewers_assign", &[], Uses::Text),
    feature(
        "review_merge_request",
        &["review_merge_request"],
        Uses::Text,
    ),
    feature("review_merge_request_dap", &[], Uses::Text),
    feature("sast_vulnerability_fp_detection", &[], Uses::Text),
    feature("secret_vulnerability_fp_detection", &[], Uses::Text),
    feature("sast_vulnerability_resolution", &[], Uses::Text),
    feature("security_review", &[], Uses::Text),
    feature("resolve_dependency_bump", &[], Uses::Text),
];

impl FeatureSetting {
    /// The families this setting offers, in catalogue order.
    pub fn selectable(&self) -> impl Iterator<Item = &'static Family> + '_ {
        FAMILIES.iter().filter(|f| self.uses.accepts(f.kind))
    }
}

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

    #[test]
    fn every_feature_setting_defaults_to_a_family_it_offers() {
        for fs in FEATURE_SETTINGS {
            let default = find(fs.default_family).unwrap();
            assert!(fs.uses.accepts(default.kind), "{}", fs.name);
            assert!(fs.selectable().any(|f| f.id == fs.default_family));
        }
        let names: Vec<_> = FEATURE_SETTINGS.iter().map(|f| f.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }
}
