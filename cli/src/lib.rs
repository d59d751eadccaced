//! mapache-cli: the command line of mapache.
//!
//! Parses arguments with clap, resolves the repository and password, runs
//! one command, and reports its outcome. The binary's `main` only calls
//! [`main_with_args`].

mod commands;
mod exit;
mod global;
mod output;
mod password;
mod progress;

use clap::Parser;

pub use exit::{exit_code, Outcome};
pub use global::Cli;

/// Runs mapache with the process arguments and returns the exit code.
pub fn main_with_args() -> u8 {
    let cli = Cli::parse();
    install_interrupt_handler();
    match commands::run(cli) {
        Ok(outcome) => outcome.code(),
        Err(error) => {
            if exit::is_broken_pipe(&error) {
                return 0;
            }
            eprintln!("error: {}", exit::one_line(&error));
            exit_code(&error)
        }
    }
}

/// Ctrl-C or SIGTERM: release our locks and leave with 130. Every write to
/// the repository is atomic, so stopping at any instant is safe; the next
/// run reuses what this one already indexed.
fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        mapache_store::lock::release_all_held();
        eprintln!("\ninterrupted");
        std::process::exit(exit::INTERRUPTED as i32);
    });
}
