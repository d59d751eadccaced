//! `mapache log`

use std::collections::BTreeMap;

use anyhow::Result;
use mapache_store::snapshot::Snapshot;
use mapache_store::SnapshotId;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{bytes, print_json, table};
use crate::selection::group_key;

/// List snapshots, oldest first
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only snapshots of this host
    #[arg(long, value_name = "NAME")]
    host: Option<String>,

    /// Only snapshots with this tag
    #[arg(long, value_name = "TAG")]
    tag: Option<String>,

    /// Only snapshots of this source path (repeatable: all of them)
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,

    /// Only the N newest snapshots
    #[arg(long, value_name = "N")]
    latest: Option<usize>,

    /// One line per snapshot: id, time, host and paths
    #[arg(long)]
    compact: bool,

    /// List in groups: comma-separated host, paths, tags
    #[arg(long, value_name = "FIELDS")]
    group_by: Option<String>,

    /// List the forgotten snapshots instead (`recall` brings one back)
    #[arg(long)]
    forgotten: bool,
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open()?;
    let listed = if args.forgotten {
        let mut forgotten = Vec::new();
        for (id, _) in repo.forgotten()? {
            forgotten.push((id, repo.load_snapshot(&id)?));
        }
        forgotten.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        forgotten
    } else {
        repo.snapshots()?
    };
    let mut snapshots: Vec<_> = listed
        .into_iter()
        .filter(|(_, s)| args.host.as_ref().is_none_or(|h| &s.host == h))
        .filter(|(_, s)| args.tag.as_ref().is_none_or(|t| s.tags.contains(t)))
        .filter(|(_, s)| args.paths.iter().all(|p| s.paths.contains(p)))
        .collect();
    if let Some(n) = args.latest {
        snapshots.drain(..snapshots.len().saturating_sub(n));
    }
    if args.compact && !global.json {
        for (id, s) in &snapshots {
            println!(
                "{}  {}  {}  {}",
                id.short(),
                s.local_time(),
                s.host,
                s.paths.join(" ")
            );
        }
        return Ok(Outcome::Success);
    }
    let json_of = |list: &[(SnapshotId, Snapshot)]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|(id, s)| {
                let mut value = serde_json::to_value(s).expect("serializable");
                value["id"] = serde_json::Value::String(id.to_hex());
                value["short_id"] = serde_json::Value::String(id.short());
                value
            })
            .collect()
    };
    if let Some(fields) = &args.group_by {
        let mut groups: BTreeMap<String, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
        for (id, s) in snapshots {
            groups
                .entry(group_key(fields, &s)?)
                .or_default()
                .push((id, s));
        }
        if global.json {
            let list: Vec<_> = groups
                .iter()
                .map(|(key, list)| serde_json::json!({ "group": key, "snapshots": json_of(list) }))
                .collect();
            return print_json(&list).map(|()| Outcome::Success);
        }
        for (key, list) in &groups {
            println!("{key}:");
            print!("{}", snapshot_table(list));
        }
        return Ok(Outcome::Success);
    }
    if global.json {
        return print_json(&json_of(&snapshots)).map(|()| Outcome::Success);
    }
    print!("{}", snapshot_table(&snapshots));
    if !global.quiet {
        let noun = if snapshots.len() == 1 {
            "snapshot"
        } else {
            "snapshots"
        };
        println!("{} {noun}", snapshots.len());
    }
    Ok(Outcome::Success)
}

/// The table `log` prints.
fn snapshot_table(snapshots: &[(SnapshotId, Snapshot)]) -> String {
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .map(|(id, s)| {
            vec![
                id.short(),
                s.local_time(),
                s.host.clone(),
                s.tags.join(","),
                // Commits of older versions did not count what they held.
                match s.summary.counts_known() || s.summary.total_bytes > 0 {
                    true => bytes(s.summary.total_bytes),
                    false => "-".to_string(),
                },
                s.paths.join(" "),
                s.description.lines().next().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(
        &["ID", "Time", "Host", "Tags", "Size", "Paths", "Description"],
        &rows,
    )
}
