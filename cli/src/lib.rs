//! mapache-cli: the command line of mapache.
//!
//! Parses arguments with clap, resolves the repository and password, runs
//! one command, and reports its outcome. The binary's `main` only calls
//! [`main_with_args`].

#[cfg(feature = "fuse")]
mod auto_commit;
#[cfg(feature = "fuse")]
mod background;
mod commands;
mod exit;
mod global;
mod interrupt;
mod mounts;
mod output;
mod password;
mod progress;
mod selection;
mod skipped;

use clap::Parser;

pub use exit::{exit_code, Outcome};
pub use global::Cli;

/// Runs mapache with the process arguments and returns the exit code.
pub fn main_with_args() -> u8 {
    let cli = Cli::parse();
    let json = cli.global.json;
    interrupt::install_handler();
    match commands::run(cli) {
        Ok(outcome) => skipped::report(outcome).code(),
        Err(error) => {
            if exit::is_broken_pipe(&error) {
                return 0;
            }
            skipped::report(Outcome::Failed);
            let code = exit_code(&error);
            if json {
                // A program reading --json output reads errors the same way.
                let message =
                    serde_json::json!({ "error": exit::one_line(&error), "exit_code": code });
                eprintln!("{message}");
            } else {
                eprintln!("error: {}", exit::one_line(&error));
            }
            code
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        // Catches clashing flags (a subcommand's -r against the global
        // --repo, say) at test time instead of at the user's first run.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
