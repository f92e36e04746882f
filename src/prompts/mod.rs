//! The prompt registry: every prompt the gateway can send to a model, as data.
//!
//! A definition is a TOML file `definitions/<prompt id>/<family dir>/<version>.toml`
//! (the prompt id may contain `/`). The files in the repository are embedded
//! at build time; `AIGW_PROMPTS_DIR` names a directory with the same layout
//! whose files replace or add to them, so an administrator can tune a prompt
//! for their model without a rebuild. TOML rather than upstream's YAML: its
//! `'''` literal strings keep templates verbatim, and the parser is a well
//! kept crate (YAML's Rust crates are unmaintained or forks).
//!
//! Templates are minijinja (Jinja2 syntax, as upstream) with no autoescape,
//! the trailing newline of a rendered message dropped (Jinja's default), and
//! undefined variables an error when printed or iterated, but allowed in
//! `{% if %}` so optional inputs stay optional.

pub mod calendar;
pub mod version;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use minijinja::{Environment, UndefinedBehavior, Value as JinjaValue};
use semver::Version;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::models::{ChatRequest, Family, Message, Role};
use version::{Constraint, DEFAULT_CONSTRAINT, InvalidConstraint};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/prompt_definitions.rs"));
}

/// The directory used when the model family has no variant of a prompt.
pub const BASE_DIR: &str = "base";

/// Model parameters of a definition (`[model.params]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub top_p: Option<f64>,
}

/// Invocation parameters (`[params]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvocationParams {
    #[serde(default)]
    pub stop: Vec<String>,
    /// Seconds; overrides `AIGW_DUO_CHAT__MODEL_REQUEST_TIMEOUT`.
    pub timeout: Option<f64>,
    /// The caller parses the answer as one JSON object: a non-streamed
    /// answer is cut to its first complete object (models like to wrap JSON
    /// in a code fence or a sentence).
    #[serde(default)]
    pub answer_json: bool,
    /// The caller compares the answer with these words: a non-streamed
    /// answer that names one of them (`code_review_request.`, "The intent is
    /// assistant_flow") becomes exactly that word.
    #[serde(default)]
    pub answer_one_of: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSection {
    #[serde(default)]
    params: ModelParams,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Templates {
    system: Option<String>,
    user: Option<String>,
    assistant: Option<String>,
}

/// One definition file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFile {
    name: String,
    unit_primitive: String,
    #[serde(default)]
    model: ModelSection,
    #[serde(default)]
    params: InvocationParams,
    prompt_template: Templates,
}

/// A loaded prompt definition.
#[derive(Debug)]
pub struct PromptDefinition {
    pub id: String,
    pub dir: String,
    pub version: Version,
    pub name: String,
    /// Interned once at load: metric labels need `&'static str`, and the set
    /// of definitions is fixed for the life of the process.
    pub unit_primitive: &'static str,
    pub model: ModelParams,
    pub params: InvocationParams,
    /// Template names in the registry's environment, in message order.
    templates: Vec<(Role, String)>,
}

impl PromptDefinition {
    /// Whether the definition has a template for `role`.
    pub fn has(&self, role: Role) -> bool {
        self.templates.iter().any(|(r, _)| *r == role)
    }
}

/// Why a prompt cannot be used. `Display` is client-facing.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("Failed to load prompt definition for '{0}': no such prompt")]
    Unknown(String),
    #[error("No version matching '{constraint}' found for prompt '{id}' (available: {available})")]
    NoVersion {
        id: String,
        constraint: String,
        available: String,
    },
    #[error(transparent)]
    InvalidConstraint(#[from] InvalidConstraint),
    /// Python's KeyError text, as upstream's template layer words it.
    #[error("Input to ChatPromptTemplate is missing variables {}", python_set(.0))]
    MissingVariables(Vec<String>),
    #[error("Prompt '{id}' could not be rendered: {message}")]
    Render { id: String, message: String },
}

fn python_set(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("{{{}}}", quoted.join(", "))
}

/// Knobs from `config::ModelsConfig` the registry applies.
#[derive(Clone, Debug)]
pub struct PromptSettings {
    /// `AIGW_DUO_CHAT__MODEL_REQUEST_TIMEOUT`: a prompt's default timeout.
    pub default_timeout: Duration,
    /// `AIGW_DUO_CHAT__MAX_TOKENS`: `max_tokens` of every `chat/*` prompt.
    pub chat_max_tokens: Option<u32>,
}

