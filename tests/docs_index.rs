//! `aigw docs-index build|check`, black-box: a docs tree written here (front
//! matter, nested directories, non-ASCII, unreadable entries) as a directory,
//! a zip and a tar.gz; the index each gives answers `/v1/search/gitlab-docs`
//! with the expected page first for keywords and whole questions; a file built
//! by upstream's rules reads the same; a replaced index is picked up by a
//! running gateway with no error mid-swap; every bad input gets its clear
//! error and leaves the existing index as it was.
mod common;

use std::{
    io::Write,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use common::*;
use serde_json::{Value, json};

const SEARCH: &str = "/v1/search/gitlab-docs";

// ---------------------------------------------------------------------------
// The docs tree.

fn page(title: &str, body: &str) -> String {
    format!(
        "---\nstage: Create\ngroup: Source Code\ninfo: Written for the aigw tests.\ntitle: {title}\n---\n\n{body}\n"
    )
}

/// `(path below doc/, markdown)`: a small GitLab-like documentation tree.
fn pages() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vec![
        ("index.md".into(), page("GitLab documentation", "Guides for projects, merge requests, CI/CD pipelines and the administration of an instance.")),
        ("user/project/merge_requests/index.md".into(), page("Merge requests",
            "A merge request is a proposal to merge the changes of one branch into another. A merge request shows the \
             changes, the discussion and the pipelines of the branch. Reviewers comment on a merge request, and a \
             merge request is merged when it is approved. Merge requests can be drafts. Each merge request has an \
             author, assignees and reviewers, and lists its commits.")),
        ("user/project/merge_requests/squash_and_merge.md".into(), page("Squash and merge",
            "When you squash commits, all the commits of a merge request are combined into a single commit when the \
             merge request is merged. Squashing keeps the history of the target branch short. To squash the commits \
             of a merge request, select **Squash commits** before you merge. A project can require squashing, allow \
             it or never squash. The squash commit message can be edited.")),
        ("user/project/merge_requests/creating_merge_requests.md".into(), page("Create a merge request",
            "You can create a merge request from the branches list, from an issue, or when you push a branch with \
             `git push -o merge_request.create`. Fill in the title and the description, then select **Create merge request**.")),
        ("user/project/merge_requests/approvals/index.md".into(), page("Merge request approvals",
            "Approval rules define how many approvals a merge request needs and who can approve it. Code owners can \
             be required approvers. An approval is reset when new commits are pushed.")),
        ("topics/git/git_rebase.md".into(), page("Rebase a branch",
            "Rebasing replays the commits of your branch on top of the target branch. Run `git rebase origin/main` to \
             rebase your branch, and resolve conflicts as they come. With an interactive rebase (`git rebase -i`) you \
             can also reorder, edit or squash commits. Rebase before you push; force-push after a rebase.")),
        ("topics/git/commit.md".into(), page("Commit changes",
            "A commit records a snapshot of your changes with a commit message. Run `git commit -m \"message\"`. \
             To change the last commit, amend it with `git commit --amend`.")),
        ("ci/yaml/index.md".into(), page("CI/CD YAML syntax reference",
            "The `.gitlab-ci.yml` file configures your pipeline with keywords. The global keywords are `stages`, \
             `include`, `default` and `workflow`; the job keywords include `script`, `image`, `rules`, `needs`, \
             `artifacts`, `cache` and `variables`. Every keyword is described below.")),
        ("ci/pipelines/index.md".into(), page("CI/CD pipelines",
            "Pipelines are the top-level component of continuous integration. Pipelines run jobs in stages; a \
             pipeline starts when you push, on a schedule, or from the API. Pipelines can be retried or canceled.")),
        ("ci/variables/index.md".into(), page("CI/CD variables",
            "Variables pass values to jobs. Define variables in `.gitlab-ci.yml` or in the project settings. A \
             protected variable is only passed to pipelines on protected branches and tags; a masked variable is \
             hidden in job logs.")),
        ("user/profile/personal_access_tokens.md".into(), page("Personal access tokens",
            "A personal access token authenticates you with the REST and GraphQL API, or with Git over HTTPS. To \
             create a personal access token, go to your user settings, select **Access tokens**, choose the scopes \
             and an expiry date. The token is shown once.")),
        ("user/ssh.md".into(), page("Use SSH keys to communicate with GitLab",
            "Generate an SSH key pair with `ssh-keygen -t ed25519`. Then add the public SSH key to your account: in \
             your user settings select **SSH keys**, paste the key and select **Add key**. Test it with `ssh -T`.")),
        // An older page: no front matter, the title is the first heading.
        ("administration/backup_restore/index.md".into(),
            "# Back up and restore GitLab\n\nA backup holds the database, the repositories and the uploads. Run \
             `gitlab-backup create` to back up an instance, and `gitlab-backup restore` to restore one.\n".into()),
        ("user/project/repository/branches/index.md".into(), page("Branches",
            "Branches hold the work of a project. The default branch is protected. Delete merged branches from the \
             branches list. Branch names can follow a naming rule.")),
        // Non-ASCII text and file names.
        ("user/project/repository/ミラー.md".into(), page("リポジトリのミラーリング",
            "リポジトリのミラーリングを使うと、外部のリポジトリとのあいだでブランチ、タグ、コミットを同期できます。プッシュミラーとプルミラーがあります。")),
        ("user/project/wiki/français.md".into(), page("Wiki du dépôt",
            "Le wiki du dépôt contient la documentation du projet. Übersicht: créer, modifier et supprimer des pages du wiki.")),
        // A directory whose name ends in .md is walked, not read as a page.
        ("user/odd.md/inside.md".into(), page("Inside a directory named like a page", "Nested under odd.md: still found.")),
    ];
    // Filler pages: the everyday words of the docs, so that "merge request",
    // "commit" and "branch" are common and only the right page stands out.
    for (i, topic) in [
        "issue boards",
        "labels",
        "milestones",
        "epics",
        "releases",
        "package registry",
        "container registry",
        "pages",
        "snippets",
        "webhooks",
        "integrations",
        "runners",
        "environments",
        "deployments",
        "feature flags",
        "security scanning",
        "audit events",
        "groups",
        "permissions",
        "service desk",
    ]
    .iter()
    .enumerate()
    {
        let cap = format!("{}{}", topic[..1].to_uppercase(), &topic[1..]);
        v.push((
            format!("features/topic_{i:02}.md"),
            page(&cap, &format!(
                "{cap} help you organise the work of a project. You can link {topic} to issues and to merge \
                 requests, and see them from the branch or the commit they belong to. Administrators configure \
                 {topic} for the whole instance; project maintainers configure them per project."
            )),
        ));
    }
    v
}

