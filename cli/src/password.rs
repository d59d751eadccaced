//! Where passwords come from: standard input when asked, a file, a command,
//! the environment, or a prompt on the terminal, in that order.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Configured password sources.
#[derive(Debug, Clone)]
pub struct PasswordSource {
    stdin: bool,
    file: Option<PathBuf>,
    command: Option<String>,
}

impl PasswordSource {
    /// From the command line options.
    pub fn new(stdin: bool, file: Option<PathBuf>, command: Option<String>) -> PasswordSource {
        PasswordSource {
            stdin,
            file,
            command,
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

/// Reads the password. With `confirm` (for a new password at a prompt) it
/// is asked twice.
pub fn read(source: &PasswordSource, confirm: bool) -> Result<String> {
    let password = if source.stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        first_line(&line)
    } else if let Some(file) = &source.file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read password file {}", file.display()))?;
        first_line(&text)
    } else if let Some(command) = &source.command {
        let output = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::inherit())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run password command {command:?}"))?;
        if !output.status.success() {
            bail!("password command {command:?} failed with {}", output.status);
        }
        first_line(&String::from_utf8_lossy(&output.stdout))
    } else if let Ok(password) = std::env::var("MAPACHE_PASSWORD") {
        password
    } else if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("repository password: ")?;
        if confirm {
            let again = rpassword::prompt_password("repeat password: ")?;
            if again != password {
                bail!("the passwords do not match");
            }
        }
        password
    } else {
        bail!("no password given: use --password-file, --password-command or MAPACHE_PASSWORD, or run on a terminal");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}
