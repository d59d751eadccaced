//! `mapache clean`

use std::sync::atomic::Ordering;

use anyhow::Result;
use mapache_store::clean::{clean, CleanOptions, CleanPhase, CleanProgress, CleanReport};
use mapache_store::retention::Span;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{bytes, print_json};
use crate::progress::ProgressLine;

/// Remove what no snapshot needs and reclaim its space
///
/// Keeps everything that live snapshots, recallable forgotten snapshots
/// and uncommitted staging areas (of any machine) refer to; deletes packs
/// holding nothing of that, repacks packs that are mostly unused, merges
/// the index, and removes forgotten snapshots for good once they were
/// forgotten longer than --keep-forgotten. Snapshots and commits may run
/// meanwhile: the deleting step waits for them (up to --retry-lock) and
/// keeps whatever they used.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unused space tolerated in partly used packs, in percent of the
    /// space in use, before they are repacked
    #[arg(long, value_name = "PERCENT", default_value = "5", value_parser = parse_percent)]
    max_unused: f64,

    /// Forgotten snapshots stay recallable this long (as 7d, 12h, 1m,
    /// 1y; 0 removes them at once)
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_keep)]
    keep_forgotten: Keep,

    /// Only show what would be removed and repacked, and the space freed
    #[arg(short = 'n', long)]
    dry_run: bool,
}

/// How long forgotten snapshots are kept.
#[derive(Clone, Debug)]
struct Keep(Option<Span>);

fn parse_keep(text: &str) -> std::result::Result<Keep, String> {
    if text.trim() == "0" {
        return Ok(Keep(None));
    }
    text.parse::<Span>()
        .map(|span| Keep(Some(span)))
        .map_err(|e| e.to_string())
}

fn parse_percent(text: &str) -> std::result::Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(n) if (0.0..=10_000.0).contains(&n) => Ok(n / 100.0),
        _ => Err(format!("{text:?} is not a percentage such as 5 or 5%")),
    }
}

impl Keep {
    /// In seconds before now.
    fn seconds(&self) -> i64 {
        let Some(span) = &self.0 else { return 0 };
        let now = chrono::Utc::now();
        span.before(&now)
            .map_or(i64::MAX, |then| (now - then).num_seconds())
    }
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open()?;
    let shared = global.lock(&repo, false)?;
    let repo = repo.load_index()?;
    let options = CleanOptions {
        max_unused: args.max_unused,
        keep_forgotten_secs: args.keep_forgotten.seconds(),
        dry_run: args.dry_run,
        lock_wait: global.retry_lock,
    };
    let progress = std::sync::Arc::new(CleanProgress::default());
    let display = {
        let progress = progress.clone();
        ProgressLine::start(global.show_progress(), move || render(&progress))
    };
    let report = clean(&repo, &shared, &options, &progress);
    drop(display);
    let report = report?;
    if global.json {
        print_json(&report)?;
    } else if !global.quiet {
        print_report(&report);
    }
    Ok(Outcome::Success)
}

fn render(progress: &CleanProgress) -> String {
    let phase = *progress.phase.lock();
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let what = phase.describe();
    match phase {
        CleanPhase::WalkingSnapshots => format!("{what}: {} trees", load(&progress.trees)),
        CleanPhase::Repacking => format!(
            "{what}: {} of {}",
            bytes(load(&progress.repacked_bytes)),
            bytes(load(&progress.repack_bytes_total))
        ),
        CleanPhase::DeletingPacks => format!(
            "{what}: {} of {}",
            load(&progress.packs_deleted),
            load(&progress.packs_to_delete)
        ),
        _ => what.to_string(),
    }
}

fn print_report(report: &CleanReport) {
    let would = if report.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots, {} forgotten ones kept, {} staging areas; {} blobs in use ({}), {} not",
        report.snapshots,
        report.forgotten_kept,
        report.staging_areas,
        report.blobs_used,
        bytes(report.bytes_used),
        report.blobs_unused
    );
    if report.forgotten_kept > 0 {
        println!(
            "{} forgotten snapshots are kept, recallable, with what only they use; \
             `clean --keep-forgotten 0` removes them now",
            report.forgotten_kept
        );
    }
    if !report.forgotten_removed.is_empty() {
        let ids: Vec<String> = report
            .forgotten_removed
            .iter()
            .map(|id| id.short())
            .collect();
        println!(
            "forgotten snapshots {would}removed for good: {}",
            ids.join(" ")
        );
    }
    println!(
        "packs: {} of {} {would}deleted, {} {would}repacked{}; {} {would}freed of {}",
        report.packs_deleted,
        report.packs,
        report.packs_repacked,
        if report.dry_run {
            String::new()
        } else {
            format!(" into {}", report.packs_written)
        },
        bytes(report.bytes_freed),
        bytes(report.bytes)
    );
    println!(
        "unused space left in partly used packs: {}; index files: {} -> {}",
        bytes(report.bytes_unused_left),
        report.index_files_before,
        report.index_files_after
    );
    if report.packs_rescued > 0 {
        println!(
            "{} packs kept because snapshots made meanwhile use them",
            report.packs_rescued
        );
    }
    if report.temporaries_removed > 0 {
        println!(
            "temporary files left by interrupted writes removed: {}",
            bytes(report.temporaries_removed)
        );
    }
    for pack in &report.missing_packs {
        eprintln!("warning: pack {pack} is missing; it held nothing in use and left the index");
    }
}
