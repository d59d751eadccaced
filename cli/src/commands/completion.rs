//! `mapache completion`

use anyhow::Result;
use clap::CommandFactory;

use crate::exit::Outcome;
use crate::global::Cli;

/// Print a shell completion script
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell
    shell: clap_complete::Shell,
}

pub fn run(args: Args) -> Result<Outcome> {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "mapache",
        &mut std::io::stdout(),
    );
    Ok(Outcome::Success)
}
