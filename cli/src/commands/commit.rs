//! `mapache commit`

use anyhow::{bail, Result};
use mapache_fs::control::{self, ControlRequest, ControlResponse};

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
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let host = args.host.unwrap_or_else(mapache_store::hostname);
    let repo = global.open()?;
    let request = ControlRequest::Commit {
        message: args.message.clone(),
        tags: args.tag.clone(),
        host: host.clone(),
    };
    // Mounted: the mount has the staging area open; ask it to commit
    // (without loading the index here first, which the mount has).
    let id = match control::send(&global.staging_dir(&repo)?, &request) {
        Ok(ControlResponse::Committed(id)) => id.parse()?,
        Ok(ControlResponse::Failed(message)) => bail!("the mount could not commit: {message}"),
        Err(_) => {
            let open = global.staging_of(repo)?;
            open.staging.commit(&args.message, &args.tag, &host)?.0
        }
    };
    if global.json {
        print_json(&serde_json::json!({ "id": id.to_hex(), "short_id": id.short() }))?;
    } else if !global.quiet {
        println!("committed snapshot {}", id.short());
    }
    Ok(Outcome::Success)
}
