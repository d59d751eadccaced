//! `mapache rebuild-index`

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use mapache_store::rebuild_index::{rebuild_index, RebuildProgress};
use mapache_store::repair::repair_snapshots;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::print_json;
use crate::progress::ProgressLine;

/// Rebuild the index from the packs
///
/// Reads every pack's footer: packs that no index lists are added, and
/// entries of packs that are missing or unreadable are dropped, so that
/// the next snapshot stores again what was lost. The old index files are
/// removed only after the new ones are durable.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read every pack whole and index only the blobs that open (slower;
    /// after `verify --read-data` reported damaged blobs)
    #[arg(long)]
    read_data: bool,

    /// Then write every snapshot that refers to lost data again without
    /// what cannot be restored (named), tagged `repaired`; the original is
    /// forgotten (`log --forgotten` lists it, `recall` brings it back)
    #[arg(long)]
    repair_snapshots: bool,
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open()?;
    let _lock = global.lock(&repo, true)?;
    let progress = Arc::new(RebuildProgress::default());
    let display = {
        let progress = progress.clone();
        ProgressLine::start(global.show_progress(), move || {
            format!(
                "{} of {} packs",
                progress.packs_done.load(Ordering::Relaxed),
                progress.packs_total.load(Ordering::Relaxed)
            )
        })
    };
    let report = rebuild_index(&repo, args.read_data, global.threads(), &progress);
    drop(display);
    let report = report?;
    let repaired = if args.repair_snapshots {
        let repo = std::sync::Arc::new(repo.load_index()?);
        repair_snapshots(&repo, global.threads())?
    } else {
        Vec::new()
    };
    if global.json {
        print_json(&serde_json::json!({ "index": report, "repaired_snapshots": repaired }))?;
        return Ok(Outcome::Success);
    }
    for snapshot in &repaired {
        match snapshot.repaired {
            Some(new) => println!(
                "snapshot {} repaired as {} ({} paths left out; the original is forgotten):",
                snapshot.original.short(),
                new.short(),
                snapshot.removed.len()
            ),
            None => println!(
                "snapshot {} cannot be repaired, its root folder is lost; left as it is",
                snapshot.original.short()
            ),
        }
        for removed in &snapshot.removed {
            println!("  {}: {}", removed.path, removed.cause);
        }
    }
    for dropped in &report.packs_dropped {
        eprintln!(
            "warning: pack {} left out of the index: {}",
            dropped.pack, dropped.reason
        );
    }
    for index in &report.damaged_index_files {
        eprintln!("note: damaged index file {index} replaced");
    }
    if report.blobs_dropped > 0 {
        eprintln!(
            "warning: {} damaged blobs left out of the index",
            report.blobs_dropped
        );
    }
    if !global.quiet {
        println!(
            "indexed {} packs ({} blobs) in {} index files, replacing {}; {} packs were in no index before, {} were dropped",
            report.packs,
            report.blobs,
            report.new_index_files,
            report.old_index_files,
            report.packs_added.len(),
            report.packs_dropped.len()
        );
    }
    Ok(Outcome::Success)
}
