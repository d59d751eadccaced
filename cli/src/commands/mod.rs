//! One file per subcommand; each has an `Args` struct (its doc comment is
//! the help text) and a `run` function.

mod cache;
mod cat;
mod clean;
mod commit;
mod completion;
mod diff;
mod find;
mod forget;
mod init;
mod list;
mod log;
mod ls;
mod mount;
mod rebuild_index;
mod recall;
mod restore;
mod snapshot;
mod stage;
mod stage_areas;
mod stats;
mod unlock;
mod verify;

use anyhow::Result;
use clap::Subcommand;

use crate::exit::Outcome;
use crate::global::Cli;

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::Args),
    #[command(alias = "backup")]
    Snapshot(snapshot::Args),
    Restore(restore::Args),
    #[command(alias = "snapshots")]
    Log(log::Args),
    Ls(ls::Args),
    Cat(cat::Args),
    List(list::Args),
    Mount(mount::Args),
    Stage(stage::Args),
    Commit(commit::Args),
    Unlock(unlock::Args),
    #[command(alias = "check")]
    Verify(verify::Args),
    RebuildIndex(rebuild_index::Args),
    Diff(diff::Args),
    Find(find::Args),
    Forget(forget::Args),
    Stats(stats::Args),
    Recall(recall::Args),
    #[command(alias = "prune")]
    Clean(clean::Args),
    Cache(cache::Args),
    Completion(completion::Args),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<Outcome> {
    let global = &cli.global;
    match cli.command {
        Command::Init(args) => init::run(global, args),
        Command::Snapshot(args) => snapshot::run(global, args),
        Command::Restore(args) => restore::run(global, args),
        Command::Log(args) => log::run(global, args),
        Command::Ls(args) => ls::run(global, args),
        Command::Cat(args) => cat::run(global, args),
        Command::List(args) => list::run(global, args),
        Command::Mount(args) => mount::run(global, args),
        Command::Stage(args) => stage::run(global, args),
        Command::Commit(args) => commit::run(global, args),
        Command::Unlock(args) => unlock::run(global, args),
        Command::Verify(args) => verify::run(global, args),
        Command::RebuildIndex(args) => rebuild_index::run(global, args),
        Command::Diff(args) => diff::run(global, args),
        Command::Find(args) => find::run(global, args),
        Command::Forget(args) => forget::run(global, args),
        Command::Stats(args) => stats::run(global, args),
        Command::Recall(args) => recall::run(global, args),
        Command::Clean(args) => clean::run(global, args),
        Command::Cache(args) => cache::run(global, args),
        Command::Completion(args) => completion::run(args),
    }
}
