//! `mapache commit`

use anyhow::Result;

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
    let (repo, staging) = global.open_staging()?;
    let _lock = repo.lock(false)?;
    let host = args.host.unwrap_or_else(mapache_store::snapshot::hostname);
    let (id, snapshot) = staging.commit(&args.message, &args.tag, &host)?;
    if global.json {
        print_json(&serde_json::json!({
            "id": id.to_hex(),
            "short_id": id.short(),
            "parent": snapshot.parent.map(|p| p.to_hex()),
            "tree": snapshot.tree.to_hex(),
        }))?;
    } else if !global.quiet {
        println!("committed snapshot {}", id.short());
    }
    Ok(Outcome::Success)
}
