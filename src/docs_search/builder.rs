//! `aigw docs-index build`: a docs tree or archive → an index file in the
//! shared layout ([`super::layout`]).
//!
//! The index is written to a temporary file in the target's directory and
//! renamed over the target only once it is complete, synced and readable by
//! everyone (0644: the gateway runs as another user), so a gateway searching
//! the target sees the old index or the new one, never a part. Any error
//! removes the temporary file; the target is left as it was.

use std::{
    collections::HashSet,
    fs::{self, File},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rusqlite::Connection;
use serde_json::json;

use super::{
    layout,
    source::{Page, Source},
};

/// More markdown than this is no docs tree; the build stops.
pub const MAX_TOTAL_BYTES: u64 = 4 << 30;
/// At most this many pages (GitLab has about 2,500).
pub const MAX_PAGES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {}: {detail}", path.display())]
    Source { path: PathBuf, detail: String },
    #[error("{} is not a directory, a .zip or a .tar.gz archive: it looks like {looks_like}", path.display())]
    NotAnArchive { path: PathBuf, looks_like: String },
    #[error("{} is truncated or damaged: {detail}", path.display())]
    Damaged { path: PathBuf, detail: String },
    #[error("refusing {}: its entry `{entry}` points outside the archive", path.display())]
    Escapes { path: PathBuf, entry: String },
    #[error("no markdown pages (*.md) under {root}")]
    NoMarkdown { root: String },
    #[error("{}", match unreadable {
        1 => format!("the only markdown page under {root} could not be read"),
        n => format!("none of the {n} markdown pages under {root} could be read"),
    })]
    NothingReadable { root: String, unreadable: usize },
    #[error("more than {} GiB of markdown under {root}: is this a docs tree?", MAX_TOTAL_BYTES >> 30)]
    TooMuch { root: String },
    #[error("the output directory {} does not exist", dir.display())]
    OutDirMissing { dir: PathBuf },
    #[error("the output {} is a directory: name the index file, e.g. {}/docs.db", path.display(), path.display())]
    OutIsDir { path: PathBuf },
    #[error("cannot write the index in {}: {detail}", dir.display())]
    OutDirNotWritable { dir: PathBuf, detail: String },
    #[error("--version: {0}")]
    BadVersion(&'static str),
    #[error("writing the index {}: {detail}", path.display())]
    Write { path: PathBuf, detail: String },
}

pub struct BuildOptions<'a> {
    /// A directory, a .zip or a .tar.gz (or .tar).
    pub from: &'a Path,
    /// The index file to write (replaced atomically).
    pub out: &'a Path,
    /// The GitLab version the docs belong to; else the one the archive's
    /// wrapper directory names, if any.
    pub version: Option<&'a str>,
}

/// What the build reports while it runs.
pub enum Progress<'a> {
    /// The docs root was chosen.
    Root {
        root: &'a str,
        version: Option<&'a str>,
    },
    /// One more page indexed.
    Page { pages: usize, bytes: u64 },
    /// A page that could not be read: skipped.
    Skipped { filename: &'a str, reason: &'a str },
}

#[derive(Debug)]
pub struct BuildSummary {
    pub out: PathBuf,
    pub root: String,
    pub version: Option<String>,
    pub pages: usize,
    /// Markdown bytes indexed.
    pub bytes: u64,
    pub skipped: usize,
    /// Size of the index file written.
    pub index_bytes: u64,
    pub elapsed: Duration,
}

