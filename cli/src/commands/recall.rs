//! `mapache recall`

use anyhow::{bail, Result};

use crate::exit::Outcome;
use crate::global::GlobalOptions;

/// Bring forgotten snapshots back
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ids (unique prefixes) of forgotten snapshots, as `log --forgotten`
    /// lists them
    #[arg(required = true)]
    snapshots: Vec<String>,
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open()?;
    let _lock = global.lock(&repo, false)?;
    let forgotten = repo.forgotten()?;
    for spec in &args.snapshots {
        let prefix = spec.to_ascii_lowercase();
        let matches: Vec<_> = forgotten
            .iter()
            .filter(|(id, _)| id.to_hex().starts_with(&prefix))
            .collect();
        let id = match matches.as_slice() {
            [(id, _)] => *id,
            [] => bail!("no forgotten snapshot {spec}: `mapache log --forgotten` lists them"),
            _ => bail!("forgotten snapshot id {spec} is ambiguous"),
        };
        repo.recall(&id)?;
        if !global.quiet {
            println!("recalled snapshot {}", id.short());
        }
    }
    Ok(Outcome::Success)
}
