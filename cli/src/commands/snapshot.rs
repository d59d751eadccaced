//! `mapache snapshot`

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use mapache_store::archiver::{self, ArchiveOptions, ParentChoice, Progress};
use mapache_store::backend::{Backend, DryRunBackend, FileKind};
use mapache_store::rebuild_index::index_unindexed_packs;
use mapache_store::Patterns;
use mapache_store::SnapshotId;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{bytes, print_json};
use crate::progress::ProgressLine;

/// Back up files and folders into a new snapshot
///
/// Files whose size, modification time, change time and inode match the
/// parent snapshot are not read again. Entries that cannot be read are
/// reported and skipped; the snapshot is still written and the exit code
/// is 3.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files and folders to back up
    #[arg(required_unless_present_any = ["files_from", "stdin"], value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Back up what is read from standard input, as one file (named by
    /// --stdin-filename)
    #[arg(long, conflicts_with_all = ["paths", "files_from"])]
    stdin: bool,

    /// The name of the file --stdin stores
    #[arg(long, value_name = "NAME", default_value = "stdin", requires = "stdin")]
    stdin_filename: String,

    /// Skip entries matching a pattern (a name like `*.tmp`, or an absolute
    /// path pattern like `/home/*/.cache`); repeatable
    #[arg(short, long, value_name = "PATTERN")]
    exclude: Vec<String>,

    /// Read exclude patterns from a file, one per line (`#` starts a comment)
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,

    /// Like --exclude, ignoring case
    #[arg(long, value_name = "PATTERN")]
    iexclude: Vec<String>,

    /// Leave out files larger than this (such as 500M or 2G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    exclude_larger_than: Option<u64>,

    /// Leave out folders holding a file of this name; repeatable
    #[arg(long, value_name = "NAME")]
    exclude_if_present: Vec<String>,

    /// Leave out folders marked as caches (a CACHEDIR.TAG file with its
    /// signature)
    #[arg(long)]
    exclude_caches: bool,

    /// Also back up the paths listed in this file, one per line
    #[arg(long, value_name = "FILE")]
    files_from: Vec<PathBuf>,

    /// Record this time instead of now (YYYY-MM-DD[ HH:MM[:SS]], local)
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    time: Option<mapache_store::tree::Timestamp>,

    /// Stay on the filesystem of each path; do not enter mount points
    #[arg(short = 'x', long)]
    one_file_system: bool,

    /// Tag the snapshot; repeatable
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,

    /// A description for the snapshot
    #[arg(long, value_name = "TEXT", default_value = "")]
    description: String,

    /// Compare against this snapshot instead of the latest one of the same
    /// host and paths
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "no_parent")]
    parent: Option<String>,

    /// Read every file, ignoring earlier snapshots
    #[arg(long)]
    no_parent: bool,

    /// Host name to record (default: this machine's)
    #[arg(long, value_name = "NAME")]
    host: Option<String>,

    /// Do everything but write to the repository
    #[arg(short = 'n', long)]
    dry_run: bool,
}

fn patterns(args: &Args) -> Result<Patterns> {
    let all = crate::selection::with_pattern_files(&args.exclude, &args.exclude_file)?;
    Ok(Patterns::with_ignored_case(&all, &args.iexclude)?)
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    mapache_store::parse_size(text)
        .ok_or_else(|| format!("{text:?} is not a size such as 500M or 2G"))
}

fn parse_time_arg(text: &str) -> Result<mapache_store::tree::Timestamp, String> {
    let secs = crate::selection::parse_local_time(text).map_err(|e| e.to_string())?;
    Ok(mapache_store::tree::Timestamp { secs, nanos: 0 })
}

