//! Watching the file-backed inputs (keys, CA bundle, TLS and mTLS
//! certificates) so a change is reloaded as SIGHUP would, without a signal.
//!
//! Kubernetes never sends SIGHUP: it updates a mounted Secret or ConfigMap in
//! place by writing a new timestamped directory and atomically swapping the
//! `..data` symlink the visible names point through. We poll instead of using
//! inotify: a few `stat` calls every few seconds cost nothing, need no extra
//! dependency, and see through symlink swaps (an inotify watch on the file
//! would stay on the old, now unlinked inode). Each watched path is
//! fingerprinted by the metadata of what it resolves to — device, inode,
//! size, modification and change times — and, for a directory, by the same
//! for every entry. A swapped `..data`, a `cp` over the file, an editor's
//! rename and a `touch` all change the fingerprint.
//!
//! This module only notices; `server` decides what a reload does.

use std::{
    ffi::OsString,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::config::{CaSelection, Config, SecretSource, ServiceAuth};

/// Every file or directory a reload re-reads, in a stable order.
pub fn watched_paths(config: &Config) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    match &config.ca {
        CaSelection::Bundle { path, .. } => paths.push(path.clone()),
        CaSelection::OpenSsl { file, dirs } => {
            paths.extend(file.iter().cloned());
            paths.extend(dirs.iter().cloned());
        }
        // The image's or the host's bundle: changed by a package upgrade,
        // which restarts the process anyway.
        CaSelection::System => {}
    }
    for auth in [&config.gateway_auth, &config.workflow_auth] {
        paths.extend(key_paths(auth));
    }
    for files in [&config.http.tls, &config.grpc.tls, &config.models.mtls]
        .into_iter()
        .flatten()
    {
        paths.push(files.cert_file.clone());
        paths.push(files.key_file.clone());
    }
    let mut seen = std::collections::HashSet::new();
    paths.retain(|p| seen.insert(p.clone()));
    paths
}

fn key_paths(auth: &ServiceAuth) -> impl Iterator<Item = PathBuf> + '_ {
    [&auth.signing_key, &auth.validation_key]
        .into_iter()
        .flatten()
        .filter_map(|s| match s {
            SecretSource::File { path, .. }
            | SecretSource::Credential { path, .. }
            | SecretSource::DevKey { path } => Some(path.clone()),
            SecretSource::Inline { .. } => None,
        })
}

/// The watch `config` asks for (`AIGW_FILE_WATCH_INTERVAL_S`), if any and if
/// there is anything to watch.
pub async fn start(config: &Config) -> Option<FileWatch> {
    let interval = config.file_watch_interval?;
    let paths = watched_paths(config);
    if paths.is_empty() {
        return None;
    }
    tracing::info!(
        interval_s = interval.as_secs_f64(),
        files = paths.len(),
        "watching key, CA and TLS files for changes"
    );
    Some(FileWatch::new(paths, interval).await)
}

/// The next change of `watch`; never resolves without one.
pub async fn next(watch: &mut Option<FileWatch>) -> Vec<PathBuf> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// What a path resolves to, as far as change detection cares.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Print {
    Missing,
    File(Stamp),
    Dir(Vec<(OsString, Option<Stamp>)>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Entries a directory may have before we stop listing it (a trust directory
/// such as `/etc/ssl/certs` has a few hundred).
const MAX_DIR_ENTRIES: usize = 10_000;

fn print(path: &Path) -> Print {
    // `metadata` follows symlinks: a swapped `..data` shows as a new inode.
    let Ok(meta) = fs::metadata(path) else {
        return Print::Missing;
    };
    if !meta.is_dir() {
        return Print::File(Stamp::of(&meta));
    }
    let Ok(entries) = fs::read_dir(path) else {
        return Print::Missing;
    };
    let mut listed: Vec<(OsString, Option<Stamp>)> = entries
        .filter_map(Result::ok)
        .take(MAX_DIR_ENTRIES)
        .map(|e| {
            let stamp = fs::metadata(e.path()).ok().map(|m| Stamp::of(&m));
            (e.file_name(), stamp)
        })
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    Print::Dir(listed)
}

/// Polls a set of paths and reports when any of them changed.
pub struct FileWatch {
    paths: Vec<PathBuf>,
    prints: Vec<Print>,
    interval: Duration,
}

impl FileWatch {
    /// Takes the first fingerprints now, so only later changes count.
    pub async fn new(paths: Vec<PathBuf>, interval: Duration) -> Self {
        let prints = Self::take(paths.clone()).await;
        Self {
            paths,
            prints,
            interval,
        }
    }

    async fn take(paths: Vec<PathBuf>) -> Vec<Print> {
        // stat() can block (a hung network mount): off the async workers.
        tokio::task::spawn_blocking(move || paths.iter().map(|p| print(p)).collect())
            .await
            .unwrap_or_default()
    }

    /// Resolves with the paths that changed since the last call (or `new`).
    pub async fn changed(&mut self) -> Vec<PathBuf> {
        loop {
            tokio::time::sleep(self.interval).await;
            let now = Self::take(self.paths.clone()).await;
            if now.len() != self.prints.len() {
                continue;
            }
            let changed: Vec<PathBuf> = self
                .paths
                .iter()
                .zip(self.prints.iter().zip(now.iter()))
                .filter(|(_, (before, after))| before != after)
                .map(|(p, _)| p.clone())
                .collect();
            self.prints = now;
            if !changed.is_empty() {
                return changed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// What the kubelet's atomic writer does: a new timestamped directory,
    /// `..data` swapped to it by rename, visible names linking through it.
    fn k8s_publish(dir: &Path, generation: u32, files: &[(&str, &str)]) {
        let ts = dir.join(format!("..2026_01_01_00_00_0{generation}.000"));
        fs::create_dir(&ts).unwrap();
        for (name, contents) in files {
            fs::write(ts.join(name), contents).unwrap();
        }
        let tmp = dir.join("..data_tmp");
        symlink(ts.file_name().unwrap(), &tmp).unwrap();
        fs::rename(&tmp, dir.join("..data")).unwrap();
        for (name, _) in files {
            let visible = dir.join(name);
            if fs::symlink_metadata(&visible).is_err() {
                symlink(Path::new("..data").join(name), &visible).unwrap();
            }
        }
    }

    #[test]
    fn a_swapped_data_symlink_changes_the_file_and_directory_prints() {
        let dir = tempfile::tempdir().unwrap();
        k8s_publish(dir.path(), 1, &[("tls.crt", "one"), ("tls.key", "one")]);
        let file = dir.path().join("tls.crt");
        let (file_before, dir_before) = (print(&file), print(dir.path()));
        assert!(matches!(file_before, Print::File(_)));
        assert_eq!(print(&file), file_before, "stable while nothing changes");

        // Same size, same content length: only the inode tells them apart.
        k8s_publish(dir.path(), 2, &[("tls.crt", "two"), ("tls.key", "two")]);
        assert_ne!(print(&file), file_before);
        assert_ne!(print(dir.path()), dir_before);
        assert_eq!(fs::read_to_string(&file).unwrap(), "two");
    }

    #[test]
    fn missing_files_are_a_state_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        assert_eq!(print(&path), Print::Missing);
        fs::write(&path, "x").unwrap();
        assert!(matches!(print(&path), Print::File(_)));
    }
}
