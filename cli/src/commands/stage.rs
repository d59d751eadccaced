//! `mapache stage ...`: the staging area without FUSE.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use mapache_fs::staging::{meta_now, Change, Meta, Staging};
use mapache_fs::FsError;
use mapache_store::tree::{Node, NodeKind};
use mapache_store::{node_from_metadata, OwnerNames};

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::print_json;

/// Change the staging area: the next snapshot, built up step by step
///
/// The staging area starts from a base snapshot (or empty) and collects
/// changes until `mapache commit` writes them as a snapshot. It lives in the
/// state folder and survives crashes; while it is mounted, use the mount.
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

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// Copies a local tree into the staging area, keeping metadata and the
/// hard links inside what is copied.
struct Adder<'a> {
    staging: &'a Staging,
    owners: OwnerNames,
    links: HashMap<(u64, u64), Vec<u8>>,
    warnings: Vec<String>,
    files: u64,
    bytes: u64,
}

impl Adder<'_> {
    fn add(&mut self, source: &Path, dest: &[u8]) -> Result<()> {
        let meta = match std::fs::symlink_metadata(source) {
            Ok(meta) => meta,
            Err(e) => {
                self.warnings.push(format!("{}: {e}", source.display()));
                return Ok(());
            }
        };
        let name = dest.rsplit(|&b| b == b'/').next().unwrap_or(dest);
        let node = node_from_metadata(source, name, &meta, &self.owners)?;
        let existing = self.staging.stat(dest).ok();
        match node.kind {
            NodeKind::Dir => {
                match existing {
                    Some(old) if old.kind == NodeKind::Dir => {}
                    Some(_) => {
                        self.staging.remove(dest, true)?;
                        self.staging.mkdir(dest, Meta::of_node(&node))?;
                    }
                    None => self.staging.mkdir(dest, Meta::of_node(&node))?,
                }
                let mut children: Vec<_> = match std::fs::read_dir(source) {
                    Ok(entries) => entries
                        .filter_map(|e| e.ok().map(|e| e.file_name()))
                        .collect(),
                    Err(e) => {
                        self.warnings.push(format!("{}: {e}", source.display()));
                        Vec::new()
                    }
                };
                children.sort();
                for child in children {
                    self.add(&source.join(&child), &join(dest, child.as_bytes()))?;
                }
                self.set_xattrs(dest, &node)?;
                // Adding entries changed the folder's times: put them back.
                self.staging.set_meta(dest, Meta::of_node(&node))?;
            }
            NodeKind::File => {
                if existing.is_some() {
                    self.staging.remove(dest, true)?;
                }
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&key) {
                        self.staging.link(first, dest)?;
                        return Ok(());
                    }
                }
                let file = match std::fs::File::open(source) {
                    Ok(file) => file,
                    Err(e) => {
                        self.warnings.push(format!("{}: {e}", source.display()));
                        return Ok(());
                    }
                };
                self.bytes +=
                    self.staging
                        .import(dest, file, Meta::of_node(&node), node.xattrs.clone())?;
                self.files += 1;
                if meta.nlink() > 1 {
                    self.links.insert(key, dest.to_vec());
                }
            }
            _ => {
                if existing.is_some() {
                    self.staging.remove(dest, true)?;
                }
                self.staging.make_special(dest, node)?;
            }
        }
        Ok(())
    }

    fn set_xattrs(&self, dest: &[u8], node: &Node) -> Result<()> {
        for (name, value) in &node.xattrs {
            self.staging.set_xattr(dest, name, Some(value.clone()))?;
        }
        Ok(())
    }
}

