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
}

impl Patterns {
    /// Compiles `patterns`; blank lines and lines starting with `#` are
    /// skipped so that exclude files can carry comments.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for pattern in patterns {
            let pattern = pattern.as_ref().trim();
            if pattern.is_empty() || pattern.starts_with('#') {
                continue;
            }
            let glob = GlobBuilder::new(pattern.trim_end_matches('/'))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidInput(format!("bad pattern {pattern:?}: {e}")))?;
            if pattern.trim_end_matches('/').contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("bad patterns: {e}")))
        };
        Ok(Patterns {
            by_name: build(by_name)?,
            by_path: build(by_path)?,
        })
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
