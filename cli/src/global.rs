//! Options every command shares, and opening the repository they name.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser};
use mapache_store::backend::{
    Backend, CacheBackend, LocalBackend, Location, S3Backend, SftpBackend, SftpOptions, SshClient,
};
use mapache_store::LockGuard;
use mapache_store::{IndexedRepository, Repository};

use crate::commands::Command;
use crate::password::{self, PasswordSource};

/// An open staging area, and the lock held for its repository.
pub struct OpenStaging {
    /// The staging area.
    pub staging: mapache_fs::staging::Staging,
    _lock: Option<LockGuard>,
}

/// Bytes a repository's cache may hold; the least recently used entries
/// go first beyond it.
const CACHE_LIMIT: u64 = 4 << 30;

/// The lock a reading command holds, if any.
pub struct ReadLock {
    /// The shared lock; none with `--no-lock` or on read-only storage.
    pub guard: Option<LockGuard>,
    /// The repository cannot be written (the mount then leaves out
    /// staging/, which a build without FUSE does not have).
    #[cfg_attr(not(feature = "fuse"), allow(dead_code))]
    pub read_only: bool,
}

/// mapache: fast, encrypted, de-duplicating backups you can browse.
#[derive(Debug, Parser)]
#[command(name = "mapache", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalOptions,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options before or after any subcommand.
#[derive(Debug, Args, Clone)]
pub struct GlobalOptions {
    /// Repository location (a local folder)
    #[arg(
        short = 'r',
        long = "repo",
        env = "MAPACHE_REPOSITORY",
        global = true,
        value_name = "PATH"
    )]
    pub repo: Option<PathBuf>,

    /// Key file for SFTP repositories (default: ssh-agent, then
    /// ~/.ssh/id_ed25519, id_ecdsa, id_rsa)
    #[arg(long, env = "MAPACHE_SSH_KEY", global = true, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,

    /// known_hosts file that SFTP hosts are checked against (default:
    /// ~/.ssh/known_hosts)
    #[arg(
        long,
        env = "MAPACHE_SSH_KNOWN_HOSTS",
        global = true,
        value_name = "FILE"
    )]
    pub ssh_known_hosts: Option<PathBuf>,

    /// ssh configuration file for SFTP repositories, instead of
    /// ~/.ssh/config (OpenSSH's client only)
    #[arg(long, env = "MAPACHE_SSH_CONFIG", global = true, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// SSH client for SFTP repositories: openssh (the system's `ssh`, which
    /// reads ~/.ssh/config), builtin (libssh2, slower, for hosts without
    /// ssh), or auto (openssh when installed)
    #[arg(
        long,
        env = "MAPACHE_SSH_CLIENT",
        global = true,
        value_name = "CLIENT",
        default_value = "auto"
    )]
    pub ssh_client: SshClient,

    /// Do not keep a local cache of a remote repository's index,
    /// snapshots and trees
    #[arg(long, global = true)]
    pub no_cache: bool,

    /// Folder of the caches of remote repositories (default:
    /// $XDG_CACHE_HOME/mapache or ~/.cache/mapache)
    #[arg(long, env = "MAPACHE_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Read the password from the first line of standard input (before
    /// any other source)
    #[arg(long, global = true)]
    pub password_stdin: bool,

    /// Read the password from the first line of this file
    #[arg(
        long,
        env = "MAPACHE_PASSWORD_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,

    /// Run this shell command and use the first line it prints as password
    #[arg(
        long,
        env = "MAPACHE_PASSWORD_COMMAND",
        global = true,
        value_name = "COMMAND"
    )]
    pub password_command: Option<String>,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only errors and warnings
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Folder for local state such as the staging area (default:
    /// $XDG_STATE_HOME/mapache, else ~/.local/state/mapache)
    #[arg(long, env = "MAPACHE_STATE_DIR", global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Read without locking the repository (for storage that cannot be
    /// written; a read-only repository is read without a lock anyway, with
    /// a warning)
    #[arg(long, global = true)]
    pub no_lock: bool,

    /// How long to wait for a lock another process holds, as 30s, 5m or
    /// 1h; 0 fails at once
    #[arg(long, global = true, value_name = "DURATION", default_value = "1m", value_parser = parse_wait)]
    pub retry_lock: std::time::Duration,

    /// Worker threads (default: one per core)
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
}

