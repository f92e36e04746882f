//! GitLab documentation search for Duo Chat (and the Agent Platform's
//! documentation tool), answered from a local SQLite FTS5 index file, as the
//! self-hosted upstream image does (`./tmp/docs.db`, built offline from the
//! docs of one GitLab version), and `aigw docs-index`, which builds that file
//! from a docs tree or archive ([`build`]).
//!
//! The file's layout is upstream's ([`layout`]). It is opened read-only for
//! each search, on the blocking pool, so a replaced index is picked up
//! without a reload and a slow query never stalls the runtime; a search still
//! running at its deadline (or whose client left) is interrupted. A missing
//! file means "no documentation installed": no results, not an error.
//! Questions are matched by their meaningful terms ([`query`]).
//!
//! Entry points: [`DocsIndex::search`] (async: the HTTP route, tools),
//! [`search_file`] (blocking), [`inspect`] (what an index holds), [`build`].

pub mod builder;
pub mod layout;
pub mod query;
mod source;

pub use source::printable;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, InterruptHandle, OpenFlags};
use serde_json::Value;

pub use builder::{BuildError, BuildOptions, BuildSummary, Progress, build};

/// Upstream's cap on the estimated tokens of all results together.
pub const MAX_RESULT_TOKENS: u64 = 8000;
/// Longest a search may run before it is interrupted.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);
/// FTS5 ranks every page holding any of the terms; the best this many (or
/// `page_size`, if more) are reranked by title and path ([`query::rerank`]).
const CANDIDATES: u32 = 50;

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

    /// The best `page_size` pages for `query` (a question or keywords), best
    /// first, capped at [`MAX_RESULT_TOKENS`] estimated tokens.
    pub async fn search(&self, query: &str, page_size: u32) -> Result<Vec<DocResult>, SearchError> {
        let terms = query::terms(query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.path.clone();
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let task = tokio::task::spawn_blocking(move || {
            let Some(conn) = open_if_present(&path)? else {
                return Ok(Vec::new());
            };
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

/// [`DocsIndex::search`] on the calling thread, without a deadline (the
/// command line's sample query).
pub fn search_file(
    path: &Path,
    query: &str,
    page_size: u32,
) -> Result<Vec<DocResult>, SearchError> {
    let terms = query::terms(query);
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    match open_if_present(path)? {
        None => Ok(Vec::new()),
        Some(conn) => run(&conn, &terms, page_size).map(cap_tokens),
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

fn open_if_present(path: &Path) -> Result<Option<Connection>, SearchError> {
    if !path.is_file() {
        tracing::warn!(path = %path.display(), "documentation search: no index file, answering with no results");
        return Ok(None);
    }
    open(path).map(Some)
}

fn run(conn: &Connection, terms: &[String], page_size: u32) -> Result<Vec<DocResult>, SearchError> {
    let index_err = |e: rusqlite::Error| SearchError::Index(e.to_string());
    // Ranked ids first, the pages after: selecting the content in the ranking
    // query would make SQLite's sorter read every matching page (several
    // times slower on GitLab's 2,500 pages), not just the candidates.
    let mut ranked = conn
        .prepare(
            "SELECT rowid, bm25(doc_index) FROM doc_index WHERE processed MATCH ?1 \
             ORDER BY bm25(doc_index) LIMIT ?2",
        )
        .map_err(index_err)?;
    let ids = ranked
        .query_map(
            (query::match_expression(terms), CANDIDATES.max(page_size)),
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, f64>(1)?)),
        )
        .map_err(index_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(index_err)?;
    let mut page = conn
        .prepare("SELECT metadata, content FROM doc_index WHERE rowid = ?1")
        .map_err(index_err)?;
    let mut candidates = Vec::with_capacity(ids.len());
    for (rowid, bm25) in ids {
        let (metadata, content) = page
            .query_row([rowid], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(index_err)?;
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
        let id = id.to_string();
        candidates.push(query::Candidate {
            // FTS5's bm25() is negative; better matches are more so.
            score: -bm25,
            title: layout::title(&content).map(str::to_string),
            filename: id.clone(),
            item: DocResult {
                id,
                content,
                metadata,
            },
        });
    }
    let mut results = query::rerank(terms, candidates);
    results.truncate(page_size as usize);
    Ok(results)
}

/// What an index file holds (`aigw docs-index check`, `check-config`).
#[derive(Clone, Debug, PartialEq)]
pub struct IndexInfo {
    pub file_bytes: u64,
    pub pages: u64,
    /// `PRAGMA user_version` ([`layout::USER_VERSION`] in the shared layout).
    pub user_version: i64,
    /// The table's `CREATE` statement as stored.
    pub schema: String,
    /// Whether the table is exactly the shared layout (columns, tokenizer).
    pub layout_ok: bool,
    /// The `metadata.version`s with their page counts, most pages first, at
    /// most 10 (`None`: pages without one, as upstream writes them).
    pub versions: Vec<(Option<String>, u64)>,
}

/// What the index at `path` holds: `Ok(None)` when there is no file, an
/// error when the file is not such an index.
pub fn inspect(path: &Path) -> Result<Option<IndexInfo>, SearchError> {
    let file_bytes = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SearchError::Index(e.to_string())),
    };
    let index_err = |e: rusqlite::Error| SearchError::Index(e.to_string());
    let conn = open(path)?;
    let schema: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'doc_index'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => {
                SearchError::Index("the file has no doc_index table".into())
            }
            e => index_err(e),
        })?;
    let user_version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(index_err)?;
    let pages: i64 = conn
        .query_row("SELECT count(*) FROM doc_index", [], |r| r.get(0))
        .map_err(index_err)?;
    let mut stmt = conn
        .prepare(
            "SELECT CAST(json_extract(metadata, '$.version') AS TEXT) AS v, count(*) AS n \
             FROM doc_index WHERE json_valid(metadata) GROUP BY v ORDER BY n DESC LIMIT 10",
        )
        .map_err(index_err)?;
    let versions = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, i64>(1)?.max(0) as u64,
            ))
        })
        .map_err(index_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(index_err)?;
    let compact = schema.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(Some(IndexInfo {
        file_bytes,
        pages: pages.max(0) as u64,
        user_version,
        layout_ok: compact == layout::CREATE_TABLE,
        schema,
        versions,
    }))
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