pub fn build(
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuildSummary, BuildError> {
    let started = Instant::now();
    if let Some(v) = opts.version {
        if v.trim().is_empty() {
            return Err(BuildError::BadVersion("must not be empty"));
        }
        if v.chars().count() > 100 || v.chars().any(char::is_control) {
            return Err(BuildError::BadVersion("at most 100 printable characters"));
        }
    }
    let out = target(opts.out)?;
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "docs.db".into());
    // First, so an unwritable directory is found before any reading.
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| BuildError::OutDirNotWritable {
            dir: dir.clone(),
            detail: e.to_string(),
        })?;

    let source = Source::open(opts.from)?;
    let root = source.root_display();
    let version = opts
        .version
        .map(str::to_string)
        .or_else(|| source.detected_version().map(str::to_string));
    progress(Progress::Root {
        root: &root,
        version: version.as_deref(),
    });

    let write_err = |e: rusqlite::Error| BuildError::Write {
        path: out.clone(),
        detail: e.to_string(),
    };
    let mut conn = Connection::open(temp.path()).map_err(write_err)?;
    // One transaction into a file nobody reads yet: no journal needed.
    // Incremental auto-vacuum lets the pages freed by the final merge go
    // back without VACUUM's full copy in the temporary directory.
    conn.execute_batch(&format!(
        "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         PRAGMA cache_size = -65536; {}; PRAGMA user_version = {};",
        layout::CREATE_TABLE,
        layout::USER_VERSION
    ))
    .map_err(write_err)?;

    let (mut pages, mut bytes, mut skipped) = (0usize, 0u64, 0usize);
    let mut seen = HashSet::new();
    let tx = conn.transaction().map_err(write_err)?;
    {
        let mut insert = tx
            .prepare("INSERT INTO doc_index (processed, content, metadata) VALUES (?1, ?2, ?3)")
            .map_err(write_err)?;
        source.pages(&mut |page: Page| {
            let text = match page.text {
                Ok(t) if seen.contains(&page.filename) => {
                    drop(t);
                    Err("a second entry with this name (the first one is kept)".to_string())
                }
                other => other,
            };
            let text = match text {
                Ok(t) => t,
                Err(reason) => {
                    skipped += 1;
                    progress(Progress::Skipped {
                        filename: &page.filename,
                        reason: &reason,
                    });
                    return Ok(());
                }
            };
            bytes += text.len() as u64;
            if bytes > MAX_TOTAL_BYTES || pages >= MAX_PAGES {
                return Err(BuildError::TooMuch { root: root.clone() });
            }
            let mut metadata = json!({ "filename": page.filename });
            if let Some(v) = &version {
                metadata["version"] = v.as_str().into();
            }
            insert
                .execute((layout::processed(&text), &text, metadata.to_string()))
                .map_err(write_err)?;
            seen.insert(page.filename);
            pages += 1;
            progress(Progress::Page { pages, bytes });
            Ok(())
        })?;
    }
    if pages == 0 {
        return Err(if skipped == 0 {
            BuildError::NoMarkdown { root }
        } else {
            BuildError::NothingReadable {
                root,
                unreadable: skipped,
            }
        });
    }
    tx.commit().map_err(write_err)?;
    // Merges the index's segments into one: a smaller file, faster queries.
    conn.execute_batch("INSERT INTO doc_index(doc_index) VALUES ('optimize')")
        .map_err(write_err)?;
    // Frees one page per step: stepped to the end.
    {
        let mut vacuum = conn
            .prepare("PRAGMA incremental_vacuum")
            .map_err(write_err)?;
        let mut steps = vacuum.raw_query();
        while steps.next().map_err(write_err)?.is_some() {}
    }
    conn.close().map_err(|(_, e)| write_err(e))?;

    let io_err = |e: std::io::Error| BuildError::Write {
        path: out.clone(),
        detail: e.to_string(),
    };
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o644)).map_err(io_err)?;
    File::open(temp.path())
        .and_then(|f| f.sync_all())
        .map_err(io_err)?;
    temp.persist(&out).map_err(|e| io_err(e.error))?;
    // The rename itself survives a crash once the directory is synced.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    let index_bytes = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    Ok(BuildSummary {
        out,
        root,
        version,
        pages,
        bytes,
        skipped,
        index_bytes,
        elapsed: started.elapsed(),
    })
}

/// The file to replace: `out`, or what it links to (a symbolic link stays a
/// link, and the file it names is replaced).
fn target(out: &Path) -> Result<PathBuf, BuildError> {
    let out = match fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(out).unwrap_or(out.to_path_buf()),
        _ => out.to_path_buf(),
    };
    if out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/') {
        return Err(BuildError::OutIsDir { path: out });
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(BuildError::OutDirMissing {
            dir: dir.to_path_buf(),
        });
    }
    Ok(out)
}
