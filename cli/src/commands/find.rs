//! `mapache find`

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use anyhow::{bail, Result};
use mapache_store::tree::{Node, NodeKind, Timestamp};
use mapache_store::{BlobId, IndexedRepository, PackId, Patterns};
use serde::Serialize;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{bytes, print_json};
use crate::selection::parse_local_time;

/// Find files by name or path across snapshots, or the files that use an
/// object
///
/// A pattern without `/` matches names (`*.pdf`), one with `/` whole paths
/// (`/home/*/notes/**`). `--blob`, `--tree` and `--pack` name the files
/// and folders that use an object, as `verify` reports damage.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Patterns (any may match)
    patterns: Vec<String>,
    /// Only in these snapshots (ids or prefixes; repeatable)
    #[arg(long = "snapshot", value_name = "ID")]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: crate::selection::SnapshotFilter,
    /// Only entries modified after this time (YYYY-MM-DD[ HH:MM[:SS]], local)
    #[arg(long, value_name = "TIME")]
    newer: Option<String>,
    /// Only entries modified before this time
    #[arg(long, value_name = "TIME")]
    older: Option<String>,
    /// Files that use this data blob (id or prefix of at least 8 digits)
    #[arg(long, value_name = "ID")]
    blob: Option<String>,
    /// Folders whose listing is this tree blob
    #[arg(long, value_name = "ID")]
    tree: Option<String>,
    /// Files that use any blob of this pack
    #[arg(long, value_name = "ID")]
    pack: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
struct Found {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mtime: Timestamp,
}

/// What an entry must be to be found.
struct Query {
    patterns: Patterns,
    /// Whether a pattern looks at whole paths (then results below a tree
    /// depend on where it is, and are not remembered per tree).
    by_path: bool,
    newer: Option<i64>,
    older: Option<i64>,
    blobs: HashSet<BlobId>,
    tree: Option<BlobId>,
}

/// An id prefix of at least 8 hex digits (fewer would match too much in a
/// large index), resolved among `candidates`.
fn by_prefix<T: Copy + std::fmt::Display>(
    spec: &str,
    candidates: impl IntoIterator<Item = T>,
    what: &str,
) -> Result<T> {
    if spec.len() < 8 {
        bail!("{spec:?}: give at least 8 hex digits of the {what} id");
    }
    crate::selection::resolve_prefix(spec, candidates, what)
}

impl Query {
    fn matches(&self, path: &str, node: &Node) -> bool {
        if self.newer.is_some_and(|t| node.mtime.secs <= t)
            || self.older.is_some_and(|t| node.mtime.secs >= t)
        {
            return false;
        }
        let object = !self.blobs.is_empty() || self.tree.is_some();
        if object {
            let uses_blob = node.content.iter().any(|b| self.blobs.contains(b));
            let is_tree = self.tree.is_some() && node.subtree == self.tree;
            if !(uses_blob || is_tree) {
                return false;
            }
        }
        self.patterns.is_empty() || self.patterns.matches(Path::new(path), &node.name)
    }
}

struct Finder<'a> {
    repo: &'a IndexedRepository,
    query: Query,
    /// Results below each tree, relative to it (when they do not depend on
    /// the tree's place).
    memo: HashMap<BlobId, Rc<Vec<Found>>>,
}

impl Finder<'_> {
    fn below(&mut self, tree: BlobId, path: &str) -> Result<Rc<Vec<Found>>> {
        if !self.query.by_path {
            if let Some(found) = self.memo.get(&tree) {
                return Ok(found.clone());
            }
        }
        let base = if self.query.by_path { path } else { "" };
        let mut found = Vec::new();
        for node in self.repo.load_tree(&tree)?.nodes {
            let child = format!("{base}/{}", node.name_lossy());
            if self.query.matches(&child, &node) {
                found.push(Found {
                    path: child.clone(),
                    kind: match node.kind {
                        NodeKind::Dir => "dir",
                        NodeKind::File => "file",
                        NodeKind::Symlink => "symlink",
                        _ => "other",
                    },
                    size: node.size,
                    mtime: node.mtime,
                });
            }
            if let Some(subtree) = node.subtree {
                let inner = self.below(subtree, &child)?;
                if self.query.by_path {
                    found.extend(inner.iter().cloned());
                } else {
                    found.extend(inner.iter().map(|f| Found {
                        path: format!("{child}{}", f.path),
                        ..f.clone()
                    }));
                }
            }
        }
        let found = Rc::new(found);
        if !self.query.by_path {
            self.memo.insert(tree, found.clone());
        }
        Ok(found)
    }
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    if args.patterns.is_empty() && args.blob.is_none() && args.tree.is_none() && args.pack.is_none()
    {
        bail!("give patterns, or --blob, --tree or --pack");
    }
    let repo = global.open()?.load_index()?;
    let mut blobs = HashSet::new();
    let mut tree = None;
    {
        let index = repo.index();
        if let Some(spec) = &args.blob {
            blobs.insert(by_prefix(spec, index.iter().map(|(id, _)| id), "blob")?);
        }
        if let Some(spec) = &args.tree {
            tree = Some(by_prefix(spec, index.iter().map(|(id, _)| id), "tree")?);
        }
        if let Some(spec) = &args.pack {
            let packs: HashSet<PackId> = index.iter().map(|(_, l)| l.pack).collect();
            let pack = by_prefix(spec, packs, "pack")?;
            blobs.extend(
                index
                    .iter()
                    .filter(|(_, l)| l.pack == pack)
                    .map(|(id, _)| id),
            );
        }
    }
    let query = Query {
        by_path: args
            .patterns
            .iter()
            .any(|p| p.trim_end_matches('/').contains('/')),
        patterns: Patterns::new(&args.patterns)?,
        newer: args.newer.as_deref().map(parse_local_time).transpose()?,
        older: args.older.as_deref().map(parse_local_time).transpose()?,
        blobs,
        tree,
    };
    let snapshots = if args.snapshots.is_empty() {
        repo.snapshots()?
    } else {
        args.snapshots
            .iter()
            .map(|s| repo.find_snapshot(s))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut finder = Finder {
        repo: &repo,
        query,
        memo: HashMap::new(),
    };
    let mut results = Vec::new();
    for (id, snapshot) in snapshots {
        if !args.filter.accepts(&snapshot) {
            continue;
        }
        let found = finder.below(snapshot.tree, "")?;
        if !found.is_empty() {
            results.push((id, snapshot, found));
        }
    }
    if global.json {
        let list: Vec<_> = results
            .iter()
            .map(|(id, s, found)| serde_json::json!({ "snapshot": id.to_hex(), "time": s.local_time(), "found": &**found }))
            .collect();
        print_json(&list)?;
        return Ok(Outcome::Success);
    }
    let mut total = 0;
    for (id, snapshot, found) in &results {
        println!("snapshot {} ({}):", id.short(), snapshot.local_time());
        for f in found.iter() {
            println!(
                "  {:>10}  {}",
                if f.kind == "file" {
                    bytes(f.size)
                } else {
                    f.kind.to_string()
                },
                f.path
            );
        }
        total += found.len();
    }
    if !global.quiet {
        println!("{total} matches in {} snapshots", results.len());
    }
    Ok(Outcome::Success)
}
