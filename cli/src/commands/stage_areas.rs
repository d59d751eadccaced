//! `mapache stage areas` and `mapache stage forget-area`: the staging
//! areas of every machine, as their records in the repository show them.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use mapache_store::backend::FileKind;
use mapache_store::{Id, Repository, StagingRecord};

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{print_json, table};

/// One area, from all its records.
#[derive(serde::Serialize)]
struct Area {
    id: Id,
    host: String,
    path: String,
    base: Option<String>,
    blobs: usize,
    records: Vec<Id>,
    updated: mapache_store::tree::Timestamp,
}

fn areas(repo: &Repository) -> Result<Vec<Area>> {
    let mut by_area: BTreeMap<Id, (Vec<Id>, Vec<StagingRecord>)> = BTreeMap::new();
    for (id, record) in repo.staging_records()? {
        let entry = by_area.entry(record.area).or_default();
        entry.0.push(id);
        entry.1.push(record);
    }
    Ok(by_area
        .into_iter()
        .map(|(area, (records, contents))| {
            let newest = contents.last().expect("an area has records");
            let mut blobs: Vec<_> = contents.iter().flat_map(|r| r.blobs.iter()).collect();
            blobs.sort_unstable();
            blobs.dedup();
            Area {
                id: area,
                host: newest.host.clone(),
                path: newest.path.clone(),
                base: newest.base.map(|id| id.short()),
                blobs: blobs.len(),
                records,
                updated: newest.time,
            }
        })
        .collect())
}

/// Lists the staging areas the repository knows.
pub fn list(global: &GlobalOptions) -> Result<Outcome> {
    let repo = global.open()?;
    let areas = areas(&repo)?;
    if global.json {
        print_json(&areas)?;
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = areas
        .iter()
        .map(|area| {
            vec![
                area.id.short(),
                area.host.clone(),
                area.base.clone().unwrap_or_else(|| "empty".into()),
                area.blobs.to_string(),
                crate::output::local_time(area.updated),
                area.path.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["Area", "Host", "Base", "Blobs", "Updated", "State folder"],
            &rows
        )
    );
    Ok(Outcome::Success)
}

/// Removes the records of the area (or the single record) `spec` names.
pub fn forget(global: &GlobalOptions, spec: &str) -> Result<Outcome> {
    let repo = global.open()?;
    let _lock = global.lock(&repo, false)?;
    let spec = spec.to_ascii_lowercase();
    let areas = match areas(&repo) {
        Ok(areas) => areas,
        // A damaged record cannot be read, but it can be removed by name.
        Err(e) => return forget_record(global, &repo, &spec, e),
    };
    let matching: Vec<&Area> = areas
        .iter()
        .filter(|area| {
            area.id.to_hex().starts_with(&spec)
                || area.records.iter().any(|r| r.to_hex().starts_with(&spec))
        })
        .collect();
    let area = match matching.as_slice() {
        [one] => *one,
        [] => bail!("no staging area or record {spec}: `mapache stage areas` lists them"),
        _ => bail!(
            "{spec} names {} staging areas: give more digits",
            matching.len()
        ),
    };
    for record in &area.records {
        repo.remove_staging_record(record)?;
    }
    if !global.quiet {
        println!(
            "forgot staging area {} of {} ({}); `clean` no longer keeps what only it holds",
            area.id.short(),
            area.host,
            area.path
        );
    }
    Ok(Outcome::Success)
}

/// Removes the one record whose id starts with `spec`, when the records
/// cannot all be read (`unreadable` says why).
fn forget_record(
    global: &GlobalOptions,
    repo: &Repository,
    spec: &str,
    unreadable: anyhow::Error,
) -> Result<Outcome> {
    let ids: Vec<Id> = repo
        .backend()
        .list_ids(FileKind::Staging)?
        .into_iter()
        .filter(|id| id.to_hex().starts_with(spec))
        .collect();
    let [record] = ids.as_slice() else {
        return Err(unreadable);
    };
    repo.remove_staging_record(record)?;
    if !global.quiet {
        println!("removed staging record {}", record.short());
    }
    Ok(Outcome::Success)
}
