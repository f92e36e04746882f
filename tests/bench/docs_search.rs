//! `aigw docs-index build` and `/v1/search/gitlab-docs` on a synthetic docs
//! tree of GitLab's size (issue "docs-index", Benchmarks): about 2,500 pages
//! and 40 MB of markdown in nested directories, with front matter, headings,
//! code blocks and tables; words drawn from a Zipf distribution over a
//! vocabulary of real documentation words and generated ones, so the index
//! and the BM25 ranking see realistic term frequencies.
//!
//! Measures: build time and index size from the directory and from a tar.gz
//! of it; search latency (whole request through the gateway, one client, and
//! four) for keyword queries and for whole questions.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

use super::common::*;

const PAGES: usize = 2_500;
const TARGET_BYTES: usize = 40_000_000;

/// Words the docs really use (titles, questions).
const TOPIC: &[&str] = &[
    "merge",
    "request",
    "pipeline",
    "runner",
    "branch",
    "commit",
    "squash",
    "rebase",
    "issue",
    "label",
    "milestone",
    "epic",
    "release",
    "package",
    "registry",
    "container",
    "deploy",
    "environment",
    "variable",
    "token",
    "access",
    "permission",
    "group",
    "project",
    "repository",
    "protected",
    "approval",
    "review",
    "comment",
    "wiki",
    "snippet",
    "webhook",
    "integration",
    "security",
    "scanning",
    "vulnerability",
    "dependency",
    "license",
    "compliance",
    "audit",
    "backup",
    "restore",
    "upgrade",
    "install",
    "configure",
    "kubernetes",
    "helm",
    "docker",
    "ldap",
    "saml",
    "authentication",
    "password",
    "ssh",
    "key",
    "gpg",
    "signature",
    "mirror",
    "import",
    "export",
    "migration",
    "database",
    "postgresql",
    "redis",
    "gitaly",
    "praefect",
    "sidekiq",
    "puma",
    "nginx",
    "certificate",
    "storage",
    "object",
    "artifact",
    "cache",
    "job",
    "stage",
    "schedule",
    "trigger",
    "template",
    "include",
    "rules",
    "needs",
    "service",
    "monitoring",
    "metrics",
    "prometheus",
    "logging",
    "performance",
    "rate",
    "limit",
    "quota",
    "billing",
    "subscription",
    "seat",
    "user",
    "admin",
    "setting",
    "feature",
    "flag",
    "experiment",
    "analytics",
    "dashboard",
];
const STOP: &[&str] = &[
    "the", "a", "of", "to", "and", "in", "is", "for", "you", "can", "with", "on", "it", "be", "or",
    "as", "by", "that", "this", "an",
];

struct Vocabulary {
    words: Vec<String>,
    /// Cumulative Zipf weights.
    cdf: Vec<f64>,
}

impl Vocabulary {
    fn new(rng: &mut StdRng) -> Self {
        let syllables = [
            "ka", "lo", "mi", "ne", "ru", "ta", "ve", "si", "do", "pe", "gra", "tor", "lin", "mer",
            "sta", "con", "fig", "dex", "pro", "ser",
        ];
        let mut words: Vec<String> = Vec::new();
        // Interleave: stop words are the most frequent, topic words common.
        words.extend(STOP.iter().map(|s| s.to_string()));
        words.extend(TOPIC.iter().map(|s| s.to_string()));
        while words.len() < 20_000 {
            let n = rng.gen_range(2..=4);
            let w: String = (0..n)
                .map(|_| syllables[rng.gen_range(0..syllables.len())])
                .collect();
            words.push(w);
        }
        let mut total = 0.0;
        let cdf = (1..=words.len())
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(1.07);
                total
            })
            .collect::<Vec<_>>();
        let cdf = cdf.iter().map(|c| c / total).collect();
        Self { words, cdf }
    }

    fn word(&self, rng: &mut StdRng) -> &str {
        let x: f64 = rng.r#gen();
        let i = self
            .cdf
            .partition_point(|c| *c < x)
            .min(self.words.len() - 1);
        &self.words[i]
    }
}

fn topic(rng: &mut StdRng) -> &'static str {
    TOPIC[rng.gen_range(0..TOPIC.len())]
}

