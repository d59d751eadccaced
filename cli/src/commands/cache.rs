//! `mapache cache`

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use mapache_store::backend::folder_size;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{bytes, print_json, table};

/// List or remove the local caches of remote repositories
///
/// Each remote repository has a cache folder (named by its id) holding its
/// index, snapshots and trees; any of it can be removed at any time, it is
/// fetched again when needed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove the caches not used for --max-unused days
    #[arg(long)]
    cleanup: bool,

    /// With --cleanup: days without use after which a cache goes
    #[arg(long, value_name = "DAYS", default_value = "30")]
    max_unused: u64,

    /// Remove every cache
    #[arg(long, conflicts_with = "cleanup")]
    clear: bool,
}

/// The newest modification time under `dir`: its last use.
fn last_use(dir: &Path) -> SystemTime {
    let mut newest = std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let time = if path.is_dir() {
                last_use(&path)
            } else {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            newest = newest.max(time);
        }
    }
    newest
}

/// One repository's cache folder.
#[derive(serde::Serialize)]
struct CacheFolder {
    /// The repository's id (the folder's name).
    repository: String,
    path: std::path::PathBuf,
    size: u64,
    /// Seconds since the epoch.
    last_use: i64,
    removed: bool,
}

/// The cache folders under `root`, oldest first.
fn cache_folders(root: &Path) -> Vec<CacheFolder> {
    let mut caches = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return caches;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(repository) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if path.is_dir() && repository.parse::<mapache_store::Id>().is_ok() {
            let last_use = last_use(&path)
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            caches.push(CacheFolder {
                repository,
                size: folder_size(&path),
                path,
                last_use,
                removed: false,
            });
        }
    }
    caches.sort_by_key(|cache| cache.last_use);
    caches
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let root = global.cache_root()?;
    let mut caches = cache_folders(&root);
    let now = mapache_store::now().secs;
    let max_age = (args.max_unused * 24 * 3600) as i64;
    for cache in &mut caches {
        if args.clear || (args.cleanup && now - cache.last_use > max_age) {
            std::fs::remove_dir_all(&cache.path)
                .with_context(|| format!("cannot remove {}", cache.path.display()))?;
            cache.removed = true;
        }
    }
    if global.json {
        print_json(&caches)?;
        return Ok(Outcome::Success);
    }
    if global.quiet {
        return Ok(Outcome::Success);
    }
    if args.clear || args.cleanup {
        let removed: Vec<&CacheFolder> = caches.iter().filter(|c| c.removed).collect();
        let freed: u64 = removed.iter().map(|cache| cache.size).sum();
        println!("removed {} caches, {}", removed.len(), bytes(freed));
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = caches
        .iter()
        .map(|cache| {
            vec![
                cache.repository[..8].to_string(),
                bytes(cache.size),
                crate::output::local_time(mapache_store::tree::Timestamp {
                    secs: cache.last_use,
                    nanos: 0,
                }),
            ]
        })
        .collect();
    print!("{}", table(&["Repository", "Size", "Last use"], &rows));
    println!("{} caches in {}", caches.len(), root.display());
    Ok(Outcome::Success)
}