/// Every prompt definition, by id, family directory and version.
pub struct PromptRegistry {
    prompts: BTreeMap<String, BTreeMap<String, BTreeMap<Version, Arc<PromptDefinition>>>>,
    env: Environment<'static>,
    settings: PromptSettings,
}

impl std::fmt::Debug for PromptRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptRegistry")
            .field("prompts", &self.prompts.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PromptRegistry {
    /// The embedded definitions, then those of `override_dir` on top. Any
    /// unreadable or invalid file is an error naming it: an administrator's
    /// tuned prompt must not be dropped silently.
    pub fn load(override_dir: Option<&Path>, settings: PromptSettings) -> Result<Self, String> {
        let mut files: BTreeMap<String, String> = embedded::EMBEDDED
            .iter()
            .map(|(rel, text)| (rel.to_string(), text.to_string()))
            .collect();
        if let Some(dir) = override_dir {
            read_dir_files(dir, dir, &mut files)
                .map_err(|e| format!("AIGW_PROMPTS_DIR {}: {e}", dir.display()))?;
        }
        let mut registry = PromptRegistry {
            prompts: BTreeMap::new(),
            env: template_environment(),
            settings,
        };
        for (rel, text) in files {
            registry
                .add(&rel, &text)
                .map_err(|e| format!("prompt definition {rel}: {e}"))?;
        }
        Ok(registry)
    }

    fn add(&mut self, rel: &str, text: &str) -> Result<(), String> {
        let parts: Vec<&str> = rel.split('/').collect();
        let [id @ .., dir, file] = parts.as_slice() else {
            return Err("expected <prompt id>/<family dir>/<version>.toml".into());
        };
        if id.is_empty() {
            return Err("expected <prompt id>/<family dir>/<version>.toml".into());
        }
        let version_text = file.strip_suffix(".toml").unwrap_or(file);
        let version = Version::parse(version_text)
            .map_err(|e| format!("file name is not a version ({e})"))?;
        let def: DefinitionFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let id = id.join("/");
        let mut templates = Vec::new();
        for (role, source) in [
            (Role::System, def.prompt_template.system),
            (Role::User, def.prompt_template.user),
            (Role::Assistant, def.prompt_template.assistant),
        ] {
            let Some(source) = source else { continue };
            let name = format!("{rel}#{role:?}");
            self.env
                .add_template_owned(name.clone(), source)
                .map_err(|e| format!("{role:?} template: {e}"))?;
            templates.push((role, name));
        }
        let definition = PromptDefinition {
            id: id.clone(),
            dir: dir.to_string(),
            version: version.clone(),
            name: def.name,
            unit_primitive: Box::leak(def.unit_primitive.into_boxed_str()),
            model: def.model.params,
            params: def.params,
            templates,
        };
        self.prompts
            .entry(id)
            .or_default()
            .entry(dir.to_string())
            .or_default()
            .insert(version, Arc::new(definition));
        Ok(())
    }

    /// Every unit primitive some prompt requires.
    pub fn unit_primitives(&self) -> std::collections::BTreeSet<&'static str> {
        self.prompts
            .values()
            .flat_map(|dirs| dirs.values())
            .flat_map(|versions| versions.values())
            .map(|def| def.unit_primitive)
            .collect()
    }

    /// Every prompt id, for documentation and tests.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.prompts.keys().map(String::as_str)
    }

    /// The definition of `id` for `family` matching `constraint`
    /// (`^1.0.0` when absent). The family directory is the first of the
    /// family's `prompt_dirs` that has the prompt, else `base`.
    pub fn get(
        &self,
        id: &str,
        family: &Family,
        constraint: Option<&str>,
    ) -> Result<Arc<PromptDefinition>, PromptError> {
        let dirs = self
            .prompts
            .get(id)
            .ok_or_else(|| PromptError::Unknown(id.to_string()))?;
        let dir = family
            .prompt_dirs
            .iter()
            .find(|d| dirs.contains_key(**d))
            .copied()
            .unwrap_or(BASE_DIR);
        let versions = dirs
            .get(dir)
            .ok_or_else(|| PromptError::Unknown(id.to_string()))?;
        let text = constraint.unwrap_or(DEFAULT_CONSTRAINT);
        let parsed = Constraint::parse(text)?;
        let chosen = parsed
            .select(versions.keys())
            .ok_or_else(|| PromptError::NoVersion {
                id: id.to_string(),
                constraint: text.to_string(),
                available: versions
                    .keys()
                    .map(Version::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        versions
            .get(chosen)
            .cloned()
            .ok_or_else(|| PromptError::Unknown(id.to_string()))
    }

    /// Renders one template of `def` with `vars`.
    pub fn render_one(
        &self,
        def: &PromptDefinition,
        role: Role,
        vars: &Value,
    ) -> Result<Option<String>, PromptError> {
        let Some((_, name)) = def.templates.iter().find(|(r, _)| *r == role) else {
            return Ok(None);
        };
        let template = self
            .env
            .get_template(name)
            .map_err(|e| PromptError::Render {
                id: def.id.clone(),
                message: e.to_string(),
            })?;
        match template.render(JinjaValue::from(minijinja::value::Serde(vars))) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == minijinja::ErrorKind::UndefinedError => {
                Err(PromptError::MissingVariables(self.missing(def, vars)))
            }
            Err(e) => Err(PromptError::Render {
                id: def.id.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// The variables a render of `def` needs that `vars` lacks. Upstream names
    /// every missing variable; minijinja stops at the first, so each
    /// candidate is tried alone with the others filled in (error path only).
    fn missing(&self, def: &PromptDefinition, vars: &Value) -> Vec<String> {
        let provided: BTreeSet<&str> = vars
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut candidates = BTreeSet::new();
        for (_, name) in &def.templates {
            if let Ok(t) = self.env.get_template(name) {
                candidates.extend(
                    t.undeclared_variables(false)
                        .into_iter()
                        .filter(|v| !provided.contains(v.as_str())),
                );
            }
        }
        let fails_without = |missing: &str| {
            let mut filled = vars.as_object().cloned().unwrap_or_default();
            for c in &candidates {
                if c != missing {
                    filled.insert(c.clone(), Value::String(String::new()));
                }
            }
            let ctx = JinjaValue::from(minijinja::value::Serde(Value::Object(filled)));
            def.templates.iter().any(|(_, name)| {
                self.env.get_template(name).is_ok_and(|t| {
                    t.render(ctx.clone())
                        .is_err_and(|e| e.kind() == minijinja::ErrorKind::UndefinedError)
                })
            })
        };
        let required: Vec<String> = candidates
            .iter()
            .filter(|c| fails_without(c))
            .cloned()
            .collect();
        if required.is_empty() {
            candidates.into_iter().collect()
        } else {
            required
        }
    }

    /// The messages of a plain prompt (`/v1/prompts`): system, user,
    /// assistant in that order, each rendered with `inputs` (plus
    /// `current_date` when the caller did not send one). Empty messages are
    /// dropped.
    pub fn render(
        &self,
        def: &PromptDefinition,
        inputs: &Map<String, Value>,
    ) -> Result<Vec<Message>, PromptError> {
        let mut vars = inputs.clone();
        vars.entry("current_date")
            .or_insert_with(|| Value::String(calendar::Day::today().long()));
        let vars = Value::Object(vars);
        let mut messages = Vec::new();
        for role in [Role::System, Role::User, Role::Assistant] {
            if let Some(text) = self.render_one(def, role, &vars)?
                && !text.trim().is_empty()
            {
                messages.push(Message::new(role, text));
            }
        }
        Ok(messages)
    }

    /// The model call for `def`: sampling from the definition over the
    /// family's defaults, `AIGW_DUO_CHAT__MAX_TOKENS` for `chat/*` prompts,
    /// the definition's stop sequences and timeout.
    pub fn chat_request(
        &self,
        def: &PromptDefinition,
        family: &Family,
        messages: Vec<Message>,
    ) -> ChatRequest {
        let timeout = def
            .params
            .timeout
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(self.settings.default_timeout);
        let mut req = ChatRequest::new(messages, timeout);
        req.temperature = def.model.temperature.or(family.temperature);
        req.top_p = def.model.top_p;
        req.max_tokens = match self.settings.chat_max_tokens {
            Some(n) if def.id.starts_with("chat/") => Some(n),
            _ => def.model.max_tokens.or(family.max_tokens),
        };
        req.stop = def.params.stop.clone();
        req
    }
}

/// A non-streamed answer in the form the caller parses ([`InvocationParams`]
/// `answer_json`, `answer_one_of`); any other answer is returned as it is.
pub fn finish_answer(def: &PromptDefinition, text: String) -> String {
    if def.params.answer_json
        && let Some(object) = first_json_object(&text)
    {
        return object.to_string();
    }
    if !def.params.answer_one_of.is_empty() {
        let bare = text
            .trim()
            .trim_matches(|c: char| "`'\".*".contains(c) || c.is_whitespace());
        if let Some(word) = def.params.answer_one_of.iter().find(|w| *w == bare) {
            return word.clone();
        }
        if let Some((_, word)) = def
            .params
            .answer_one_of
            .iter()
            .filter_map(|w| text.find(w.as_str()).map(|at| (at, w)))
            .min()
        {
            return word.clone();
        }
    }
    text
}

/// The first `{...}` of `text` that parses as a JSON object.
fn first_json_object(text: &str) -> Option<&str> {
    text.match_indices('{').find_map(|(start, _)| {
        let mut stream =
            serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
        match stream.next() {
            Some(Ok(Value::Object(_))) => Some(&text[start..start + stream.byte_offset()]),
            _ => None,
        }
    })
}

fn template_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env
}

/// Reads every `*.toml` under `dir` into `files`, keyed by path relative to `root`.
fn read_dir_files(
    root: &Path,
    dir: &Path,
    files: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            read_dir_files(root, &path, files)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            let rel = path
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.insert(rel, text);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::catalog;

    fn registry() -> PromptRegistry {
        PromptRegistry::load(
            None,
            PromptSettings {
                default_timeout: Duration::from_secs(30),
                chat_max_tokens: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn every_embedded_definition_loads_and_names_a_unit_primitive() {
        let r = registry();
        for id in [
            "chat/explain_code",
            "chat/write_tests",
            "chat/refactor_code",
            "chat/fix_code",
            "chat/troubleshoot_job",
            "chat/summarize_comments",
            "chat/explain_vulnerability",
            "chat/react",
            "resolve_vulnerability",
            "generate_commit_message",
            "generate_description",
            "summarize_new_merge_request",
            "summarize_review",
            "review_merge_request",
            "glab_ask_git_command",
            "categorize_question",
            "generate_session_title",
            "model_configuration/check",
            "measure_comment_temperature",
            "classify_code_review_mention_intent",
            "chat/documentation_search",
        ] {
            let def = r
                .get(id, catalog::find("general").unwrap(), None)
                .unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(!def.unit_primitive.is_empty(), "{id}");
        }
    }

    #[test]
    fn answers_are_cut_to_the_form_the_caller_parses() {
        let r = registry();
        let family = catalog::find("mistral").unwrap();
        let json = r.get("categorize_question", family, None).unwrap();
        assert_eq!(
            finish_answer(&json, "Sure:\n```json\n{\"a\": {\"b\": \"}\"}}\n```".into()),
            r#"{"a": {"b": "}"}}"#
        );
        assert_eq!(finish_answer(&json, "{broken".into()), "{broken");
        assert_eq!(
            finish_answer(&json, "{x} then {\"k\": 1}".into()),
            r#"{"k": 1}"#
        );
        let word = r
            .get("classify_code_review_mention_intent", family, None)
            .unwrap();
        assert_eq!(
            finish_answer(&word, " \"assistant_flow\".\n".into()),
            "assistant_flow"
        );
        assert_eq!(
            finish_answer(&word, "not write_actions but code_review_request".into()),
            "write_actions"
        );
        assert_eq!(finish_answer(&word, "unsure".into()), "unsure");
        let plain = r.get("generate_commit_message", family, None).unwrap();
        assert_eq!(finish_answer(&plain, " {\"a\": 1} ".into()), " {\"a\": 1} ");
    }

    #[test]
    fn missing_variables_are_named_and_optional_ones_are_not() {
        let r = registry();
        let def = r
            .get(
                "generate_description",
                catalog::find("mistral").unwrap(),
                None,
            )
            .unwrap();
        let err = r.render(&def, &Map::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Input to ChatPromptTemplate is missing variables {'content'}"
        );
        let mut inputs = Map::new();
        inputs.insert("content".into(), Value::String("a bug".into()));
        let messages = r.render(&def, &inputs).unwrap();
        assert!(messages.iter().any(|m| m.content.contains("a bug")));
    }
}
