//! `hf-hub:ORG/NAME[@REVISION]`.

use std::fmt;

use crate::Error;

/// The prefix that marks a hub reference where a model path is taken.
pub const PREFIX: &str = "hf-hub:";

/// A model repository on the hub at a revision (a branch, tag or commit; default `main`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRef {
    /// `ORG/NAME`.
    pub repo: String,
    pub revision: String,
}

impl HubRef {
    /// `None` when `s` does not start with `hf-hub:` (it is then a path); otherwise the parsed
    /// reference or why it is malformed.
    pub fn parse(s: &str) -> Option<Result<Self, Error>> {
        let rest = s.strip_prefix(PREFIX)?;
        Some(Self::parse_repo(rest).ok_or_else(|| Error::BadReference { reference: s.into() }))
    }

    fn parse_repo(rest: &str) -> Option<Self> {
        let (repo, revision) = match rest.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (rest, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with(['.', '-'])
                && !p.contains("--")
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        let rev_ok = !revision.is_empty()
            && !revision.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            && revision.chars().all(|c| c.is_ascii_graphic() && c != '\\');
        (part_ok(org) && part_ok(name) && rev_ok)
            .then(|| Self { repo: format!("{org}/{name}"), revision: revision.into() })
    }

    /// The same repository pinned at `commit`.
    pub fn at(&self, commit: &str) -> Self {
        Self { repo: self.repo.clone(), revision: commit.into() }
    }
}

impl fmt::Display for HubRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.revision == "main" {
            write!(f, "{PREFIX}{}", self.repo)
        } else {
            write!(f, "{PREFIX}{}@{}", self.repo, self.revision)
        }
    }
}

/// Whether `revision` is a full commit id (40 lowercase hex digits).
pub fn is_commit(revision: &str) -> bool {
    revision.len() == 40
        && revision.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_timm_spelling() {
        let r = HubRef::parse("hf-hub:timm/deit_small_patch16_224.fb_in1k").unwrap().unwrap();
        assert_eq!(r.repo, "timm/deit_small_patch16_224.fb_in1k");
        assert_eq!(r.revision, "main");
        assert_eq!(r.to_string(), "hf-hub:timm/deit_small_patch16_224.fb_in1k");
        let r = HubRef::parse("hf-hub:a/b@v1.0").unwrap().unwrap();
        assert_eq!((r.repo.as_str(), r.revision.as_str()), ("a/b", "v1.0"));
        assert_eq!(r.to_string(), "hf-hub:a/b@v1.0");
        assert!(HubRef::parse("./model.onnx").is_none());
        for bad in [
            "hf-hub:",
            "hf-hub:noslash",
            "hf-hub:a/b/c",
            "hf-hub:../b",
            "hf-hub:a/b@",
            "hf-hub:a/b@../x",
            "hf-hub:a--x/b",
        ] {
            assert!(HubRef::parse(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn commits() {
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("main"));
        assert!(!is_commit(&"A".repeat(40)));
    }
}
