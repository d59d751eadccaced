//! `mapache cache`

use std::path::Path;
use std::time::{Duration, SystemTime};

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

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let root = global.cache_root()?;
    let mut caches = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let path = entry.path();
            let is_cache = path.is_dir()
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<mapache_store::Id>().is_ok());
            if is_cache {
                caches.push((path.clone(), folder_size(&path), last_use(&path)));
            }
        }
    }
    caches.sort();
    let max_age = Duration::from_secs(args.max_unused * 24 * 3600);
    let mut removed = Vec::new();
    for (path, size, used) in &caches {
        let old = used.elapsed().is_ok_and(|age| age > max_age);
        if args.clear || (args.cleanup && old) {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            removed.push((path.clone(), *size));
        }
    }
    let listed: Vec<serde_json::Value> = caches
        .iter()
        .map(|(path, size, used)| {
            let secs = used
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            serde_json::json!({
                "repository": path.file_name().map(|n| n.to_string_lossy().to_string()),
                "path": path,
                "size": size,
                "last_use": secs,
                "removed": removed.iter().any(|(p, _)| p == path),
            })
        })
        .collect();
    if global.json {
        print_json(&listed)?;
        return Ok(Outcome::Success);
    }
    if global.quiet {
        return Ok(Outcome::Success);
    }
    if args.clear || args.cleanup {
        let freed: u64 = removed.iter().map(|(_, size)| size).sum();
        println!("removed {} caches, {}", removed.len(), bytes(freed));
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = caches
        .iter()
        .map(|(path, size, used)| {
            let secs = used
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            vec![
                path.file_name()
                    .map(|n| n.to_string_lossy()[..8].to_string())
                    .unwrap_or_default(),
                bytes(*size),
                crate::output::local_time(mapache_store::tree::Timestamp { secs, nanos: 0 }),
            ]
        })
        .collect();
    print!("{}", table(&["Repository", "Size", "Last use"], &rows));
    println!("{} caches in {}", caches.len(), root.display());
    Ok(Outcome::Success)
}
