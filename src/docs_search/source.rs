//! Where `aigw docs-index build` reads the pages: a directory (a GitLab
//! checkout, or the `doc/` tree itself), a zip archive (what GitLab's
//! "Download source code" gives) or a tar.gz (or plain tar) archive. Archives
//! are read in place, never unpacked to disk.
//!
//! The docs root is `doc/` when there is one, else the source itself, after
//! looking through one wrapper directory (`gitlab-v18.6.0-ee/doc/...`). Every
//! archive entry is checked before any page is read: a name that leads out of
//! the archive (`../x`, `/etc/x`) refuses the whole archive, and a truncated
//! or damaged archive is reported before anything is written.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use super::builder::BuildError;

/// A page larger than this is skipped (GitLab's largest is well under 1 MiB).
pub const MAX_PAGE_BYTES: u64 = 16 << 20;
/// An archive with more entries than this is refused.
const MAX_ENTRIES: usize = 500_000;

/// One markdown page found under the docs root.
pub struct Page {
    /// Below the docs root, with a leading `/`: `/user/project/index.md`.
    pub filename: String,
    /// The markdown, or why it cannot be read.
    pub text: Result<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Dir,
    Zip,
    TarGz,
    Tar,
}

/// An opened, checked source with its docs root chosen.
pub struct Source {
    path: PathBuf,
    kind: Kind,
    /// Dir: the relative directory of the docs root ("" or "gitlab/doc").
    /// Archives: the entry-name prefix of the docs root ("", "doc/", "w/doc/").
    prefix: String,
    /// From a wrapper directory named like GitLab's archives (`gitlab-<tag>`).
    version: Option<String>,
}

