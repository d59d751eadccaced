//! `mapache restore`

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Result};
use mapache_store::backend::FileKind;
use mapache_store::restorer::{self, Overwrite, RestoreOptions, RestoreProgress, RestoreReport};
use mapache_store::tree::{NodeKind, Tree};
use mapache_store::{IndexedRepository, Patterns};

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{bytes, print_json};
use crate::progress::ProgressLine;
use crate::selection::{resolve_path, split_sub_path, with_pattern_files, SnapshotFilter};

/// Restore a snapshot into a folder
///
/// Paths are restored below the target as they were recorded (a snapshot of
/// /home/ann/docs restores to TARGET/home/ann/docs); `SNAPSHOT:/home/ann`
/// restores what is inside /home/ann straight into the target. Nothing is
/// ever written through a symlink: entries are made in folders opened
/// without following one. Files that already hold the right content are
/// left alone, so an interrupted restore can simply be run again; a file is
/// written under a temporary name and takes its own only when complete.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshot id (a unique prefix is enough) or `latest`, optionally with
    /// `:/path` inside it
    snapshot: String,

    /// Folder to restore into (created if missing)
    #[arg(short, long, value_name = "DIR")]
    target: PathBuf,

    /// Restore only entries matching a pattern (and what is below them); repeatable
    #[arg(short, long, value_name = "PATTERN")]
    include: Vec<String>,

    /// Like --include, ignoring case
    #[arg(long, value_name = "PATTERN")]
    iinclude: Vec<String>,

    /// Read --include patterns from a file, one per line
    #[arg(long, value_name = "FILE")]
    include_file: Vec<PathBuf>,

    /// Skip entries matching a pattern; repeatable
    #[arg(short, long, value_name = "PATTERN")]
    exclude: Vec<String>,

    /// Like --exclude, ignoring case
    #[arg(long, value_name = "PATTERN")]
    iexclude: Vec<String>,

    /// Read --exclude patterns from a file, one per line
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,

    /// What to do with files that exist already: always, if-changed
    /// (replace unless the content is the same), if-newer (replace only
    /// with a newer mtime) or never
    #[arg(long, value_name = "WHEN", default_value = "if-changed")]
    overwrite: Overwrite,

    /// Remove what restored folders hold that the snapshot does not
    /// (also folders with content where the snapshot has a file)
    #[arg(long)]
    delete: bool,

    /// Change nothing: list what would be created, replaced and deleted
    #[arg(long)]
    dry_run: bool,

    /// Read every restored file back and check it against the snapshot
    /// before it takes its name
    #[arg(long)]
    verify: bool,

    #[command(flatten)]
    filter: SnapshotFilter,
}

/// The entries to restore: the snapshot's root, or what is at a path in it
/// (a folder's entries, or one entry).
fn tree_at(
    repo: &IndexedRepository,
    root: &mapache_store::BlobId,
    path: Option<&str>,
) -> Result<Tree> {
    let root = repo.load_tree(root)?;
    let Some(path) = path else {
        return Ok(root);
    };
    let (node, nodes) = resolve_path(repo, root.nodes, Path::new(path))?;
    Ok(match node {
        Some(node) if node.kind != NodeKind::Dir => Tree { nodes: vec![node] },
        _ => Tree { nodes },
    })
}