impl GlobalOptions {
    /// The backend for the repository location.
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        let path = self
            .repo
            .as_ref()
            .context("no repository given: use -r/--repo or set MAPACHE_REPOSITORY")?;
        let location = match path.to_str() {
            Some(text) => Location::parse(text)?,
            None => Location::Local(path.clone()),
        };
        Ok(match location {
            Location::Local(path) => Arc::new(LocalBackend::new(path)),
            Location::Sftp(location) => {
                let options = SftpOptions {
                    key_file: self.ssh_key.clone(),
                    known_hosts: self.ssh_known_hosts.clone(),
                    config_file: self.ssh_config.clone(),
                    // Enough sessions for every sealing or fetching thread.
                    sessions: self.threads().max(2) * 2,
                    client: self.ssh_client,
                    ..SftpOptions::default()
                };
                Arc::new(SftpBackend::new(location, options))
            }
            Location::S3(location) => Arc::new(S3Backend::new(location)?),
        })
    }

    /// Where the password comes from.
    pub fn password_source(&self) -> PasswordSource {
        PasswordSource::new(
            self.password_stdin,
            self.password_file.clone(),
            self.password_command.clone(),
        )
    }

    /// Opens the repository, asking for the password as configured.
    pub fn open(&self) -> Result<Repository> {
        let backend = self.backend()?;
        // Look before asking for a password: a typo in the path should not
        // cost the user a password prompt.
        if !backend.is_repository()? {
            return Err(mapache_store::Error::RepositoryNotFound(backend.location()).into());
        }
        let password = password::read(&self.password_source(), false)?;
        let mut repo = Repository::open(backend, password.as_bytes())?;
        if self.is_remote() && !self.no_cache {
            let dir = self.cache_root()?.join(repo.config().id.to_hex());
            let cached = CacheBackend::new(repo.backend().clone(), dir, CACHE_LIMIT)?;
            repo = repo.with_backend(Arc::new(cached));
        }
        crate::skipped::watch(repo.skipped());
        Ok(repo)
    }

    /// Whether the repository is on another machine (and worth a cache).
    fn is_remote(&self) -> bool {
        let text = self.repo.as_ref().and_then(|path| path.to_str());
        matches!(
            text.map(Location::parse),
            Some(Ok(location)) if !matches!(location, Location::Local(_))
        )
    }

    /// The folder of the caches of remote repositories.
    pub fn cache_root(&self) -> Result<PathBuf> {
        Ok(match &self.cache_dir {
            Some(dir) => dir.clone(),
            None => match std::env::var_os("XDG_CACHE_HOME") {
                Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("mapache"),
                _ => PathBuf::from(
                    std::env::var_os("HOME").context("HOME is not set: use --cache-dir")?,
                )
                .join(".cache/mapache"),
            },
        })
    }

    /// A shared or exclusive lock, waiting up to `--retry-lock` for one
    /// that another process holds.
    pub fn lock(&self, repo: &Repository, exclusive: bool) -> Result<LockGuard> {
        Ok(repo.lock_waiting(exclusive, self.retry_lock, None)?)
    }

    /// A shared lock for a command that only reads: none with `--no-lock`,
    /// and none, with a warning, when the repository cannot be written.
    pub fn lock_shared(&self, repo: &Repository) -> Result<Option<LockGuard>> {
        Ok(self.lock_for_reading(repo)?.guard)
    }

    /// Like [`GlobalOptions::lock_shared`], also saying whether the
    /// repository turned out to be read-only.
    pub fn lock_for_reading(&self, repo: &Repository) -> Result<ReadLock> {
        if self.no_lock {
            return Ok(ReadLock {
                guard: None,
                read_only: false,
            });
        }
        match repo.lock_waiting(false, self.retry_lock, None) {
            Ok(guard) => Ok(ReadLock {
                guard: Some(guard),
                read_only: false,
            }),
            Err(mapache_store::Error::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                eprintln!(
                    "warning: the repository cannot be written ({source}): reading it without a lock"
                );
                Ok(ReadLock {
                    guard: None,
                    read_only: true,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the repository and loads its index.
    pub fn open_indexed(&self) -> Result<Arc<IndexedRepository>> {
        Ok(Arc::new(self.open()?.load_index()?))
    }

    /// The folder of local state (staging areas) of every repository.
    pub fn state_root(&self) -> Result<PathBuf> {
        Ok(match &self.state_dir {
            Some(dir) => dir.clone(),
            None => match std::env::var_os("XDG_STATE_HOME") {
                Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("mapache"),
                _ => PathBuf::from(
                    std::env::var_os("HOME").context("HOME is not set: use --state-dir")?,
                )
                .join(".local/state/mapache"),
            },
        })
    }

    /// The staging folder of repository `repo`: one per repository id and
    /// location, so that a copy of a repository (same id, other place)
    /// never shares the original's staged changes, whose data lives only
    /// in the original.
    pub fn staging_dir(&self, repo: &Repository) -> Result<PathBuf> {
        let location = match &self.repo {
            Some(path) => std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .into_os_string(),
            None => repo.backend().location().into(),
        };
        let key = mapache_store::Id::hash_of(location.as_encoded_bytes()).to_hex();
        Ok(self
            .state_root()?
            .join(repo.config().id.to_hex())
            .join(&key[..16])
            .join("staging"))
    }

    /// Takes a shared lock on the open repository `repo`, loads its index
    /// and opens its staging area. The lock is held while the staging is
    /// open: staged content is uploaded as it is added, and `clean` must
    /// not run before the staging's record names it.
    pub fn staging_of(&self, repo: Repository) -> Result<OpenStaging> {
        let lock = self.lock_shared(&repo)?;
        let dir = self.staging_dir(&repo)?;
        let repo = Arc::new(repo.load_index()?);
        // What a run stopped before indexing its packs left is used again.
        mapache_store::rebuild_index::index_unindexed_packs(&repo)?;
        let staging = open_staging_when_free(&repo, &dir, self.retry_lock)?;
        Ok(OpenStaging {
            staging,
            _lock: lock,
        })
    }

    /// Threads to use.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1)
    }

    /// Whether to draw progress bars: only for people, on a terminal.
    pub fn show_progress(&self) -> bool {
        !self.json && !self.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())
    }
}

/// Opens the staging area in `dir`. A mount that holds it but is no
/// longer mounted is saving it before it exits (an external `umount`
/// returns first): that is waited for, up to `patience`; any other holder
/// is an error at once.
fn open_staging_when_free(
    repo: &Arc<mapache_store::IndexedRepository>,
    dir: &std::path::Path,
    patience: std::time::Duration,
) -> Result<mapache_fs::staging::Staging> {
    use mapache_fs::staging::{holder, Staging};
    let started = std::time::Instant::now();
    loop {
        match Staging::open(repo.clone(), dir) {
            Err(mapache_fs::FsError::Busy(_))
                if mount_ending(&holder(dir)) && started.elapsed() < patience =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// Whether a staging holder (`pid N (mount on /path)`) is a mount whose
/// mount point is gone.
fn mount_ending(holder: &str) -> bool {
    holder
        .split_once("(mount on ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .is_some_and(|point| crate::mounts::mount_at(std::path::Path::new(point)).is_none())
}

/// Parses a wait such as `30s`, `5m`, `1h` or `0`.
pub(crate) fn parse_wait(text: &str) -> std::result::Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "{text:?} is not a wait: use for example 30s, 5m or 1h"
            ))
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a wait: use for example 30s, 5m or 1h"))?;
    Ok(std::time::Duration::from_secs(n * seconds))
}
