//! From a question to an FTS5 match expression, and the final ordering.
//!
//! Upstream passes every word of the question to FTS5, which ANDs them; the
//! trigram tokenizer matches nothing for a term under three characters, so
//! any question with "do", "I" or "a" in it finds no page at all. Here the
//! question is reduced to its meaningful terms (no stop words, nothing under
//! three characters), lightly stemmed (the trigram index matches substrings,
//! so `commit` finds `commits` and `committed`), and ORed: FTS5 ranks the
//! pages by BM25, and [`rerank`] then lifts pages whose title or path name the
//! terms. A one-word query finds exactly the pages it found before.

use super::layout::normalize;

/// At most this many terms go into one match expression (a question can be
/// 400,000 characters long).
pub const MAX_TERMS: usize = 32;

/// Words that carry no meaning for a documentation search. With a trigram
/// index they would also match inside other words (`how` in `show`).
const STOP_WORDS: &[&str] = &[
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "and",
    "any",
    "are",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "can",
    "cannot",
    "could",
    "did",
    "does",
    "doing",
    "done",
    "down",
    "during",
    "each",
    "either",
    "else",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "getting",
    "got",
    "had",
    "has",
    "have",
    "having",
    "help",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "into",
    "its",
    "itself",
    "just",
    "know",
    "let",
    "like",
    "make",
    "many",
    "may",
    "might",
    "mine",
    "more",
    "most",
    "much",
    "must",
    "myself",
    "need",
    "not",
    "now",
    "off",
    "once",
    "one",
    "only",
    "other",
    "ought",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "please",
    "same",
    "shall",
    "she",
    "should",
    "show",
    "some",
    "something",
    "such",
    "tell",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "this",
    "those",
    "through",
    "too",
    "under",
    "until",
    "use",
    "used",
    "using",
    "very",
    "want",
    "was",
    "way",
    "were",
    "what",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "within",
    "without",
    "would",
    "yes",
    "yet",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Short forms common in GitLab questions that the trigram index cannot
/// match (two letters), and what the docs write instead (normalised).
const SHORT_FORMS: &[(&str, &[&str])] = &[
    ("mr", &["merge", "request"]),
    ("mrs", &["merge", "request"]),
    ("pr", &["merge", "request"]),
    ("prs", &["merge", "request"]),
    ("ci", &["cicd"]),
    ("cd", &["cicd"]),
    ("db", &["database"]),
];

/// The meaningful terms of `question`, normalised as the indexed text is,
/// in order of appearance, without duplicates, at most [`MAX_TERMS`]. When a
/// question has only stop words, its words of three characters or more are
/// kept, so a search for "which" still searches.
pub fn terms(question: &str) -> Vec<String> {
    let text = normalize(question);
    let mut out: Vec<String> = Vec::new();
    let push = |t: &str, out: &mut Vec<String>| {
        if out.len() < MAX_TERMS && !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    };
    for word in text.split_whitespace() {
        if let Some((_, expansion)) = SHORT_FORMS.iter().find(|(short, _)| *short == word) {
            for t in *expansion {
                push(t, &mut out);
            }
            continue;
        }
        if word.chars().count() < 3 || STOP_WORDS.contains(&word) {
            continue;
        }
        push(&stem(word), &mut out);
    }
    if out.is_empty() {
        for word in text.split_whitespace() {
            if word.chars().count() >= 3 {
                push(word, &mut out);
            }
        }
    }
    out
}

/// Strips one common English inflection so that the stem, matched as a
/// substring, finds every form: `commits` → `commit`, `branches` → `branch`,
/// `squashing` → `squash`, `policies` → `polic`. Conservative: short words
/// and words ending in `ss`, `us` or `is` stay as they are.
fn stem(word: &str) -> String {
    let n = word.chars().count();
    let strip = |suffix: &str, keep_at_least: usize| -> Option<String> {
        let rest = word.strip_suffix(suffix)?;
        (rest.chars().count() >= keep_at_least).then(|| rest.to_string())
    };
    if n < 5 {
        return word.to_string();
    }
    if let Some(s) = strip("ies", 4) {
        return s;
    }
    for es in ["ches", "shes", "sses", "xes", "zes"] {
        if word.ends_with(es) {
            return word[..word.len() - 2].to_string();
        }
    }
    if let Some(s) = strip("ing", 4).or_else(|| strip("ed", 4)) {
        return s;
    }
    if word.ends_with('s') && !["ss", "us", "is"].iter().any(|e| word.ends_with(e)) {
        return word[..word.len() - 1].to_string();
    }
    word.to_string()
}

/// The FTS5 expression: each term quoted (a term holds only word
/// characters, so `OR` or `NOT` in a question is a word, never an operator)
/// and ORed. Empty when there is nothing to search for.
pub fn match_expression(terms: &[String]) -> String {
    let quoted: Vec<String> = terms.iter().map(|t| format!("\"{t}\"")).collect();
    quoted.join(" OR ")
}

/// How much a page's title, and its path, naming the question's terms lift
/// its BM25 score: the score is multiplied by `1 + TITLE_BOOST × (share of
/// the terms in the title) + PATH_BOOST × (share in the path)`.
const TITLE_BOOST: f64 = 1.0;
const PATH_BOOST: f64 = 0.5;

/// A page FTS5 found, with its BM25 score made positive (higher is better).
pub struct Candidate<T> {
    pub score: f64,
    pub title: Option<String>,
    pub filename: String,
    pub item: T,
}

/// Orders `candidates` best first by their boosted score; ties keep FTS5's order.
pub fn rerank<T>(terms: &[String], candidates: Vec<Candidate<T>>) -> Vec<T> {
    if terms.is_empty() {
        return candidates.into_iter().map(|c| c.item).collect();
    }
    let share = |text: &str| {
        let hits = terms.iter().filter(|t| text.contains(t.as_str())).count();
        hits as f64 / terms.len() as f64
    };
    let mut scored: Vec<(f64, T)> = candidates
        .into_iter()
        .map(|c| {
            let title = c.title.as_deref().map(normalize).unwrap_or_default();
            let path: String = normalize(&c.filename.replace(['/', '_', '-', '.'], " "));
            let boost = 1.0 + TITLE_BOOST * share(&title) + PATH_BOOST * share(&path);
            (c.score * boost, c.item)
        })
        .collect();
    // Stable: equal scores keep FTS5's order.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|(_, item)| item).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(q: &str) -> Vec<String> {
        terms(q)
    }

    #[test]
    fn questions_keep_their_meaningful_terms() {
        assert_eq!(
            t("How do I squash commits of a merge request?"),
            ["squash", "commit", "merge", "request"]
        );
        assert_eq!(t("rebase?"), ["rebase"]);
        assert_eq!(t("NOT merge OR \"merge\" AND ("), ["merge"]);
        assert_eq!(t("?!. ,"), Vec::<String>::new());
        assert_eq!(t("Where is the dépôt_x?"), ["dépôt_x"]);
        assert_eq!(t("squash an MR"), ["squash", "merge", "request"]);
        assert_eq!(
            t("configure CI/CD variables"),
            ["configure", "cicd", "variable"]
        );
        // Only stop words: they are searched rather than nothing.
        assert_eq!(t("what is this"), ["what", "this"]);
        let long =
            "pipeline ".repeat(10) + &(0..100).map(|i| format!("word{i} ")).collect::<String>();
        assert_eq!(t(&long).len(), MAX_TERMS);
        assert_eq!(t(&long)[0], "pipeline");
    }

    #[test]
    fn stems_are_prefixes_of_every_form() {
        for (w, s) in [
            ("commits", "commit"),
            ("branches", "branch"),
            ("squashing", "squash"),
            ("squashed", "squash"),
            ("policies", "polic"),
            ("access", "access"),
            ("status", "status"),
            ("analysis", "analysis"),
            ("runs", "runs"),
            ("string", "string"),
            ("pipelines", "pipeline"),
            ("indexes", "index"),
        ] {
            assert_eq!(stem(w), s, "{w}");
        }
    }

    #[test]
    fn match_expression_quotes_and_ors() {
        assert_eq!(
            match_expression(&t("squash commits")),
            r#""squash" OR "commit""#
        );
        assert_eq!(match_expression(&[]), "");
    }

    #[test]
    fn titles_and_paths_lift_pages() {
        let c = |score: f64, title: &str, filename: &str, id: u8| Candidate {
            score,
            title: Some(title.to_string()),
            filename: filename.to_string(),
            item: id,
        };
        let terms = t("squash commits");
        let order = rerank(
            &terms,
            vec![
                c(
                    10.0,
                    "Merge requests",
                    "/user/project/merge_requests/index.md",
                    1,
                ),
                c(
                    8.0,
                    "Squash and merge",
                    "/user/project/merge_requests/squash_and_merge.md",
                    2,
                ),
                c(7.0, "Commits", "/user/project/repository/commits.md", 3),
            ],
        );
        assert_eq!(order, [2, 3, 1]);
        // No boost: FTS5's order stays.
        assert_eq!(
            rerank(
                &terms,
                vec![c(3.0, "a", "/a.md", 1), c(3.0, "b", "/b.md", 2)]
            ),
            [1, 2]
        );
    }
}
