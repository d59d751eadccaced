//! `mount --background`: the command starts itself again as a detached
//! child and returns once that child has mounted.
//!
//! Re-executing instead of forking: by the time a mount is ready the process
//! has threads (index loading, the FUSE session), and forking a threaded
//! process is unsound. The child gets the password on its standard input
//! (`--password-stdin`), so a prompt or a password command runs once, in
//! the foreground, and the password is never in an argument or the
//! environment. It answers "ready" on its standard output once mounted,
//! then detaches: new session, standard streams to a log file.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::password;

/// The hidden flag that tells the re-executed command it is the child.
pub const CHILD_FLAG: &str = "--background-child";
const READY: &str = "ready";

/// Starts the detached child and waits until it is mounted; returns the
/// child's exit code if it failed first (it has said why on our stderr).
pub fn start(global: &GlobalOptions, mountpoint: &Path) -> Result<Outcome> {
    // As in the foreground: a wrong path must not cost a password prompt.
    let backend = global.backend()?;
    if !backend.is_repository()? {
        return Err(mapache_store::Error::RepositoryNotFound(backend.location()).into());
    }
    let password = password::read(&global.password_source(), false)?;
    let exe = std::env::current_exe().context("cannot find the mapache binary")?;
    let mut child = Command::new(exe)
        .arg("--password-stdin")
        .args(std::env::args_os().skip(1))
        .arg(CHILD_FLAG)
        // The password travels on stdin only: a long-running process's
        // environment is readable in /proc by its user for its whole life.
        .env_remove("MAPACHE_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the background mount")?;
    {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        writeln!(stdin, "{password}").context("cannot hand the password over")?;
    }
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .context("cannot hear from the background mount")?;
    if line.trim_end() == READY {
        if !global.quiet {
            eprintln!(
                "mounted on {} in the background (pid {}); `umount {}` to stop",
                mountpoint.display(),
                child.id(),
                mountpoint.display()
            );
        }
        return Ok(Outcome::Success);
    }
    let status = child.wait().context("waiting for the background mount")?;
    Ok(Outcome::Code(status.code().map_or(1, |code| code as u8)))
}

/// In the child, before anything else: leave the terminal's session so that
/// its hang-up and Ctrl-C do not reach the mount.
pub fn leave_session() {
    // Fails only for a process group leader, which a spawned child is not.
    let _ = nix::unistd::setsid();
}

/// In the child, once mounted: tells the parent, then sends our standard
/// streams to `log` (created 0600, appended to).
pub fn report_ready(log: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .with_context(|| format!("cannot open the log file {}", log.display()))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{READY}")?;
    stdout.flush()?;
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&file)?;
    nix::unistd::dup2_stderr(&file)?;
    Ok(())
}