/// The paths to back up: those given and those listed in --files-from.
fn sources(args: &Args) -> Result<Vec<PathBuf>> {
    let mut paths = args.paths.clone();
    for file in &args.files_from {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        paths.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(PathBuf::from),
        );
    }
    Ok(paths)
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let excludes = patterns(&args)?;
    let repo = global.open()?;
    let _lock = global.lock(&repo, false)?;
    // What is listed below one after the other, in one round trip (a
    // remote repository's cache takes them side by side).
    let listed = [
        FileKind::Index,
        FileKind::Pack,
        FileKind::Snapshot,
        FileKind::Forgotten,
    ];
    let needed = |kind: &&FileKind| match kind {
        FileKind::Pack => !args.dry_run,
        FileKind::Snapshot | FileKind::Forgotten => !args.no_parent,
        _ => true,
    };
    let listed: Vec<FileKind> = listed.iter().filter(needed).copied().collect();
    repo.backend().list_ahead(&listed);
    let repo = if args.dry_run {
        // Writes go nowhere; reads (parent trees, index) still work.
        let backend: Arc<dyn Backend> = Arc::new(DryRunBackend::new(repo.backend().clone()));
        repo.with_backend(backend)
    } else {
        repo
    };
    let repo = Arc::new(repo.load_index()?);
    if !args.dry_run {
        index_unindexed_packs(&repo)?;
    }
    let parent = match (&args.parent, args.no_parent) {
        (_, true) => ParentChoice::None,
        (Some(spec), false) => ParentChoice::Given(repo.find_snapshot(spec)?.0),
        (None, false) => ParentChoice::Auto,
    };
    let mut options = ArchiveOptions {
        excludes,
        one_file_system: args.one_file_system,
        tags: args.tag.clone(),
        description: args.description.clone(),
        parent,
        threads: global.threads(),
        // The repository and the local state are never backed up into
        // themselves, wherever the sources are.
        skip_dirs: global
            .repo
            .iter()
            .cloned()
            .chain(global.state_root().ok())
            .collect(),
        exclude_larger_than: args.exclude_larger_than,
        exclude_if_present: args
            .exclude_if_present
            .iter()
            .map(|name| (name.clone(), None))
            .chain(args.exclude_caches.then(|| {
                (
                    "CACHEDIR.TAG".to_string(),
                    Some(archiver::CACHEDIR_TAG_SIGNATURE.to_vec()),
                )
            }))
            .collect(),
        time: args.time,
        ..ArchiveOptions::default()
    };
    if let Some(host) = &args.host {
        options.host = host.clone();
    }
    let progress = Arc::new(Progress::default());
    let display = {
        let progress = progress.clone();
        ProgressLine::start(global.show_progress(), move || {
            format!(
                "{} entries, {} processed, {} errors",
                progress.entries.load(Ordering::Relaxed),
                bytes(progress.bytes.load(Ordering::Relaxed)),
                progress.errors.load(Ordering::Relaxed)
            )
        })
    };
    let archived = if args.stdin {
        archiver::snapshot_stream(
            repo.clone(),
            std::io::stdin().lock(),
            &args.stdin_filename,
            &options,
        )
    } else {
        archiver::snapshot(repo.clone(), &sources(&args)?, &options, &progress)
    };
    drop(display);
    let archived = archived?;
    for warning in &archived.warnings {
        eprintln!("warning: {warning}");
    }
    if !global.quiet {
        for note in &archived.notes {
            eprintln!("note: {note}");
        }
    }
    report(
        global,
        &archived.id,
        &archived.snapshot,
        args.dry_run,
        &archived.warnings,
    )?;
    let summary = &archived.snapshot.summary;
    Ok(if summary.errors > 0 || summary.changed_while_read > 0 {
        Outcome::Partial
    } else {
        Outcome::Success
    })
}

fn report(
    global: &GlobalOptions,
    id: &SnapshotId,
    snapshot: &mapache_store::snapshot::Snapshot,
    dry_run: bool,
    warnings: &[String],
) -> Result<()> {
    let s = &snapshot.summary;
    if global.json {
        return print_json(&serde_json::json!({
            "id": id.to_hex(),
            "short_id": id.short(),
            "dry_run": dry_run,
            "parent": snapshot.parent.map(|p| p.to_hex()),
            "summary": s,
            "warnings": warnings,
        }));
    }
    if global.quiet {
        return Ok(());
    }
    println!(
        "files: {} new, {} changed, {} unchanged; {} folders, {} other",
        s.files_new, s.files_changed, s.files_unchanged, s.dirs, s.others
    );
    println!(
        "data:  {} in the snapshot, {} read, {} new ({} stored after compression)",
        bytes(s.total_bytes),
        bytes(s.bytes_read),
        bytes(s.bytes_added),
        bytes(s.bytes_stored)
    );
    if s.errors > 0 {
        println!(
            "{} entries could not be read (see the warnings above)",
            s.errors
        );
    }
    if s.changed_while_read > 0 {
        println!(
            "{} files changed while they were read (see the warnings above)",
            s.changed_while_read
        );
    }
    let verb = if dry_run { "would save" } else { "saved" };
    println!("{verb} snapshot {} in {:.2}s", id.short(), s.duration_secs);
    Ok(())
}