/// On a terminal, says so when the target already holds something, and
/// asks before `--delete` into `/`.
fn announce(target: &Path, delete: bool, dry_run: bool) -> Result<()> {
    let root = std::fs::canonicalize(target).is_ok_and(|t| t == Path::new("/"));
    if root && delete && !dry_run {
        if !std::io::stdin().is_terminal() {
            bail!("--delete into / removes everything the snapshot does not have: refused without a terminal to confirm it on");
        }
        eprint!("--delete into / removes everything on this system that the snapshot does not have. Type `delete` to go on: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != "delete" {
            bail!("not confirmed; nothing was changed");
        }
    }
    if std::io::stderr().is_terminal() {
        let occupied = std::fs::read_dir(target).is_ok_and(|mut d| d.next().is_some());
        if root {
            eprintln!("note: restoring into / itself");
        } else if occupied {
            eprintln!(
                "note: {} is not empty: existing files are handled as --overwrite says",
                target.display()
            );
        }
    }
    Ok(())
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let includes = with_pattern_files(&args.include, &args.include_file)?;
    let excludes = with_pattern_files(&args.exclude, &args.exclude_file)?;
    let options = RestoreOptions {
        includes: Patterns::with_ignored_case(&includes, &args.iinclude)?,
        excludes: Patterns::with_ignored_case(&excludes, &args.iexclude)?,
        verify: args.verify,
        threads: global.threads(),
        overwrite: args.overwrite,
        delete: args.delete,
        dry_run: args.dry_run,
    };
    let repo = global.open()?;
    let _lock = global.lock_shared(&repo)?;
    // Listed below one after the other: in one round trip (remote).
    repo.backend()
        .list_ahead(&[FileKind::Snapshot, FileKind::Forgotten, FileKind::Index]);
    let (spec, sub_path) = split_sub_path(&args.snapshot);
    let (id, snapshot) = args.filter.find(&repo, spec)?;
    let repo = repo.load_index()?;
    let tree = tree_at(&repo, &snapshot.tree, sub_path)?;
    announce(&args.target, args.delete, args.dry_run)?;
    let progress = Arc::new(RestoreProgress::default());
    let display = {
        let progress = progress.clone();
        ProgressLine::start(global.show_progress() && !args.dry_run, move || {
            format!(
                "{} of {}",
                bytes(progress.bytes.load(Ordering::Relaxed)),
                bytes(progress.total_bytes.load(Ordering::Relaxed))
            )
        })
    };
    let started = std::time::Instant::now();
    let report = restorer::restore_tree(&repo, tree, &args.target, &options, &progress);
    drop(display);
    let report = report?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for conflict in &report.conflicts {
        eprintln!("warning: not restored: {conflict}");
    }
    for damaged in &report.damaged {
        eprintln!("error: could not restore {damaged}");
    }
    if global.json {
        print_json(&serde_json::json!({ "snapshot": id.to_hex(), "report": report }))?;
    } else if args.dry_run {
        print_plan(&report);
    } else if !global.quiet {
        println!(
            "restored snapshot {} to {}: {} files ({} already correct, {} kept), {} folders, {} other; {} created, {} replaced, {} deleted; {} written in {:.2}s",
            id.short(),
            args.target.display(),
            report.files,
            report.files_unchanged,
            report.files_kept,
            report.dirs,
            report.others,
            report.created,
            report.replaced,
            report.deleted,
            bytes(report.bytes_written),
            started.elapsed().as_secs_f64()
        );
        if args.verify {
            println!("verified {} files", report.verified);
        }
    }
    if !report.damaged.is_empty() {
        eprintln!(
            "error: {} files could not be restored (each named above; none was left under its name incomplete)",
            report.damaged.len()
        );
        return Ok(Outcome::Failed);
    }
    Ok(if report.conflicts.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

fn print_plan(report: &RestoreReport) {
    let mut totals = std::collections::BTreeMap::new();
    for action in &report.actions {
        println!(
            "{:<8} {:>10}  {}",
            action.action,
            bytes(action.size),
            action.path
        );
        let entry = totals.entry(action.action).or_insert((0u64, 0u64));
        entry.0 += 1;
        entry.1 += action.size;
    }
    let summary: Vec<String> = totals
        .iter()
        .map(|(action, (count, size))| format!("{count} to {action} ({})", bytes(*size)))
        .collect();
    if summary.is_empty() {
        println!("dry run: nothing to change");
    } else {
        println!("dry run: {}; nothing was changed", summary.join(", "));
    }
}
