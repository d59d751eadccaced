//! `mapache commit`

use anyhow::{bail, Result};
use mapache_fs::control::{self, ControlRequest, ControlResponse};
use mapache_fs::staging::{CommitRequest, Committed};
use mapache_store::SnapshotId;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::print_json;

/// Write the staging area as a new snapshot and continue from it
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A description for the snapshot
    #[arg(short = 'm', long = "message", value_name = "TEXT", default_value = "")]
    message: String,

    /// Tag the snapshot; repeatable
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,

    /// Host name to record (default: this machine's)
    #[arg(long, value_name = "NAME")]
    host: Option<String>,

    /// Write a snapshot even when nothing changed since the last one
    #[arg(long)]
    allow_empty: bool,
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let host = args.host.unwrap_or_else(mapache_store::hostname);
    let repo = global.open()?;
    let request = CommitRequest {
        description: args.message,
        tags: args.tag,
        host,
        allow_empty: args.allow_empty,
    };
    // Mounted: the mount has the staging area open; ask it to commit
    // (without loading the index here first, which the mount has).
    let asked = ControlRequest::Commit(request.clone());
    let made = match control::send(&global.staging_dir(&repo)?, &asked) {
        Ok(ControlResponse::Committed(id)) => Some(id.parse::<SnapshotId>()?),
        Ok(ControlResponse::NothingToCommit(_)) => None,
        Ok(ControlResponse::Failed(message)) => bail!("the mount could not commit: {message}"),
        Ok(other) => bail!("the mount gave an answer of another request: {other:?}"),
        Err(_) => {
            let open = global.staging_of(repo)?;
            match open.staging.commit(&request)? {
                Committed::Snapshot(id, _) => Some(id),
                Committed::NothingToCommit { .. } => None,
            }
        }
    };
    // Nothing to commit is not a failure (a cron job committing every hour
    // must not alert when nobody worked): exit 0, and say so.
    if global.json {
        let value = match made {
            Some(id) => {
                serde_json::json!({ "committed": true, "id": id.to_hex(), "short_id": id.short() })
            }
            None => serde_json::json!({ "committed": false }),
        };
        print_json(&value)?;
    } else if let Some(id) = made {
        if !global.quiet {
            println!("committed snapshot {}", id.short());
        }
    } else if !global.quiet {
        println!("nothing to commit: the staging area holds no change since its last snapshot (--allow-empty writes one anyway)");
    }
    Ok(Outcome::Success)
}
