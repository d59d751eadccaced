//! `mapache stage ...`: the staging area without FUSE. While a mount
//! holds the staging area, the mount runs the subcommand (so that what it
//! shows follows), otherwise it runs here.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;
use mapache_fs::control::{self, ControlRequest, ControlResponse};
use mapache_fs::staging::{join, Change, ResetTo, StageAnswer, StageRequest};
use mapache_store::tree::Node;
use mapache_store::SnapshotId;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::print_json;

/// Change the staging area: the next snapshot, built up step by step
///
/// The staging area starts from a base snapshot (or empty) and collects
/// changes until `mapache commit` writes them as a snapshot. It lives in the
/// state folder and survives crashes; while a mount holds it, these commands
/// are run by the mount.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: StageCommand,
}

#[derive(Debug, Subcommand)]
enum StageCommand {
    /// Copy local files and folders into the staging area
    Add {
        /// What to copy
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// Folder in the staging area to copy into (default: its root)
        #[arg(long, default_value = "/")]
        to: String,
    },
    /// Remove entries
    Rm {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Remove folders with everything in them
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Move or rename an entry
    Mv { from: String, to: String },
    /// Make folders
    Mkdir {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Make missing parent folders too
        #[arg(short, long)]
        parents: bool,
    },
    /// List a folder of the staging area
    Ls {
        #[arg(default_value = "/")]
        path: String,
        /// Long listing
        #[arg(short)]
        long: bool,
    },
    /// What differs from the base snapshot
    Status,
    /// What differs from the base snapshot, with sizes
    Diff,
    /// Drop every change and start over
    Reset {
        /// Start from this snapshot (`latest`, an id) or `empty`; default:
        /// the current base
        #[arg(long)]
        base: Option<String>,
        /// With `--base latest`: which snapshots `latest` is the newest of
        #[command(flatten)]
        filter: crate::selection::SnapshotFilter,
    },
    /// Make a damaged staging journal usable: keep the changes recorded
    /// before the damage, drop those after it (a copy of the journal is
    /// kept beside it)
    Recover,
    /// List the staging areas of every machine using this repository
    /// (`clean` keeps what they hold)
    Areas,
    /// Forget a staging area (an id prefix from `stage areas`): `clean`
    /// no longer keeps what only it holds, so its uncommitted changes may
    /// be lost
    ForgetArea {
        /// The area, or one of its records
        id: String,
    },
}

fn staging_path(path: &str) -> Vec<u8> {
    path.trim_matches('/').as_bytes().to_vec()
}

fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = match &args.command {
        StageCommand::Recover => return recover(global),
        StageCommand::Areas => return super::stage_areas::list(global),
        StageCommand::ForgetArea { id } => return super::stage_areas::forget(global, id),
        _ => global.open()?,
    };
    let mut long_listing = false;
    let request = match args.command {
        StageCommand::Add { sources, to } => StageRequest::Add {
            sources: absolute_sources(&sources)?,
            to: staging_path(&to),
        },
        StageCommand::Rm { paths, recursive } => StageRequest::Remove {
            paths: paths.iter().map(|p| staging_path(p)).collect(),
            recursive,
        },
        StageCommand::Mv { from, to } => StageRequest::Move {
            from: staging_path(&from),
            to: staging_path(&to),
        },
        StageCommand::Mkdir { paths, parents } => StageRequest::MakeFolders {
            paths: paths.iter().map(|p| staging_path(p)).collect(),
            parents,
        },
        StageCommand::Ls { path, long } => {
            long_listing = long;
            StageRequest::List {
                path: staging_path(&path),
            }
        }
        StageCommand::Status => StageRequest::Status { sizes: false },
        StageCommand::Diff => StageRequest::Status { sizes: true },
        StageCommand::Reset { base, filter } => StageRequest::Reset {
            base: match base.as_deref() {
                None => ResetTo::CurrentBase,
                Some("empty") => ResetTo::Empty,
                Some(spec) => ResetTo::Snapshot(filter.find(&repo, spec)?.0),
            },
        },
        StageCommand::Recover | StageCommand::Areas | StageCommand::ForgetArea { .. } => {
            unreachable!("handled before opening")
        }
    };
    let listed_path = match &request {
        StageRequest::List { path } => path.clone(),
        _ => Vec::new(),
    };
    let with_sizes = matches!(request, StageRequest::Status { sizes: true });
    match send_or_run(global, repo, request)? {
        StageAnswer::Done => {}
        StageAnswer::Added(added) => {
            for warning in &added.warnings {
                eprintln!("warning: {warning}");
            }
            if global.json {
                print_json(
                    &serde_json::json!({"files": added.files, "bytes": added.bytes, "warnings": added.warnings}),
                )?;
            } else if !global.quiet {
                println!("staged {} files, {} bytes", added.files, added.bytes);
            }
            if !added.warnings.is_empty() {
                return Ok(Outcome::Partial);
            }
        }
        StageAnswer::Listing(nodes) => print_listing(global, &listed_path, &nodes, long_listing)?,
        StageAnswer::Status { base, changes } => print_status(global, base, &changes, with_sizes)?,
        StageAnswer::Reset(base) => {
            if !global.quiet {
                println!(
                    "staging area reset to {}",
                    base.map_or("empty".into(), |b| format!("snapshot {}", b.short()))
                );
            }
        }
    }
    Ok(Outcome::Success)
}