/// The pages every form of the tree must index (the unreadable ones aside).
fn filenames() -> Vec<String> {
    let mut f: Vec<String> = pages().into_iter().map(|(p, _)| format!("/{p}")).collect();
    f.sort();
    f
}

/// Writes the tree under `root`; returns the unreadable entries it made.
fn write_tree(root: &Path) -> Vec<&'static str> {
    for (path, text) in pages() {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    // Unreadable even for root (the tests may run as root, where a mode-000
    // file is readable): a link to nothing and a FIFO (never opened: it is
    // not a regular file).
    std::os::unix::fs::symlink("no/such/page.md", root.join("broken.md")).unwrap();
    let fifo = std::ffi::CString::new(root.join("ci/fifo.md").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    vec!["/broken.md", "/ci/fifo.md"]
}

/// A GitLab checkout: `doc/` plus markdown elsewhere that must not be indexed.
fn checkout(dir: &Path) -> PathBuf {
    let repo = dir.join("gitlab");
    write_tree(&repo.join("doc"));
    std::fs::write(
        repo.join("README.md"),
        "# GitLab\n\nNot documentation: squash squash squash.\n",
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("app")).unwrap();
    std::fs::write(repo.join("app/notes.md"), "rebase rebase rebase\n").unwrap();
    repo
}

/// GitLab's download: `gitlab-v18.6.0-ee-doc/doc/...`, deflated, one entry
/// stored and damaged (its CRC no longer matches: unreadable, skipped).
fn zip_archive(dir: &Path) -> PathBuf {
    use zip::write::SimpleFileOptions;
    let path = dir.join("gitlab-v18.6.0-ee-doc.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.add_directory("gitlab-v18.6.0-ee-doc/doc/", deflated)
        .unwrap();
    for (p, text) in pages() {
        zip.start_file(format!("gitlab-v18.6.0-ee-doc/doc/{p}"), deflated)
            .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("gitlab-v18.6.0-ee-doc/doc/damaged.md", stored)
        .unwrap();
    zip.write_all(b"# Damaged\n\nTHIS-ENTRY-GETS-CORRUPTED\n")
        .unwrap();
    zip.finish().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(9).position(|w| w == b"THIS-ENTR").unwrap();
    bytes[at] = b'X';
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Packed by hand: `doc/...` at the top, with a symbolic link entry.
fn tar_gz_archive(dir: &Path) -> PathBuf {
    let path = dir.join("docs.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    for (p, text) in pages() {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("doc/{p}"), text.as_bytes())
            .unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    tar.append_link(&mut h, "doc/link.md", "index.md").unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    path
}

// ---------------------------------------------------------------------------
// Running the command line.

fn aigw(args: &[&str]) -> Output {
    aigw_command().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn build(from: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "docs-index",
        "build",
        "--from",
        from.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    aigw(&args)
}

fn build_ok(from: &Path, out: &Path, extra: &[&str]) -> String {
    let o = build(from, out, extra);
    assert!(o.status.success(), "build from {}: {o:?}", from.display());
    text(&o.stdout)
}

fn rows(db: &Path) -> Vec<(String, String, Value)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT processed, content, metadata FROM doc_index")
        .unwrap();
    let mut v: Vec<(String, String, Value)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                serde_json::from_str(&r.get::<_, String>(2)?).unwrap(),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    v.sort_by(|a, b| a.2["filename"].as_str().cmp(&b.2["filename"].as_str()));
    v
}

fn schema(db: &Path) -> (String, i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let sql = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'doc_index'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (
        sql,
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap(),
    )
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial") || n.ends_with("-journal"))
        .collect()
}

// ---------------------------------------------------------------------------
// Searching through the gateway.

async fn gateway(db: &Path) -> (FakeGitLab, Gateway, String) {
    let gitlab = FakeGitLab::start(vec![gitlab_key().jwk()]).await;
    let (gw, _) = gateway_with_models(
        &gitlab,
        &[("AIGW_DOCS_SEARCH__DB_PATH", db.to_str().unwrap())],
    )
    .await;
    let token = gitlab_key().rails_token(json!({"scopes": ["duo_chat", "documentation_search"]}));
    (gitlab, gw, token)
}

async fn search(c: &reqwest::Client, gw: &Gateway, token: &str, query: &str) -> (u16, Vec<String>) {
    let body = json!({
        "type": "search-docs",
        "metadata": {"source": "GitLab EE", "version": "18.6.0"},
        "payload": {"query": query},
    });
    let resp = with_headers(c.post(gw.http_url(SEARCH)), &rails_headers(token))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let ids = body["response"]["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    (status, ids)
}

/// Keyword queries and whole questions (with short and common words), and
/// the page each must find first.
const EXPECTED: &[(&str, &str)] = &[
    (
        "How do I squash commits of a merge request?",
        "/user/project/merge_requests/squash_and_merge.md",
    ),
    ("squash", "/user/project/merge_requests/squash_and_merge.md"),
    ("rebase", "/topics/git/git_rebase.md"),
    ("How do I rebase my branch?", "/topics/git/git_rebase.md"),
    (
        "What keywords can I use in .gitlab-ci.yml?",
        "/ci/yaml/index.md",
    ),
    (
        "how to create a personal access token",
        "/user/profile/personal_access_tokens.md",
    ),
    ("How do I add an SSH key to my account?", "/user/ssh.md"),
    (
        "Who can approve an MR?",
        "/user/project/merge_requests/approvals/index.md",
    ),
    ("back up gitlab", "/administration/backup_restore/index.md"),
    ("protected variables", "/ci/variables/index.md"),
    ("pipelines", "/ci/pipelines/index.md"),
    ("ミラーリング", "/user/project/repository/ミラー.md"),
    (
        "Où est le wiki du dépôt ?",
        "/user/project/wiki/français.md",
    ),
];

async fn assert_expected_pages(gw: &Gateway, token: &str, form: &str) {
    let c = client();
    for (query, first) in EXPECTED {
        let (status, ids) = search(&c, gw, token, query).await;
        assert_eq!(status, 200, "{form}: {query}");
        assert_eq!(
            ids.first().map(String::as_str),
            Some(*first),
            "{form}: {query:?} gave {ids:?}"
        );
    }
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn directory_zip_and_tar_gz_give_the_same_index_and_the_expected_pages() {
    let dir = tempfile::tempdir().unwrap();
    let repo = checkout(dir.path());
    let zip = zip_archive(dir.path());
    let tgz = tar_gz_archive(dir.path());
    let out = dir.path().join("index");
    std::fs::create_dir(&out).unwrap();
    let db = out.join("docs.db");
    let (_gitlab, gw, token) = gateway(&db).await;

    // Nothing yet: no results, no error.
    let (status, ids) = search(&client(), &gw, &token, "squash").await;
    assert_eq!((status, ids.len()), (200, 0));

    // A checkout: only doc/ is read, the two unreadable entries are skipped
    // with a warning each and counted.
    let o = build(&repo, &db, &["--version", "v18.6.0-ee"]);
    assert!(o.status.success(), "{o:?}");
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    let n = filenames().len();
    assert!(
        stdout.starts_with(&format!("aigw: indexed {n} pages (")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(" into {} (", db.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(" MB) in ") && stdout.contains(" s; 2 pages skipped"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: skipped /broken.md: a symbolic link to nothing"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: skipped /ci/fifo.md: not a regular file"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "reading the docs under {}",
            repo.join("doc").display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r'),
        "no progress line when stderr is not a terminal: {stderr:?}"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(leftovers(&out), Vec::<String>::new());

    // The layout: upstream's table and user_version; metadata filename + version.
    assert_eq!(
        schema(&db),
        ("CREATE VIRTUAL TABLE doc_index USING fts5(processed, content, metadata, tokenize='porter trigram')".into(), 1)
    );
    let from_dir = rows(&db);
    let names: Vec<&str> = from_dir
        .iter()
        .map(|r| r.2["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, filenames());
    let squash = from_dir
        .iter()
        .find(|r| r.2["filename"] == "/user/project/merge_requests/squash_and_merge.md")
        .unwrap();
    assert_eq!(
        squash.2,
        json!({"filename": "/user/project/merge_requests/squash_and_merge.md", "version": "v18.6.0-ee"})
    );
    assert!(
        squash.1.starts_with("---\nstage: Create"),
        "content is the markdown as is"
    );
    assert!(
        squash
            .0
            .starts_with("\nwhen you squash commits all the commits of a merge request"),
        "{:?}",
        squash.0
    );
    assert!(
        !squash.0.contains("stage") && !squash.0.contains('*'),
        "no front matter, no punctuation"
    );

    // The gateway, running all along, answers from the new index.
    assert_expected_pages(&gw, &token, "directory").await;

    // The zip (GitLab's download): same pages; the version from its folder
    // name; the damaged entry skipped.
    let o = build(&zip, &db, &[]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        text(&o.stderr).contains("warning: skipped /damaged.md:"),
        "{o:?}"
    );
    assert!(
        text(&o.stdout).contains(&format!("indexed {n} pages")),
        "{o:?}"
    );
    let from_zip = rows(&db);
    assert_eq!(from_zip.len(), n);
    for (a, b) in from_dir.iter().zip(&from_zip) {
        assert_eq!(
            (&a.0, &a.1, &a.2["filename"]),
            (&b.0, &b.1, &b.2["filename"])
        );
        assert_eq!(b.2["version"], "v18.6.0-ee");
    }
    assert_expected_pages(&gw, &token, "zip").await;

    // The tar.gz, packed by hand: the link entry is skipped; no version known.
    let o = build(&tgz, &db, &[]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        text(&o.stderr).contains("warning: skipped /link.md: a symbolic link in the archive"),
        "{o:?}"
    );
    let from_tgz = rows(&db);
    for (a, b) in from_dir.iter().zip(&from_tgz) {
        assert_eq!(
            (&a.0, &a.1, &a.2["filename"]),
            (&b.0, &b.1, &b.2["filename"])
        );
        assert_eq!(
            b.2,
            json!({"filename": a.2["filename"]}),
            "no version key when none is known"
        );
    }
    assert_expected_pages(&gw, &token, "tar.gz").await;

    // `check` on it and on what the gateway is configured with.
    let o = aigw(&[
        "docs-index",
        "check",
        db.to_str().unwrap(),
        "--query",
        "how do I squash commits of a merge request",
    ]);
    assert!(o.status.success(), "{o:?}");
    let out_text = text(&o.stdout);
    assert!(out_text.contains(&format!("pages: {n}\n")), "{out_text}");
    assert!(out_text.contains("version: not recorded"), "{out_text}");
    assert!(
        out_text.contains("porter trigram, user_version 1"),
        "{out_text}"
    );
    assert!(
        out_text.contains("  1. /user/project/merge_requests/squash_and_merge.md\n"),
        "{out_text}"
    );
}

/// Upstream's builder, by its rules (`index_docs_as_sqlite.py`), written
/// here: every `doc/**/*.md`, the text after its first two `---` markers,
/// lower-cased, `[^\w\s]` removed; metadata `{"filename": ...}` only.
/// Entries that are not regular files are left out (upstream would stop).
const UPSTREAM_RULES_PY: &str = r#"
import json, re, sqlite3, sys
from pathlib import Path
root, out = Path(sys.argv[1]), sys.argv[2]
rows = []
for p in sorted(root.glob("doc/**/*.md")):
    if not p.is_file():
        continue
    text = p.read_text(encoding="utf-8")
    body = text
    first = body.find("---")
    if first != -1:
        second = body.find("---", first + 1)
        body = body[second + 2 : -1]
    body = re.sub(r"[^\w\s]", "", body.lower())
    rows.append((body, text, json.dumps({"filename": str(p).removeprefix(f"{root}/doc")})))
db = sqlite3.connect(out)
db.execute("CREATE VIRTUAL TABLE doc_index USING fts5(processed, content, metadata, tokenize='porter trigram')")
db.execute("PRAGMA user_version = 1")
db.executemany("INSERT INTO doc_index (processed, content, metadata) VALUES (?, ?, ?)", rows)
db.commit()
"#;

/// Upstream's reader: the sanitised question as FTS5 barewords.
const UPSTREAM_QUERY_PY: &str = r#"
import json, re, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
q = re.sub(r"[^\w\s]", "", sys.argv[2])
for (m,) in db.execute("SELECT metadata FROM doc_index WHERE processed MATCH ? ORDER BY bm25(doc_index) LIMIT 4", (q,)):
    print(json.loads(m)["filename"])
"#;

/// Python 3 with an SQLite that has FTS5 and the trigram tokenizer (3.34+).
fn python_with_trigram() -> Result<(), String> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import sqlite3; sqlite3.connect(':memory:').execute(\"CREATE VIRTUAL TABLE t USING fts5(a, tokenize='porter trigram')\")"])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if probe.status.success() {
        Ok(())
    } else {
        Err(text(&probe.stderr))
    }
}

/// The same rules in Rust, written apart from `docs_search` (when python3
/// cannot do it).
fn upstream_rules_in_rust(repo: &Path, out: &Path) {
    let conn = rusqlite::Connection::open(out).unwrap();
    conn.execute_batch(
        "CREATE VIRTUAL TABLE doc_index USING fts5(processed, content, metadata, tokenize='porter trigram'); PRAGMA user_version = 1;",
    )
    .unwrap();
    let docs = repo.join("doc");
    for e in walk(&docs) {
        let Ok(text) = std::fs::read_to_string(&e) else {
            continue;
        };
        let mut body = text.as_str();
        if let Some(first) = body.find("---") {
            let second = body[first + 1..]
                .find("---")
                .map_or(-1, |i| (first + 1 + i) as i64);
            let chars: Vec<(usize, char)> = body.char_indices().collect();
            let from = (second + 2) as usize;
            let to = chars.last().map_or(0, |c| c.0);
            body = if from < to { &body[from..to] } else { "" };
        }
        let processed: String = body
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '_' || c.is_whitespace())
            .collect();
        let name = format!("/{}", e.strip_prefix(&docs).unwrap().to_str().unwrap());
        conn.execute(
            "INSERT INTO doc_index (processed, content, metadata) VALUES (?1, ?2, ?3)",
            (processed, &text, json!({"filename": name}).to_string()),
        )
        .unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else if p.is_file() && p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
    out
}

fn upstream_query(db: &Path, q: &str) -> Vec<String> {
    let o = std::process::Command::new("python3")
        .args(["-c", UPSTREAM_QUERY_PY, db.to_str().unwrap(), q])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    text(&o.stdout).lines().map(String::from).collect()
}

#[tokio::test]
async fn an_index_built_by_upstreams_rules_and_ours_are_interchangeable() {
    let dir = tempfile::tempdir().unwrap();
    let repo = checkout(dir.path());
    let ours = dir.path().join("ours.db");
    let theirs = dir.path().join("theirs.db");
    build_ok(&repo, &ours, &[]);
    let python = python_with_trigram();
    match &python {
        Ok(()) => {
            let o = std::process::Command::new("python3")
                .args([
                    "-c",
                    UPSTREAM_RULES_PY,
                    repo.to_str().unwrap(),
                    theirs.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            assert!(o.status.success(), "{o:?}");
        }
        Err(why) => {
            eprintln!(
                "python3 with FTS5 trigram not available ({why}): the upstream-rules index is built in Rust"
            );
            upstream_rules_in_rust(&repo, &theirs);
        }
    }

    // Same table, same pages, same content.
    assert_eq!(schema(&ours), schema(&theirs));
    let (a, b) = (rows(&ours), rows(&theirs));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.2["filename"], y.2["filename"]);
        assert_eq!(x.1, y.1);
        // The searched text differs only in whitespace at its ends (upstream
        // cuts one character too few and one too many).
        let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(words(&x.0), words(&y.0), "{}", x.2["filename"]);
    }

    // The gateway gives the same answers from either file.
    let db = dir.path().join("served.db");
    std::fs::copy(&theirs, &db).unwrap();
    let (_gitlab, gw, token) = gateway(&db).await;
    let c = client();
    let mut answers = Vec::new();
    for (q, _) in EXPECTED {
        answers.push(search(&c, &gw, &token, q).await);
    }
    assert_expected_pages(&gw, &token, "upstream-built").await;
    std::fs::copy(&ours, dir.path().join("tmp.db")).unwrap();
    std::fs::rename(dir.path().join("tmp.db"), &db).unwrap();
    for ((q, _), theirs_answer) in EXPECTED.iter().zip(&answers) {
        assert_eq!(&search(&c, &gw, &token, q).await, theirs_answer, "{q}");
    }

    // Upstream's reader reads our file as its own (its AND query, keywords).
    if python.is_ok() {
        for q in [
            "squash",
            "rebase",
            "pipelines",
            "personal access token",
            "ミラーリング",
            "dépôt",
        ] {
            let (x, y) = (upstream_query(&ours, q), upstream_query(&theirs, q));
            assert!(!x.is_empty(), "{q}");
            assert_eq!(x, y, "{q}");
        }
        // ...and, as the issue says, finds nothing for a whole question.
        assert_eq!(
            upstream_query(&theirs, "How do I squash commits of a merge request?"),
            Vec::<String>::new()
        );
    }
}

#[tokio::test]
async fn a_replaced_index_is_picked_up_with_no_error_mid_swap() {
    let dir = tempfile::tempdir().unwrap();
    let (a_tree, b_tree) = (dir.path().join("a"), dir.path().join("b"));
    for (tree, word, n) in [(&a_tree, "alphaunique", 30), (&b_tree, "betaunique", 40)] {
        std::fs::create_dir_all(tree).unwrap();
        for i in 0..n {
            std::fs::write(
                tree.join(format!("{word}_{i}.md")),
                page(
                    &format!("Page {i}"),
                    &format!("{word} text {}", "filler ".repeat(200)),
                ),
            )
            .unwrap();
        }
    }
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let db = live.join("docs.db");
    let (a_db, b_db) = (dir.path().join("a.db"), dir.path().join("b.db"));
    build_ok(&a_tree, &a_db, &[]);
    build_ok(&b_tree, &b_db, &[]);
    build_ok(&a_tree, &db, &[]);
    let (_gitlab, gw, token) = gateway(&db).await;
    let gw = Arc::new(gw);

    // Searchers run throughout; every answer must be a whole index's.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut searchers = Vec::new();
    for _ in 0..4 {
        let (gw, token, stop, done) = (gw.clone(), token.clone(), stop.clone(), done.clone());
        searchers.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let (status, ids) = search(&c, &gw, &token, "unique text").await;
                assert_eq!(status, 200);
                assert_eq!(ids.len(), 4, "{ids:?}");
                let a = ids.iter().all(|i| i.starts_with("/alphaunique_"));
                let b = ids.iter().all(|i| i.starts_with("/betaunique_"));
                assert!(a || b, "a mix of two indexes: {ids:?}");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let c = client();
    // Renames over the live file, as the builder does, as fast as it goes...
    for i in 0..200 {
        let src = if i % 2 == 0 { &b_db } else { &a_db };
        let tmp = live.join(".docs.db.swap");
        std::fs::copy(src, &tmp).unwrap();
        std::fs::rename(&tmp, &db).unwrap();
    }
    // ...and the builder itself; each new index answers the next search.
    for (tree, word) in [
        (&b_tree, "betaunique"),
        (&a_tree, "alphaunique"),
        (&b_tree, "betaunique"),
    ] {
        let tree = tree.clone();
        let d = db.clone();
        tokio::task::spawn_blocking(move || build_ok(&tree, &d, &[]))
            .await
            .unwrap();
        let (status, ids) = search(&c, &gw, &token, word).await;
        assert_eq!(status, 200);
        assert!(
            !ids.is_empty() && ids.iter().all(|i| i.starts_with(&format!("/{word}_"))),
            "{word}: {ids:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for s in searchers {
        s.await.unwrap();
    }
    assert!(
        done.load(Ordering::Relaxed) > 20,
        "the searchers ran: {}",
        done.load(Ordering::Relaxed)
    );
    assert_eq!(leftovers(&live), Vec::<String>::new());
}

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_leave_the_index_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = checkout(d);
    let live = d.join("live");
    std::fs::create_dir(&live).unwrap();
    let db = live.join("docs.db");
    build_ok(&repo, &db, &[]);
    let before = sha(&db);
    let (_gitlab, gw, token) = gateway(&db).await;

    // Sources that cannot give an index.
    let no_md = d.join("no_md");
    std::fs::create_dir_all(no_md.join("sub")).unwrap();
    std::fs::write(no_md.join("README.txt"), "text").unwrap();
    std::fs::write(no_md.join("sub/page.html"), "<p>").unwrap();
    let only_broken = d.join("only_broken");
    std::fs::create_dir(&only_broken).unwrap();
    std::os::unix::fs::symlink("nowhere.md", only_broken.join("a.md")).unwrap();
    let text_file = temp_file(d, "notes.txt", "# not an archive\n");
    let xz = d.join("docs.tar.xz");
    std::fs::write(&xz, [0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4, 0xe6, 0xd6]).unwrap();
    let empty = temp_file(d, "empty.zip", "");
    let zip_bytes = std::fs::read(zip_archive(d)).unwrap();
    let cut_zip = d.join("cut.zip");
    std::fs::write(&cut_zip, &zip_bytes[..zip_bytes.len() / 2]).unwrap();
    let tgz_bytes = std::fs::read(tar_gz_archive(d)).unwrap();
    let cut_tgz = d.join("cut.tar.gz");
    std::fs::write(&cut_tgz, &tgz_bytes[..tgz_bytes.len() * 2 / 3]).unwrap();
    let short_tgz = d.join("short.tar.gz");
    std::fs::write(&short_tgz, &tgz_bytes[..tgz_bytes.len() - 4]).unwrap();
    let gz_not_tar = d.join("page.md.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz_not_tar).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(
        "# A page, gzipped, but no tar inside\n"
            .repeat(40)
            .as_bytes(),
    )
    .unwrap();
    gz.finish().unwrap();
    let evil_zip = d.join("evil.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&evil_zip).unwrap());
        let o = zip::write::SimpleFileOptions::default();
        z.start_file("doc/index.md", o).unwrap();
        z.write_all(b"# Fine\n").unwrap();
        z.start_file("doc/../../outside.md", o).unwrap();
        z.write_all(b"# Escapes\n").unwrap();
        z.finish().unwrap();
    }
    let evil_tgz = d.join("evil.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&evil_tgz).unwrap(),
            flate2::Compression::default(),
        );
        let mut t = tar::Builder::new(gz);
        let body = b"# Escapes\n";
        let mut h = tar::Header::new_old();
        // Written by hand: the tar crate refuses to write `..` itself.
        h.as_old_mut().name[..13].copy_from_slice(b"../../evil.md");
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append(&h, &body[..]).unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }
    let absolute_tgz = d.join("absolute.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&absolute_tgz).unwrap(),
            flate2::Compression::default(),
        );
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..12].copy_from_slice(b"/etc/evil.md");
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        t.append(&h, &[][..]).unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }

    let p = |p: &Path| p.display().to_string();
    let cases: Vec<(&str, PathBuf, String)> = vec![
        (
            "no markdown",
            no_md.clone(),
            format!("no markdown pages (*.md) under {}", p(&no_md)),
        ),
        (
            "nothing readable",
            only_broken.clone(),
            format!(
                "the only markdown page under {} could not be read",
                p(&only_broken)
            ),
        ),
        (
            "missing source",
            d.join("nope"),
            format!(
                "cannot read {}: No such file or directory",
                p(&d.join("nope"))
            ),
        ),
        (
            "text file",
            text_file.clone(),
            format!(
                "{} is not a directory, a .zip or a .tar.gz archive: it looks like a text file",
                p(&text_file)
            ),
        ),
        ("xz", xz.clone(), "it looks like an xz stream".into()),
        (
            "empty file",
            empty.clone(),
            "it looks like an empty file".into(),
        ),
        (
            "truncated zip",
            cut_zip.clone(),
            format!("{} is truncated or damaged", p(&cut_zip)),
        ),
        (
            "truncated tar.gz",
            cut_tgz.clone(),
            format!("{} is truncated or damaged", p(&cut_tgz)),
        ),
        (
            "tar.gz without its trailer",
            short_tgz.clone(),
            format!("{} is truncated or damaged", p(&short_tgz)),
        ),
        (
            "gzip without a tar",
            gz_not_tar.clone(),
            format!("{} is truncated or damaged", p(&gz_not_tar)),
        ),
        (
            "zip entry escaping",
            evil_zip.clone(),
            format!(
                "refusing {}: its entry `doc/../../outside.md` points outside the archive",
                p(&evil_zip)
            ),
        ),
        (
            "tar entry escaping",
            evil_tgz.clone(),
            format!(
                "refusing {}: its entry `../../evil.md` points outside the archive",
                p(&evil_tgz)
            ),
        ),
        (
            "absolute tar entry",
            absolute_tgz.clone(),
            "points outside the archive".into(),
        ),
    ];
    for (what, from, message) in &cases {
        let o = build(from, &db, &[]);
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {o:?}");
        assert!(
            stderr.contains(message),
            "{what}: expected {message:?} in {stderr}"
        );
        assert!(
            stderr.contains(&format!("{} is left as it was", p(&db))),
            "{what}: {stderr}"
        );
        assert!(o.stdout.is_empty(), "{what}: no summary: {o:?}");
        assert_eq!(sha(&db), before, "{what}: the index changed");
        assert_eq!(leftovers(&live), Vec::<String>::new(), "{what}");
    }

    // Outputs that cannot be written.
    let o = build(&repo, &d.join("no/such/dir/docs.db"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains(&format!(
            "the output directory {} does not exist",
            p(&d.join("no/such/dir"))
        )),
        "{o:?}"
    );
    assert!(text(&o.stderr).contains("nothing was written"), "{o:?}");
    let o = build(&repo, &live, &[]);
    assert!(
        text(&o.stderr).contains(&format!("the output {} is a directory", p(&live))),
        "{o:?}"
    );
    let o = build(&repo, &db, &["--version", ""]);
    assert!(
        text(&o.stderr).contains("--version: must not be empty"),
        "{o:?}"
    );
    assert_eq!(sha(&db), before);
    let locked = d.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("docs.db"), &before).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        // Root writes in a mode-555 directory; no honest unwritable directory
        // here without mounting one read-only.
        eprintln!(
            "running as root: the unwritable-directory case is skipped (root may write anywhere)"
        );
    } else {
        let o = build(&repo, &locked.join("docs.db"), &[]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            text(&o.stderr).contains(&format!(
                "cannot write the index in {}: Permission denied",
                p(&locked)
            )),
            "{o:?}"
        );
        assert_eq!(sha(&locked.join("docs.db")), before);
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The gateway kept serving the untouched index all along.
    assert_expected_pages(&gw, &token, "after the failed builds").await;

    // A restrictive umask still gives a file the gateway's user can read.
    let o = aigw_command()
        .args([
            "docs-index",
            "build",
            "--from",
            repo.to_str().unwrap(),
            "--out",
            db.to_str().unwrap(),
        ])
        .output_with_umask(0o077);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

trait UmaskExt {
    fn output_with_umask(&mut self, mask: libc::mode_t) -> Output;
}

impl UmaskExt for std::process::Command {
    fn output_with_umask(&mut self, mask: libc::mode_t) -> Output {
        // Safety: umask is async-signal-safe.
        unsafe {
            self.pre_exec(move || {
                libc::umask(mask);
                Ok(())
            });
        }
        self.output().unwrap()
    }
}

#[test]
fn check_and_check_config_report_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let repo = checkout(dir.path());
    let db = dir.path().join("docs.db");

    let config = |path: &Path| {
        let o = GatewayBuilder::new()
            .env("AIGW_DOCS_SEARCH__DB_PATH", path.to_str().unwrap())
            .arg("check-config")
            .command()
            .output()
            .unwrap();
        (
            o.status.success(),
            serde_json::from_slice::<Value>(&o.stdout).unwrap_or(Value::Null),
            text(&o.stderr),
        )
    };
    // Missing: not an error (no results), but said.
    let (ok, report, _) = config(&db);
    assert!(ok, "{report}");
    assert_eq!(report["docs_search"]["exists"], false);
    assert_eq!(report["docs_search"]["pages"], Value::Null);
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().starts_with(&format!(
                "documentation search: no index at {}",
                db.display()
            ))),
        "{report}"
    );
    let o = aigw(&["docs-index", "check", db.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains(&format!("no index at {}", db.display())),
        "{o:?}"
    );

    // Built: pages and version; the default path is AIGW_DOCS_SEARCH__DB_PATH.
    let o = aigw_command()
        .env("AIGW_DOCS_SEARCH__DB_PATH", &db)
        .args([
            "docs-index",
            "build",
            "--from",
            repo.to_str().unwrap(),
            "--version",
            "v18.6.0-ee",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let n = filenames().len();
    let (ok, report, _) = config(&db);
    assert!(ok, "{report}");
    assert_eq!(report["docs_search"]["exists"], true);
    assert_eq!(report["docs_search"]["pages"], n);
    assert!(
        !report["notes"].to_string().contains("documentation search"),
        "{report}"
    );
    let o = aigw_command()
        .env("AIGW_DOCS_SEARCH__DB_PATH", &db)
        .args(["docs-index", "check"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let out = text(&o.stdout);
    assert!(
        out.starts_with(&format!("index: {} (", db.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("pages: {n}\nversion: v18.6.0-ee ({n} pages)\n")),
        "{out}"
    );
    assert!(
        out.contains("sample query \"How do I create a merge request?\": "),
        "{out}"
    );
    assert!(
        out.contains("  1. /user/project/merge_requests/creating_merge_requests.md\n"),
        "{out}"
    );

    // Not an index: check-config fails and says why; so does check.
    let junk = temp_file(dir.path(), "junk.db", &"not a database ".repeat(100));
    let (ok, report, stderr) = config(&junk);
    assert!(!ok);
    assert_eq!(report["valid"], false);
    assert!(
        stderr.contains(&format!("documentation index {}: ", junk.display())),
        "{stderr}"
    );
    let o = aigw(&["docs-index", "check", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("the documentation index cannot be searched"),
        "{o:?}"
    );

    // An SQLite file of another shape.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE notes(x)")
        .unwrap();
    let o = aigw(&["docs-index", "check", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("the file has no doc_index table"),
        "{o:?}"
    );
}

#[test]
fn progress_is_shown_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let repo = checkout(dir.path());
    let db = dir.path().join("docs.db");
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` (util-linux) to give the build a terminal");
        return;
    }
    // `script` runs the build on a pseudo-terminal and copies what it shows.
    let cmd = format!(
        "'{}' docs-index build --from '{}' --out '{}'",
        binary().display(),
        repo.display(),
        db.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let shown = text(&o.stdout);
    assert!(shown.contains("\r\x1b[Kaigw: 1 page, 0.0 MB"), "{shown:?}");
    assert!(
        shown.contains(&format!("aigw: indexed {} pages", filenames().len())),
        "{shown:?}"
    );
}

#[test]
fn symbolic_links_are_read_only_inside_the_docs_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("doc");
    std::fs::create_dir_all(root.join("shared")).unwrap();
    std::fs::write(root.join("index.md"), page("Index", "The start page.")).unwrap();
    std::fs::write(
        root.join("shared/snippet.txt"),
        page("Linked", "Shared text, linked as a page."),
    )
    .unwrap();
    std::os::unix::fs::symlink("shared/snippet.txt", root.join("linked.md")).unwrap();
    // What a tree from elsewhere might carry: a link to a file outside it.
    let secret = temp_file(
        dir.path(),
        "signing.key",
        "-----BEGIN PRIVATE KEY----- not for Duo Chat",
    );
    std::os::unix::fs::symlink(&secret, root.join("leak.md")).unwrap();
    // A link to a directory is not followed.
    std::os::unix::fs::symlink(dir.path(), root.join("loop")).unwrap();
    let db = dir.path().join("docs.db");

    let o = build(dir.path(), &db, &[]);
    assert!(o.status.success(), "{o:?}");
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: skipped /leak.md: a symbolic link to {}, outside the docs root",
            std::fs::canonicalize(&secret).unwrap().display()
        )),
        "{stderr}"
    );
    assert!(text(&o.stdout).contains("indexed 2 pages"), "{o:?}");
    let r = rows(&db);
    let names: Vec<&str> = r
        .iter()
        .map(|r| r.2["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/index.md", "/linked.md"]);
    assert!(r[1].1.contains("Shared text, linked as a page."));
    assert!(r.iter().all(|r| !r.1.contains("PRIVATE KEY")));
}
