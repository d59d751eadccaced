//! The mapache binary: everything happens in mapache-cli; this only turns
//! its verdict into the process exit code.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(mapache_cli::main_with_args())
}
