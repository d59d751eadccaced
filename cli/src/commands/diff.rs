//! `mapache diff`

use std::path::Path;

use anyhow::Result;
use mapache_store::diff::{self, Change};
use mapache_store::tree::{Node, NodeKind};
use mapache_store::{IndexedRepository, SnapshotId};

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{bytes, print_json};
use crate::selection::{resolve_path, split_sub_path, SnapshotFilter};

/// Show what differs between two snapshots
///
/// Each side is a snapshot (`latest`, an id or a prefix), optionally with
/// `:/path` to compare folders inside them. Lines start with `+` (added),
/// `-` (removed), `M` (content changed) or `U` (metadata only).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The first snapshot[:/path]
    first: String,
    /// The second snapshot[:/path]
    second: String,
    #[command(flatten)]
    filter: SnapshotFilter,
}

/// The entries at `spec` (`SNAPSHOT[:/path]`).
fn entries(
    indexed: &IndexedRepository,
    filter: &SnapshotFilter,
    spec: &str,
) -> Result<(SnapshotId, Vec<Node>)> {
    let (snapshot, path) = split_sub_path(spec);
    let (id, snapshot) = filter.find(indexed, snapshot)?;
    let root = indexed.load_tree(&snapshot.tree)?.nodes;
    let (node, nodes) = resolve_path(indexed, root, Path::new(path.unwrap_or("/")))?;
    if node.is_some_and(|n| n.kind != NodeKind::Dir) {
        anyhow::bail!("{spec}: not a folder");
    }
    Ok((id, nodes))
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let indexed = global.open()?.load_index()?;
    let (_, first_path) = split_sub_path(&args.first);
    let (first_id, first) = entries(&indexed, &args.filter, &args.first)?;
    let (second_id, second) = entries(&indexed, &args.filter, &args.second)?;
    let mut differences = Vec::new();
    let root = first_path.unwrap_or("").trim_end_matches('/');
    diff::diff(&indexed, &first, &second, root, &mut differences)?;
    let totals = diff::totals(&differences);
    if global.json {
        print_json(&serde_json::json!({
            "first": first_id.to_hex(),
            "second": second_id.to_hex(),
            "differences": differences,
            "totals": totals,
        }))?;
        return Ok(Outcome::Success);
    }
    let mut out = std::io::stdout().lock();
    for d in &differences {
        let mark = match d.change {
            Change::Added => "+",
            Change::Removed => "-",
            Change::Modified => "M",
            Change::Metadata => "U",
        };
        std::io::Write::write_fmt(&mut out, format_args!("{mark}    {}\n", d.path))?;
    }
    if !global.quiet {
        println!(
            "{} added ({}), {} removed ({}), {} changed, {} with other metadata",
            totals.added,
            bytes(totals.added_bytes),
            totals.removed,
            bytes(totals.removed_bytes),
            totals.modified,
            totals.metadata
        );
    }
    Ok(Outcome::Success)
}
