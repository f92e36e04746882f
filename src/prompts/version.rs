//! Prompt version constraints as Rails sends them (`prompt_version`), with the
//! meaning upstream gives them (Poetry-style): `^1.0.0` (the default), `~1.2`,
//! `>=1.0.0, <2`, `*`, and a bare version meaning exactly that version.
//!
//! The `semver` crate does the matching; the two differences from its Cargo
//! semantics are handled here: a bare version is an exact match (Cargo reads
//! it as `^`), and ranges never select pre-releases (`1.1.0-dev` is only
//! reachable by naming it exactly), so a prompt under development is never
//! served by default.

use semver::{Version, VersionReq};

/// The constraint used when a request names none.
pub const DEFAULT_CONSTRAINT: &str = "^1.0.0";

/// A parsed `prompt_version`.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    Exact(Version),
    Range(VersionReq),
}

/// The constraint text could not be read (the API answers 422).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Invalid version constraint")]
pub struct InvalidConstraint;

impl Constraint {
    pub fn parse(text: &str) -> Result<Self, InvalidConstraint> {
        let text = text.trim();
        if text.is_empty() {
            return Err(InvalidConstraint);
        }
        let bare = text
            .strip_prefix("==")
            .or_else(|| text.strip_prefix('='))
            .unwrap_or(text)
            .trim();
        if let Some(v) = exact_version(bare) {
            return Ok(Constraint::Exact(v));
        }
        // Poetry writes `~=1.2` for PEP 440's compatible release; Cargo's `~`
        // is the closest reading for the versions prompts use.
        let normalised = text.replace("~=", "~");
        VersionReq::parse(&normalised)
            .map(Constraint::Range)
            .map_err(|_| InvalidConstraint)
    }

    pub fn matches(&self, v: &Version) -> bool {
        match self {
            Constraint::Exact(want) => want == v,
            Constraint::Range(req) => v.pre.is_empty() && req.matches(v),
        }
    }

    /// The highest of `available` that satisfies the constraint.
    pub fn select<'a>(
        &self,
        available: impl IntoIterator<Item = &'a Version>,
    ) -> Option<&'a Version> {
        available.into_iter().filter(|v| self.matches(v)).max()
    }
}

/// `1`, `1.2` and `1.2.3[-pre]` as one exact version (missing parts are zero).
fn exact_version(text: &str) -> Option<Version> {
    if let Ok(v) = Version::parse(text) {
        return Some(v);
    }
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty()
        || parts.len() > 2
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let num = |i: usize| parts.get(i).map_or(Some(0), |p| p.parse::<u64>().ok());
    Some(Version::new(num(0)?, num(1)?, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(list: &[&str]) -> Vec<Version> {
        list.iter().map(|v| Version::parse(v).unwrap()).collect()
    }

    fn pick(constraint: &str, list: &[&str]) -> Option<String> {
        let all = versions(list);
        Constraint::parse(constraint)
            .unwrap()
            .select(&all)
            .map(Version::to_string)
    }

    const AVAILABLE: &[&str] = &[
        "0.0.1-dev",
        "1.0.0",
        "1.0.1",
        "1.1.0-dev",
        "1.1.0",
        "1.2.0",
        "2.0.0",
        "2.1.0-alpha",
    ];

    #[test]
    fn caret_is_the_highest_compatible_stable_version() {
        assert_eq!(
            pick(DEFAULT_CONSTRAINT, AVAILABLE).as_deref(),
            Some("1.2.0")
        );
        assert_eq!(pick("^2.0.0", AVAILABLE).as_deref(), Some("2.0.0"));
        assert_eq!(pick("^3.0.0", AVAILABLE), None);
    }

    #[test]
    fn tilde_and_comparisons() {
        assert_eq!(pick("~1.0", AVAILABLE).as_deref(), Some("1.0.1"));
        assert_eq!(pick("~1.1.0", AVAILABLE).as_deref(), Some("1.1.0"));
        assert_eq!(pick("~=1.0", AVAILABLE).as_deref(), Some("1.0.1"));
        assert_eq!(pick(">=1.0.0", AVAILABLE).as_deref(), Some("2.0.0"));
        assert_eq!(pick(">=1.0.0, <1.2.0", AVAILABLE).as_deref(), Some("1.1.0"));
        assert_eq!(pick("*", AVAILABLE).as_deref(), Some("2.0.0"));
    }

    #[test]
    fn bare_versions_are_exact_and_reach_prereleases() {
        assert_eq!(pick("1.0.0", AVAILABLE).as_deref(), Some("1.0.0"));
        assert_eq!(pick("=1.0.1", AVAILABLE).as_deref(), Some("1.0.1"));
        assert_eq!(pick("==1.1.0", AVAILABLE).as_deref(), Some("1.1.0"));
        assert_eq!(pick("1.1.0-dev", AVAILABLE).as_deref(), Some("1.1.0-dev"));
        assert_eq!(pick("1.0", AVAILABLE).as_deref(), Some("1.0.0"));
        assert_eq!(pick("1.3.0", AVAILABLE), None);
    }

    #[test]
    fn ranges_skip_prereleases() {
        assert_eq!(pick("^0.0.1", &["0.0.1-dev"]), None);
        assert_eq!(pick(">=2.1.0-alpha", AVAILABLE), None);
    }

    #[test]
    fn garbage_is_invalid() {
        for bad in ["", "latest", "^^1", "1.x.y", ">>1", "1..0"] {
            assert_eq!(Constraint::parse(bad), Err(InvalidConstraint), "{bad}");
        }
    }
}