impl Source {
    /// Detects the kind of `path`, lists and checks it, and picks the docs root.
    pub fn open(path: &Path) -> Result<Self, BuildError> {
        let read_err = |e: io::Error| BuildError::Source {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let kind = if meta.is_dir() {
            Kind::Dir
        } else {
            let mut head = [0u8; 512];
            let n = read_up_to(&mut File::open(path).map_err(read_err)?, &mut head)
                .map_err(read_err)?;
            sniff(&head[..n]).map_err(|looks_like| BuildError::NotAnArchive {
                path: path.to_path_buf(),
                looks_like,
            })?
        };
        let (prefix, wrapper) = match kind {
            Kind::Dir => dir_root(path).map_err(read_err)?,
            _ => list_archive(path, kind)?,
        };
        let version = wrapper.as_deref().and_then(version_from_wrapper);
        Ok(Self {
            path: path.to_path_buf(),
            kind,
            prefix,
            version,
        })
    }

    /// The docs root, for messages: `/srv/gitlab/doc` or `docs.zip:gitlab-v18.6.0-ee/doc/`.
    pub fn root_display(&self) -> String {
        match self.kind {
            Kind::Dir if self.prefix.is_empty() => self.path.display().to_string(),
            Kind::Dir => self.path.join(&self.prefix).display().to_string(),
            _ => format!("{}:{}", self.path.display(), self.prefix),
        }
    }

    /// The GitLab version the wrapper directory names, if it does.
    pub fn detected_version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Calls `each` for every `*.md` below the docs root, in a stable order
    /// (sorted for a directory, the archive's order otherwise).
    pub fn pages(
        &self,
        each: &mut dyn FnMut(Page) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        match self.kind {
            Kind::Dir => self.dir_pages(each),
            Kind::Zip => self.zip_pages(each),
            Kind::TarGz | Kind::Tar => self.tar_pages(each),
        }
    }

    fn dir_pages(
        &self,
        each: &mut dyn FnMut(Page) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        let root = self.path.join(&self.prefix);
        // Symbolic links to directories are not followed (no cycles); a link
        // to a file is read only when the file is inside the docs root: a
        // tree from elsewhere must not pull `/etc/...` into an index that
        // every Duo Chat user can search.
        let canonical_root = std::fs::canonicalize(&root).map_err(|e| BuildError::Source {
            path: root.clone(),
            detail: e.to_string(),
        })?;
        let walk = walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walk {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let at = e.path().unwrap_or(&root).to_path_buf();
                    let detail = e
                        .io_error()
                        .map_or_else(|| e.to_string(), ToString::to_string);
                    each(Page {
                        filename: below(&root, &at),
                        text: Err(format!("cannot read this directory entry: {detail}")),
                    })?;
                    continue;
                }
            };
            if entry.file_type().is_dir() || !is_markdown(entry.file_name().as_encoded_bytes()) {
                continue;
            }
            let filename = below(&root, entry.path());
            let text = if entry
                .path()
                .strip_prefix(&root)
                .ok()
                .and_then(Path::to_str)
                .is_none()
            {
                Err("the file name is not UTF-8".to_string())
            } else if entry.path_is_symlink() {
                match std::fs::canonicalize(entry.path()) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        Err("a symbolic link to nothing".to_string())
                    }
                    Err(e) => Err(e.to_string()),
                    Ok(target) if !target.starts_with(&canonical_root) => Err(format!(
                        "a symbolic link to {}, outside the docs root",
                        target.display()
                    )),
                    Ok(target) => read_file(&target),
                }
            } else {
                read_file(entry.path())
            };
            each(Page { filename, text })?;
        }
        Ok(())
    }

    fn zip_pages(
        &self,
        each: &mut dyn FnMut(Page) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        let mut zip = open_zip(&self.path)?;
        for i in 0..zip.len() {
            // The name is in the central directory even when the entry is unusable.
            let name = zip.name_for_index(i).unwrap_or_default().to_string();
            let mut file = match zip.by_index(i) {
                Ok(f) => f,
                Err(e) => {
                    if let Some(filename) = self.filename(&name) {
                        each(Page {
                            filename,
                            text: Err(e.to_string()),
                        })?;
                    }
                    continue;
                }
            };
            if file.is_dir() {
                continue;
            }
            let Some(filename) = self.filename(file.name()) else {
                continue;
            };
            let text = if file.is_symlink() {
                Err("a symbolic link in the archive, not a file".to_string())
            } else {
                let size = file.size();
                read_limited(&mut file, size).map_err(ReadFail::into_reason)
            };
            each(Page { filename, text })?;
        }
        Ok(())
    }

    fn tar_pages(
        &self,
        each: &mut dyn FnMut(Page) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        let damaged = |e: io::Error| damaged(&self.path, e);
        let mut archive = tar::Archive::new(tar_reader(&self.path, self.kind)?);
        for entry in archive.entries().map_err(damaged)? {
            let mut entry = entry.map_err(damaged)?;
            let kind = entry.header().entry_type();
            if kind.is_dir() || kind.is_pax_global_extensions() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(filename) = self.filename(&name) else {
                continue;
            };
            let text = if !kind.is_file() {
                Err(format!(
                    "a {} in the archive, not a file",
                    if kind.is_symlink() {
                        "symbolic link"
                    } else if kind.is_hard_link() {
                        "hard link"
                    } else {
                        "special entry"
                    }
                ))
            } else if std::str::from_utf8(&entry.path_bytes()).is_err() {
                Err("the file name is not UTF-8".to_string())
            } else {
                let size = entry.size();
                // A read error inside an archive checked a moment ago: it changed since.
                match read_limited(&mut entry, size) {
                    Ok(text) => Ok(text),
                    Err(ReadFail::Content(why)) => Err(why),
                    Err(ReadFail::Io(e)) => return Err(damaged(e)),
                }
            };
            each(Page { filename, text })?;
        }
        Ok(())
    }

    /// The page's `/path` below the docs root, when `entry` is a `*.md` there.
    fn filename(&self, entry: &str) -> Option<String> {
        let name = normalize_entry(entry).ok().flatten()?;
        let rest = name.strip_prefix(self.prefix.as_str())?;
        (!rest.is_empty() && is_markdown(rest.as_bytes())).then(|| format!("/{rest}"))
    }
}