/// The sources of `stage add` as absolute paths (the mount that may run
/// the request has a working folder of its own), each checked to exist.
fn absolute_sources(sources: &[PathBuf]) -> Result<Vec<PathBuf>> {
    sources
        .iter()
        .map(|source| {
            if source.file_name().is_none() {
                bail!("{}: name a file or folder, not a root", source.display());
            }
            if std::fs::symlink_metadata(source).is_err() {
                bail!("{}: no such file or folder", source.display());
            }
            Ok(std::path::absolute(source)?)
        })
        .collect()
}

/// Sends `request` to the mount holding the staging area, or runs it here
/// when no mount does.
fn send_or_run(
    global: &GlobalOptions,
    repo: mapache_store::Repository,
    request: StageRequest,
) -> Result<StageAnswer> {
    let asked = ControlRequest::Stage(request);
    match control::send(&global.staging_dir(&repo)?, &asked) {
        Ok(ControlResponse::Staged(answer)) => Ok(answer),
        Ok(ControlResponse::Failed(message)) => bail!("{message}"),
        Ok(other) => bail!("the mount gave an answer of another request: {other:?}"),
        Err(_) => {
            let ControlRequest::Stage(request) = asked else {
                unreachable!("made above")
            };
            let open = global.staging_of(repo)?;
            Ok(open.staging.run_request(request)?)
        }
    }
}

fn print_listing(global: &GlobalOptions, dir: &[u8], nodes: &[Node], long: bool) -> Result<()> {
    if global.json {
        let list: Vec<_> = nodes
            .iter()
            .map(|n| serde_json::json!({"name": n.name_lossy(), "kind": format!("{:?}", n.kind).to_lowercase(), "size": n.size, "mode": n.mode}))
            .collect();
        return print_json(&list);
    }
    let mut out = std::io::stdout().lock();
    for node in nodes {
        let path = show(&join(dir, &node.name));
        if long {
            writeln!(out, "{:>6o} {:>12} {path}", node.mode, node.size)?;
        } else {
            writeln!(out, "{path}")?;
        }
    }
    Ok(())
}

fn print_status(
    global: &GlobalOptions,
    base: Option<SnapshotId>,
    changes: &[(Change, Option<u64>, Option<u64>)],
    with_sizes: bool,
) -> Result<()> {
    // (kind for JSON, mark for the listing, path)
    let marked = |change: &Change| -> (&'static str, &'static str, String) {
        match change {
            Change::Added(p) => ("added", "A", p.clone()),
            Change::Modified(p) => ("modified", "M", p.clone()),
            Change::Removed(p) => ("removed", "D", p.clone()),
        }
    };
    if global.json {
        let list: Vec<_> = changes
            .iter()
            .map(|(change, _, _)| {
                let (kind, _, path) = marked(change);
                serde_json::json!({"change": kind, "path": format!("/{path}")})
            })
            .collect();
        return print_json(&serde_json::json!({"base": base.map(|b| b.to_hex()), "changes": list}));
    }
    let shown_base = base.map_or("an empty base".into(), |b| {
        format!("snapshot {}", b.short())
    });
    if !changes.is_empty() && !global.quiet {
        // On stderr: the lines on stdout stay one change each.
        eprintln!("changes since {shown_base}:");
    }
    let mut out = std::io::stdout().lock();
    for (change, old, new) in changes {
        let (_, mark, path) = marked(change);
        if with_sizes {
            let fmt = |s: &Option<u64>| s.map_or("-".to_string(), |s| s.to_string());
            writeln!(out, "{mark} /{path}  {} -> {}", fmt(old), fmt(new))?;
        } else {
            writeln!(out, "{mark} /{path}")?;
        }
    }
    if changes.is_empty() && !global.quiet {
        writeln!(out, "no changes since {shown_base}")?;
    }
    Ok(())
}

/// `stage recover`: works without opening the staging area, which a
/// damaged journal prevents.
fn recover(global: &GlobalOptions) -> Result<Outcome> {
    let repo = global.open()?;
    let dir = global.staging_dir(&repo)?;
    let (kept, dropped) = mapache_fs::staging::recover_journal(&dir, &repo.config().id)?;
    if !global.quiet {
        println!(
            "staging journal kept {kept} changes; {dropped} bytes after the damage were dropped"
        );
    }
    Ok(Outcome::Success)
}
