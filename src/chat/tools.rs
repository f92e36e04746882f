//! The tools Duo Chat may ask Rails to run, and which of them a caller gets:
//! each needs its unit primitive in the caller's token and, for newer tools,
//! a GitLab version that knows how to run it (`X-Gitlab-Version`). Names,
//! unit primitives and minimum versions are the interface Rails implements;
//! the descriptions are ours.

use crate::auth::Caller;

/// One tool as the prompt presents it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tool {
    pub name: &'static str,
    #[serde(skip)]
    pub unit_primitive: &'static str,
    /// Lowest GitLab (major, minor, patch) whose Rails runs this tool.
    #[serde(skip)]
    pub min_gitlab: Option<(u64, u64, u64)>,
    pub description: &'static str,
    pub example: &'static str,
    /// The resource kind, for "you can read ..." wording.
    pub resource: Option<&'static str>,
}

const fn tool(
    name: &'static str,
    unit_primitive: &'static str,
    min_gitlab: Option<(u64, u64, u64)>,
    description: &'static str,
    example: &'static str,
    resource: Option<&'static str>,
) -> Tool {
    Tool {
        name,
        unit_primitive,
        min_gitlab,
        description,
        example,
        resource,
    }
}

/// 17.5.0-pre: the first Rails with the newer readers.
const V17_5: Option<(u64, u64, u64)> = Some((17, 5, 0));

pub static TOOLS: &[Tool] = &[
    tool(
        "build_reader",
        "ask_build",
        V17_5,
        "Reads a CI/CD job (build) and its log. Use it for questions about a job, why it failed or what it did. Input: the job's URL or ID, or \"current\" for the job the user is looking at.",
        "Question: Why did job 1234 fail? Action: build_reader, Action Input: 1234",
        Some("CI/CD jobs"),
    ),
    tool(
        "epic_reader",
        "ask_epic",
        None,
        "Reads an epic: title, description, labels, state and comments. Input: the epic's URL, reference (such as &12 or group&12) or \"current\".",
        "Question: Summarize epic &7. Action: epic_reader, Action Input: &7",
        Some("epics"),
    ),
    tool(
        "issue_reader",
        "ask_issue",
        None,
        "Reads an issue: title, description, labels, state and comments. Input: the issue's URL, reference (such as #12 or group/project#12) or \"current\".",
        "Question: What is issue #42 about? Action: issue_reader, Action Input: #42",
        Some("issues"),
    ),
    tool(
        "merge_request_reader",
        "ask_merge_request",
        V17_5,
        "Reads a merge request: title, description, state, changes and comments. Input: the merge request's URL, reference (such as !12) or \"current\".",
        "Question: What does !15 change? Action: merge_request_reader, Action Input: !15",
        Some("merge requests"),
    ),
    tool(
        "commit_reader",
        "ask_commit",
        V17_5,
        "Reads a commit: message, author and changes. Input: the commit's URL or SHA, or \"current\".",
        "Question: Explain commit 3f2a9c1. Action: commit_reader, Action Input: 3f2a9c1",
        Some("commits"),
    ),
    tool(
        "work_item_reader",
        "ask_work_item",
        None,
        "Reads a work item (task, objective, key result...): title, description, state and comments. Input: the work item's URL, reference or \"current\".",
        "Question: What is left to do in this task? Action: work_item_reader, Action Input: current",
        Some("work items"),
    ),
    tool(
        "gitlab_documentation",
        "documentation_search",
        None,
        "Searches GitLab's documentation. Use it for any question about how to use, configure or administer GitLab, including GitLab Duo and self-hosted models. Input: the question in the user's words.",
        "Question: How do I configure a self-hosted model for Duo Chat? Action: gitlab_documentation, Action Input: How do I configure a self-hosted model for Duo Chat?",
        None,
    ),
];

/// `major.minor.patch` of an `X-Gitlab-Version` such as `18.6.0-ee` or
/// `17.5.0-pre`; suffixes are ignored (a `-pre` build is that release).
pub fn parse_gitlab_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.trim().split(['-', '+', ' ']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The tools `caller` may be offered. A tool with a minimum version is left
/// out when the GitLab version is unknown: an old Rails could not run it.
pub fn available(caller: &Caller, gitlab_version: Option<&str>) -> Vec<Tool> {
    if caller.debug {
        return TOOLS.to_vec();
    }
    let version = gitlab_version.and_then(parse_gitlab_version);
    TOOLS
        .iter()
        .filter(|t| caller.can(t.unit_primitive, None))
        .filter(|t| match (t.min_gitlab, version) {
            (None, _) => true,
            (Some(min), Some(v)) => v >= min,
            (Some(_), None) => false,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_gitlab_version("18.6.0-ee"), Some((18, 6, 0)));
        assert_eq!(parse_gitlab_version("17.5.0-pre"), Some((17, 5, 0)));
        assert_eq!(parse_gitlab_version("17.4"), Some((17, 4, 0)));
        assert_eq!(parse_gitlab_version("junk"), None);
    }
}
