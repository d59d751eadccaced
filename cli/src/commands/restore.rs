//! `mapache restore`

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use mapache_store::restorer::{self, RestoreOptions, RestoreProgress};
use mapache_store::Patterns;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{bytes, print_json};
use crate::progress::ProgressLine;

/// Restore a snapshot into a folder
///
/// Paths are restored below the target as they were recorded (a snapshot of
/// /home/ann/docs restores to TARGET/home/ann/docs). Files that already
/// hold the right content are left alone, so an interrupted restore can
/// simply be run again.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshot id (a unique prefix is enough) or `latest`
    snapshot: String,

    /// Folder to restore into (created if missing)
    #[arg(short, long, value_name = "DIR")]
    target: PathBuf,

    /// Restore only entries matching a pattern (and what is below them); repeatable
    #[arg(short, long, value_name = "PATTERN")]
    include: Vec<String>,

    /// Skip entries matching a pattern; repeatable
    #[arg(short, long, value_name = "PATTERN")]
    exclude: Vec<String>,

    /// Read every restored file back and check it against the snapshot
    #[arg(long)]
    verify: bool,
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let options = RestoreOptions {
        includes: Patterns::new(&args.include)?,
        excludes: Patterns::new(&args.exclude)?,
        verify: args.verify,
        threads: global.threads(),
    };
    let repo = global.open()?;
    let _lock = global.lock_shared(&repo)?;
    let repo = repo.load_index()?;
    let (id, snapshot) = repo.find_snapshot(&args.snapshot)?;
    let progress = Arc::new(RestoreProgress::default());
    let display = {
        let progress = progress.clone();
        ProgressLine::start(global.show_progress(), move || {
            format!(
                "{} of {}",
                bytes(progress.bytes.load(Ordering::Relaxed)),
                bytes(progress.total_bytes.load(Ordering::Relaxed))
            )
        })
    };
    let started = std::time::Instant::now();
    let report = restorer::restore(&repo, &snapshot.tree, &args.target, &options, &progress);
    drop(display);
    let report = report?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for damaged in &report.damaged {
        eprintln!("error: could not restore {damaged}");
    }
    if global.json {
        print_json(&serde_json::json!({ "snapshot": id.to_hex(), "report": report }))?;
    } else if !global.quiet {
        println!(
            "restored snapshot {} to {}: {} files ({} already correct), {} folders, {} other, {} written in {:.2}s",
            id.short(),
            args.target.display(),
            report.files,
            report.files_unchanged,
            report.dirs,
            report.others,
            bytes(report.bytes_written),
            started.elapsed().as_secs_f64()
        );
        if args.verify {
            println!("verified {} files", report.verified);
        }
    }
    let verify_failed = report
        .warnings
        .iter()
        .any(|w| w.contains("verification failed"));
    if !report.damaged.is_empty() {
        eprintln!(
            "error: {} files could not be restored completely",
            report.damaged.len()
        );
        return Ok(Outcome::Failed);
    }
    Ok(if verify_failed {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}
