//! GitLab documentation search for Duo Chat, answered from a local SQLite FTS5
//! index file, as the self-hosted upstream image does (`./tmp/docs.db`, built
//! offline from the docs of one GitLab version).
//!
//! The index is a virtual table `doc_index(processed, content, metadata)`:
//! `processed` is the search text, `content` the markdown returned, `metadata`
//! a JSON object with at least `filename` (the result's id). The file is opened
//! read-only for each search, on the blocking pool, so a replaced index is
//! picked up without a reload and a slow query never stalls the runtime; a
//! search still running at its deadline (or whose client left) is interrupted.
//! A missing file means "no documentation installed": no results, not an error.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, InterruptHandle, OpenFlags};
use serde_json::Value;

/// Upstream's cap on the estimated tokens of all results together.
pub const MAX_RESULT_TOKENS: u64 = 8000;
/// Longest a search may run before it is interrupted.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One documentation page that matched.
#[derive(Clone, Debug, PartialEq)]
pub struct DocResult {
    /// `metadata.filename`, e.g. `/user/project/index.md`.
    pub id: String,
    pub content: String,
    pub metadata: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the documentation search did not finish within {} s", SEARCH_TIMEOUT.as_secs())]
    Timeout,
    /// The index file exists but cannot be used (not an FTS5 index, corrupt, unreadable).
    #[error("the documentation index cannot be searched: {0}")]
    Index(String),
}

/// The configured index file.
#[derive(Clone, Debug)]
pub struct DocsIndex {
    path: PathBuf,
}

impl DocsIndex {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The best `page_size` pages for `query`, by BM25, capped at
    /// [`MAX_RESULT_TOKENS`] estimated tokens.
    pub async fn search(&self, query: &str, page_size: u32) -> Result<Vec<DocResult>, SearchError> {
        let terms = fts_query(query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.path.clone();
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let task = tokio::task::spawn_blocking(move || {
            if !path.is_file() {
                tracing::warn!(path = %path.display(), "documentation search: no index file, answering with no results");
                return Ok(Vec::new());
            }
            let conn = open(&path)?;
            let _ = handle_tx.send(conn.get_interrupt_handle());
            run(&conn, &terms, page_size)
        });
        // Interrupts the query if this future is dropped (client gone) or times out.
        let mut guard = Interrupter(None);
        let outcome = tokio::time::timeout(SEARCH_TIMEOUT, async {
            if let Ok(handle) = handle_rx.await {
                guard.0 = Some(handle);
            }
            task.await
        })
        .await;
        match outcome {
            Err(_) => Err(SearchError::Timeout),
            Ok(Err(join)) => Err(SearchError::Index(format!("search task failed: {join}"))),
            Ok(Ok(result)) => {
                guard.0 = None;
                result.map(cap_tokens)
            }
        }
    }
}

struct Interrupter(Option<InterruptHandle>);

impl Drop for Interrupter {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.interrupt();
        }
    }
}

fn open(path: &Path) -> Result<Connection, SearchError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| SearchError::Index(e.to_string()))
}

fn run(conn: &Connection, terms: &str, page_size: u32) -> Result<Vec<DocResult>, SearchError> {
    let index_err = |e: rusqlite::Error| SearchError::Index(e.to_string());
    let mut stmt = conn
        .prepare(
            "SELECT metadata, content FROM doc_index WHERE processed MATCH ?1 \
             ORDER BY bm25(doc_index) LIMIT ?2",
        )
        .map_err(index_err)?;
    let rows = stmt
        .query_map((terms, page_size), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(index_err)?;
    let mut results = Vec::new();
    for row in rows {
        let (metadata, content) = row.map_err(index_err)?;
        let metadata: Value = match serde_json::from_str(&metadata) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                tracing::warn!(
                    "documentation search: skipping a row whose metadata is not a JSON object"
                );
                continue;
            }
        };
        let Some(id) = metadata.get("filename").and_then(Value::as_str) else {
            tracing::warn!("documentation search: skipping a row without metadata.filename");
            continue;
        };
        results.push(DocResult {
            id: id.to_string(),
            content,
            metadata: metadata.clone(),
        });
    }
    Ok(results)
}

/// The FTS5 query for the user's text: every character that is neither a
/// word character nor whitespace removed (as upstream), then each remaining
/// word quoted, so `AND`/`OR`/`NOT` in a question are words, not operators
/// that would make the query invalid. Words are ANDed, as barewords are.
pub fn fts_query(text: &str) -> String {
    let sanitized: String = text
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_' || c.is_whitespace())
        .collect();
    let words: Vec<String> = sanitized
        .split_whitespace()
        .map(|w| format!("\"{w}\""))
        .collect();
    words.join(" ")
}

/// Upstream's estimate: 1.4 tokens per whitespace-separated word.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.split_whitespace().count() as f64 * 1.4) as u64
}

/// Keeps results, best first, until the next would exceed [`MAX_RESULT_TOKENS`].
fn cap_tokens(results: Vec<DocResult>) -> Vec<DocResult> {
    let mut total = 0;
    let mut kept = Vec::new();
    for r in results {
        let tokens = estimate_tokens(&r.content);
        if total + tokens > MAX_RESULT_TOKENS {
            break;
        }
        total += tokens;
        kept.push(r);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_lose_punctuation_and_operators() {
        assert_eq!(
            fts_query("How do I rebase? (git) \"quick\"-start*"),
            r#""How" "do" "I" "rebase" "git" "quickstart""#
        );
        assert_eq!(fts_query("NOT merge OR"), r#""NOT" "merge" "OR""#);
        assert_eq!(fts_query("?!. ,"), "");
        assert_eq!(fts_query("dépôt_x"), r#""dépôt_x""#);
    }

    #[test]
    fn results_stop_before_the_token_cap() {
        let doc = |n: usize| DocResult {
            id: format!("/{n}.md"),
            content: "word ".repeat(n),
            metadata: Value::Null,
        };
        // 5000 words = 7000 tokens; the next 1000 words (1400) would exceed 8000.
        let kept = cap_tokens(vec![doc(5000), doc(1000), doc(10)]);
        assert_eq!(kept.len(), 1);
        assert_eq!(cap_tokens(vec![doc(10), doc(20)]).len(), 2);
    }
}
