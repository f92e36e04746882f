//! The additional context a Duo Chat message may carry (files, snippets,
//! issues, user rules ...): the categories GitLab sends and the unit
//! primitive each needs. This list is the one place they are named.

/// Rails' `Ai::AdditionalContext::DUO_CHAT_CONTEXT_CATEGORIES`, plus
/// `os_information`, which upstream's gateway also accepts.
pub const CATEGORIES: &[&str] = &[
    "file",
    "snippet",
    "merge_request",
    "issue",
    "dependency",
    "local_git",
    "terminal",
    "user_rule",
    "repository",
    "directory",
    "os_information",
    "agent_user_environment",
];

/// True for a category GitLab defines.
pub fn is_known(category: &str) -> bool {
    CATEGORIES.contains(&category)
}

/// The unit primitive a caller needs to send context of `category`.
pub fn unit_primitive(category: &str) -> String {
    format!("include_{category}_context")
}