/// Writes the tree; returns (pages, bytes, titles).
fn write_tree(root: &Path) -> (usize, usize, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(14);
    let vocab = Vocabulary::new(&mut rng);
    let mut bytes = 0;
    let mut titles = Vec::new();
    for i in 0..PAGES {
        let dir = root.join(format!("{}/{}", topic(&mut rng), topic(&mut rng)));
        std::fs::create_dir_all(&dir).unwrap();
        let title_words: Vec<&str> = (0..rng.gen_range(2..=4)).map(|_| topic(&mut rng)).collect();
        let title = title_words.join(" ");
        // Page sizes vary (2 KB to 50 KB), about 16 KB on average.
        let want = (TARGET_BYTES / PAGES) as f64 * rng.gen_range(0.15..1.85);
        let mut md = format!(
            "---\nstage: Create\ngroup: Source Code\ninfo: Synthetic page for the aigw benchmark.\ntitle: {}\n---\n\n",
            title
        );
        while (md.len() as f64) < want {
            match rng.gen_range(0..12) {
                0 => md.push_str(&format!(
                    "## {} {}\n\n",
                    topic(&mut rng),
                    vocab.word(&mut rng)
                )),
                1 => md.push_str(&format!(
                    "```shell\ngitlab-ctl {} --{}={}\n```\n\n",
                    vocab.word(&mut rng),
                    vocab.word(&mut rng),
                    rng.gen_range(0..100)
                )),
                2 => md.push_str(&format!(
                    "| {} | {} |\n| --- | --- |\n| `{}` | {} |\n\n",
                    topic(&mut rng),
                    vocab.word(&mut rng),
                    vocab.word(&mut rng),
                    vocab.word(&mut rng)
                )),
                _ => {
                    for _ in 0..rng.gen_range(3..7) {
                        let n = rng.gen_range(8..24);
                        let mut s: Vec<String> = Vec::with_capacity(n);
                        for k in 0..n {
                            // Pages talk about their title's topic.
                            let w = if rng.gen_bool(0.06) {
                                title_words[k % title_words.len()]
                            } else {
                                vocab.word(&mut rng)
                            };
                            s.push(w.to_string());
                        }
                        let mut s = s.join(" ");
                        s[..1].make_ascii_uppercase();
                        md.push_str(&s);
                        md.push_str(". ");
                    }
                    md.push_str("\n\n");
                }
            }
        }
        bytes += md.len();
        std::fs::write(dir.join(format!("page_{i:04}.md")), md).unwrap();
        titles.push(title);
    }
    (PAGES, bytes, titles)
}

fn tar_gz(root: &Path, out: &Path) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(out).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all("doc", root).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

/// Wall time and CPU time (user + system) of one build.
fn build(bin: &Path, from: &Path, out: &Path) -> (Duration, Duration) {
    let cpu0 = children_cpu();
    let t = Instant::now();
    let o = Command::new(bin)
        .args([
            "docs-index",
            "build",
            "--from",
            from.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(o.status.success(), "{o:?}");
    (took, children_cpu() - cpu0)
}

/// User + system CPU time of the children waited for so far.
fn children_cpu() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn latencies(
    http: &str,
    token: &str,
    queries: &[String],
    concurrency: usize,
) -> (Vec<Duration>, usize, f64) {
    let url = format!("http://{http}/v1/search/gitlab-docs");
    let started = Instant::now();
    let chunks: Vec<Vec<String>> = (0..concurrency)
        .map(|k| {
            queries
                .iter()
                .skip(k)
                .step_by(concurrency)
                .cloned()
                .collect()
        })
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let (url, token) = (url.clone(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut lat = Vec::new();
            let mut empty = 0;
            for q in chunk {
                let body = json!({"type": "search-docs", "metadata": {"source": "GitLab EE", "version": "18.6.0"}, "payload": {"query": q}});
                let t = Instant::now();
                let resp = with_headers(c.post(&url), &rails_headers(&token)).json(&body).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                let v: serde_json::Value = resp.json().await.unwrap();
                lat.push(t.elapsed());
                if v["response"]["results"].as_array().is_none_or(|a| a.is_empty()) {
                    empty += 1;
                }
            }
            (lat, empty)
        }));
    }
    let mut all = Vec::new();
    let mut empty = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        empty += e;
    }
    let rps = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (all, empty, rps)
}

