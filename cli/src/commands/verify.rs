//! `mapache verify`

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use mapache_store::verify::{
    self, DataSubset, Problem, VerifyOptions, VerifyProgress, VerifyReport,
};

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{bytes, print_json};
use crate::progress::ProgressLine;

/// Check the repository and say what any damage breaks
///
/// Checks that every snapshot and every tree it reaches decode, that every
/// blob they name is indexed, and that every pack the index lists exists
/// and is long enough. With --read-data it also reads every pack, checks
/// it against its name and opens every blob. Exits with 4 when damage is
/// found (1 means the check itself could not run).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also read all data: every pack, every blob
    #[arg(long)]
    read_data: bool,

    /// Read only part of the data: N/M (slice N of M; slices 1 to M
    /// together cover everything), P% or a size such as 10G
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    read_data_subset: Option<DataSubset>,
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open()?;
    let _lock = global.lock_shared(&repo)?;
    let options = VerifyOptions {
        read_data: if args.read_data {
            Some(DataSubset::All)
        } else {
            args.read_data_subset
        },
        threads: global.threads(),
    };
    let progress = Arc::new(VerifyProgress::default());
    let display = {
        let progress = progress.clone();
        ProgressLine::start(global.show_progress(), move || {
            let total = progress.packs_total.load(Ordering::Relaxed);
            let read = progress.packs_read.load(Ordering::Relaxed);
            let trees = progress.trees.load(Ordering::Relaxed);
            if total > 0 && read < total {
                format!(
                    "read {read} of {total} packs ({})",
                    bytes(progress.bytes_read.load(Ordering::Relaxed))
                )
            } else {
                format!("checked {trees} trees")
            }
        })
    };
    let started = std::time::Instant::now();
    let report = verify::verify(repo, &options, &progress);
    drop(display);
    let report = report?;
    if global.json {
        print_json(&report)?;
    } else {
        print_report(&report, global.quiet, started.elapsed().as_secs_f64());
    }
    Ok(if report.is_damaged() {
        Outcome::Damaged
    } else {
        Outcome::Success
    })
}

fn print_report(report: &VerifyReport, quiet: bool, secs: f64) {
    if !quiet {
        let mut line = format!(
            "checked {} snapshots ({} forgotten), {} trees, {} data blobs, {} index files, {} packs",
            report.snapshots + report.forgotten_snapshots,
            report.forgotten_snapshots,
            report.trees,
            report.data_blobs,
            report.index_files,
            report.packs
        );
        if report.packs_read > 0 {
            line.push_str(&format!(
                "; read {} packs ({})",
                report.packs_read,
                bytes(report.bytes_read)
            ));
        }
        println!("{line} in {secs:.2}s");
        if !report.unindexed_packs.is_empty() {
            println!(
                "note: {} packs are in no index (left by an interrupted run); the next snapshot or `mapache rebuild-index` indexes them",
                report.unindexed_packs.len()
            );
        }
    }
    if !report.damaged_forgotten.is_empty() || !report.forgotten_problems.is_empty() {
        println!(
            "note: {} forgotten snapshots refer to damaged or lost data (they would restore incompletely if recalled): {}",
            report.damaged_forgotten.len(),
            report
                .damaged_forgotten
                .iter()
                .map(|s| s.snapshot.short())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !report.is_damaged() {
        if !quiet {
            println!("no damage found");
        }
        return;
    }
    println!("damage found:");
    let mut missing = Vec::new();
    for problem in &report.problems {
        match problem {
            // Often many at once, all with one cause named above them or
            // in the paths below: counted, the ids are in --json.
            Problem::MissingBlob { blob, blob_type } => missing.push((blob, blob_type)),
            _ => println!("  {problem}"),
        }
    }
    match missing.as_slice() {
        [] => {}
        [(blob, blob_type)] => println!("  {blob_type} blob {blob} is not in the index"),
        [(blob, blob_type), rest @ ..] => println!(
            "  {} blobs are not in the index ({blob_type} blob {blob} and {} more; --json lists them)",
            missing.len(),
            rest.len()
        ),
    }
    for snapshot in &report.damaged_snapshots {
        println!(
            "snapshot {} ({}): {} paths cannot be restored completely:",
            snapshot.snapshot.short(),
            snapshot.time,
            snapshot.paths.len()
        );
        for path in &snapshot.paths {
            println!("  {}: {}", path.path, path.cause);
        }
    }
    println!(
        "to stop the damage from spreading into new snapshots, run `mapache rebuild-index` (with --read-data if blobs are damaged); every snapshot not listed above restores completely"
    );
}
