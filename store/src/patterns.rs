//! Path patterns, for `snapshot --exclude` and `restore --include/--exclude`.
//!
//! A pattern without a `/` matches an entry's name anywhere in the tree
//! (`*.tmp`, `node_modules`). A pattern with a `/` matches the entry's
//! absolute path; `*` stays within one path component and `**` spans any
//! number (`/home/*/.cache`, `**/target/debug`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// A compiled set of patterns.
#[derive(Debug, Clone)]
pub struct Patterns {
    by_name: GlobSet,
    by_path: GlobSet,
    /// The patterns as given, name patterns first, in the sets' order.
    texts: Vec<String>,
}

impl Patterns {
    /// Compiles `patterns`; blank lines and lines starting with `#` are
    /// skipped so that exclude files can carry comments.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns> {
        Patterns::with_ignored_case::<S, S>(patterns, &[])
    }

    /// Compiles `patterns`, and `ignoring_case` matched without regard to
    /// case (`--iexclude`, `--iinclude`).
    pub fn with_ignored_case<S: AsRef<str>, T: AsRef<str>>(
        patterns: &[S],
        ignoring_case: &[T],
    ) -> Result<Patterns> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        let (mut names, mut paths) = (Vec::new(), Vec::new());
        let all = patterns
            .iter()
            .map(|p| (p.as_ref(), false))
            .chain(ignoring_case.iter().map(|p| (p.as_ref(), true)));
        for (pattern, case_insensitive) in all {
            let pattern = pattern.trim();
            if pattern.is_empty() || pattern.starts_with('#') {
                continue;
            }
            let glob = GlobBuilder::new(pattern.trim_end_matches('/'))
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(case_insensitive)
                .build()
                .map_err(|e| Error::InvalidInput(format!("bad pattern {pattern:?}: {e}")))?;
            if pattern.trim_end_matches('/').contains('/') {
                by_path.add(glob);
                paths.push(pattern.to_string());
            } else {
                by_name.add(glob);
                names.push(pattern.to_string());
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("bad patterns: {e}")))
        };
        names.extend(paths);
        Ok(Patterns {
            by_name: build(by_name)?,
            by_path: build(by_path)?,
            texts: names,
        })
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Like [`Patterns::matches`], also marking in `seen` (one flag per
    /// pattern) every pattern that matches.
    pub fn matches_noting(&self, path: &Path, name: &[u8], seen: &mut [bool]) -> bool {
        let mut any = false;
        if !self.by_name.is_empty() {
            for i in self.by_name.matches(OsStr::from_bytes(name)) {
                seen[i] = true;
                any = true;
            }
        }
        if !self.by_path.is_empty() {
            let offset = self.by_name.len();
            for i in self.by_path.matches(path) {
                seen[offset + i] = true;
                any = true;
            }
        }
        any
    }

    /// The patterns whose flag in `seen` is still unset.
    pub fn unmatched<'a>(&'a self, seen: &'a [bool]) -> impl Iterator<Item = &'a str> + 'a {
        self.texts
            .iter()
            .zip(seen)
            .filter(|(_, seen)| !**seen)
            .map(|(text, _)| text.as_str())
    }

    /// The empty set, which matches nothing.
    pub fn none() -> Patterns {
        Patterns::new::<&str>(&[]).expect("empty set compiles")
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty() && self.by_path.is_empty()
    }

    /// Whether the entry at `path` (named `name`) matches a pattern.
    pub fn matches(&self, path: &Path, name: &[u8]) -> bool {
        (!self.by_name.is_empty() && self.by_name.is_match(OsStr::from_bytes(name)))
            || (!self.by_path.is_empty() && self.by_path.is_match(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let ex = Patterns::new(&[
            "*.tmp",
            "/home/*/.cache",
            "**/target/debug",
            "# comment",
            "",
        ])
        .unwrap();
        assert!(ex.matches(Path::new("/a/b/x.tmp"), b"x.tmp"));
        assert!(!ex.matches(Path::new("/a/b/x.tmpl"), b"x.tmpl"));
        assert!(ex.matches(Path::new("/home/ann/.cache"), b".cache"));
        assert!(!ex.matches(Path::new("/home/ann/sub/.cache"), b".cache"));
        assert!(ex.matches(Path::new("/src/p/target/debug"), b"debug"));
        assert!(Patterns::new(&["a[b"]).is_err());
    }
}
