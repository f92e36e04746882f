//! `POST /v1/search/gitlab-docs` against a small FTS5 index built here, in
//! the upstream layout (`doc_index(processed, content, metadata)`, porter
//! trigram tokenizer, user_version 1).
mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

const PATH: &str = "/v1/search/gitlab-docs";

/// Writes an index with `(filename, markdown)` pages, processed as upstream
/// does (lower-cased, punctuation stripped).
fn build_index(path: &Path, pages: &[(&str, &str)]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE VIRTUAL TABLE doc_index USING fts5(processed, content, metadata, tokenize='porter trigram');
         PRAGMA user_version = 1;",
    )
    .unwrap();
    for (filename, content) in pages {
        let processed: String = content
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace())
            .collect();
        let metadata = json!({"filename": filename, "title": content.lines().next().unwrap_or("")});
        conn.execute(
            "INSERT INTO doc_index (processed, content, metadata) VALUES (?1, ?2, ?3)",
            (processed, content, metadata.to_string()),
        )
        .unwrap();
    }
}

fn docs() -> Vec<(&'static str, String)> {
    vec![
        (
            "/topics/git/git_rebase.md",
            "# Git rebase\n\nRebase your branch onto the default branch with `git rebase`. Rebase often, rebase early: rebase.".into(),
        ),
        (
            "/user/project/merge_requests/index.md",
            "# Merge requests\n\nA merge request proposes changes; you can rebase it from the UI.".into(),
        ),
        (
            "/ci/yaml/index.md",
            "# CI/CD YAML syntax\n\nKeywords for .gitlab-ci.yml: stages, jobs, rules.".into(),
        ),
        ("/big.md", format!("# Rebase handbook\n\n{}", "filler words ".repeat(2000))),
    ]
}

fn token(scopes: &[&str]) -> String {
    gitlab_key().rails_token(json!({ "scopes": scopes }))
}

/// The body Rails' docs client sends (client spec §1.7).
fn rails_body(query: &str, page_size: Option<u64>) -> Value {
    let mut payload = json!({"query": query});
    if let Some(n) = page_size {
        payload["page_size"] = json!(n);
    }
    json!({
        "type": "search-docs",
        "metadata": {"source": "GitLab EE", "version": "18.6.0"},
        "payload": payload,
    })
}

