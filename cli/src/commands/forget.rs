//! `mapache forget`

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use mapache_store::retention::{self, KeepPolicy, Period, Span};
use mapache_store::snapshot::Snapshot;
use mapache_store::SnapshotId;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::{print_json, table};
use crate::selection::group_key;

/// Forget snapshots, by id or by a retention policy
///
/// Forgotten snapshots stay in the repository, hidden from `log`, `latest`
/// and the mount, until `recall` brings them back or `clean` removes them
/// with the data only they use. A policy is applied to each group of
/// snapshots (same host and paths by default) separately, with restic's
/// rules: a snapshot is kept when any rule keeps it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ids (unique prefixes) of snapshots to forget
    ids: Vec<String>,

    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent hours with snapshots
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Same for days
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Same for ISO weeks
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Same for months
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Same for years
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot within this span of the newest (1y2m3d4h)
    #[arg(long, value_name = "SPAN")]
    keep_within: Option<Span>,
    /// Keep the newest snapshot of every hour within this span of the newest
    #[arg(long, value_name = "SPAN")]
    keep_within_hourly: Option<Span>,
    /// Same for days
    #[arg(long, value_name = "SPAN")]
    keep_within_daily: Option<Span>,
    /// Same for ISO weeks
    #[arg(long, value_name = "SPAN")]
    keep_within_weekly: Option<Span>,
    /// Same for months
    #[arg(long, value_name = "SPAN")]
    keep_within_monthly: Option<Span>,
    /// Same for years
    #[arg(long, value_name = "SPAN")]
    keep_within_yearly: Option<Span>,
    /// Keep snapshots with this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    keep_tag: Vec<String>,

    /// The policy looks only at the snapshots these select
    #[command(flatten)]
    filter: crate::selection::SnapshotFilter,
    /// Group snapshots by these, comma-separated: host, paths, tags
    /// (empty: one group)
    #[arg(long, value_name = "FIELDS", default_value = "host,paths")]
    group_by: String,

    /// Change nothing; show what would be kept and forgotten, and why
    #[arg(long)]
    dry_run: bool,
    /// Go on even when the policy keeps no snapshot of a group
    #[arg(long)]
    allow_forget_all: bool,
}

impl Args {
    fn policy(&self) -> KeepPolicy {
        let mut policy = KeepPolicy {
            last: self.keep_last,
            within: self.keep_within,
            tags: self.keep_tag.clone(),
            ..KeepPolicy::default()
        };
        for (period, count, span) in [
            (Period::Hour, self.keep_hourly, self.keep_within_hourly),
            (Period::Day, self.keep_daily, self.keep_within_daily),
            (Period::Week, self.keep_weekly, self.keep_within_weekly),
            (Period::Month, self.keep_monthly, self.keep_within_monthly),
            (Period::Year, self.keep_yearly, self.keep_within_yearly),
        ] {
            policy.keep(period, count);
            policy.keep_within(period, span);
        }
        policy
    }
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let policy = args.policy();
    if args.ids.is_empty() == policy.is_empty() {
        bail!("give snapshot ids or a policy (--keep-*), one of the two");
    }
    let repo = global.open()?;
    let _lock = global.lock(&repo, false)?;
    let mut forget: Vec<(SnapshotId, String)> = Vec::new();
    let mut groups_json = Vec::new();
    if !args.ids.is_empty() {
        for spec in &args.ids {
            let (id, _) = repo.find_snapshot(spec)?;
            forget.push((id, "named".into()));
        }
    } else {
        let mut groups: BTreeMap<String, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
        for (id, snapshot) in repo.snapshots()? {
            if args.filter.accepts(&snapshot) {
                groups
                    .entry(group_key(&args.group_by, &snapshot)?)
                    .or_default()
                    .push((id, snapshot));
            }
        }
        for (key, group) in &groups {
            let decisions = retention::apply(&policy, group, &chrono::Local);
            if decisions.iter().all(|d| !d.keep) && !args.allow_forget_all {
                bail!("the policy keeps no snapshot of {key}: nothing was forgotten (--allow-forget-all to go on)");
            }
            if !global.json && !global.quiet {
                let rows: Vec<Vec<String>> = decisions
                    .iter()
                    .map(|d| {
                        let snapshot = &group
                            .iter()
                            .find(|(id, _)| *id == d.id)
                            .expect("in group")
                            .1;
                        vec![
                            d.id.short(),
                            snapshot.local_time(),
                            if d.keep { "keep" } else { "forget" }.to_string(),
                            d.reasons.join(", "),
                        ]
                    })
                    .collect();
                println!("{key}:");
                print!("{}", table(&["ID", "Time", "Action", "Reasons"], &rows));
            }
            forget.extend(
                decisions
                    .iter()
                    .filter(|d| !d.keep)
                    .map(|d| (d.id, "policy".into())),
            );
            groups_json.push(serde_json::json!({ "group": key, "decisions": decisions }));
        }
    }
    if !args.dry_run {
        for (id, why) in &forget {
            repo.forget(id, &format!("forget ({why})"))?;
        }
    }
    if global.json {
        let ids: Vec<String> = forget.iter().map(|(id, _)| id.to_hex()).collect();
        print_json(
            &serde_json::json!({ "dry_run": args.dry_run, "forgotten": ids, "groups": groups_json }),
        )?;
    } else if !global.quiet {
        let verb = if args.dry_run {
            "would forget"
        } else {
            "forgot"
        };
        println!(
            "{verb} {} snapshots (`mapache recall ID` brings one back; `clean` removes them for good)",
            forget.len()
        );
    }
    Ok(Outcome::Success)
}