/// Makes `dir` and its missing parents.
fn mkdir_parents(staging: &Staging, dir: &[u8]) -> Result<()> {
    let mut built = Vec::new();
    for part in dir.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        built = join(&built, part);
        match staging.stat(&built) {
            Ok(node) if node.kind == NodeKind::Dir => {}
            Ok(_) => bail!("{} is not a folder", String::from_utf8_lossy(&built)),
            Err(FsError::NotFound) => staging.mkdir(&built, meta_now(0o755))?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    match &args.command {
        StageCommand::Recover => return recover(global),
        StageCommand::Areas => return super::stage_areas::list(global),
        StageCommand::ForgetArea { id } => return super::stage_areas::forget(global, id),
        _ => {}
    }
    let open = global.open_staging()?;
    let (repo, staging) = (&open.repo, &open.staging);
    match args.command {
        StageCommand::Add { sources, to } => {
            let to = staging_path(&to);
            mkdir_parents(staging, &to)?;
            let mut adder = Adder {
                staging,
                owners: OwnerNames::default(),
                links: HashMap::new(),
                warnings: Vec::new(),
                files: 0,
                bytes: 0,
            };
            for source in &sources {
                let name = source.file_name().with_context(|| {
                    format!("{}: name a file or folder, not a root", source.display())
                })?;
                if std::fs::symlink_metadata(source).is_err() {
                    bail!("{}: no such file or folder", source.display());
                }
                adder.add(source, &join(&to, name.as_bytes()))?;
            }
            staging.checkpoint()?;
            for warning in &adder.warnings {
                eprintln!("warning: {warning}");
            }
            if !global.quiet {
                println!("staged {} files, {} bytes", adder.files, adder.bytes);
            }
            return Ok(if adder.warnings.is_empty() {
                Outcome::Success
            } else {
                Outcome::Partial
            });
        }
        StageCommand::Rm { paths, recursive } => {
            for path in paths {
                staging
                    .remove(&staging_path(&path), recursive)
                    .with_context(|| format!("cannot remove {path}"))?;
            }
        }
        StageCommand::Mv { from, to } => {
            let (from_path, mut to_path) = (staging_path(&from), staging_path(&to));
            // `mv file dir` moves the file into the folder.
            if let Ok(node) = staging.stat(&to_path) {
                if node.kind == NodeKind::Dir && !to_path.is_empty() || to_path.is_empty() {
                    let name = from_path
                        .rsplit(|&b| b == b'/')
                        .next()
                        .unwrap_or(&from_path)
                        .to_vec();
                    to_path = join(&to_path, &name);
                }
            }
            staging
                .rename(
                    &from_path,
                    &to_path,
                    mapache_fs::staging::RenameMode::Replace,
                )
                .with_context(|| format!("cannot move {from} to {to}"))?;
        }
        StageCommand::Mkdir { paths, parents } => {
            for path in paths {
                let p = staging_path(&path);
                if parents {
                    mkdir_parents(staging, &p)?;
                } else {
                    staging
                        .mkdir(&p, meta_now(0o755))
                        .with_context(|| format!("cannot make {path}"))?;
                }
            }
        }
        StageCommand::Ls { path, long } => {
            let p = staging_path(&path);
            let nodes = staging
                .list(&p)
                .with_context(|| format!("cannot list {path}"))?;
            if global.json {
                let list: Vec<_> = nodes
                    .iter()
                    .map(|n| serde_json::json!({"name": n.name_lossy(), "kind": format!("{:?}", n.kind).to_lowercase(), "size": n.size, "mode": n.mode}))
                    .collect();
                print_json(&list)?;
            } else {
                let mut out = std::io::stdout().lock();
                for node in nodes {
                    if long {
                        writeln!(
                            out,
                            "{:>6o} {:>12} {}",
                            node.mode,
                            node.size,
                            show(&join(&p, &node.name))
                        )?;
                    } else {
                        writeln!(out, "{}", show(&join(&p, &node.name)))?;
                    }
                }
            }
        }
        StageCommand::Status | StageCommand::Diff => {
            let changes = staging.status()?;
            let with_sizes = matches!(args.command, StageCommand::Diff);
            let base = staging.base();
            let base_root = match base {
                Some(id) => Some(repo.load_snapshot(&id)?.tree),
                None => None,
            };
            let mut out = std::io::stdout().lock();
            if global.json {
                let list: Vec<_> = changes
                    .iter()
                    .map(|c| match c {
                        Change::Added(p) => {
                            serde_json::json!({"change": "added", "path": format!("/{p}")})
                        }
                        Change::Modified(p) => {
                            serde_json::json!({"change": "modified", "path": format!("/{p}")})
                        }
                        Change::Removed(p) => {
                            serde_json::json!({"change": "removed", "path": format!("/{p}")})
                        }
                    })
                    .collect();
                drop(out);
                print_json(
                    &serde_json::json!({"base": base.map(|b| b.to_hex()), "changes": list}),
                )?;
                return Ok(Outcome::Success);
            }
            let shown_base = base.map_or("an empty base".into(), |b| {
                format!("snapshot {}", b.short())
            });
            if !changes.is_empty() && !global.quiet {
                // On stderr: the lines on stdout stay one change each.
                eprintln!("changes since {shown_base}:");
            }
            for change in &changes {
                let (mark, path) = match change {
                    Change::Added(p) => ("A", p),
                    Change::Modified(p) => ("M", p),
                    Change::Removed(p) => ("D", p),
                };
                if with_sizes {
                    let new = staging.stat(path.as_bytes()).map(|n| n.size).ok();
                    let old = base_root.and_then(|root| base_size(repo, root, path));
                    let fmt = |s: Option<u64>| s.map_or("-".to_string(), |s| s.to_string());
                    writeln!(out, "{mark} /{path}  {} -> {}", fmt(old), fmt(new))?;
                } else {
                    writeln!(out, "{mark} /{path}")?;
                }
            }
            if changes.is_empty() && !global.quiet {
                writeln!(out, "no changes since {shown_base}")?;
            }
        }
        StageCommand::Reset { base, filter } => {
            let base = match base.as_deref() {
                None => staging.base(),
                Some("empty") => None,
                Some(spec) => Some(filter.find(repo, spec)?.0),
            };
            staging.reset(base)?;
            if !global.quiet {
                println!(
                    "staging area reset to {}",
                    base.map_or("empty".into(), |b| format!("snapshot {}", b.short()))
                );
            }
        }
        StageCommand::Recover | StageCommand::Areas | StageCommand::ForgetArea { .. } => {
            unreachable!("handled before opening")
        }
    }
    Ok(Outcome::Success)
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

/// Size of the entry at `path` in the base tree, if any.
fn base_size(
    repo: &mapache_store::IndexedRepository,
    root: mapache_store::BlobId,
    path: &str,
) -> Option<u64> {
    let mut tree = repo.load_tree(&root).ok()?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let node = tree.find(part.as_bytes())?.clone();
        if i + 1 == parts.len() {
            return Some(node.size);
        }
        tree = repo.load_tree(&node.subtree?).ok()?;
    }
    None
}