async fn search(gw: &Gateway, token: &str, body: &Value) -> (u16, Value) {
    let resp = with_headers(client().post(gw.http_url(PATH)), &rails_headers(token))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn gateway(db: &Path) -> (FakeGitLab, Gateway, String) {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let (gw, _) = gateway_with_models(
        &gitlab,
        &[("AIGW_DOCS_SEARCH__DB_PATH", db.to_str().unwrap())],
    )
    .await;
    (
        gitlab,
        gw,
        token(&[
            "duo_chat",
            "duo_classic_chat",
            "documentation_search",
            "complete_code",
        ]),
    )
}

#[tokio::test]
async fn finds_pages_by_bm25_in_upstream_shape() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("docs.db");
    let pages = docs();
    let pages: Vec<(&str, &str)> = pages.iter().map(|(f, c)| (*f, c.as_str())).collect();
    build_index(&db, &pages);
    let (_gitlab, gw, token) = gateway(&db).await;

    let (status, body) = search(&gw, &token, &rails_body("rebase?", Some(2))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["provider"], "sqlite");
    assert!(body["metadata"]["timestamp"].as_u64().unwrap() > 1_700_000_000);
    let results = body["response"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{body}");
    // Three pages match; the one about rebasing ranks first.
    assert_eq!(results[0]["id"], "/topics/git/git_rebase.md");
    assert_eq!(
        results[0]["metadata"]["filename"],
        "/topics/git/git_rebase.md"
    );
    assert!(
        results[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("# Git rebase")
    );
    for r in results {
        assert_eq!(r.as_object().unwrap().len(), 3, "id content metadata: {r}");
    }

    // Default page size 4: all three, under the 8000-token cap together.
    let (_, body) = search(&gw, &token, &rails_body("rebase", None)).await;
    let results = body["response"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{body}");
    let tokens: f64 = results
        .iter()
        .map(|r| r["content"].as_str().unwrap().split_whitespace().count() as f64 * 1.4)
        .sum();
    assert!(tokens <= 8000.0, "{tokens}");

    // A whole question: its short and common words ("how", "do", "I", "my")
    // are left out, the rest ORed (upstream ANDs them all and, with the
    // trigram tokenizer, finds nothing).
    let (_, body) = search(&gw, &token, &rails_body("How do I rebase my branch?", None)).await;
    assert_eq!(
        body["response"]["results"][0]["id"], "/topics/git/git_rebase.md",
        "{body}"
    );
    let (_, body) = search(&gw, &token, &rails_body("rebase my branch?", None)).await;
    assert_eq!(
        body["response"]["results"][0]["id"],
        "/topics/git/git_rebase.md"
    );

    // Only punctuation: nothing to search for, no error.
    let (status, body) = search(&gw, &token, &rails_body("?!...", None)).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["results"], json!([]));

    // FTS5 operators in a question are words, not syntax.
    let (status, body) = search(
        &gw,
        &token,
        &rails_body("NOT rebase OR \"merge\" AND (", None),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // No match.
    let (status, body) = search(&gw, &token, &rails_body("kubernetes", None)).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["results"], json!([]));
}

#[tokio::test]
async fn the_token_cap_keeps_results_under_8000_estimated_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("docs.db");
    let big = format!("# Pipelines\n\n{}", "pipeline stage ".repeat(2500)); // 5000 words
    let small = "# Pipeline basics\n\nA pipeline runs jobs.".to_string();
    build_index(&db, &[("/a.md", &big), ("/b.md", &big), ("/c.md", &small)]);
    let (_gitlab, gw, token) = gateway(&db).await;
    let (status, body) = search(&gw, &token, &rails_body("pipeline", Some(20))).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["response"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    // 7000 tokens + 7000 would exceed 8000: results stop at the first that does not fit.
    let big_count = ids.iter().filter(|id| **id != "/c.md").count();
    assert!(big_count <= 1, "{ids:?}");
}

#[tokio::test]
async fn missing_index_answers_no_results() {
    let dir = tempfile::tempdir().unwrap();
    let (_gitlab, gw, token) = gateway(&dir.path().join("absent.db")).await;
    let (status, body) = search(&gw, &token, &rails_body("rebase", None)).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"], json!({"results": []}));
    assert_eq!(body["metadata"]["provider"], "sqlite");
}

#[tokio::test]
async fn permission_validation_and_broken_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("docs.db");
    std::fs::write(&db, "this is not a database, just text".repeat(100)).unwrap();
    let (_gitlab, gw, token) = gateway(&db).await;

    let (status, body) = search(
        &gw,
        &self::token(&["duo_chat", "complete_code"]),
        &rails_body("rebase", None),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({"detail": "Unauthorized to search documentations"})
    );

    let resp = client()
        .post(gw.http_url(PATH))
        .json(&rails_body("x", None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    for bad in [
        rails_body("rebase", Some(0)),
        rails_body("rebase", Some(21)),
        json!({"type": "search-docs", "metadata": {"source": "GitLab EE", "version": "18.6.0"}}),
        json!({"type": "x".repeat(101), "metadata": {"source": "s", "version": "v"}, "payload": {"query": "q"}}),
        json!({"type": "t", "metadata": {"source": "s", "version": "v"}, "payload": {"query": "q".repeat(400_001)}}),
        json!({"type": "t", "payload": {"query": "q"}}),
    ] {
        let (status, body) = search(&gw, &token, &bad).await;
        assert_eq!(status, 422, "{body}");
        assert!(!error_message(422, &body).is_empty(), "{body}");
    }

    // A file that is not an index: a clear 500, and the gateway keeps serving.
    let (status, body) = search(&gw, &token, &rails_body("rebase", None)).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("documentation index"),
        "{body}"
    );
    let resp = client()
        .get(gw.http_url("/monitoring/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
