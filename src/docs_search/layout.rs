//! The index file's layout, shared with the upstream gateway so that either
//! side reads the other's file: one FTS5 table `doc_index(processed, content,
//! metadata)` with the `porter trigram` tokenizer, `PRAGMA user_version = 1`.
//!
//! * `content`: the page's markdown as it is in the docs tree;
//! * `metadata`: a JSON object, `filename` = the page's path below the docs
//!   root with a leading `/` (`/user/project/index.md`), plus ours: `version`,
//!   the GitLab version the docs belong to, when known;
//! * `processed`: the searched text: the markdown without its front matter,
//!   lower-cased, every character that is neither a word character nor
//!   whitespace removed ([`normalize`]).

/// The table, exactly as upstream creates it.
pub const CREATE_TABLE: &str = "CREATE VIRTUAL TABLE doc_index USING fts5(processed, content, metadata, tokenize='porter trigram')";
/// `PRAGMA user_version` of an index in this layout.
pub const USER_VERSION: i64 = 1;

/// Lower-cases `text` and drops every character that is neither a word
/// character (alphanumeric or `_`) nor whitespace, as Python's
/// `re.sub(r"[^\w\s]", "", text.lower())` does for the text upstream indexes
/// (Rust's "alphanumeric" also keeps the combining vowel signs of a few
/// scripts that Python's `\w` drops; GitLab's docs are English). Queries get
/// the same treatment, so `merge-request` finds `mergerequest` both ways.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            out.extend(c.to_lowercase());
        } else if c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// The searched text of a page: [`normalize`]d markdown without front matter.
pub fn processed(markdown: &str) -> String {
    normalize(body(markdown))
}

/// The page's YAML front matter (between a first line `---` and the next line
/// `---` or `...`), without the fences; `None` when the page has none.
///
/// Upstream cuts from the first `---` anywhere in the page to the next one,
/// so a page without front matter but with a table (`| --- |`) or a rule
/// loses its text up to the second one; here only a real front matter block
/// counts. (GitLab's pages all start with front matter, so both agree on them.)
pub fn front_matter(markdown: &str) -> Option<&str> {
    split_front_matter(markdown).map(|(fm, _)| fm)
}

/// The markdown after the front matter (all of it when there is none).
pub fn body(markdown: &str) -> &str {
    split_front_matter(markdown).map_or(markdown, |(_, body)| body)
}

fn split_front_matter(markdown: &str) -> Option<(&str, &str)> {
    let text = markdown.strip_prefix('\u{feff}').unwrap_or(markdown);
    let first_end = text.find('\n')?;
    if text[..first_end].trim_end() != "---" {
        return None;
    }
    let start = first_end + 1;
    let mut pos = start;
    while pos < text.len() {
        let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = text[pos..end].trim_end();
        if line == "---" || line == "..." {
            let after = (end + 1).min(text.len());
            return Some((&text[start..pos], &text[after..]));
        }
        pos = end + 1;
    }
    None
}

/// The page's title: the front matter's `title:` (GitLab's current pages), or
/// else the first `# ` heading outside code blocks (older pages).
pub fn title(markdown: &str) -> Option<&str> {
    if let Some(fm) = front_matter(markdown) {
        for line in fm.lines() {
            if let Some(v) = line.strip_prefix("title:") {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(v);
                if !v.is_empty() {
                    return Some(v);
                }
            }
        }
    }
    let mut in_code = false;
    for line in body(markdown).lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_code = !in_code;
            continue;
        }
        if !in_code && let Some(h) = line.strip_prefix("# ") {
            let h = h.trim();
            if !h.is_empty() {
                return Some(h);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_text_is_lower_case_without_punctuation_or_front_matter() {
        let page = "---\nstage: Create\ntitle: \"Squash and merge\"\n---\n\n# Héllo, World!\n\nUse `git rebase -i`; it's ✓ 日本語.\n";
        assert_eq!(
            processed(page),
            "\n héllo world\n\nuse git rebase i its  日本語\n"
        );
        assert_eq!(title(page), Some("Squash and merge"));
        assert_eq!(
            front_matter(page),
            Some("stage: Create\ntitle: \"Squash and merge\"\n")
        );
    }

    #[test]
    fn only_a_leading_block_is_front_matter() {
        let table = "# Table\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n---\n\nafter the rule\n";
        assert_eq!(body(table), table);
        assert_eq!(front_matter(table), None);
        assert_eq!(title(table), Some("Table"));
        // Unclosed: not front matter.
        assert_eq!(body("---\nkey: v\nno end"), "---\nkey: v\nno end");
        // CRLF, BOM and the `...` end marker.
        assert_eq!(body("\u{feff}---\r\na: b\r\n...\r\nText"), "Text");
        assert_eq!(body("---\n---\n"), "");
        // A `# ` line in a code block is no title.
        assert_eq!(
            title("```shell\n# install\n```\n\n# Real title\n"),
            Some("Real title")
        );
        assert_eq!(title("no heading"), None);
    }

    #[test]
    fn normalize_keeps_words_and_whitespace_only() {
        assert_eq!(normalize("CI/CD: .gitlab-ci.yml"), "cicd gitlabciyml");
        assert_eq!(normalize("Ünïcödé_x ÉTÉ"), "ünïcödé_x été");
        assert_eq!(normalize("?!.,"), "");
    }
}
