//! A bounded memory of tokens that already passed verification, so the same
//! token (an IDE sends its one-hour token with every completion) costs one
//! RSA verification, not one per request.
//!
//! Entries are keyed by the SHA-256 of the whole token, so equal keys mean
//! byte-identical tokens (same header, claims and signature), and no token
//! text is kept in memory. A hit counts only while the token is unexpired and
//! the one key set that verified it (ours, or one issuer's) is still that
//! source's current set: a JWKS refresh of that issuer or a SIGHUP key reload
//! makes its entries miss, while another issuer's rotation leaves them alone.
//! Failed tokens are never remembered. This module owns no I/O and never logs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::{auth::Claims, keys::VerifyKey};

/// Most tokens remembered at once (32-byte key + claims each).
pub const MAX_ENTRIES: usize = 4096;

/// The current key set of every source (ours, then each issuer's), by index.
pub type KeySets = Vec<Arc<Vec<VerifyKey>>>;

/// Which source's key set verified a token: its index in [`KeySets`] and the
/// set itself, as it was then.
#[derive(Clone)]
pub struct VerifiedBy {
    pub source: usize,
    pub keys: Arc<Vec<VerifyKey>>,
}

impl VerifiedBy {
    fn current(&self, sets: &KeySets) -> bool {
        sets.get(self.source)
            .is_some_and(|now| Arc::ptr_eq(now, &self.keys))
    }
}

/// SHA-256 of a token.
pub type Digest = [u8; 32];

struct Entry {
    claims: Arc<Claims>,
    exp: f64,
    by: VerifiedBy,
}

/// See the module documentation.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<Digest, Entry>>,
}

/// The cache key of `token`.
pub fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl VerifiedTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Entry>> {
        // A panic while holding the lock cannot leave a half-written entry
        // that matters: every entry is self-contained.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The claims of an already verified token, if it is still good at `now`
    /// (seconds since the epoch; `leeway` as in verification) under `current` keys.
    pub fn get(
        &self,
        key: &Digest,
        current: &KeySets,
        now: f64,
        leeway: f64,
    ) -> Option<Arc<Claims>> {
        let mut entries = self.lock();
        let entry = entries.get(key)?;
        if entry.exp + leeway >= now && entry.by.current(current) {
            return Some(entry.claims.clone());
        }
        entries.remove(key);
        None
    }

    /// Remembers a token that just verified; `current` (the sets now) lets a
    /// full cache drop what can no longer hit before dropping everything.
    pub fn insert(
        &self,
        key: Digest,
        claims: Arc<Claims>,
        by: VerifiedBy,
        current: &KeySets,
        now: f64,
        leeway: f64,
    ) {
        let Some(exp) = claims.exp else {
            return;
        };
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.retain(|_, e| e.exp + leeway >= now && e.by.current(current));
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, Entry { claims, exp, by });
    }

    /// Number of tokens remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: f64) -> Arc<Claims> {
        Arc::new(serde_json::from_value(serde_json::json!({"exp": exp, "sub": "u"})).unwrap())
    }

    fn by(keys: &KeySets, source: usize) -> VerifiedBy {
        VerifiedBy {
            source,
            keys: keys[source].clone(),
        }
    }

    #[test]
    fn hit_only_while_unexpired_and_keys_unchanged() {
        let cache = VerifiedTokens::default();
        let keys: KeySets = vec![Arc::new(Vec::new())];
        let d = digest("a.b.c");
        cache.insert(d, claims(1000.0), by(&keys, 0), &keys, 900.0, 30.0);
        assert!(cache.get(&d, &keys, 1000.0, 30.0).is_some());
        assert!(cache.get(&d, &keys, 1030.0, 30.0).is_some());
        // Expired beyond the leeway: gone for good.
        assert!(cache.get(&d, &keys, 1031.0, 30.0).is_none());
        assert!(cache.is_empty());

        cache.insert(d, claims(1000.0), by(&keys, 0), &keys, 900.0, 30.0);
        // A refreshed key set (a new Arc, even with equal contents) misses.
        let rotated: KeySets = vec![Arc::new(Vec::new())];
        assert!(cache.get(&d, &rotated, 950.0, 30.0).is_none());
        assert!(cache.get(&digest("a.b.d"), &keys, 950.0, 30.0).is_none());
    }

    #[test]
    fn another_sources_refresh_leaves_entries_alone() {
        let cache = VerifiedTokens::default();
        // Ours, issuer A, issuer B.
        let mut sets: KeySets = (0..3).map(|_| Arc::new(Vec::new())).collect();
        let from_a = digest("a");
        let from_b = digest("b");
        cache.insert(from_a, claims(1000.0), by(&sets, 1), &sets, 900.0, 30.0);
        cache.insert(from_b, claims(1000.0), by(&sets, 2), &sets, 900.0, 30.0);
        // Issuer B rotates: only B's token misses.
        sets[2] = Arc::new(Vec::new());
        assert!(cache.get(&from_a, &sets, 950.0, 30.0).is_some());
        assert!(cache.get(&from_b, &sets, 950.0, 30.0).is_none());
        // A source that no longer exists never hits.
        let fewer: KeySets = sets[..1].to_vec();
        assert!(cache.get(&from_a, &fewer, 950.0, 30.0).is_none());
    }

    #[test]
    fn bounded() {
        let cache = VerifiedTokens::default();
        let keys: KeySets = vec![Arc::new(Vec::new())];
        for i in 0..MAX_ENTRIES + 10 {
            cache.insert(
                digest(&i.to_string()),
                claims(1000.0),
                by(&keys, 0),
                &keys,
                900.0,
                30.0,
            );
        }
        assert!(cache.len() <= MAX_ENTRIES);
        // A token without exp is never remembered.
        let no_exp = Arc::new(serde_json::from_value(serde_json::json!({"sub": "u"})).unwrap());
        cache.insert(digest("x"), no_exp, by(&keys, 0), &keys, 900.0, 30.0);
        assert!(cache.get(&digest("x"), &keys, 900.0, 30.0).is_none());
    }
}