/// `text` safe to print on a terminal: control characters (an archive's
/// entry names are anybody's) shown as `\u{..}` escapes.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn is_markdown(name: &[u8]) -> bool {
    name.ends_with(b".md")
}

fn below(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    format!("/{}", parts.join("/"))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The archive kind from its first bytes; otherwise what it seems to be.
fn sniff(head: &[u8]) -> Result<Kind, String> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Kind::Zip);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Kind::TarGz);
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Ok(Kind::Tar);
    }
    let looks_like = if head.is_empty() {
        "an empty file"
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "an xz stream (unpack it, or repack as .tar.gz)"
    } else if head.starts_with(b"BZh") {
        "a bzip2 stream (unpack it, or repack as .tar.gz)"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "a zstd stream (unpack it, or repack as .tar.gz)"
    } else if head.starts_with(b"7z\xbc\xaf\x27\x1c") {
        "a 7-Zip archive"
    } else if head.starts_with(b"Rar!") {
        "a RAR archive"
    } else if std::str::from_utf8(head).is_ok() {
        "a text file"
    } else {
        "an unknown format"
    };
    Err(looks_like.to_string())
}

/// Normalises an archive entry name: `.` and empty parts dropped, `..`
/// resolved. `Err` when the name leads outside the archive; `Ok(None)` for
/// the archive root itself.
fn normalize_entry(name: &str) -> Result<Option<String>, ()> {
    if name.starts_with('/') {
        return Err(());
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or(())?;
            }
            p => parts.push(p),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

fn damaged(path: &Path, e: io::Error) -> BuildError {
    BuildError::Damaged {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn open_zip(path: &Path) -> Result<zip::ZipArchive<BufReader<File>>, BuildError> {
    let file = File::open(path).map_err(|e| BuildError::Source {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    zip::ZipArchive::new(BufReader::new(file)).map_err(|e| BuildError::Damaged {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn tar_reader(path: &Path, kind: Kind) -> Result<Box<dyn Read>, BuildError> {
    let file = BufReader::new(File::open(path).map_err(|e| BuildError::Source {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?);
    Ok(match kind {
        Kind::TarGz => Box::new(flate2::read::MultiGzDecoder::new(file)),
        _ => Box::new(file),
    })
}

/// Checks every entry name of an archive and picks the docs root from them;
/// reading a tar.gz to its end here is what finds a truncated or damaged one.
fn list_archive(path: &Path, kind: Kind) -> Result<(String, Option<String>), BuildError> {
    let mut finder = RootFinder::default();
    let mut add = |raw: &str, is_dir: bool| -> Result<(), BuildError> {
        if finder.entries >= MAX_ENTRIES {
            return Err(BuildError::Damaged {
                path: path.to_path_buf(),
                detail: format!("more than {MAX_ENTRIES} entries"),
            });
        }
        match normalize_entry(raw) {
            Err(()) => Err(BuildError::Escapes {
                path: path.to_path_buf(),
                entry: printable(raw),
            }),
            Ok(Some(n)) => {
                finder.add(&n, is_dir);
                Ok(())
            }
            Ok(None) => Ok(()),
        }
    };
    match kind {
        Kind::Zip => {
            let zip = open_zip(path)?;
            for name in zip.file_names() {
                add(name, name.ends_with('/'))?;
            }
        }
        Kind::TarGz | Kind::Tar => {
            let damaged = |e: io::Error| damaged(path, e);
            let mut archive = tar::Archive::new(tar_reader(path, kind)?);
            for entry in archive.entries().map_err(damaged)? {
                let entry = entry.map_err(damaged)?;
                let kind = entry.header().entry_type();
                if kind.is_pax_global_extensions() {
                    continue;
                }
                add(&String::from_utf8_lossy(&entry.path_bytes()), kind.is_dir())?;
            }
            // The tar ends before the gzip stream does: read on to its end,
            // which checks the gzip trailer (a cut-off stream fails here).
            io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(damaged)?;
        }
        Kind::Dir => {}
    }
    if finder.entries == 0 && kind == Kind::TarGz {
        return Err(BuildError::Damaged {
            path: path.to_path_buf(),
            detail: "the gzip stream holds no tar entries".into(),
        });
    }
    Ok(finder.root())
}

/// Picks the docs root from archive entry names, one at a time (no list of
/// them is kept): `doc/` when there is one; else, when the top level has a
/// single directory and no page (GitLab's `gitlab-<tag>/`), that directory's
/// `doc/` or the directory itself; else the archive root.
#[derive(Default)]
struct RootFinder {
    entries: usize,
    has_doc: bool,
    /// The first top-level directory, whether another one exists, and
    /// whether the first has a `doc/`.
    top_dir: Option<String>,
    several_dirs: bool,
    top_dir_has_doc: bool,
    /// A page directly at the top level.
    top_page: bool,
}

impl RootFinder {
    /// `name` is normalised; `is_dir` for a directory entry.
    fn add(&mut self, name: &str, is_dir: bool) {
        self.entries += 1;
        if name.starts_with("doc/") {
            self.has_doc = true;
        }
        let (dir, rest) = match name.split_once('/') {
            Some((d, rest)) => (d, rest),
            None if is_dir => (name, ""),
            None => {
                self.top_page |= is_markdown(name.as_bytes());
                return;
            }
        };
        match &self.top_dir {
            None => self.top_dir = Some(dir.to_string()),
            Some(first) if first != dir => self.several_dirs = true,
            Some(_) => {}
        }
        if self.top_dir.as_deref() == Some(dir) && rest.starts_with("doc/") {
            self.top_dir_has_doc = true;
        }
    }

    fn root(self) -> (String, Option<String>) {
        if self.has_doc {
            return ("doc/".into(), None);
        }
        match self.top_dir {
            Some(w) if !self.several_dirs && !self.top_page => {
                let prefix = if self.top_dir_has_doc {
                    format!("{w}/doc/")
                } else {
                    format!("{w}/")
                };
                (prefix, Some(w))
            }
            _ => (String::new(), None),
        }
    }
}

/// The same choice for a directory (hidden entries do not count).
fn dir_root(dir: &Path) -> io::Result<(String, Option<String>)> {
    if dir.join("doc").is_dir() {
        return Ok(("doc".into(), None));
    }
    let mut dirs = Vec::new();
    let mut top_page = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        if entry.path().is_dir() {
            dirs.push(name);
        } else if is_markdown(name.as_encoded_bytes()) {
            top_page = true;
        }
    }
    match dirs.as_slice() {
        [w] if !top_page => {
            let w = w.to_string_lossy().into_owned();
            let doc = Path::new(&w).join("doc");
            let prefix = if dir.join(&doc).is_dir() {
                doc.to_string_lossy().into_owned()
            } else {
                w.clone()
            };
            Ok((prefix, Some(w)))
        }
        _ => Ok((String::new(), None)),
    }
}

/// `gitlab-v18.6.0-ee` or `gitlab-v18.6.0-ee-doc` (GitLab's archive names) → `v18.6.0-ee`.
fn version_from_wrapper(name: &str) -> Option<String> {
    let rest = name.strip_prefix("gitlab-")?;
    let rest = rest.strip_suffix("-doc").unwrap_or(rest);
    let plausible = rest.chars().any(|c| c.is_ascii_digit())
        && rest.len() <= 64
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    plausible.then(|| rest.to_string())
}

fn read_file(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    read_limited(&mut file, meta.len()).map_err(ReadFail::into_reason)
}

/// Why a page could not be read: the source failed, or the page is unfit.
enum ReadFail {
    Io(io::Error),
    Content(String),
}

impl ReadFail {
    fn into_reason(self) -> String {
        match self {
            ReadFail::Io(e) => e.to_string(),
            ReadFail::Content(why) => why,
        }
    }
}

/// Reads a page of declared `size` as UTF-8, at most [`MAX_PAGE_BYTES`].
fn read_limited(r: &mut impl Read, size: u64) -> Result<String, ReadFail> {
    let too_large = || {
        ReadFail::Content(format!(
            "larger than the {} MiB a page may have",
            MAX_PAGE_BYTES >> 20
        ))
    };
    if size > MAX_PAGE_BYTES {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(size as usize);
    r.take(MAX_PAGE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(ReadFail::Io)?;
    if buf.len() as u64 > MAX_PAGE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(buf).map_err(|_| ReadFail::Content("not UTF-8 text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_without_control_characters() {
        assert_eq!(printable("a\x1b[2Jb\n.md"), "a\\u{1b}[2Jb\\u{a}.md");
        assert_eq!(printable("dépôt.md"), "dépôt.md");
    }

    #[test]
    fn entry_names_stay_inside_the_archive() {
        assert_eq!(normalize_entry("a/./b//c.md"), Ok(Some("a/b/c.md".into())));
        assert_eq!(normalize_entry("a/../b.md"), Ok(Some("b.md".into())));
        assert_eq!(normalize_entry("./"), Ok(None));
        assert_eq!(normalize_entry("../x.md"), Err(()));
        assert_eq!(normalize_entry("a/../../x.md"), Err(()));
        assert_eq!(normalize_entry("/etc/x.md"), Err(()));
    }

    fn archive_root(names: &[&str]) -> (String, Option<String>) {
        let mut f = RootFinder::default();
        for n in names {
            f.add(n.trim_end_matches('/'), n.ends_with('/'));
        }
        f.root()
    }

    #[test]
    fn the_docs_root_is_doc_inside_one_wrapper() {
        assert_eq!(
            archive_root(&[
                "gitlab-v18.6.0-ee-doc",
                "gitlab-v18.6.0-ee-doc/doc/index.md"
            ]),
            (
                "gitlab-v18.6.0-ee-doc/doc/".into(),
                Some("gitlab-v18.6.0-ee-doc".into())
            )
        );
        assert_eq!(archive_root(&["doc/a.md", "doc/b/c.md"]).0, "doc/");
        assert_eq!(archive_root(&["a.md", "user/b.md"]).0, "");
        assert_eq!(archive_root(&["docs/a.md", "docs/user/b.md"]).0, "docs/");
        assert_eq!(
            archive_root(&["README.md", "doc/a.md", "app/x.rb"]).0,
            "doc/"
        );
        assert_eq!(archive_root(&["only.md"]).0, "");
        // git archive's pax header is skipped before; other top-level files do not matter.
        assert_eq!(archive_root(&["w/doc/a.md", "README"]).0, "w/doc/");
        assert_eq!(archive_root(&["index.md", "user/a.md"]).0, "");
        // Directory entries count as directories, even one named like a page.
        assert_eq!(archive_root(&["w/", "w/x.md/", "w/x.md/a.md"]).0, "w/");
        assert_eq!(archive_root(&["x.md/", "x.md/a.md", "y/b.md"]).0, "");
        assert_eq!(
            version_from_wrapper("gitlab-v18.6.0-ee-doc").as_deref(),
            Some("v18.6.0-ee")
        );
        assert_eq!(
            version_from_wrapper("gitlab-v18.6.0-ee").as_deref(),
            Some("v18.6.0-ee")
        );
        assert_eq!(version_from_wrapper("docs"), None);
        assert_eq!(version_from_wrapper("gitlab-master"), None);
    }

    #[test]
    fn formats_are_told_apart_by_their_first_bytes() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Ok(Kind::Zip));
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Ok(Kind::TarGz));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), Ok(Kind::Tar));
        assert!(sniff(b"").unwrap_err().contains("empty"));
        assert!(sniff(b"# just markdown").unwrap_err().contains("text"));
        assert!(
            sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1])
                .unwrap_err()
                .contains("xz")
        );
    }
}