/// Builds the index at `db` (the path the running gateway at `http` searches).
pub async fn run(bin: &Path, http: &str, db: &Path) {
    let token = gitlab_key().rails_token(json!({"scopes": ["documentation_search"]}));
    let token = token.as_str();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("doc");
    let t = Instant::now();
    let (pages, bytes, titles) = write_tree(&tree);
    let generated = t.elapsed();
    let archive = dir.path().join("doc.tar.gz");
    tar_gz(&tree, &archive);
    let archive_bytes = std::fs::metadata(&archive).unwrap().len();

    println!("\n### Documentation index (`aigw docs-index build`)\n");
    println!(
        "Load average when the section started: {}.\n",
        load_average()
    );
    let rss_before = children_max_rss_kib();
    let mut from_dir: Vec<_> = (0..3).map(|_| build(bin, &tree, db)).collect();
    let build_rss = children_max_rss_kib();
    let index_bytes = std::fs::metadata(db).unwrap().len();
    let mut from_tgz: Vec<_> = (0..3).map(|_| build(bin, &archive, db)).collect();
    from_dir.sort();
    from_tgz.sort();
    println!(
        "Synthetic tree: {pages} pages, {:.1} MB of markdown in {} directories (generated in {:.1} s); tar.gz {:.1} MB.\n",
        bytes as f64 / 1e6,
        count_dirs(&tree),
        generated.as_secs_f64(),
        archive_bytes as f64 / 1e6
    );
    let rss = if build_rss > rss_before {
        format!("{:.0} MiB", build_rss as f64 / 1024.0)
    } else {
        format!(
            "at most {:.0} MiB (an earlier child's peak)",
            build_rss as f64 / 1024.0
        )
    };
    println!("Peak RSS of a build from the directory: {rss}.\n");
    println!(
        "| build (3 runs, by wall time) | wall: median | min | max | CPU (user+sys) of the median run | index size |\n|---|---|---|---|---|---|"
    );
    for (what, d) in [
        ("from the directory", &from_dir),
        ("from the tar.gz", &from_tgz),
    ] {
        println!(
            "| {what} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.1} MB |",
            d[1].0.as_secs_f64(),
            d[0].0.as_secs_f64(),
            d[2].0.as_secs_f64(),
            d[1].1.as_secs_f64(),
            index_bytes as f64 / 1e6
        );
    }

    // Queries: keywords from the titles, and whole questions around them.
    let mut rng = StdRng::seed_from_u64(41);
    let mut keywords = Vec::new();
    let mut questions = Vec::new();
    let forms = [
        "How do I {} in my project?",
        "What is the {} and how can I use it?",
        "Why does my {} not work after an upgrade?",
        "Can I {} for a group or only for a project?",
    ];
    for _ in 0..300 {
        let title = &titles[rng.gen_range(0..titles.len())];
        let words: Vec<&str> = title.split(' ').collect();
        keywords.push(words[..rng.gen_range(1..=words.len().min(2))].join(" "));
        questions.push(forms[rng.gen_range(0..forms.len())].replace("{}", title));
    }
    // Until the gateway has GitLab's keys, then warm the page cache.
    let url = format!("http://{http}/v1/search/gitlab-docs");
    for _ in 0..200 {
        let body = json!({"type": "search-docs", "metadata": {"source": "s", "version": "v"}, "payload": {"query": "x"}});
        let r = with_headers(client().post(&url), &rails_headers(token))
            .json(&body)
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = latencies(http, token, &keywords[..20], 1).await;
    println!("\nLoad average before the searches: {}.", load_average());
    println!(
        "\n| search (whole request through the gateway) | concurrency | queries | no result | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|"
    );
    for (what, qs) in [
        ("keywords (1-2 words)", &keywords),
        ("questions (8-12 words)", &questions),
    ] {
        for conc in [1, 4] {
            let (lat, empty, rps) = latencies(http, token, qs, conc).await;
            println!(
                "| {what} | {conc} | {} | {empty} | {rps:.0} | {:.1} | {:.1} |",
                lat.len(),
                pct(&lat, 0.5),
                pct(&lat, 0.99)
            );
        }
    }
}

fn count_dirs(root: &Path) -> usize {
    fn walk(p: &PathBuf, n: &mut usize) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                *n += 1;
                walk(&e, n);
            }
        }
    }
    let mut n = 0;
    walk(&root.to_path_buf(), &mut n);
    n
}

/// The largest peak RSS among the children waited for so far (KiB).
fn children_max_rss_kib() -> i64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) } == 0 {
        u.ru_maxrss
    } else {
        0
    }
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures: the CPUs are shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
