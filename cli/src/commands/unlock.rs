//! `mapache unlock`

use anyhow::Result;

use crate::exit::Outcome;
use crate::global::GlobalOptions;

/// Remove stale locks (left by processes that died)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove all locks, also those of running processes
    #[arg(long)]
    all: bool,
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open()?;
    let removed = repo.remove_locks(args.all)?;
    if !global.quiet {
        println!("removed {removed} lock(s)");
    }
    Ok(Outcome::Success)
}
