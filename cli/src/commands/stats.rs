//! `mapache stats`

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use mapache_store::backend::FileKind;
use mapache_store::tree::NodeKind;
use mapache_store::{BlobId, IndexedRepository};
use serde::Serialize;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{bytes, print_json};
use crate::selection::SnapshotFilter;

/// Show sizes: of snapshots, or of the whole repository
///
/// For the snapshots given (all live ones when none is): files, folders,
/// the size a restore writes, and the unique data they use, before and
/// after compression, with the ratios that de-duplication and compression
/// give. Without snapshots it also counts the repository's packs and blobs.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshots (ids, prefixes or `latest`); default: every live snapshot
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: SnapshotFilter,
}

#[derive(Debug, Default, Serialize)]
struct Stats {
    snapshots: u64,
    files: u64,
    dirs: u64,
    others: u64,
    /// What a restore of all of them writes.
    restore_bytes: u64,
    /// Unique data blobs they use, their plaintext and stored bytes.
    blobs: u64,
    raw_bytes: u64,
    stored_bytes: u64,
    /// restore_bytes / raw_bytes.
    dedup_ratio: f64,
    /// raw_bytes / stored_bytes.
    compression_ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    repository: Option<RepositoryStats>,
}

#[derive(Debug, Default, Serialize)]
struct RepositoryStats {
    packs: u64,
    pack_bytes: u64,
    blobs: u64,
    index_files: u64,
}

/// Entries below one tree: files, folders, others, file bytes.
#[derive(Clone, Copy, Default)]
struct Counts {
    files: u64,
    dirs: u64,
    others: u64,
    bytes: u64,
}

/// What a pass over the snapshots has seen: each tree's counts (a tree
/// shared by many snapshots is read once) and each data blob.
#[derive(Default)]
struct Seen {
    trees: HashMap<BlobId, Counts>,
    blobs: HashSet<BlobId>,
}

fn walk(
    repo: &IndexedRepository,
    tree: &BlobId,
    seen: &mut Seen,
    stats: &mut Stats,
) -> Result<Counts> {
    if let Some(counts) = seen.trees.get(tree) {
        return Ok(*counts);
    }
    let mut counts = Counts::default();
    for node in repo.load_tree(tree)?.nodes {
        match node.kind {
            NodeKind::Dir => {
                counts.dirs += 1;
                if let Some(subtree) = node.subtree {
                    let below = walk(repo, &subtree, seen, stats)?;
                    counts.files += below.files;
                    counts.dirs += below.dirs;
                    counts.others += below.others;
                    counts.bytes += below.bytes;
                }
            }
            NodeKind::File => {
                counts.files += 1;
                counts.bytes += node.size;
                for blob in node.content {
                    if seen.blobs.insert(blob) {
                        if let Some(location) = repo.index().get(&blob) {
                            stats.blobs += 1;
                            stats.raw_bytes += u64::from(location.raw_length);
                            stats.stored_bytes += u64::from(location.length);
                        }
                    }
                }
            }
            _ => counts.others += 1,
        }
    }
    seen.trees.insert(*tree, counts);
    Ok(counts)
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open()?.load_index()?;
    let snapshots = if args.snapshots.is_empty() {
        let mut all = repo.snapshots()?;
        all.retain(|(_, s)| args.filter.accepts(s));
        all
    } else {
        args.snapshots
            .iter()
            .map(|spec| args.filter.find(&repo, spec))
            .collect::<Result<Vec<_>>>()?
    };
    let mut stats = Stats {
        snapshots: snapshots.len() as u64,
        ..Stats::default()
    };
    let mut seen = Seen::default();
    for (_, snapshot) in &snapshots {
        // Every snapshot counts whole: each would be restored whole.
        let counts = walk(&repo, &snapshot.tree, &mut seen, &mut stats)?;
        stats.files += counts.files;
        stats.dirs += counts.dirs;
        stats.others += counts.others;
        stats.restore_bytes += counts.bytes;
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    stats.dedup_ratio = ratio(stats.restore_bytes, stats.raw_bytes);
    stats.compression_ratio = ratio(stats.raw_bytes, stats.stored_bytes);
    if args.snapshots.is_empty() {
        let packs = repo.backend().list(FileKind::Pack)?;
        stats.repository = Some(RepositoryStats {
            packs: packs.len() as u64,
            pack_bytes: packs.iter().map(|p| p.size).sum(),
            blobs: repo.index().len() as u64,
            index_files: repo.backend().list(FileKind::Index)?.len() as u64,
        });
    }
    if global.json {
        print_json(&stats)?;
        return Ok(Outcome::Success);
    }
    println!("snapshots:        {}", stats.snapshots);
    println!(
        "files:            {} ({} folders, {} other)",
        stats.files, stats.dirs, stats.others
    );
    println!("restore size:     {}", bytes(stats.restore_bytes));
    println!(
        "unique data:      {} in {} blobs, {} stored",
        bytes(stats.raw_bytes),
        stats.blobs,
        bytes(stats.stored_bytes)
    );
    println!("deduplication:    {:.2}x", stats.dedup_ratio);
    println!("compression:      {:.2}x", stats.compression_ratio);
    if let Some(r) = &stats.repository {
        println!(
            "repository:       {} in {} packs, {} blobs, {} index files",
            bytes(r.pack_bytes),
            r.packs,
            r.blobs,
            r.index_files
        );
    }
    Ok(Outcome::Success)
}
